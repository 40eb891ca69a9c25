"""Both store backends hold the same entry identically; writes are atomic; an entry is one file."""

import numpy as np
import pytest
import soundfile as sf

from mirpipe.demo.track import annotate, compose, render
from mirpipe.pipeline.config import PipelineConfig
from mirpipe.stages.features import compute_entry
from mirpipe.storage import open_store
from mirpipe.storage.base import part_of


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    d = tmp_path_factory.mktemp("entry")
    s = compose(4, 0, False, 8, 12)
    sf.write(d / "t.flac", render(s, 22050, 0, 4), 22050)
    annotate(s, "t", False).save(str(d / "t.jams"))
    cfg = PipelineConfig.model_validate({"augment": {"shifts": [-2, 0, 3]}})
    return compute_entry(str(d / "t.flac"), str(d / "t.jams"), cfg.features, cfg.augment)


def test_entry_layout_is_variant_and_time_major_and_aligned(entry):
    arrays, attrs, _ = entry
    T = arrays["cqt"].shape[1]
    assert arrays["cqt"].shape == (1, T, 216 + 2 * 9) and arrays["cqt"].dtype == np.float16  # 3 semitones of margin
    for name in ("targets/chord_root", "targets/chord_bass", "targets/chord_tag"):
        assert arrays[name].shape == (1, T)
    assert arrays["targets/chord_pitches"].shape == (1, T, 12)
    Th = arrays["hcqt"].shape[1]
    assert arrays["targets/f0_hz"].shape == (1, Th) and Th == pytest.approx(T * 8, abs=8)  # hop 256 vs 2048
    # instrument label ids (8 slots) and the multi-f0 notes live on the HCQT grid, as their tasks read it
    assert arrays["targets/instrument_labels"].shape == (1, Th, 8) and arrays["targets/instrument_labels"].dtype == np.int32
    assert arrays["targets/notes_hz"].shape == (1, Th, 16)
    assert attrs["variants"] == [0] and attrs["shifts"] == [-2, 0, 3] and attrs["mode"] == "feature"
    assert attrs["features"]["cqt"]["margin_bins"] == 9
    assert np.isfinite(arrays["cqt"].astype(np.float32)).all()


def test_zarr_and_hdf5_return_identical_arrays_and_attributes(entry, tmp_path):
    arrays, attrs, _ = entry
    reads = []
    for backend in ("zarr", "hdf5"):
        store = open_store(backend, tmp_path / backend)
        store.write_entry("t", arrays, attrs)
        assert store.is_valid("t")
        # two files per track: the features, and the targets (rewritten alone when a task changes)
        assert sorted(p.name for p in (tmp_path / backend).iterdir()) == sorted([f"t.targets{store.suffix}", f"t{store.suffix}"])
        reads.append(store.read_entry("t"))
        slab = store.read_slab("t", ["cqt", "targets/chord_tag"], 5, 25)
        assert np.array_equal(slab.arrays["cqt"], arrays["cqt"][0, 5:25])
    z, h = reads
    assert sorted(z.arrays) == sorted(h.arrays) == sorted(arrays)
    for name in arrays:
        assert z.arrays[name].dtype == h.arrays[name].dtype == arrays[name].dtype
        assert np.array_equal(z.arrays[name], h.arrays[name])
    assert z.attrs == h.attrs and z.attrs["versions"] == attrs["versions"]


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_on_disk_size_is_close_to_the_array_bytes(entry, backend, tmp_path):
    arrays, attrs, _ = entry
    store = open_store(backend, tmp_path)
    path = store.write_entry("t", arrays, attrs)
    assert path.stat().st_size <= 1.3 * sum(a.nbytes for a in arrays.values())


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_rewrite_replaces_atomically_and_leaves_no_temporaries(backend, tmp_path):
    store = open_store(backend, tmp_path)
    store.write_entry("t", {"cqt": np.zeros((1, 10, 4), np.float16)}, {"k": 1})
    store.write_entry("t", {"cqt": np.ones((1, 12, 4), np.float16)}, {"k": 2})
    e = store.read_entry("t")
    assert e.arrays["cqt"].shape == (1, 12, 4) and e.attrs == {"k": 2}
    assert [p.name for p in tmp_path.iterdir()] == [f"t{store.suffix}"]


