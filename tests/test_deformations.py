"""Audio deformations beyond pitch (``augment.deformations``): muda's dynamic range compression,
coloured noise and impulse-response convolution, stored as extra variants of each entry. The
annotations follow (times move by the IR's group delay; labels never change); the audio keeps its
length; training draws the deformed variants, evaluation reads the original ones."""

from __future__ import annotations

import shutil

import jams
import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_CHORD, parse_cluster, small_config

from mirpipe.audio.deformations import DEFORMATIONS, TrackDeformation, label_of, synthetic_room, validate_deformation
from mirpipe.shifts import AugmentParams
from mirpipe.storage.stream import resolve_shift

SR = 22050
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="no 'sox' program (scripts/system-deps.sh installs it)")


@pytest.fixture(scope="module")
def jam():
    jam = jams.JAMS()
    jam.file_metadata.duration = 4.0
    chords = jams.Annotation("chord", time=0, duration=4.0)
    for i, label in enumerate(["C:maj", "A:min", "F:maj7", "N"]):
        chords.append(time=float(i), duration=1.0, value=label)
    jam.annotations.append(chords)
    contour = jams.Annotation("pitch_contour", time=0, duration=4.0)
    for t in np.arange(0.5, 1.5, 0.25):
        contour.append(time=float(t), duration=0.0, value={"index": 0, "frequency": 220.0, "voiced": True})
    jam.annotations.append(contour)
    return jam


def _observations(jam, ns):
    return [(o.time, o.duration, o.value) for o in jam.search(namespace=ns)[0].data]


