"""Chord decoding (Viterbi, JAMS output) and scoring against mir_eval itself."""

import jams
import mir_eval
import numpy as np
import pytest
import torch

from mirpipe.models import chord
from mirpipe.models.chord_net import ChordNet, loss, metric

FRAME_RATE = 22050 / 2048


def _frames(n):
    return np.arange(n) / FRAME_RATE


def test_self_transition_is_estimated_from_label_runs():
    seqs = [np.array([5] * 10 + [7] * 10), np.array([5, 5, chord.IGNORE, 5, 5])]
    p = chord.self_transition(seqs, prior_weight=0.0)
    assert np.isclose(p[5], 9 / 10 * 0 + (9 + 2) / (10 + 2))  # 5->5 eleven times out of twelve
    assert np.isclose(p[7], 1.0 - 1e-3)  # clipped: a class that never left
    shrunk = chord.self_transition(seqs, prior_weight=10.0)
    overall = (9 + 2 + 9) / (10 + 2 + 9)
    assert np.isclose(shrunk[100], overall)  # unseen classes fall back to the global rate


def test_viterbi_removes_single_frame_flicker_that_argmax_keeps():
    n = 60
    truth = np.array([0] * 30 + [14] * 30)  # C:maj then C#:maj
    post = np.full((n, chord.N_TAGS), 0.1 / chord.N_TAGS)
    post[np.arange(n), truth] = 0.6
    flicker = [5, 12, 40, 47]
    post[flicker, 100] = 0.7  # isolated frames where another class wins
    assert set(np.flatnonzero(post.argmax(1) != truth)) == set(flicker)
    p_self = np.full(chord.N_TAGS, 0.95)
    assert np.array_equal(chord.viterbi_tags(post, p_self), truth)


def test_decoded_annotation_is_valid_jams_with_mir_eval_labels():
    tags = np.array([chord.TAG_N] * 5 + list(range(chord.N_TAGS)) + [chord.TAG_X] * 3)
    times = _frames(len(tags))
    duration = float(times[-1] + 1 / FRAME_RATE)
    post = np.eye(chord.N_TAGS)[tags]
    ann = chord.decode(post, times, duration, p_self=None)
    jam = jams.JAMS(file_metadata={"duration": duration})
    jam.annotations.append(ann)
    jam.validate(strict=True)
    labels = [obs.value for obs in ann.data]
    assert len(labels) == chord.N_TAGS + 1  # N, every class once, then X: a segment per run
    for label in labels:
        mir_eval.chord.encode(label)
    assert np.isclose(sum(obs.duration for obs in ann.data), duration)
    assert labels[1:-1] == [chord.tag_to_label(t) for t in range(chord.N_TAGS) if t not in (chord.TAG_N, chord.TAG_X)] + ["N"]


def test_scores_equal_mir_eval_chord_evaluate():
    ref = jams.Annotation("chord", duration=8.0)
    for t, label in enumerate(["C:maj", "A:min7", "F:maj/3", "G:7", "N", "D:hdim7", "E:sus4", "C:maj"]):
        ref.append(time=float(t), duration=1.0, value=label)
    est = jams.Annotation("chord", duration=8.0)
    for t, d, label in [(0, 1.5, "C:maj"), (1.5, 1.0, "A:min"), (2.5, 2.0, "F:maj"), (4.5, 1.5, "N"), (6, 2, "C:maj")]:
        est.append(time=float(t), duration=float(d), value=label)
    ours = chord.score(ref, est)
    ref_int, ref_lab = ref.to_interval_values()
    est_int, est_lab = est.to_interval_values()
    theirs = mir_eval.chord.evaluate(ref_int, ref_lab, est_int, est_lab)
    for name in chord.METRICS:
        assert np.isclose(ours[name]["score"], theirs[name]), name
    assert 0 < ours["root"]["score"] < 1