def test_arrays_without_a_variant_axis_are_refused(tmp_path):
    with pytest.raises(ValueError, match="variants, frames"):
        open_store("zarr", tmp_path).write_entry("t", {"cqt": np.zeros(10, np.float16)}, {})


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_cut_entries_are_detected(backend, tmp_path):
    store = open_store(backend, tmp_path)
    rng = np.random.default_rng(0)  # incompressible: the chunks fill the file
    path = store.write_entry("t", {"cqt": rng.standard_normal((1, 3000, 16)).astype(np.float16)}, {})
    assert store.is_valid("t")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a writer killed mid-copy (or a partial transfer)
    assert not store.is_valid("t")


@pytest.mark.parametrize("compressors", ["auto", None])
def test_zarr_direct_slab_reads_are_bit_identical_to_zarr_python(compressors, tmp_path, monkeypatch):
    """Streaming reads ``[v, start:stop]`` straight from the zip members (``DirectArray``): every
    slice, across chunk edges and past the end, equals zarr-python's read of the same file."""
    import zarr
    from zarr.storage import ZipStore

    from mirpipe.storage import base
    from mirpipe.storage.zarr_store import DirectArray

    monkeypatch.setattr(base, "CHUNK_FRAMES", 100)
    rng = np.random.default_rng(0)
    arrays = {
        "cqt": rng.standard_normal((2, 437, 30)).astype(np.float16),
        "targets/tag": rng.integers(-1, 170, (2, 437)).astype(np.int16),
        "targets/pitches": rng.integers(0, 2, (2, 437, 12)).astype(np.int8),
        "f0": rng.standard_normal((3, 250)).astype(np.float32),
        "codes": rng.integers(0, 256, (1, 437, 7)).astype(np.uint8),
    }
    store = open_store("zarr", tmp_path)
    monkeypatch.setattr(store, "compressors", compressors)
    store.write_entry("t", arrays, {})
    slices = [(0, None), (5, 25), (95, 105), (99, 301), (400, 1000), (10, 10), (-50, None), (436, 437), (300, 200)]
    with store.opened("t") as (handles, _):
        for name, data in arrays.items():
            with ZipStore(store.entry_path("t", part_of(name)), mode="r") as zs:
                group = zarr.open_group(store=zs, mode="r", zarr_format=3)
                assert isinstance(handles[name], DirectArray)
                for v in range(data.shape[0]):
                    for a, b in slices:
                        got, ref = handles[name][v, a:b], np.asarray(group[name][v, a:b])
                        assert got.dtype == ref.dtype == data.dtype and got.shape == ref.shape
                        assert got.tobytes() == ref.tobytes() == data[v, a:b].tobytes()
                    assert handles[name][v].tobytes() == data[v].tobytes()
                assert np.asarray(handles[name][...]).tobytes() == data.tobytes()  # other keys: zarr-python
                assert handles[name].shape == data.shape and handles[name].nchunks_initialized == handles[name].nchunks


def test_zarr_layouts_the_direct_path_does_not_know_read_through_zarr_python(tmp_path):
    """A sharded array (or any codec chain but bytes + zstd) is left to zarr-python."""
    import zarr
    from zarr.storage import ZipStore

    data = np.arange(2 * 300 * 4, dtype=np.float32).reshape(2, 300, 4)
    path = tmp_path / "t.zarr.zip"
    with ZipStore(path, mode="w") as zs:
        group = zarr.create_group(store=zs, zarr_format=3, attributes={})
        group.create_array("cqt", data=data, chunks=(1, 50, 4), shards=(1, 300, 4))
    with open_store("zarr", tmp_path).opened("t") as (handles, _):
        assert isinstance(handles["cqt"], zarr.Array)
        assert handles["cqt"][1, 40:260].tobytes() == data[1, 40:260].tobytes()


