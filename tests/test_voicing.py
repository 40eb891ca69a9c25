"""The pitch voicing decision: a classifier on the salience map, fitted on validation tracks, that stays
unvoiced on a note's decaying tail and on a weak accompaniment line where a peak threshold fires.

The salience maps are constructed: a melody of three notes, each followed by a decaying tail at its
pitch (the reference is unvoiced there), over an accompaniment line an octave and more below that
plays throughout (unvoiced too). Quiet tracks and loud tracks are mixed, so no single peak threshold
keeps a quiet melody and drops a loud track's accompaniment and tails."""

from __future__ import annotations

import numpy as np
import pytest

from mirpipe.models import salience as sal
from mirpipe.models.pitch import PitchDecoder, PitchDecoding

GRID = sal.Grid()
T = 300
NOTES = ((20, 70), (95, 145), (170, 220))
TAIL = 20  # frames of decay after each note off


def _bump(s: np.ndarray, frames: slice | np.ndarray, b: int, height) -> None:
    k = np.arange(GRID.n_bins)
    s[frames] = np.maximum(s[frames], np.asarray(height, float).reshape(-1, 1) * np.exp(-0.5 * (k - b) ** 2))


def make_track(rng: np.random.Generator, level: float, accompaniment: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """(salience (T, bins) float32, reference f0 per frame, frame masks: melody, tail, accompaniment alone)."""
    s = rng.uniform(0.0, 0.02, (T, GRID.n_bins))
    f0 = np.zeros(T)
    melody, tail = np.zeros(T, bool), np.zeros(T, bool)
    for a, b in NOTES:
        pitch = int(rng.integers(190, 240))
        _bump(s, slice(a, b), pitch, level * rng.uniform(0.9, 1.0, b - a))
        f0[a:b] = GRID.hz_of(pitch)
        melody[a:b] = True
        decay = 0.6 * level * np.exp(-np.arange(TAIL) / 6.0)
        _bump(s, slice(b, b + TAIL), pitch, decay)
        tail[b : b + TAIL] = True
    for a in range(0, T, 50):  # an accompaniment line, a new note every 50 frames
        _bump(s, slice(a, a + 50), int(rng.integers(100, 130)), accompaniment * rng.uniform(0.9, 1.0, 50))
    alone = ~melody & ~tail
    return s.astype(np.float32), f0, {"melody": melody, "tail": tail & (np.arange(T) < T), "alone": alone}


def validation_set(seed: int = 0, n: int = 12):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        level = (0.3, 0.35, 0.85)[i % 3]
        out.append(make_track(rng, level, accompaniment=0.5 * level))
    return out


@pytest.fixture(scope="module")
def tuned():
    tracks = validation_set()
    voicing, accuracy = sal.tune_voicing(((s, f0) for s, f0, _ in tracks), GRID)
    outcomes = []
    for s, f0, _ in tracks:
        peak, hz = sal.peak_frequency(s, GRID)
        outcomes.append(sal.frame_outcomes(peak, hz, f0))
    threshold, peak_accuracy = sal.tune_threshold(outcomes)
    return voicing, accuracy, threshold, peak_accuracy


def test_classifier_is_unvoiced_on_tails_and_accompaniment_where_the_peak_threshold_fires(tuned):
    voicing, accuracy, threshold, peak_accuracy = tuned
    assert accuracy > peak_accuracy + 0.05  # on the validation tracks themselves
    rng = np.random.default_rng(123)
    for level in (0.3, 0.85):  # a quiet track and a loud one, not among the validation tracks
        s, f0, m = make_track(rng, level, accompaniment=0.5 * level)
        _, by_peak = sal.decode_f0(s, threshold, GRID)
        _, by_classifier = sal.decode_f0(s, threshold, GRID, voicing=voicing)
        assert by_classifier[m["melody"]].mean() > 0.9
        assert by_classifier[m["tail"]].mean() < 0.25
        assert by_classifier[m["alone"]].mean() < 0.1
        if level > 0.5:  # the peak threshold that keeps quiet melodies fires on a loud track's tail and line
            assert by_peak[m["tail"]].mean() > 0.5
            assert by_peak[m["alone"]].mean() > 0.9
        else:
            assert by_peak[m["melody"]].mean() > 0.9


def test_the_classifier_and_its_threshold_come_from_the_validation_data(tuned):
    voicing, accuracy, _, _ = tuned
    tracks = validation_set()
    # the threshold is the grid's best frame overall accuracy on the validation frames (ties: lowest)
    x = np.concatenate([sal.voicing_features(s, GRID) for s, _, _ in tracks])
    prob = sal._sigmoid(
        ((x - np.array(voicing["mean"])) / np.array(voicing["scale"])) @ np.array(voicing["weights"]) + voicing["bias"]
    )
    outcomes = [sal.frame_outcomes(*sal.peak_frequency(s, GRID), f0) for s, f0, _ in tracks]
    correct = np.concatenate([o[1] for o in outcomes])
    voiced = np.concatenate([o[2] for o in outcomes])
    curve = sal.overall_accuracy_curve(prob, correct, voiced, sal.VOICING_THRESHOLDS)
    assert voicing["threshold"] == pytest.approx(float(sal.VOICING_THRESHOLDS[int(np.argmax(curve))]))
    assert accuracy == pytest.approx(curve.max())
    # validation data that call the accompaniment voiced teach a classifier that calls it voiced
    relabelled = []
    for s, f0, m in tracks:
        f = f0.copy()
        f[m["alone"]] = GRID.hz_of(np.argmax(s[m["alone"]], axis=1))
        relabelled.append((s, f))
    other, _ = sal.tune_voicing(relabelled, GRID)
    s, _, m = make_track(np.random.default_rng(7), 0.85, 0.425)
    assert sal.decode_f0(s, 0.5, GRID, voicing=other)[1][m["alone"]].mean() > 0.9
    assert sal.decode_f0(s, 0.5, GRID, voicing=voicing)[1][m["alone"]].mean() < 0.1


def test_fitting_and_decoding_are_deterministic(tuned):
    voicing = tuned[0]
    again, _ = sal.tune_voicing(((s, f0) for s, f0, _ in validation_set()), GRID)
    assert again == voicing
    s, _, _ = make_track(np.random.default_rng(5), 0.55, 0.3)
    a = sal.decode_f0(s, 0.1, GRID, viterbi_sigma_bins=2.0, voicing=voicing)
    b = sal.decode_f0(s.copy(), 0.1, GRID, viterbi_sigma_bins=2.0, voicing=voicing)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_validation_rows_give_the_tracks_back():
    """Consecutive patches of each track, its last one padded (f0 < 0), as ``track_patches`` cuts them."""
    rng = np.random.default_rng(1)
    lengths = (150, 64, 70)
    tracks = [(rng.uniform(size=(n, 4)), rng.uniform(1, 2, n)) for n in lengths]
    rows = []
    for s, f0 in tracks:
        n_pad = -(-len(f0) // 64) * 64
        s = np.vstack([s, np.zeros((n_pad - len(f0), 4))])
        f0 = np.concatenate([f0, -np.ones(n_pad - len(f0))])
        rows += [(s[a : a + 64], f0[a : a + 64]) for a in range(0, n_pad, 64)]
    back = list(sal.validation_tracks(rows))
    # the 64-frame track ends at a patch boundary, unpadded: it comes back joined to the next
    assert [len(f) for _, f in back] == [150, 134]
    assert np.array_equal(back[0][0], tracks[0][0]) and np.array_equal(back[1][1], np.concatenate([tracks[1][1], tracks[2][1]]))


def test_the_decoder_tunes_the_classifier_and_decodes_with_it(tuned):
    torch = pytest.importorskip("torch")

    class Logits(torch.nn.Module):  # a "network" whose input is already its output's logits
        def forward(self, x):
            return x

    tracks = validation_set(n=6)
    batches = []
    for s, f0, _ in tracks:
        logits = torch.logit(torch.from_numpy(s).clamp(1e-4, 1 - 1e-4))
        # two patches per track, the last padded (as track_patches cuts them)
        pad = 320 - T
        x = torch.cat([logits, torch.zeros(pad, GRID.n_bins)]).reshape(2, 160, GRID.n_bins)
        f = torch.cat([torch.from_numpy(f0), -torch.ones(pad, dtype=torch.float64)]).float().reshape(2, 160)
        batches.append({"hcqt": x, "targets/f0_hz": f})
    decoder = PitchDecoder()
    state = decoder.tune(Logits(), batches, "cpu")
    assert {"threshold", "voicing", "val_overall_accuracy", "val_overall_accuracy_voicing"} <= set(state)
    assert state["val_overall_accuracy_voicing"] > state["val_overall_accuracy"]

    s, _, m = make_track(np.random.default_rng(9), 0.85, 0.425)
    times = np.arange(T) * 256 / 22050
    duration = T * 256 / 22050

    def voiced(state, **options):
        _, hz = sal.contour_arrays(decoder.decode(s, times, duration, state, PitchDecoding(**options)))
        return hz > 0

    classifier = voiced(state, voicing="classifier")
    assert classifier[m["melody"]].mean() > 0.9 and classifier[m["alone"]].mean() < 0.1
    peak = voiced(state)  # the default: the peak threshold, as before
    assert peak[m["alone"]].mean() > 0.9
    assert np.array_equal(voiced(state, voicing="peak"), peak)
    old_checkpoint = {k: v for k, v in state.items() if k == "threshold"}
    assert np.array_equal(voiced(old_checkpoint, voicing="classifier"), peak)  # tuned before the classifier: the peak decides
    assert np.array_equal(voiced(state, voicing="classifier", threshold=state["threshold"]), peak)  # a threshold set: the peak


def test_the_default_voicing_leaves_existing_evaluations_done():
    """``voicing: peak`` decodes as before, so it is not in the evaluate item's identity (an upgrade
    rescores nothing); ``classifier`` is."""
    from mirpipe.models.pitch import PitchDecoding
    from mirpipe.models.settings import fingerprinted

    assert "voicing" not in fingerprinted(PitchDecoding())
    assert fingerprinted(PitchDecoding()) == PitchDecoding().model_dump(mode="json", exclude={"voicing"})
    assert fingerprinted(PitchDecoding(voicing="classifier"))["voicing"] == "classifier"
