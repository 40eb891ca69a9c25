"""The multipitch task: targets from notes, threshold tuning, decoding round trip, mir_eval.multipitch
scores, a tiny end to end."""

import json

import jams
import mir_eval
import numpy as np
import pytest

from mirpipe.models import multif0 as mf
from mirpipe.models import salience as sal
from mirpipe.models.task import TASKS, pool_weighted

TASK = TASKS.get("multipitch")
GRID = sal.Grid()
NOTES = "targets/notes_hz"
HOP = 256 / 22050


def _notes_jam(notes, duration):
    jam = jams.JAMS()
    jam.file_metadata.duration = duration
    ann = jams.Annotation("note_midi", time=0, duration=duration)
    for start, length, midi in notes:
        ann.append(time=start, duration=length, value=midi, confidence=1.0)
    jam.annotations.append(ann)
    return jam


# -- targets ----------------------------------------------------------------------------------


def test_sounding_notes_fill_each_frame_lowest_first_and_a_unison_counts_once():
    times = np.arange(100) * 0.01
    jam = _notes_jam([(0.1, 0.5, 60), (0.3, 0.5, 64), (0.3, 0.2, 60), (0.2, 0.05, 55.5)], 1.0)  # note_midi converted
    f = TASK.targets.encode(jam, times)["notes_hz"]
    assert f.shape == (100, mf.MAX_NOTES) and f.dtype == np.float32
    c4, e4, g3q = (440 * 2 ** ((m - 69) / 12) for m in (60, 64, 55.5))
    assert not f[:10].any() and (f[10, :2] == [np.float32(c4), 0]).all()  # start inclusive
    np.testing.assert_allclose(f[22, :3], [g3q, c4, 0], rtol=1e-6)
    np.testing.assert_allclose(f[35, :3], [c4, e4, 0], rtol=1e-6)  # C4 twice (two parts): one f0
    np.testing.assert_allclose(f[60, :2], [e4, 0], rtol=1e-6)  # C4 ended at 0.6 (end exclusive)
    assert not f[80:].any()
    assert (TASK.targets.encode(jams.JAMS(), times)["notes_hz"] == -1).all()  # no notes: no reference


def _salience(notes: np.ndarray) -> np.ndarray:
    """The salience target the trainer's device derives (``on_device``), as numpy."""
    import torch

    return TASK.network.on_device({NOTES: torch.from_numpy(notes)})["targets/salience"].numpy()


def test_the_multi_target_is_each_notes_20_cent_gaussian_and_shifts_move_it_exactly():
    f = np.zeros((3, mf.MAX_NOTES), np.float32)
    f[0, :2] = GRID.hz_of([100, 140])
    f[1, 0] = GRID.hz_of(220.5)
    f[2] = -1  # padding
    t = _salience(f)
    np.testing.assert_allclose(t, mf.multi_target(f), rtol=1e-6, atol=1e-7)  # the numpy reference
    assert t.shape == (3, 360)
    assert t[0, 100] == pytest.approx(1) == t[0, 140] and t[0, 101] == pytest.approx(np.exp(-0.5), rel=1e-5)
    np.testing.assert_allclose(t[0], np.maximum(sal.salience_target(f[0, 0]), sal.salience_target(f[0, 1])))
    assert t[1, 220] == pytest.approx(np.exp(-0.125), rel=1e-5) and not t[2].any()
    for n in (-4, 3):
        moved = TASK.targets.transpose({NOTES: f}, n)[NOTES]
        np.testing.assert_allclose(moved[f > 0], f[f > 0] * 2 ** (n / 12), rtol=1e-6)
        assert (moved[f <= 0] == f[f <= 0]).all()
        np.testing.assert_allclose(_salience(moved), np.roll(t, 5 * n, axis=-1), atol=2e-4)


# -- threshold, decoding -------------------------------------------------------------------


