"""Patch streams over real Zarr and HDF5 stores: reproducible, aligned, worker-count invariant."""

import numpy as np
import pytest

from mirpipe.models.task import CorpusVocabulary, Network, Targets, Task
from mirpipe.storage import open_store
from mirpipe.storage.stream import IGNORE, EntryKey, MuxSettings, PatchStream, StreamSpec, preload_memory, track_patches
from mirpipe.storage.torch_data import epoch_loader

TARGETS = ("targets/frame_id", "targets/pitches")
LENGTHS = {"a": 300, "b": 95, "c": 420, "d": 180, "e": 250}  # "b" is shorter than a patch
SHIFTS = (-2, 0, 1)
MARGIN = 2  # bins per side; 12 bins/octave: one bin per semitone
BINS = 24
GEOMETRY = {
    "kind": "cqt",
    "sr": 22050,
    "hop_length": 2048,
    "fmin": 32.7,
    "n_bins": BINS,
    "bins_per_octave": 12,
    "margin_bins": MARGIN,
    "frame_rate": 22050 / 2048,
}


class RollTargets(Targets):
    """Pitch-class targets that roll with the shift (what the chord task's do)."""

    moves = "chord"

    def transpose(self, targets, n):
        return {**targets, "targets/pitches": np.roll(targets["targets/pitches"], n, axis=-1)}


class RollPitches(Task):
    """A task whose targets roll with the shift; its batches are as stored."""

    name = "roll_pitches"
    targets = RollTargets()
    network = Network()


def _arrays(track: str, n: int) -> dict[str, np.ndarray]:
    """Features that say which frame and which stored bin they are: alignment and shift are checkable.

    feature[t, b] = b + 32 * (frame_id % 64), exact in float16.
    """
    rng = np.random.default_rng(abs(hash(track)) % 2**32)
    frame_id = np.arange(n, dtype=np.int32) + 10_000 * (ord(track) - ord("a"))
    cqt = (np.arange(BINS + 2 * MARGIN)[None, :] + 32 * (frame_id[:, None] % 64)).astype(np.float16)
    pitches = (rng.random((n, 12)) > 0.5).astype(np.int8)
    return {"cqt": cqt[None], "targets/frame_id": frame_id[None], "targets/pitches": pitches[None]}


@pytest.fixture(scope="module", params=["zarr", "hdf5"])
def store(request, tmp_path_factory):
    store = open_store(request.param, tmp_path_factory.mktemp(request.param))
    for track, n in LENGTHS.items():
        store.write_entry(track, _arrays(track, n), {"track": track, "variants": [0], "features": {"cqt": GEOMETRY}})
    return store


def _keys():
    return [EntryKey(t, n) for t, n in LENGTHS.items()]


def _spec(backend, root, patch=64, slab=160, shifts=SHIFTS):
    return StreamSpec(backend, root, "cqt", TARGETS, patch_frames=patch, slab_frames=slab, shifts=shifts, task=RollPitches())


def _stream(store, seed=7, patch=64, **mux):
    settings = MuxSettings(**{"batch_size": 6, "n_active": 3, "rate": 5.0, "n_shards": 2, **mux})
    return PatchStream(_spec(store.backend, str(store.root), patch), _keys(), settings, seed)


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


