"""Pitch salience on a log-frequency grid (Bittner et al. 2017), in numpy: the training target
built from f0 per frame, decoding a salience map to a contour, tuning the voicing threshold,
and mir_eval.melody scores with the weights that pool them exactly over tracks.

Nothing here imports torch at import time: ``salience_target_torch`` (the training target on the
trainer's device) imports it when called; decoding and scoring run wherever evaluation does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

C1_HZ = 32.703195662574764
MELODY_METRICS = ("Voicing Recall", "Voicing False Alarm", "Raw Pitch Accuracy", "Raw Chroma Accuracy", "Overall Accuracy")
SHORT = {
    "Voicing Recall": "VR",
    "Voicing False Alarm": "VFA",
    "Raw Pitch Accuracy": "RPA",
    "Raw Chroma Accuracy": "RCA",
    "Overall Accuracy": "OA",
}
METRICS = tuple(SHORT[m] for m in MELODY_METRICS)


@dataclass(frozen=True)
class Grid:
    """The output frequency grid: ``n_bins`` bins from ``fmin`` at ``bins_per_octave``."""

    fmin: float = C1_HZ
    bins_per_octave: int = 60
    n_bins: int = 360

    def bin_of(self, hz: np.ndarray) -> np.ndarray:
        """Fractional bin of each frequency (Hz > 0); NaN elsewhere."""
        hz = np.asarray(hz, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(hz > 0, self.bins_per_octave * np.log2(hz / self.fmin), np.nan)

    def hz_of(self, bins: np.ndarray) -> np.ndarray:
        return self.fmin * 2.0 ** (np.asarray(bins, dtype=np.float64) / self.bins_per_octave)

    @property
    def cents_per_bin(self) -> float:
        return 1200.0 / self.bins_per_octave


def salience_target(f0_hz: np.ndarray, grid: Grid = Grid(), sigma_bins: float = 1.0) -> np.ndarray:
    """(..., n_bins) float32 target of f0 per frame (Hz; 0 unvoiced, < 0 ignored -> all zeros).

    A Gaussian along frequency centred on the f0's fractional bin, peak 1 at the f0 itself,
    standard deviation ``sigma_bins`` (1 bin = 20 cents at 60 bins/octave). An f0 off the grid
    leaves the frame (nearly) empty, as it would be for a model that cannot represent it.
    """
    b = grid.bin_of(f0_hz)[..., None]  # NaN for unvoiced/ignored frames
    k = np.arange(grid.n_bins, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        t = np.exp(-0.5 * ((k - b) / sigma_bins) ** 2)
    t[~np.isfinite(t)] = 0.0
    t[t < 1e-4] = 0.0  # a sparse tail: nothing beyond ~4.3 sigma
    return t.astype(np.float32)


def salience_target_torch(f0_hz, grid: Grid = Grid(), sigma_bins: float = 1.0):
    """``salience_target`` in torch, on ``f0_hz``'s device (the trainer's): computed in float64 as
    numpy computes it (float32 where the device has no float64), the same float32 result within
    rounding."""
    import torch

    wide = torch.float32 if f0_hz.device.type == "mps" else torch.float64
    f0 = f0_hz.to(wide)
    voiced = f0 > 0
    b = torch.where(voiced, grid.bins_per_octave * torch.log2(torch.where(voiced, f0, 1.0) / grid.fmin), torch.nan)
    k = torch.arange(grid.n_bins, dtype=wide, device=f0.device)
    t = torch.exp(-0.5 * ((k - b[..., None]) / sigma_bins) ** 2)
    t = torch.where(torch.isfinite(t) & (t >= 1e-4), t, 0.0)  # unvoiced/ignored frames, and a sparse tail
    return t.to(torch.float32)


def multi_target(note_hz: Sequence[np.ndarray], grid: Grid = Grid(), sigma_bins: float = 1.0) -> np.ndarray | None:
    """Multi-f0 target: the element-wise maximum of each sounding note's Gaussian (None without notes)."""
    out = None
    for f in note_hz:
        t = salience_target(f, grid, sigma_bins)
        out = t if out is None else np.maximum(out, t)
    return out