def _music(seconds=4.0, seed=0):
    """Loud and quiet halves of chords with onsets: something to compress, mask and reverberate."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    y = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    y *= np.exp(-3 * (t % 0.5))  # an onset every half second
    y[len(y) // 2 :] *= 0.05  # a quiet second half
    return (0.8 * y + 1e-4 * rng.standard_normal(len(y))).astype(np.float32)


def _rms(y):
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))


# -- settings -----------------------------------------------------------------------------------


def test_settings_are_validated_before_any_work():
    assert DEFORMATIONS.names() == ["drc", "noise", "ir"]
    with pytest.raises(ValueError, match="deformations are: drc, noise, ir"):
        AugmentParams(deformations=[{"kind": "chorus"}])
    with pytest.raises(ValueError, match="either file .* or rt60_s"):
        AugmentParams(deformations=[{"kind": "ir"}])
    with pytest.raises(ValueError, match="nowhere.wav: no such file"):
        AugmentParams(deformations=[{"kind": "ir", "file": "/nowhere.wav"}])
    with pytest.raises(ValueError, match="weight"):
        AugmentParams(deformations=[{"kind": "noise", "weight": [0.5, 0.1]}])
    with pytest.raises(ValueError, match="must differ"):
        AugmentParams(deformations=[{"kind": "ir", "rt60_s": 0.5}, {"kind": "ir", "rt60_s": 0.5}])
    aug = AugmentParams(deformations=[{"kind": "noise"}, {"kind": "ir", "rt60_s": 0.5}])
    assert aug.stored_variants() == [0, 0, 0] and aug.variant_deformations() == [None, "noise:pink:0.05-0.3", "room:0.5s:0dB"]
    audio = AugmentParams(mode="audio", shifts=[-1, 0, 2], deformations=[{"kind": "noise"}])
    assert audio.stored_variants() == [-1, 0, 2, 0] and audio.variant_deformations() == [None, None, None, "noise:pink:0.05-0.3"]
    assert AugmentParams(enabled=False, deformations=[{"kind": "noise"}]).stored_variants() == [0]


def test_drc_needs_sox_and_says_so(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="needs the 'sox' program"):
        AugmentParams(deformations=[{"kind": "drc", "preset": "radio"}])


def test_no_deformations_leave_the_fingerprints_as_they_were():
    """A store computed before deformations existed is not recomputed: the fingerprint inputs
    without any are the dict they always were."""
    aug = AugmentParams()
    assert aug.variants_identity() == {"variants": [0], "backend": None}
    assert AugmentParams(mode="audio", shifts=[0, 2]).variants_identity() == {"variants": [0, 2], "backend": "librosa"}
    assert "deformations" in AugmentParams(deformations=[{"kind": "noise"}]).variants_identity()


# -- each deformation: audio and annotations ------------------------------------------------------


def test_ir_convolution_moves_every_time_by_the_group_delay(jam, tmp_path):
    """A measured response that is a pure 0.1-s delay: muda's group delay is 0.1 s, the audio
    arrives 0.1 s later with its length kept, and every observation moves by exactly that."""
    ir = np.zeros(SR // 2, np.float32)
    ir[int(0.1 * SR)] = 1.0
    sf.write(tmp_path / "delay.wav", ir, SR, subtype="FLOAT")
    params = validate_deformation({"kind": "ir", "file": str(tmp_path / "delay.wav")})
    d = TrackDeformation(params, "t0", SR)
    assert d.label == "ir:delay" and d.state["ir_groupdelay"] == pytest.approx(0.1, abs=1e-4)
    y = _music()
    out = d.audio(y)
    assert out.shape == y.shape
    lag = int(0.1 * SR)
    np.testing.assert_allclose(out[lag:], y[:-lag], atol=1e-5)
    moved = d.annotations(jam)
    for ns in ("chord", "pitch_contour"):
        before, after = _observations(jam, ns), _observations(moved, ns)
        assert [v for *_, v in after] == [v for *_, v in before]  # labels unchanged
        assert [t for t, *_ in after] == pytest.approx([t + 0.1 for t, *_ in before], abs=1e-4)
    assert _observations(jam, "chord")[0][0] == 0.0  # the source is untouched
    assert moved.sandbox.muda["history"][-1]["state"]["ir_groupdelay"] == d.state["ir_groupdelay"]


def test_a_synthetic_room_reverberates_and_annotations_follow_its_delay(jam):
    room = synthetic_room(SR, 0.8, 0.0)
    assert room[0] == 1.0 and np.sum(room[1:] ** 2) == pytest.approx(1.0, rel=1e-3)  # 0 dB direct-to-reverberant
    tail = room[int(0.4 * SR) :]
    assert _rms(tail) < _rms(room[int(0.01 * SR) : int(0.1 * SR)]) / 10  # 30 dB down at half the RT60
    d = TrackDeformation(validate_deformation({"kind": "ir", "rt60_s": 0.8}), "t0", SR)
    y = _music()
    out = d.audio(y)
    assert out.shape == y.shape
    half = len(y) // 2
    y[half:] = 0.0
    out = d.audio(y)
    after = slice(half + SR // 20, half + SR // 4)  # right after the music stops, the room rings on
    assert _rms(out[after]) > 0.05 * _rms(y[:half]) and not np.any(y[after])
    delay = d.state["ir_groupdelay"]
    moved = d.annotations(jam)
    assert [t for t, *_ in _observations(moved, "chord")] == pytest.approx([t + delay for t, *_ in _observations(jam, "chord")])


@needs_sox
def test_drc_compresses_without_moving_anything(jam):
    d = TrackDeformation(validate_deformation({"kind": "drc", "preset": "radio"}), "t0", SR)
    y = _music()
    out = d.audio(y)
    assert out.shape == y.shape and out.dtype == np.float32
    half = len(y) // 2
    ratio_in = _rms(y[:half]) / _rms(y[half:])
    ratio_out = _rms(out[:half]) / _rms(out[half:])
    assert ratio_out < ratio_in / 2  # the quiet half is brought up: the dynamic range shrinks
    # aligned: the output correlates best with the input at lag 0 (sox compensates its look-ahead)
    seg = slice(SR // 4, SR)
    corr = {lag: float(np.dot(out[seg.start + lag : seg.stop + lag], y[seg])) for lag in (-220, -22, 0, 22, 220)}
    assert max(corr, key=corr.get) == 0
    assert _observations(d.annotations(jam), "chord") == _observations(jam, "chord")


def test_noise_is_mixed_at_the_drawn_weight_and_seeded_by_track(jam):
    params = validate_deformation({"kind": "noise", "color": "brownian", "weight": [0.1, 0.2]})
    a, b, c = TrackDeformation(params, "t0", SR), TrackDeformation(params, "t0", SR), TrackDeformation(params, "t1", SR)
    assert a.state == b.state and a.state != c.state
    assert 0.1 <= a.state["weight"] <= 0.2
    y = _music()
    out = a.audio(y)
    np.testing.assert_array_equal(out, b.audio(y))
    assert out.shape == y.shape
    noise = (out - (1 - a.state["weight"]) * y) / a.state["weight"]
    assert np.max(np.abs(noise)) == pytest.approx(np.max(np.abs(y)), rel=1e-4)  # at the recording's own peak
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    assert spectrum[10:100].mean() > 100 * spectrum[-1000:].mean()  # brown: the low end dominates
    assert _observations(a.annotations(jam), "chord") == _observations(jam, "chord")
    assert not np.array_equal(a.audio(y, offset=SR), out)  # a block further on draws other noise


def test_labels_name_the_settings():
    assert label_of(validate_deformation({"kind": "drc", "preset": "film light"})) == "drc:film-light"
    assert label_of(validate_deformation({"kind": "ir", "rt60_s": 1.2, "direct_to_reverberant_db": 6})) == "room:1.2s:6dB"


# -- the stream resolves deformed variants ---------------------------------------------------------


def test_resolve_shift_picks_the_original_unless_a_deformation_is_asked_for():
    attrs = {"track": "t", "mode": "feature", "variants": [0, 0, 0], "deformations": [None, "drc:radio", "room:1s:0dB"]}
    assert resolve_shift(attrs, 0) == (0, 0)
    assert resolve_shift(attrs, 3) == (0, 3)
    assert resolve_shift(attrs, 3, "room:1s:0dB") == (2, 3)  # feature mode: a bin offset of the deformed variant
    audio = {"track": "t", "mode": "audio", "variants": [-2, 0, 2, 0], "deformations": [None, None, None, "drc:radio"]}
    assert resolve_shift(audio, 2) == (2, 0) and resolve_shift(audio, 0) == (1, 0)
    assert resolve_shift(audio, 2, "drc:radio") == (3, 0)  # audio mode: the deformed variant is read unshifted
    with pytest.raises(ValueError, match="no variant of deformation 'noise:pink:0.05-0.3'.*rerun features"):
        resolve_shift(attrs, 0, "noise:pink:0.05-0.3")
    assert resolve_shift({"variants": [0]}, 1) == (0, 1)  # an entry from before deformations


# -- through the real pipeline ----------------------------------------------------------------------


def _deformed_config(**augment):
    data = small_config(tracks=5, shifts=[0, 2]).model_dump(mode="json")
    data["synthesize"].update(solo_fraction=0.0, min_duration=5.0, max_duration=6.0)
    data["augment"].update(deformations=[{"kind": "ir", "rt60_s": 0.6}, {"kind": "noise", "color": "white"}], **augment)
    data["train"] = {**data["train"], **TINY_CHORD}
    data["evaluate"] = {**data["evaluate"], "tasks": ["chord"], "figures": 0, "baselines": False}
    return type(small_config()).model_validate(data)


@pytest.fixture(scope="module")
def deformed_workdir(tmp_path_factory):
    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.runner import Runner

    root = tmp_path_factory.mktemp("deformed")
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        reports = {r.stage: r for r in Runner(root, _deformed_config(), progress=False).run(ex)}
    for stage in ("features", "train", "evaluate"):
        assert reports[stage].done >= 1 and not reports[stage].failed, reports[stage].failures
    return root


def _tracks(workdir):
    from mirpipe.pipeline.ledger import Ledger

    return sorted(Ledger(workdir).done("features"))


def test_entries_store_one_variant_per_deformation_with_targets_that_follow(deformed_workdir):
    from mirpipe.storage import open_store

    store = open_store("zarr", deformed_workdir / "features")
    for track in _tracks(deformed_workdir):
        attrs = store.read_attrs(track)
        assert attrs["variants"] == [0, 0, 0] and attrs["deformations"] == [None, "room:0.6s:0dB", "noise:white:0.05-0.3"]
        entry = store.read_entry(track)
        cqt = entry.arrays["cqt"]
        assert cqt.shape[0] == 3
        assert not np.array_equal(cqt[0], cqt[1]) and not np.array_equal(cqt[0], cqt[2])
        tags = entry.arrays["targets/chord_tag"]
        np.testing.assert_array_equal(tags[2], tags[0])  # noise moves no label
        room = TrackDeformation(validate_deformation({"kind": "ir", "rt60_s": 0.6}), track, 22050)
        delay = room.state["ir_groupdelay"]
        # the targets of the reverberated variant are the original's encoded at times moved by the delay
        import librosa

        from mirpipe.models.task import TASKS

        hop = attrs["features"]["cqt"]["hop_length"]
        times = librosa.frames_to_time(np.arange(tags.shape[1]), sr=22050, hop_length=hop)
        jam = jams.load(str(deformed_workdir / "corpus" / f"{track}.jams"), validate=False)
        moved = TASKS.get("chord").targets.encode(room.annotations(jam), times)["chord_tag"]
        np.testing.assert_array_equal(tags[1], moved)
        if abs(delay) >= hop / 22050:  # and they differ from the original's where a chord changes
            assert not np.array_equal(tags[1], tags[0])


def test_training_draws_deformed_variants_and_evaluation_reads_the_original(deformed_workdir):
    from mirpipe.models.task import TASKS
    from mirpipe.pipeline.ledger import Ledger
    from mirpipe.storage.stream import EntryKey, StreamSpec, random_patches, read_slab

    train = Ledger(deformed_workdir).done("train")["chord"]
    assert train["record"]["finished"]
    track = _tracks(deformed_workdir)[0]
    from mirpipe.storage import open_store

    n = open_store("zarr", deformed_workdir / "features").read_entry(track).arrays["cqt"].shape[1]
    labels = ("room:0.6s:0dB", "noise:white:0.05-0.3")
    task = TASKS.get("chord")
    root = str(deformed_workdir / "features")
    spec = StreamSpec("zarr", root, "cqt", task.targets.arrays, 16, 4096, shifts=(0,), task=task, deformations=labels)
    key = EntryKey(track, n)
    whole = [read_slab(spec, key, 0, n, 0, d).patch("cqt", 0, n)["cqt"] for d in (None, *labels)]
    sources = []
    for seed in range(40):
        patch = next(random_patches(spec, key, seed))["cqt"]
        sources.append(next(i for i, w in enumerate(whole) if any(np.array_equal(patch, w[s : s + 16]) for s in range(n - 15))))
    assert 0.25 < np.mean([s > 0 for s in sources]) < 0.75 and {0, 1, 2} <= set(sources)
    # without deformations in the spec, every patch is of the original audio, as before them
    plain = StreamSpec("zarr", root, "cqt", task.targets.arrays, 16, 4096, shifts=(0,), task=task)
    for seed in range(5):
        patch = next(random_patches(plain, key, seed))["cqt"]
        assert any(np.array_equal(patch, whole[0][s : s + 16]) for s in range(n - 15))


def test_the_share_retrains_only_and_other_deformations_recompute_the_store(deformed_workdir):
    from mirpipe.pipeline.runner import Runner

    def pending(cfg, stage):
        return [item.id for item, _ in Runner(deformed_workdir, cfg, progress=False).plan(stage).todo]

    assert pending(_deformed_config(), "features") == [] and pending(_deformed_config(), "train") == []
    share = _deformed_config(deform_share=0.3)
    assert pending(share, "features") == [] and pending(share, "train") == ["chord"]
    per_task = _deformed_config()
    per_task.train.overrides["chord"] = {"deform_share": 0.0}
    assert pending(per_task, "features") == [] and pending(per_task, "train") == ["chord"]
    other = _deformed_config()
    other.augment.deformations[1] = validate_deformation({"kind": "noise", "color": "pink"})
    assert pending(other, "features") == _tracks(deformed_workdir)


def test_an_experiment_cannot_change_what_the_store_holds():
    from mirpipe.errors import ConfigurationError
    from mirpipe.pipeline.experiments import experiment_config

    base = small_config(tracks=2, shifts=[0, 2])
    with pytest.raises(ConfigurationError, match="augment.deformations decide what the store holds"):
        experiment_config(base, {"augment.deformations": [{"kind": "ir", "rt60_s": 0.5}]}, "reverb")


def test_audio_mode_stores_the_shifts_then_the_deformations(deformed_workdir):
    """In audio mode the shifted originals come first, each deformation after them, unshifted; the
    deformed variant's targets are the original's (noise moves nothing), the shifted ones moved."""
    from mirpipe.stages.features import FeaturesParams, compute_entry

    track = _tracks(deformed_workdir)[0]
    corpus = deformed_workdir / "corpus"
    audio = next(p for p in corpus.glob(f"{track}.*") if p.suffix != ".jams")
    aug = AugmentParams(mode="audio", shifts=[0, 2], deformations=[{"kind": "noise", "color": "white"}])
    arrays, attrs, timings = compute_entry(str(audio), str(corpus / f"{track}.jams"), FeaturesParams(tasks=["chord"]), aug)
    assert attrs["variants"] == [0, 2, 0] and attrs["deformations"] == [None, None, "noise:white:0.05-0.3"]
    assert arrays["cqt"].shape[0] == 3 and timings["deform"] > 0
    roots = arrays["targets/chord_root"]
    np.testing.assert_array_equal(roots[2], roots[0])
    voiced = roots[0] < 12
    np.testing.assert_array_equal(roots[1][voiced], (roots[0][voiced] + 2) % 12)


def test_a_task_may_read_other_shares_of_the_deformed_variants():
    from mirpipe.stages.train import TrainParams

    aug = AugmentParams(deformations=[{"kind": "noise"}, {"kind": "ir", "rt60_s": 0.5}], deform_share=0.4)
    p = TrainParams(overrides={"instrument": {"deform_share": 0}, "pitch": {"deform_share": 1}})
    assert p.deformed(aug) == (("noise:pink:0.05-0.3", "room:0.5s:0dB"), 0.4)
    assert p.for_task("instrument").deformed(aug) == ((), 0.0)  # the original audio only
    assert p.for_task("pitch").deformed(aug)[1] == 1.0
    assert TrainParams().deformed(AugmentParams()) == ((), 0.0)  # no deformations stored
    with pytest.raises(ValueError, match="deform_share"):
        TrainParams(deform_share=1.5)


def test_a_config_without_deformations_does_not_import_muda():
    """muda and jams take seconds to import; every CLI call and worker that validates a recorded
    config (``deformations: []``) or computes a fingerprint would pay it."""
    import subprocess
    import sys

    code = (
        "import sys; from mirpipe.shifts import AugmentParams; a = AugmentParams.model_validate({'deformations': []}); "
        "a.variants_identity(); a.variant_deformations(); a.deformation_labels(); "
        "print('mirpipe.audio.deformations' in sys.modules, 'muda' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
