"""Both store backends hold the same entry identically; writes are atomic."""

import numpy as np
import pytest
import soundfile as sf

from mirpipe.pipeline.config import PipelineConfig
from mirpipe.stages.deform import deform, variant_name
from mirpipe.stages.features import compute_entry
from mirpipe.stages.synth.track import annotate, compose, render
from mirpipe.storage import open_store


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    d = tmp_path_factory.mktemp("entry")
    s = compose(4, 0, False, 8, 12)
    sf.write(d / "t.flac", render(s, 22050, 0, 4), 22050)
    (n, jam, _), = deform(annotate(s, "t", False), [3], "librosa")
    jam.save(str(d / "v.jamz"), fmt="jamz")
    return compute_entry(str(d / "t.flac"), d / "v.jamz", PipelineConfig().features)


def test_entry_layout_is_time_major_and_aligned(entry):
    arrays, attrs, _ = entry
    T = arrays["cqt"].shape[0]
    assert arrays["cqt"].shape == (T, 216) and arrays["cqt"].dtype == np.float16
    for name in ("targets/chord_root", "targets/chord_bass", "targets/chord_tag", "targets/f0_hz"):
        assert arrays[name].shape == (T,)
    assert arrays["targets/chord_pitches"].shape == (T, 12) and arrays["targets/instruments"].shape == (T, 8)
    assert attrs["semitones"] == 3 and attrs["frame_rate"] == pytest.approx(22050 / 2048)
    assert np.isfinite(arrays["cqt"].astype(np.float32)).all()


def test_zarr_and_hdf5_return_identical_arrays_and_attributes(entry, tmp_path):
    arrays, attrs, _ = entry
    reads = []
    for backend in ("zarr", "hdf5"):
        store = open_store(backend, tmp_path / backend)
        store.write_entry("t", variant_name(3), arrays, attrs)
        assert store.is_valid("t", variant_name(3))
        reads.append(store.read_entry("t", variant_name(3)))
        slab = store.read_slab("t", variant_name(3), ["cqt", "targets/chord_tag"], 5, 25)
        assert np.array_equal(slab.arrays["cqt"], arrays["cqt"][5:25])
    z, h = reads
    assert sorted(z.arrays) == sorted(h.arrays) == sorted(arrays)
    for name in arrays:
        assert z.arrays[name].dtype == h.arrays[name].dtype == arrays[name].dtype
        assert np.array_equal(z.arrays[name], h.arrays[name])
    assert z.attrs == h.attrs and z.attrs["versions"] == attrs["versions"]


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_rewrite_replaces_atomically_and_leaves_no_temporaries(backend, tmp_path):
    store = open_store(backend, tmp_path)
    a = {"cqt": np.zeros((10, 4), np.float16)}
    store.write_entry("t", "v", a, {"k": 1})
    store.write_entry("t", "v", {"cqt": np.ones((12, 4), np.float16)}, {"k": 2})
    e = store.read_entry("t", "v")
    assert e.arrays["cqt"].shape == (12, 4) and e.attrs == {"k": 2}
    assert [p.name for p in (tmp_path / "t").iterdir()] == [f"v{store.suffix}"]


def test_partial_entries_are_detected(tmp_path):
    z = open_store("zarr", tmp_path / "z")
    z.write_entry("t", "v", {"cqt": np.zeros((3000, 4), np.float16)}, {})
    chunks = sorted(p for p in (z.entry_path("t", "v") / "cqt" / "c").rglob("*") if p.is_file())
    assert len(chunks) == 3
    chunks[-1].unlink()
    assert not z.is_valid("t", "v")
    h = open_store("hdf5", tmp_path / "h")
    h.write_entry("t", "v", {"cqt": np.zeros((3000, 4), np.float16)}, {})
    path = h.entry_path("t", "v")
    path.write_bytes(path.read_bytes()[:2000])
    assert not h.is_valid("t", "v")