def _chords(rng, T):
    """(T, K) f0s: three voices holding notes a few semitones apart, some frames silent."""
    f = np.zeros((T, mf.MAX_NOTES), np.float32)
    for v, base in enumerate((48, 55, 64)):
        midi = base + np.repeat(rng.integers(0, 4, T // 40 + 1), 40)[:T] + rng.uniform(-0.3, 0.3)
        f[:, v] = 440 * 2 ** ((midi - 69) / 12)
    f[rng.random(T) < 0.1] = 0
    return f


def test_threshold_tuning_picks_the_best_accuracy_that_mir_eval_gives_the_decoded_peaks():
    rng = np.random.default_rng(0)
    T = 300
    ref = _chords(rng, T)
    s = mf.multi_target(ref) * rng.uniform(0.3, 1.0, (T, 1))  # weaker frames
    spur = rng.integers(0, 360, (T, 2))
    s[np.arange(T)[:, None], spur] = np.maximum(s[np.arange(T)[:, None], spur], rng.uniform(0.05, 0.6, (T, 2)))
    candidates = np.round(np.arange(0.05, 0.95, 0.05), 3)
    threshold, acc = mf.tune_threshold([mf.frame_matches(s[:120], ref[:120]), mf.frame_matches(s[120:], ref[120:])], candidates)
    times = np.arange(T) * 0.01
    ref_lists = [r[r > 0].astype(float) for r in ref]
    brute = [mir_eval.multipitch.evaluate(times, ref_lists, times, mf.peaks(s, c))["Accuracy"] for c in candidates]
    assert acc == pytest.approx(max(brute)) and threshold == candidates[int(np.argmax(brute))]
    assert 0.1 < threshold < 0.9


def test_a_salience_map_of_several_voices_decodes_back_within_10_cents_through_jams():
    rng = np.random.default_rng(1)
    T = 400
    ref = _chords(rng, T)
    times = np.arange(T) * HOP
    est = TASK.decoder.decode(mf.multi_target(ref) * 0.8, times, T * HOP, {"threshold": 0.3}, TASK.decoder.DecodeParams())
    est.validate()
    et, ef = mf.frames_of_estimate(est)
    np.testing.assert_allclose(et, times, atol=1e-9)
    for r, e in zip(ref, ef):
        r = r[r > 0]
        assert len(e) == len(r)
        assert len(r) == 0 or np.abs(1200 * np.log2(np.sort(e) / np.sort(r))).max() < 10.0


# -- scores --------------------------------------------------------------------------------


def test_pooled_scores_equal_mir_eval_per_track_and_over_the_concatenated_frames():
    rng = np.random.default_rng(2)
    lengths = [300, 170, 520]
    refs, ests, per_track = [], [], []
    for n in lengths:
        ref = _chords(rng, n)
        ref_lists = [r[r > 0].astype(float) for r in ref]
        est_lists = []
        for r in ref_lists:  # some notes missed, some an octave off, some spurious
            kept = r[rng.random(len(r)) > 0.2]
            kept = kept * 2.0 ** rng.choice([0.0, 0.0, 0.0, 1.0, 0.02], len(kept))
            est_lists.append(np.sort(np.concatenate([kept, rng.uniform(80, 800, rng.integers(0, 3))])))
        times = np.arange(n) * 0.01
        scores = mf.multipitch_scores(times, ref_lists, times, est_lists)
        expected = mir_eval.multipitch.evaluate(times, ref_lists, times, est_lists)
        for long, short in mf.SHORT.items():
            assert scores[short]["score"] == pytest.approx(expected[long], abs=1e-12)
        per_track.append(scores)
        refs += ref_lists
        ests += est_lists
    pooled = pool_weighted(per_track, mf.METRICS)
    times = np.arange(len(refs)) * 0.01
    together = mir_eval.multipitch.evaluate(times, refs, times, ests)
    for long, short in mf.SHORT.items():
        assert pooled[short] == pytest.approx(together[long], abs=1e-9), short


def test_task_scores_a_note_reference_against_a_frame_estimate_as_mir_eval_does():
    jam = _notes_jam([(0.1, 0.5, 60), (0.3, 0.5, 64), (0.7, 0.2, 67)], 1.0)
    ref = TASK.targets.reference(jam)
    T = int(np.ceil(1.0 / HOP))
    times = np.arange(T) * HOP
    f = TASK.targets.encode(jam, times)["notes_hz"]
    f[::5, 0] *= 2  # some octave errors
    est = mf.multif0_annotation(times, [r[r > 0] for r in f], HOP, 1.0)
    scores = TASK.scorer.score(ref, est)
    rt = np.arange(100) * 0.01
    rf = [r[r > 0].astype(float) for r in TASK.targets.encode(jam, rt)["notes_hz"]]
    expected = mir_eval.multipitch.evaluate(rt, rf, times, [r[r > 0].astype(float) for r in f])
    assert {k: v["score"] for k, v in scores.items()} == pytest.approx({mf.SHORT[k]: v for k, v in expected.items()})
    assert 0.6 < scores["Acc"]["score"] < 1.0 and scores["Acc_chroma"]["score"] > 0.95


# -- end to end ------------------------------------------------------------------------------


def test_tiny_multipitch_model_trains_and_scores(tmp_path, sync_cluster):
    import torch
    from conftest import small_config

    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.runner import Runner

    data = small_config(tracks=5, shifts=[0, 2]).model_dump(mode="json")
    data["features"] = {**data["features"], "tasks": ["multipitch"]}
    data["train"] = {
        **data["train"],
        "tasks": ["multipitch"],
        "threads": 1,
        "patch_frames": 32,
        "batch_size": 4,
        "n_active": 4,
        "rate": 4,
        "steps_per_epoch": 3,
        "max_epochs": 2,
        "checkpoint_every": 3,
        "models": {"multipitch": {"channels": [4], "tall_channels": 2, "tall_bins": 15}},
        "overrides": {"multipitch": {"lr": 0.01}},
    }
    data["evaluate"] = {**data["evaluate"], "tasks": ["multipitch"], "figures": 1}
    cfg = type(small_config()).model_validate(data)
    with open_executor(sync_cluster) as ex:
        reports = {r.stage: r for r in Runner(tmp_path, cfg, progress=False).run(ex)}
    assert reports["train"].done == 1 and reports["evaluate"].failed == 0 and reports["evaluate"].done >= 1
    ckpt = torch.load(tmp_path / "train" / "multipitch" / "best.pt", weights_only=True)
    assert 0 < ckpt["meta"]["state"]["threshold"] < 1
    out = tmp_path / "reports" / "multipitch"
    scores = json.loads((out / "scores.json").read_text())
    assert scores["columns"] == ["Acc", "P", "R", "Etot", "Acc_chroma"]
    for m in ("Acc", "P", "R"):
        assert 0.0 <= scores[m] <= 1.0
    track = sorted(scores["tracks"])[0]
    est = jams.load(str(out / "estimates" / f"{track}.jams"), validate=True, strict=True)
    assert est.annotations[0].namespace == "note_hz"
    assert (out / "figures" / f"{track}.png").read_bytes()[:4] == b"\x89PNG"