@pytest.mark.parametrize("compressors", ["auto", None])
def test_a_damaged_chunk_is_an_error_naming_the_entry_array_and_chunk(compressors, tmp_path, monkeypatch):
    """Direct reads skip ``ZipFile.read`` but not its integrity: one flipped byte in a chunk (raw or
    zstd) fails its CRC-32 on the first read, named by entry file, array and chunk; the other
    arrays read as before."""
    import zipfile

    from mirpipe.storage.zarr_store import CorruptChunkError

    rng = np.random.default_rng(1)
    arrays = {"cqt": rng.standard_normal((1, 300, 20)).astype(np.float16), "targets/tag": np.zeros((1, 300), np.int16)}
    store = open_store("zarr", tmp_path)
    monkeypatch.setattr(store, "compressors", compressors)
    store.write_entry("t", arrays, {})
    path = store.entry_path("t")
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("cqt/c/0/0/0")
        name_len = len(info.filename.encode())
    data = bytearray(path.read_bytes())
    # the member's data starts after its 30-byte local header, name and extra field
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    with store.opened("t") as (handles, _):
        np.testing.assert_array_equal(handles["targets/tag"][0, 10:20], arrays["targets/tag"][0, 10:20])
        with pytest.raises(CorruptChunkError, match=r"t\.zarr\.zip: array 'cqt', chunk cqt/c/0/0/0: bad CRC-32") as err:
            handles["cqt"][0, 10:20]
    assert isinstance(err.value, zipfile.BadZipFile) and err.value.array == "cqt"


def test_zarr_direct_reads_keep_decoded_chunks_within_their_budget_and_return_copies(tmp_path, monkeypatch):
    """An open array keeps its recently decoded chunks (HDF5's 1 MiB chunk cache): a slab read twice
    decodes once, what a caller gets is its own copy, and the cache never exceeds its bytes."""
    from mirpipe.storage import base
    from mirpipe.storage.zarr_store import DirectArray

    monkeypatch.setattr(base, "CHUNK_FRAMES", 100)
    monkeypatch.setattr(DirectArray, "cache_bytes", 2 * 100 * 30 * 2)  # two float16 chunks
    data = np.random.default_rng(2).standard_normal((1, 437, 30)).astype(np.float16)
    store = open_store("zarr", tmp_path)
    store.write_entry("t", {"cqt": data}, {})
    with store.opened("t") as (handles, _):
        a = handles["cqt"]
        decoded = []
        monkeypatch.setattr(a, "_read_chunk", lambda v, t, read=a._read_chunk: decoded.append(t) or read(v, t))
        first = a[0, 150:250]
        first[:] = 0  # the caller's copy
        assert a[0, 150:250].tobytes() == data[0, 150:250].tobytes() and decoded == [1, 2]
        assert a[0, 0:437].tobytes() == data[0].tobytes()
        assert (
            decoded == [1, 2, 0, 1, 2, 3, 4] and a.cached_bytes <= DirectArray.cache_bytes and list(a.cache) == [(0, 3), (0, 4)]
        )


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_part_problem_names_the_file_the_array_and_the_chunk(backend, tmp_path):
    """``part_problem`` (what ``mirpipe verify`` prints): None for an intact file; a missing file, a
    file cut short and a chunk that does not decode each named, with the reader's own message."""
    import os
    import zipfile

    store = open_store(backend, tmp_path)
    rng = np.random.default_rng(0)  # incompressible: every chunk holds its own bytes
    arrays = {"cqt": rng.standard_normal((1, 3000, 16)).astype(np.float16), "targets/chord_tag": np.zeros((1, 3000), np.int16)}
    store.write_entry("t", arrays, {})
    assert store.part_problem("t", "features") is None and store.part_problem("t", "targets") is None
    store.entry_path("t", "targets").unlink()
    assert store.part_problem("t", "targets") == f"targets file t.targets{store.suffix} missing"
    path = store.entry_path("t")
    if backend == "zarr":  # flip bytes inside the second time chunk of cqt, size and mtime kept
        st = path.stat()
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("cqt/c/0/1/0")
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        data = bytearray(path.read_bytes())
        data[start + 8 : start + 24] = bytes(b ^ 0xFF for b in data[start + 8 : start + 24])
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        reason = store.part_problem("t", "features")
        assert reason is not None and reason.startswith("entry t.zarr.zip: array cqt chunk 0/1/0 (variant 0, frames 1024-2048): ")
        assert "bad crc-32" in reason.lower() and "cqt/c/0/1/0" in reason
        assert not store.part_readable("t", "features")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reason = store.part_problem("t", "features")
    assert reason is not None and reason.startswith(f"entry t{store.suffix}: ") and not store.part_readable("t", "features")


def test_damage_reason_keeps_the_boolean_contract():
    from mirpipe.stage import NO_REASON, damage_reason

    assert damage_reason(None) is None and damage_reason(True) is None
    assert damage_reason(False) == NO_REASON and damage_reason("") == NO_REASON
    assert damage_reason("targets file t.targets.zarr.zip missing") == "targets file t.targets.zarr.zip missing"