def test_patches_are_contiguous_aligned_and_shifted_by_index_arithmetic(store):
    seen = set()
    for batch in _take(_stream(store), 12):
        ids = batch["targets/frame_id"].numpy()
        cqt = batch["cqt"].numpy()
        pitches = batch["targets/pitches"].numpy()
        assert cqt.shape == (6, 64, BINS) and pitches.shape == (6, 64, 12)
        for row, feat, pc in zip(ids, cqt, pitches):
            real = row[row != IGNORE]
            assert len(real) > 0 and np.all(np.diff(real) == 1)  # one contiguous run of frames
            values = feat[: len(real)].astype(np.int64)
            assert np.array_equal(values[:, 0] // 32, real % 64)  # features and targets are the same frames
            first_bin = values[0, 0] % 32
            shift = MARGIN - first_bin  # the view of shift n starts at stored bin MARGIN - n
            assert shift in SHIFTS and np.array_equal(values[0] % 32, first_bin + np.arange(BINS))
            seen.add(shift)
            track = chr(ord("a") + int(real[0]) // 10_000)
            stored = _arrays(track, LENGTHS[track])["targets/pitches"][0]
            local = real - 10_000 * (ord(track) - ord("a"))
            assert np.array_equal(pc[: len(real)], np.roll(stored[local], shift, axis=-1))  # targets moved with it
            if len(real) < 64:  # only the short track pads, and only at its end
                assert track == "b" and np.all(row[len(real) :] == IGNORE)
    assert seen == set(SHIFTS)  # every shift is drawn


def test_a_shift_beyond_the_stored_margin_is_refused(store):
    spec = _spec(store.backend, str(store.root), shifts=(MARGIN + 1,))
    with pytest.raises(ValueError, match="margin"):
        next(iter(PatchStream(spec, _keys(), MuxSettings(batch_size=2, n_active=1, rate=2.0, n_shards=1), 0).batches(0)))


def test_worker_count_must_divide_the_shards(store):
    with pytest.raises(ValueError, match="divide"):
        epoch_loader(_stream(store, n_shards=2), 0, n_workers=3)


def test_store_streams_equal_the_memory_stream(store):
    preload_memory("test-mem", store, _keys(), ["cqt", *TARGETS])
    spec = _spec("memory", "test-mem")
    memory = PatchStream(spec, _keys(), MuxSettings(batch_size=6, n_active=3, rate=5.0, n_shards=2), 7)
    assert _same(_take(_stream(store), 5), _take(memory, 5))


def test_validation_stream_covers_every_frame_once_in_order(store):
    spec = _spec(store.backend, str(store.root), slab=1024)
    keys = _keys()
    batches = list(track_patches(spec, keys, batch_size=4))
    ids = np.concatenate([b["targets/frame_id"].reshape(-1) for b in batches])
    ids = ids[ids != IGNORE]
    expected = np.concatenate([_arrays(t, n)["targets/frame_id"][0] for t, n in sorted(LENGTHS.items())])
    assert np.array_equal(ids, expected)
    assert list(track_patches(spec, keys, batch_size=4))[0]["cqt"].tobytes() == batches[0]["cqt"].tobytes()


def test_frames_sampling_draws_each_track_in_proportion_to_its_length(store):
    """``train.sampling: frames``: the mux draws a track as often as its share of the frames (the
    pitch corpus: short solo clips would otherwise outweigh the long mixtures), times the task's
    own stream weights; ``track``: every track alike."""
    from mirpipe.stages.train import sampling_weights

    keys = _keys()
    assert sampling_weights(RollPitches(), "track", keys, [[] for _ in keys]) is None
    lengths = sampling_weights(RollPitches(), "frames", keys, [[] for _ in keys])
    assert lengths == [float(n) for n in LENGTHS.values()]

    class HalvesVocabulary(CorpusVocabulary):
        def stream_weights(self, labels):
            return [0.5 if ls else 1.0 for ls in labels]

    class Halves(RollPitches):
        vocabulary = HalvesVocabulary()

    assert sampling_weights(Halves(), "frames", keys, [["x"], [], [], [], []]) == [150.0, 95.0, 420.0, 180.0, 250.0]

    spec = _spec(store.backend, str(store.root), patch=16, slab=64, shifts=(0,))
    mux = MuxSettings(batch_size=16, n_active=2, rate=2.0, n_shards=1)

    def shares(weights) -> np.ndarray:
        stream = PatchStream(spec, keys, mux, seed=5, weights=weights)
        batches = stream.batches(epoch=0)
        track = np.concatenate([next(batches)["targets/frame_id"][:, 0] // 10_000 for _ in range(150)])
        return np.bincount(track, minlength=len(keys)) / len(track)

    total = sum(LENGTHS.values())
    by_frames = shares({k.track: w for k, w in zip(keys, lengths)})
    assert np.all(np.abs(by_frames - np.array(list(LENGTHS.values())) / total) < 0.05), by_frames
    assert np.all(np.abs(shares(None) - 1 / len(keys)) < 0.06)


def test_sampling_enters_the_training_fingerprint_only_where_it_changes_training():
    """Workdirs trained before ``sampling`` existed keep their fingerprint (an upgrade does not retrain)."""
    from mirpipe.stages.train import TrainParams, fingerprinted

    assert "sampling" not in fingerprinted(TrainParams())
    assert fingerprinted(TrainParams(sampling="frames"))["sampling"] == "frames"


def test_packed_cqt_batches_cross_as_float16_and_the_feed_makes_the_float32_view(store):
    """With the geometry set, the cqt window crosses as stored (float16, targets as stored dtypes):
    half the bytes, and ``Feed`` makes exactly the float32 batch of the unpacked stream, through 0
    and 2 loader workers alike."""
    import dataclasses

    import torch

    from mirpipe.storage.torch_data import Feed, batch_bytes

    settings = MuxSettings(batch_size=6, n_active=3, rate=5.0, n_shards=2)
    spec = _spec(store.backend, str(store.root))
    packed = PatchStream(dataclasses.replace(spec, geometry=GEOMETRY), _keys(), settings, 7)
    plain = PatchStream(spec, _keys(), settings, 7)
    feed = Feed(spec.task, GEOMETRY)
    for workers in (0, 2):
        for p, v in zip(_take(packed, 5, workers=workers), _take(plain, 5, workers=workers), strict=True):
            assert p["cqt"].dtype == torch.float16 and v["cqt"].dtype == torch.float32
            assert p["targets/frame_id"].dtype == torch.int32  # as stored: the feed makes int64 on the device
            assert batch_bytes(v) - batch_bytes(p) == p["cqt"].numel() * 2
            made, want = feed(p), feed(v)
            assert made.keys() == want.keys() and made["targets/frame_id"].dtype == torch.int64
            for k in made:
                assert made[k].dtype == want[k].dtype and torch.equal(made[k], want[k]), k