def test_structured_and_tag_only_networks_cr1_cr2():
    batch = {
        "cqt": torch.randn(2, 40, 216) - 60,
        "targets/chord_root": torch.randint(0, 13, (2, 40)),
        "targets/chord_bass": torch.randint(0, 13, (2, 40)),
        "targets/chord_pitches": torch.randint(0, 2, (2, 40, 12)),
        "targets/chord_tag": torch.randint(0, 170, (2, 40)),
    }
    batch["targets/chord_tag"][0] = chord.IGNORE  # ignored frames count nowhere
    for arch in ("cr1", "cr2"):
        for structured in (True, False):
            net = ChordNet(architecture=arch, structured=structured, hidden=16)
            out = net(batch["cqt"])
            assert out["tag"].shape == (2, 40, 170)
            assert ("root" in out) == structured and ("pitches" in out) == structured
            total, parts = loss(out, batch)
            total.backward()
            assert set(parts) == ({"tag", "root", "bass", "pitches"} if structured else {"tag"})
            assert metric(out, batch)[1] == 40  # only the second sequence is labelled
    cr2 = sum(p.numel() for p in ChordNet(architecture="cr2").parameters())
    cr1 = sum(p.numel() for p in ChordNet(architecture="cr1").parameters())
    assert cr2 > cr1  # the second recurrent layer


def _annotation(segments, duration):
    ann = jams.Annotation("chord", duration=duration)
    for t, d, label in segments:
        ann.append(time=float(t), duration=float(d), value=label)
    return ann


def test_segmentation_scores_merge_repeated_reference_labels_like_mir_eval():
    # one label per bar in the reference, one per chord in the estimate: the same segmentation
    ref = _annotation([(0, 1, "C:maj"), (1, 1, "C:maj"), (2, 1, "G:maj"), (3, 1, "G:maj")], 4.0)
    est = _annotation([(0, 2, "C:maj"), (2, 2, "G:maj")], 4.0)
    ours = chord.score(ref, est)
    ref_int, ref_lab = ref.to_interval_values()
    est_int, est_lab = est.to_interval_values()
    theirs = mir_eval.chord.evaluate(ref_int, ref_lab, est_int, est_lab)
    for name in ("seg", "overseg", "underseg"):
        assert ours[name]["score"] == pytest.approx(theirs[name]), name
    assert ours["seg"]["score"] == pytest.approx(1.0)
    assert ours["seg"]["weight"] == pytest.approx(4.0)


def test_pooled_scores_weight_each_track_by_the_seconds_mir_eval_counts():
    from mirpipe.models.task import pool_weighted

    a = chord.score(_annotation([(0, 2, "C:maj")], 2.0), _annotation([(0, 2, "C:maj")], 2.0))  # root 1 over 2 s
    b = chord.score(_annotation([(0, 6, "D:maj")], 6.0), _annotation([(0, 6, "E:maj")], 6.0))  # root 0 over 6 s
    assert pool_weighted([a, b], ["root"])["root"] == pytest.approx(2 / 8)


@pytest.mark.parametrize("seed", range(40))
def test_decoded_intervals_never_overlap_whatever_the_frame_times(seed):
    """Frame times from real hops and a duration that is not a whole number of frames: each
    decoded segment must end at or before the next one starts, as mir_eval requires."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    sr, hop = 22050, int(rng.choice([256, 512, 2048]))
    times = np.arange(n) * hop / sr
    duration = float(n * hop / sr - rng.uniform(0, hop / sr))
    tags = np.repeat(rng.integers(0, chord.N_TAGS, size=n // 2 + 1), 2)[:n]
    ann = chord.tags_to_annotation(tags, times, duration)
    intervals, labels = ann.to_interval_values()
    intervals = np.asarray(intervals)
    assert np.all(intervals[:-1, 1] <= intervals[1:, 0])
    mir_eval.chord.evaluate(intervals, labels, intervals, labels)  # raises on any overlap
