"""Patch streams over real Zarr and HDF5 stores: reproducible, aligned, worker-count invariant."""

import numpy as np
import pytest

from mirpipe.storage import open_store
from mirpipe.storage.stream import IGNORE, EntryKey, MuxSettings, PatchStream, StreamSpec, preload_memory, track_patches
from mirpipe.storage.torch_data import epoch_loader

TARGETS = ("targets/frame_id", "targets/pitches")
LENGTHS = {"a": 300, "b": 95, "c": 420, "d": 180, "e": 250}  # "b" is shorter than a patch


def _arrays(track: str, n: int) -> dict[str, np.ndarray]:
    """Features whose frame index can be read back from the targets: alignment is checkable."""
    rng = np.random.default_rng(abs(hash(track)) % 2**32)
    frame_id = np.arange(n, dtype=np.int32) + 10_000 * (ord(track) - ord("a"))
    cqt = rng.normal(size=(n, 24)).astype(np.float16)
    cqt[:, 0] = frame_id % 2048  # exactly representable in float16
    return {"cqt": cqt, "targets/frame_id": frame_id, "targets/pitches": (rng.random((n, 12)) > 0.5).astype(np.int8)}


@pytest.fixture(scope="module", params=["zarr", "hdf5"])
def store(request, tmp_path_factory):
    store = open_store(request.param, tmp_path_factory.mktemp(request.param))
    for track, n in LENGTHS.items():
        for variant in ("ps+00", "ps+02"):
            store.write_entry(track, variant, _arrays(track, n), {"n": n})
    return store


def _keys():
    return [EntryKey(t, v, n) for t, n in LENGTHS.items() for v in ("ps+00", "ps+02")]


def _stream(store, seed=7, patch=64, **mux):
    spec = StreamSpec(store.backend, str(store.root), "cqt", TARGETS, patch_frames=patch, slab_frames=160)
    settings = MuxSettings(**{"batch_size": 6, "n_active": 3, "rate": 5.0, "n_shards": 2, **mux})
    return PatchStream(spec, _keys(), settings, seed)


def _take(stream, n, epoch=0, workers=0, skip=0):
    it = iter(epoch_loader(stream, epoch, skip=skip, n_workers=workers))
    return [next(it) for _ in range(n)]


def _same(a, b) -> bool:
    return all(np.array_equal(x[k].numpy(), y[k].numpy()) for x, y in zip(a, b) for k in x) and len(a) == len(b)


def test_same_seed_same_batches_across_runs_and_worker_counts(store):
    first = _take(_stream(store), 8)
    assert _same(first, _take(_stream(store), 8))
    assert _same(first, _take(_stream(store), 8, workers=2))
    assert _same(first, _take(_stream(store), 8, workers=1))


def test_seed_and_epoch_change_the_batches(store):
    first = _take(_stream(store), 4)
    assert not _same(first, _take(_stream(store, seed=8), 4))
    assert not _same(first, _take(_stream(store), 4, epoch=1))


def test_skip_resumes_an_epoch_mid_way(store):
    full = _take(_stream(store), 7)
    assert _same(full[3:], _take(_stream(store), 4, skip=3))
    assert _same(full[3:], _take(_stream(store), 4, skip=3, workers=2))


def test_patches_are_contiguous_and_targets_aligned(store):
    for batch in _take(_stream(store), 10):
        ids = batch["targets/frame_id"].numpy()
        cqt = batch["cqt"].numpy()
        assert cqt.shape == (6, 64, 24) and batch["targets/pitches"].shape == (6, 64, 12)
        for row, feat in zip(ids, cqt):
            real = row[row != IGNORE]
            assert len(real) > 0 and np.all(np.diff(real) == 1)  # one contiguous run of frames
            assert np.array_equal(feat[: len(real), 0], (real % 2048).astype(np.float16))
            if len(real) < 64:  # only the short track pads, and only at its end
                assert real[0] // 10_000 == 1 and np.all(row[len(real):] == IGNORE)


def test_worker_count_must_divide_the_shards(store):
    with pytest.raises(ValueError, match="divide"):
        epoch_loader(_stream(store, n_shards=2), 0, n_workers=3)


def test_store_streams_equal_the_memory_stream(store):
    preload_memory("test-mem", store, _keys(), ["cqt", *TARGETS])
    spec = StreamSpec("memory", "test-mem", "cqt", TARGETS, patch_frames=64, slab_frames=160)
    memory = PatchStream(spec, _keys(), MuxSettings(batch_size=6, n_active=3, rate=5.0, n_shards=2), 7)
    assert _same(_take(_stream(store), 5), _take(memory, 5))


def test_validation_stream_covers_every_frame_once_in_order(store):
    spec = StreamSpec(store.backend, str(store.root), "cqt", TARGETS, patch_frames=64)
    keys = [k for k in _keys() if k.variant == "ps+00"]
    batches = list(track_patches(spec, keys, batch_size=4))
    ids = np.concatenate([b["targets/frame_id"].reshape(-1) for b in batches])
    ids = ids[ids != IGNORE]
    expected = np.concatenate([_arrays(t, n)["targets/frame_id"] for t, n in sorted(LENGTHS.items())])
    assert np.array_equal(ids, expected)
    assert list(track_patches(spec, keys, batch_size=4))[0]["cqt"].tobytes() == batches[0]["cqt"].tobytes()
