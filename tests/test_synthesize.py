"""The demo corpus: deterministic, varied, and annotated exactly (checked from the audio)."""

import librosa
import mir_eval
import numpy as np
import pytest
import scipy.signal

from mirpipe.demo.timbres import INSTRUMENTS, TIMBRES
from mirpipe.demo.track import annotate, compose, contour, render
from mirpipe.models.chord import QUALITIES, encode_label

SR = 22050


def test_same_seed_same_track_other_seed_other_track():
    a = render(compose(3, 7, False, 20, 30), SR, 7, 3)
    b = render(compose(3, 7, False, 20, 30), SR, 7, 3)
    c = render(compose(3, 8, False, 20, 30), SR, 8, 3)
    assert np.array_equal(a, b)
    assert len(a) != len(c) or not np.allclose(a, c)


def test_scores_cover_the_vocabulary_inversions_and_timbres():
    scores = [compose(i, 0, i % 4 == 3, 20, 60) for i in range(40)]
    labels = [c.label for s in scores for c in s.chords]
    qualities = {lab.split(":")[1].split("/")[0] for lab in labels if lab != "N"}
    assert qualities == set(QUALITIES)
    assert any("/" in lab for lab in labels) and "N" in labels
    for s in scores:
        assert 20 <= s.duration <= 60
        for c in s.chords:
            assert 1.0 - 1e-9 <= c.end - c.start <= 4.0 + 1e-9
    used = {s.melody_instrument for s in scores} | {s.accompaniment for s in scores if s.accompaniment}
    assert len(TIMBRES) >= 6 and used == set(INSTRUMENTS)
    assert len({s.tempo for s in scores}) == len(scores) and len({s.key for s in scores}) > 6


def test_jams_validate_and_carry_every_namespace():
    s = compose(0, 0, False, 20, 30)
    jam = annotate(s, "demo-0000", solo=False)
    jam.validate(strict=True)
    assert {a.namespace for a in jam.annotations} == {"chord", "key_mode", "pitch_contour", "note_midi", "tag_open"}
    solo = annotate(compose(1, 0, True, 20, 30), "demo-0001", solo=True)
    solo.validate(strict=True)
    assert "chord" not in {a.namespace for a in solo.annotations}
    assert len(solo.search(namespace="tag_open")[0].data) == 1


@pytest.mark.parametrize("index", [0, 2, 5])
def test_each_chord_segment_sounds_its_label(index):
    """The k strongest pitch classes (k = chord size) of every segment are the label's."""
    s = compose(index, 0, False, 20, 40)
    y = render(s, SR, 0, index)
    # 36 bins/octave from C2, keep semitone centres: no leakage into neighbouring pitch classes.
    C = np.abs(librosa.cqt(y, sr=SR, hop_length=512, fmin=librosa.midi_to_hz(36), n_bins=96, bins_per_octave=36))[::3]
    times = librosa.frames_to_time(np.arange(C.shape[1]), sr=SR, hop_length=512)
    checked = 0
    for seg in s.chords:
        if seg.label == "N":
            continue
        frames = (times >= seg.start + 0.1) & (times < seg.end - 0.1)
        chroma = np.zeros(12)
        for b in range(C.shape[0]):
            chroma[(36 + b) % 12] += C[b, frames].mean()
        _, pcs, _, _ = encode_label(seg.label)
        k = int(pcs.sum())
        assert set(np.argsort(chroma)[-k:]) == set(np.flatnonzero(pcs)), (seg.label, np.round(chroma / chroma.max(), 2))
        checked += 1
    assert checked >= 5


def _pyin_against_contour(s, y):
    y = scipy.signal.sosfiltfilt(scipy.signal.butter(8, 480, "highpass", fs=SR, output="sos"), y)
    f0, voiced, _ = librosa.pyin(y, fmin=450, fmax=1600, sr=SR, frame_length=2048, hop_length=220)
    est_t = librosa.times_like(f0, sr=SR, hop_length=220)
    ref_t, ref_hz, ref_v = contour(s)
    scores = mir_eval.melody.evaluate(ref_t, np.where(ref_v, ref_hz, 0), est_t, np.where(voiced, np.nan_to_num(f0), 0))
    ref_at_est = np.interp(est_t, ref_t, np.where(ref_v, ref_hz, np.nan))
    both = voiced & np.isfinite(ref_at_est) & (np.interp(est_t, ref_t, ref_v.astype(float)) == 1)
    cents = np.abs(1200 * np.log2(f0[both] / ref_at_est[both]))
    return scores["Raw Pitch Accuracy"], float(np.median(cents))


def test_melody_f0_matches_the_contour_in_a_mix():
    s = compose(2, 0, False, 20, 25)
    rpa, median_cents = _pyin_against_contour(s, render(s, SR, 0, 2))
    assert rpa >= 0.85 and median_cents < 15, (rpa, median_cents)


def test_melody_f0_matches_the_contour_solo():
    s = compose(1, 0, True, 20, 25)
    rpa, median_cents = _pyin_against_contour(s, render(s, SR, 0, 1))
    assert rpa >= 0.9 and median_cents < 15, (rpa, median_cents)