# -- decoding --------------------------------------------------------------------------------


def refine(salience: np.ndarray, bins: np.ndarray, radius: int = 2) -> np.ndarray:
    """Fractional bin per frame: the salience-weighted mean of the bins within ``radius`` of ``bins``."""
    s = np.asarray(salience, dtype=np.float64)
    T, F = s.shape
    idx = np.asarray(bins)[:, None] + np.arange(-radius, radius + 1)[None, :]
    ok = (idx >= 0) & (idx < F)
    w = np.maximum(np.where(ok, s[np.arange(T)[:, None], np.clip(idx, 0, F - 1)], 0.0), 0.0)
    den = w.sum(axis=1)
    return np.where(den > 0, (w * idx).sum(axis=1) / np.maximum(den, 1e-12), bins)


def peak_frequency(salience: np.ndarray, grid: Grid = Grid(), radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(peak salience, f0 in Hz) per frame of a (T, n_bins) map: the argmax bin refined to
    sub-bin precision by the salience-weighted mean of the bins within ``radius`` of it."""
    s = np.asarray(salience, dtype=np.float64)
    if s.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    peak = np.argmax(s, axis=1)
    return s[np.arange(s.shape[0]), peak], grid.hz_of(refine(s, peak, radius))


@functools.lru_cache(maxsize=8)
def _pitch_transitions(n_bins: int, sigma_bins: float, jump: float) -> np.ndarray:
    """(n_bins, n_bins) transition matrix: a Gaussian step of ``sigma_bins`` between frames, and
    ``jump`` of the mass spread evenly over every bin (a new note may start anywhere)."""
    d = np.arange(n_bins)[:, None] - np.arange(n_bins)[None, :]
    local = np.exp(-0.5 * (d / sigma_bins) ** 2)
    local /= local.sum(axis=1, keepdims=True)
    return (1.0 - jump) * local + jump / n_bins


def viterbi_bins(salience: np.ndarray, sigma_bins: float = 2.0, jump: float = 0.01) -> np.ndarray:
    """The most likely bin sequence through a (T, n_bins) salience map, each frame's salience
    (normalised over bins) as its observation likelihood and a continuity prior between frames
    (``_pitch_transitions``): an isolated frame whose peak jumps to the accompaniment or an
    octave away stays on the melody's track. (librosa.sequence.viterbi, as CREPE decodes.)"""
    import librosa

    s = np.maximum(np.asarray(salience, dtype=np.float64), 1e-6)
    if s.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    prob = (s / s.sum(axis=1, keepdims=True)).T
    return librosa.sequence.viterbi(prob, _pitch_transitions(s.shape[1], float(sigma_bins), float(jump))).astype(np.int64)


def decode_f0(
    salience: np.ndarray,
    threshold: float,
    grid: Grid = Grid(),
    viterbi_sigma_bins: float | None = None,
    voicing: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(f0 in Hz, voiced) per frame: voiced where the frame's peak salience is >= threshold (the
    quantity the threshold was tuned on), or with ``voicing`` (``fit_voicing``'s classifier) where
    its voicing probability reaches its own threshold; the pitch is the refined peak, or with
    ``viterbi_sigma_bins`` the refined bin of the Viterbi path (``viterbi_bins``).
    Unvoiced frames keep their pitch guess (scored by raw pitch accuracy, mir_eval's convention)."""
    s = np.asarray(salience, dtype=np.float64)
    if voicing is not None:
        voiced = voicing_probability(s, voicing, grid) >= float(voicing["threshold"])
    else:
        voiced = s.max(axis=1) >= threshold if s.shape[0] else np.zeros(0, dtype=bool)
    if viterbi_sigma_bins and s.shape[0]:
        return grid.hz_of(refine(s, viterbi_bins(s, viterbi_sigma_bins))), voiced
    _, hz = peak_frequency(s, grid)
    return hz, voiced


def contour_annotation(times: np.ndarray, hz: np.ndarray, voiced: np.ndarray, duration: float):
    """A JAMS ``pitch_contour`` annotation, one observation per frame."""
    import jams

    ann = jams.Annotation(namespace="pitch_contour", time=0, duration=duration)
    for t, f, v in zip(np.asarray(times, float), np.asarray(hz, float), np.asarray(voiced, bool)):
        if t >= duration:
            break
        ann.append(time=float(t), duration=0.0, value={"index": 0, "frequency": float(f), "voiced": bool(v)}, confidence=None)
    return ann


def contour_arrays(ann) -> tuple[np.ndarray, np.ndarray]:
    """(times, signed Hz) of a ``pitch_contour`` annotation in mir_eval's convention: frequency
    > 0 voiced, < 0 unvoiced with a pitch guess, 0 unvoiced without one."""
    data = ann.data
    times = np.array([obs.time for obs in data], dtype=float)
    hz = np.array([abs(float(obs.value["frequency"])) for obs in data], dtype=float)
    voiced = np.array([bool(obs.value["voiced"]) for obs in data], dtype=bool)
    order = np.argsort(times, kind="stable")
    times, hz, voiced = times[order], hz[order], voiced[order]
    return times, np.where(voiced, hz, -hz)


# -- the voicing threshold -----------------------------------------------------------------


def frame_outcomes(peak: np.ndarray, hz: np.ndarray, f0_ref: np.ndarray, tolerance_cents: float = 50.0):
    """Per frame (reference f0 >= 0 only): (peak salience, pitch correct, reference voiced)."""
    keep = f0_ref >= 0
    peak, hz, ref = peak[keep], hz[keep], f0_ref[keep]
    voiced = ref > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cents = np.abs(1200.0 * np.log2(np.where(voiced, hz, 1.0) / np.where(voiced, ref, 1.0)))
    return peak, voiced & (cents < tolerance_cents), voiced


def overall_accuracy_curve(peak: np.ndarray, correct: np.ndarray, voiced: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Frame overall accuracy (mir_eval's definition on a common grid) at each threshold."""
    if peak.size == 0:
        return np.zeros(len(thresholds))
    on = peak[None, :] >= np.asarray(thresholds, float)[:, None]
    hits = (on & correct[None, :]).sum(axis=1) + (~on & ~voiced[None, :]).sum(axis=1)
    return hits / peak.size


# salience peaks of a small network trained briefly sit low: sweep finely near 0
THRESHOLDS = np.round(np.concatenate([np.arange(0.01, 0.1, 0.01), np.arange(0.1, 0.951, 0.025)]), 4)


def tune_threshold(
    outcomes: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], thresholds: np.ndarray = THRESHOLDS
) -> tuple[float, float]:
    """(threshold, overall accuracy) that maximizes the frame overall accuracy pooled over
    ``outcomes`` (``frame_outcomes`` of each validation patch or track); ties take the lowest."""
    parts = list(outcomes)
    peak = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    correct = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
    voiced = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, bool)
    curve = overall_accuracy_curve(peak, correct, voiced, thresholds)
    best = int(np.argmax(curve))
    return float(thresholds[best]), float(curve[best])


# -- the voicing classifier ----------------------------------------------------------------
#
# The peak salience alone calls pitch wherever the network's output lingers: the few frames after a
# note ends (the network's temporal smear and the room's tail) and an accompaniment line while the
# melody rests. A logistic classifier on a few numbers of the salience map tells them apart better:
# the peak's level and its level a few frames before and after (a tail decays, an onset rises), the
# mass and the number of strong peaks of the frame (a chord spreads), and where the frame stands in
# its track (its peak against the level of the track's confident frames, its pitch against their
# register: an accompaniment sits below a melody). Fitted on the validation split after training
# (no retraining), its threshold tuned there for frame overall accuracy, as the peak threshold is.

VOICING_CONTEXT = (-16, -8, -4, -2, 2, 4, 8, 16)  # frames (about +-0.19 s at hop 256 / 22.05 kHz)
VOICING_FEATURES = (
    "log peak",
    "log mass",
    "peak / mass",
    *(f"log peak at {d:+d}" for d in VOICING_CONTEXT),
    "log strong peaks",
    "octaves below the track's register",
    "octaves above the track's register",
    "log peak over the track's level",
)
VOICING_THRESHOLDS = np.round(np.arange(0.02, 0.981, 0.01), 4)


def voicing_features(salience: np.ndarray, grid: Grid = Grid()) -> np.ndarray:
    """(T, len(VOICING_FEATURES)) float64 of one whole track's (T, n_bins) salience map."""
    s = np.asarray(salience, dtype=np.float64)
    T = s.shape[0]
    if T == 0:
        return np.zeros((0, len(VOICING_FEATURES)))
    peak, mass = s.max(axis=1), s.sum(axis=1)
    lp = np.log(peak + 1e-3)
    reach = max(abs(d) for d in VOICING_CONTEXT)
    padded = np.pad(lp, reach, mode="edge")
    context = [padded[reach + d : reach + d + T] for d in VOICING_CONTEXT]
    inner = s[:, 1:-1]
    strong = (inner > s[:, :-2]) & (inner >= s[:, 2:]) & (inner > 0.5 * peak[:, None])
    bins = np.argmax(s, axis=1)
    confident = peak >= np.percentile(peak, 75)  # the track's clearest quarter of frames
    register = (bins - np.median(bins[confident])) / grid.bins_per_octave
    level = lp - np.median(lp[confident])
    columns = [lp, np.log(mass + 1e-2), peak / (mass + 1e-2), *context, np.log1p(strong.sum(axis=1))]
    return np.stack([*columns, np.minimum(register, 0.0), np.maximum(register, 0.0), level], axis=1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def voicing_probability(salience: np.ndarray, voicing: Mapping[str, Any], grid: Grid = Grid()) -> np.ndarray:
    """Per frame of a whole track, the probability that it is voiced by ``voicing`` (``fit_voicing``)."""
    return _classify(voicing_features(salience, grid), voicing)


def _classify(x: np.ndarray, voicing: Mapping[str, Any]) -> np.ndarray:
    """The classifier's voicing probability of each row of features ``x``."""
    mean, scale = np.asarray(voicing["mean"], float), np.asarray(voicing["scale"], float)
    if x.shape[1] != mean.size:
        raise ValueError(f"the voicing classifier takes {mean.size} features; this mirpipe makes {x.shape[1]}")
    return _sigmoid(((x - mean) / scale) @ np.asarray(voicing["weights"], float) + float(voicing["bias"]))


def fit_voicing(features: np.ndarray, voiced: np.ndarray, l2: float = 1e-3, iterations: int = 50) -> dict[str, Any]:
    """Logistic regression of ``voiced`` on standardized ``features`` (Newton's method with an L2
    penalty ``l2`` per frame on the weights, not the bias): deterministic, numpy only. Returns the
    JSON-able classifier (``mean``, ``scale``, ``weights``, ``bias``); ``threshold`` is set by tuning."""
    x = np.asarray(features, np.float64)
    y = np.asarray(voiced, np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = np.hstack([(x - mean) / scale, np.ones((x.shape[0], 1))])
    n, d = z.shape
    penalty = np.full(d, l2 * n)
    penalty[-1] = 0.0
    w = np.zeros(d)
    for _ in range(iterations):
        p = _sigmoid(z @ w)
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1.0 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return {"mean": mean.tolist(), "scale": scale.tolist(), "weights": w[:-1].tolist(), "bias": float(w[-1])}


def validation_tracks(rows: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Whole tracks (salience (T, n_bins), f0 (T,)) from validation rows in order. The rows are each
    track cut into consecutive patches, its last patch padded at its end (f0 < 0: ``track_patches``),
    so the rows joined and cut after each padded row give the tracks back (a track that ends exactly
    at a patch boundary comes back joined to the next one). Rows of whole tracks work as well when
    each ends padded; rows without padding are joined."""
    held_s: list[np.ndarray] = []
    held_f: list[np.ndarray] = []
    for s, f0 in rows:
        f0 = np.asarray(f0)
        keep = f0 >= 0
        held_s.append(np.asarray(s)[keep])
        held_f.append(f0[keep])
        if not keep.all():
            track_f = np.concatenate(held_f)
            if track_f.size:
                yield np.concatenate(held_s), track_f
            held_s, held_f = [], []
    if held_f and np.concatenate(held_f).size:
        yield np.concatenate(held_s), np.concatenate(held_f)


def tune_voicing(
    tracks: Iterable[tuple[np.ndarray, np.ndarray]], grid: Grid = Grid(), thresholds: np.ndarray = VOICING_THRESHOLDS
) -> tuple[dict[str, Any], float]:
    """(classifier, frame overall accuracy): ``fit_voicing`` on the frames of ``tracks`` (whole
    validation tracks: salience, f0), its probability threshold the one with the best frame overall
    accuracy there (ties: the lowest); pitch correctness as ``frame_outcomes`` counts it."""
    feats, outcomes = [], []
    for s, f0 in tracks:
        s = np.asarray(s, np.float64)
        keep = np.asarray(f0) >= 0
        s, f0 = s[keep], np.asarray(f0)[keep]
        if not len(f0):
            continue
        feats.append(voicing_features(s, grid))
        peak, hz = peak_frequency(s, grid)
        outcomes.append(frame_outcomes(peak, hz, f0))
    if not feats:
        raise ValueError("no validation frames to fit the voicing classifier on")
    x = np.concatenate(feats)
    voiced = np.concatenate([o[2] for o in outcomes])
    if voiced.all() or not voiced.any():
        raise ValueError("the validation frames are all voiced or all unvoiced: no voicing classifier to fit")
    clf = fit_voicing(x, voiced)
    prob = _classify(x, clf)
    correct = np.concatenate([o[1] for o in outcomes])
    curve = overall_accuracy_curve(prob, correct, voiced, thresholds)
    best = int(np.argmax(curve))
    return {**clf, "threshold": float(thresholds[best])}, float(curve[best])


# -- scores --------------------------------------------------------------------------------


def melody_scores(ref_times, ref_hz, est_times, est_hz) -> dict[str, dict[str, float]]:
    """``mir_eval.melody.evaluate`` of one track (its defaults: the estimate resampled to the
    reference's time base), each score with the seconds that pool it.

    The weights are what each metric divides by, counted on that time base and multiplied by
    the reference hop: voiced reference frames (VR, RPA, RCA; ``ref_voicing`` summed, as
    mir_eval does), unvoiced reference frames (VFA), all frames (OA). A weighted mean over
    tracks is then the score of the tracks' frames pooled (exact for a common reference hop).
    """
    import mir_eval

    ref_times, est_times = np.asarray(ref_times, float), np.asarray(est_times, float)
    scores = mir_eval.melody.evaluate(ref_times, ref_hz, est_times, est_hz)
    ref_v, _, _, _ = mir_eval.melody.to_cent_voicing(ref_times, ref_hz, est_times, est_hz)
    hop = float(np.median(np.diff(ref_times))) if len(ref_times) > 1 else 0.01
    ref_binary = (ref_v > 0).astype(float)
    weights = {
        "Voicing Recall": ref_binary.sum(),
        "Voicing False Alarm": (1.0 - ref_binary).sum(),
        "Raw Pitch Accuracy": ref_v.sum(),
        "Raw Chroma Accuracy": ref_v.sum(),
        "Overall Accuracy": float(len(ref_v)),
    }
    return {SHORT[m]: {"score": float(scores[m]), "weight": float(weights[m]) * hop} for m in MELODY_METRICS}
