"""Multi-f0 in numpy (the ``multipitch`` task's maths): every sounding note's f0 per frame from a
note annotation, the multi-f0 salience target, peak picking, the threshold sweep, and
``mir_eval.multipitch`` scores with the weights that pool them exactly over tracks.

The store keeps ``(T, MAX_NOTES)`` f0s per frame (Hz; 0 an empty slot, -1 padding); the salience
target is built from them when a batch is cut (``salience.multi_target``), as the melody's is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .salience import Grid, salience_target, salience_target_torch

MAX_NOTES = 16  # slots per frame; the demo's mixtures sound at most 11 notes at once
REF_HOP = 0.01  # seconds: the reference's time base for scoring (MIREX multi-f0's 10 ms)
TOLERANCE = 0.5  # semitones (mir_eval.multipitch's window)

MULTIPITCH_METRICS = (
    "Precision",
    "Recall",
    "Accuracy",
    "Substitution Error",
    "Miss Error",
    "False Alarm Error",
    "Total Error",
    "Chroma Precision",
    "Chroma Recall",
    "Chroma Accuracy",
    "Chroma Substitution Error",
    "Chroma Miss Error",
    "Chroma False Alarm Error",
    "Chroma Total Error",
)
SHORT = {
    "Precision": "P",
    "Recall": "R",
    "Accuracy": "Acc",
    "Substitution Error": "Esub",
    "Miss Error": "Emiss",
    "False Alarm Error": "Efa",
    "Total Error": "Etot",
    "Chroma Precision": "P_chroma",
    "Chroma Recall": "R_chroma",
    "Chroma Accuracy": "Acc_chroma",
    "Chroma Substitution Error": "Esub_chroma",
    "Chroma Miss Error": "Emiss_chroma",
    "Chroma False Alarm Error": "Efa_chroma",
    "Chroma Total Error": "Etot_chroma",
}
METRICS = tuple(SHORT[m] for m in MULTIPITCH_METRICS)


def notes_per_frame(
    starts: np.ndarray, ends: np.ndarray, hz: np.ndarray, frame_times: np.ndarray, max_notes: int = MAX_NOTES
) -> np.ndarray:
    """(T, max_notes) float32: the f0 of every note sounding at each frame time (start <= t < end),
    lowest first, one slot per distinct f0 (a unison of two parts is one f0); 0 fills the rest.
    Notes beyond ``max_notes`` in a frame are dropped (the highest)."""
    times = np.asarray(frame_times, float)
    out = np.zeros((len(times), max_notes), np.float32)
    if len(hz) == 0 or len(times) == 0:
        return out
    order = np.argsort(hz, kind="stable")
    starts, ends, hz = np.asarray(starts, float)[order], np.asarray(ends, float)[order], np.asarray(hz, float)[order]
    filled = np.zeros(len(times), np.int64)
    for s, e, f in zip(starts, ends, hz):
        if not f > 0:
            continue
        a, b = np.searchsorted(times, s, side="left"), np.searchsorted(times, e, side="left")
        if b <= a:
            continue
        rows = np.arange(a, b)
        last = out[rows, np.maximum(filled[rows] - 1, 0)]
        fresh = (filled[rows] == 0) | (np.abs(1200 * np.log2(np.maximum(last, 1e-6) / f)) > 1.0)
        rows = rows[fresh & (filled[rows] < max_notes)]
        out[rows, filled[rows]] = f
        filled[rows] += 1
    return out


def multi_target(notes_hz: np.ndarray, grid: Grid = Grid(), sigma_bins: float = 1.0) -> np.ndarray:
    """(..., n_bins) target of (..., K) f0s per frame: the element-wise maximum of every note's
    Gaussian (``salience.salience_target``); empty (0) and padding (< 0) slots add nothing."""
    notes = np.asarray(notes_hz)
    out = np.zeros(notes.shape[:-1] + (grid.n_bins,), np.float32)
    for k in range(notes.shape[-1]):
        f = notes[..., k]
        if (f > 0).any():
            np.maximum(out, salience_target(f, grid, sigma_bins), out=out)
    return out


def multi_target_torch(notes_hz, grid: Grid = Grid(), sigma_bins: float = 1.0):
    """``multi_target`` in torch, on ``notes_hz``'s device (``salience_target_torch`` per slot)."""
    import torch

    out = torch.zeros(tuple(notes_hz.shape[:-1]) + (grid.n_bins,), dtype=torch.float32, device=notes_hz.device)
    for k in range(notes_hz.shape[-1]):
        f = notes_hz[..., k]
        if bool((f > 0).any()):
            out = torch.maximum(out, salience_target_torch(f, grid, sigma_bins))
    return out


# -- decoding -------------------------------------------------------------------------------


def peaks(salience: np.ndarray, threshold: float, grid: Grid = Grid()) -> list[np.ndarray]:
    """Per frame of a (T, n_bins) map, the f0s (Hz, ascending) of its local maxima along frequency
    at or above ``threshold``, each refined to sub-bin precision by the salience-weighted mean of
    its bin and its two neighbours."""
    bins, value, frames = _local_peaks(salience, grid)
    keep = value >= threshold
    return _split(frames[keep], grid.hz_of(bins[keep]), len(salience))


def _local_peaks(salience: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(refined bin, peak salience, frame) of every local maximum (> its lower neighbour,
    >= its upper one, > 0), in frame-major order."""
    s = np.asarray(salience, np.float64)
    T, F = s.shape
    if T == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    lower = np.concatenate([np.full((T, 1), -np.inf), s[:, :-1]], axis=1)
    upper = np.concatenate([s[:, 1:], np.full((T, 1), -np.inf)], axis=1)
    frames, k = np.nonzero((s > lower) & (s >= upper) & (s > 0))
    w = np.stack([np.where(k > 0, lower[frames, k], 0.0), s[frames, k], np.where(k < F - 1, upper[frames, k], 0.0)], 1)
    w = np.maximum(w, 0.0)
    refined = k + (w[:, 2] - w[:, 0]) / np.maximum(w.sum(axis=1), 1e-12)
    return refined, s[frames, k], frames


def _split(frames: np.ndarray, values: np.ndarray, n: int) -> list[np.ndarray]:
    bounds = np.searchsorted(frames, np.arange(n + 1))
    return [np.sort(values[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def multif0_annotation(times: np.ndarray, freqs: Sequence[np.ndarray], hop: float, duration: float):
    """A JAMS ``note_hz`` annotation of per-frame f0s: one observation per (frame, f0), lasting one
    frame (``hop``); ``sandbox.frame_hop`` keeps the hop so empty frames are restored when scored."""
    import jams

    ann = jams.Annotation(namespace="note_hz", time=0, duration=duration)
    ann.sandbox.update(frame_hop=float(hop))
    for t, fs in zip(np.asarray(times, float), freqs):
        if t >= duration:
            break
        for f in fs:
            ann.append(time=float(t), duration=float(hop), value=float(f), confidence=None)
    return ann


def frames_of_estimate(ann) -> tuple[np.ndarray, list[np.ndarray]]:
    """(frame times, f0s per frame) of a ``multif0_annotation``: every frame of its grid, empty
    ones included (``mir_eval.multipitch`` resamples by nearest frame)."""
    data = ann.data
    hop = float(
        getattr(ann.sandbox, "frame_hop", None) or min((obs.duration for obs in data if obs.duration > 0), default=REF_HOP)
    )
    duration = float(ann.duration or max((obs.time + obs.duration for obs in data), default=0.0))
    times = np.arange(int(np.ceil(duration / hop - 1e-9))) * hop
    idx = np.array([int(round(obs.time / hop)) for obs in data], np.int64)
    hz = np.array([float(obs.value) for obs in data])
    ok = (idx >= 0) & (idx < len(times)) & (hz > 0)
    order = np.argsort(idx[ok], kind="stable")
    return times, _split(idx[ok][order], hz[ok][order], len(times))


def frames_of_notes(ann, hop: float = REF_HOP) -> tuple[np.ndarray, list[np.ndarray]]:
    """(times, f0s per frame) of a ``note_hz`` reference on a ``hop`` grid over its duration."""
    data = ann.data
    duration = float(ann.duration or max((obs.time + obs.duration for obs in data), default=0.0))
    times = np.arange(int(np.ceil(duration / hop - 1e-9))) * hop
    starts = np.array([obs.time for obs in data], float)
    ends = starts + np.array([obs.duration for obs in data], float)
    hz = np.array([float(obs.value) for obs in data], float)
    grid = notes_per_frame(starts, ends, hz, times, max_notes=max(1, len(hz)))
    return times, [row[row > 0].astype(float) for row in grid]


# -- the threshold --------------------------------------------------------------------------


def frame_matches(salience: np.ndarray, notes_hz: np.ndarray, grid: Grid = Grid()) -> tuple[np.ndarray, np.ndarray, int]:
    """What the threshold sweep needs of one map and its reference (frames with notes < 0 skipped):
    (salience of every peak, for every reference note the salience of the best peak within
    ``TOLERANCE`` of it (0 if none), number of reference notes). A peak counts for its nearest
    note only, so at any threshold the true positives are the notes whose best peak passes it."""
    keep = np.asarray(notes_hz)[:, 0] >= 0
    s, ref = np.asarray(salience)[keep], np.asarray(notes_hz)[keep]
    bins, value, frames = _local_peaks(s, grid)
    ref_bins = grid.bin_of(np.where(ref > 0, ref, np.nan))  # (T, K), NaN for empty slots
    per_semitone = grid.bins_per_octave / 12
    dist = np.abs(ref_bins[frames] - bins[:, None]) / per_semitone  # (P, K)
    dist = np.where(np.isfinite(dist), dist, np.inf)
    nearest = np.argmin(dist, axis=1) if len(frames) else np.zeros(0, np.int64)
    hit = dist[np.arange(len(frames)), nearest] < TOLERANCE if len(frames) else np.zeros(0, bool)
    best = np.zeros(ref.shape)
    np.maximum.at(best, (frames[hit], nearest[hit]), value[hit])
    valid = ref > 0
    return value, best[valid], int(valid.sum())


def tune_threshold(matches: Iterable[tuple[np.ndarray, np.ndarray, int]], thresholds: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximizing the pooled multi-f0 accuracy TP / (n_est + n_ref - TP) of
    ``frame_matches`` outcomes; ties take the lowest threshold."""
    parts = list(matches)
    est = np.sort(np.concatenate([p[0] for p in parts])) if parts else np.zeros(0)
    best = np.sort(np.concatenate([p[1] for p in parts])) if parts else np.zeros(0)
    n_ref = sum(p[2] for p in parts)
    t = np.asarray(thresholds, float)
    n_est = len(est) - np.searchsorted(est, t, side="left")
    tp = len(best) - np.searchsorted(best, t, side="left")
    denom = n_est + n_ref - tp
    acc = np.where(denom > 0, tp / np.maximum(denom, 1), 0.0)
    i = int(np.argmax(acc))
    return float(t[i]), float(acc[i])


# -- scores ---------------------------------------------------------------------------------


def multipitch_scores(ref_times, ref_freqs, est_times, est_freqs) -> dict[str, dict[str, float]]:
    """``mir_eval.multipitch.evaluate`` of one track (the estimate resampled to the reference's
    times), each score with the count that pools it exactly over tracks: estimated f0s
    (precision), reference f0s (recall and the errors), n_est + n_ref - TP (accuracy); the chroma
    scores likewise with chroma true positives."""
    import warnings

    import mir_eval

    ref_times, est_times = np.asarray(ref_times, float), np.asarray(est_times, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "resampling to a common time base", "all empty"
        scores = mir_eval.multipitch.evaluate(ref_times, list(ref_freqs), est_times, list(est_freqs))
        resampled = (
            mir_eval.multipitch.resample_multipitch(est_times, list(est_freqs), ref_times)
            if est_times.size != ref_times.size or not np.allclose(est_times, ref_times)
            else list(est_freqs)
        )
    n_ref = float(sum(len(f) for f in ref_freqs))
    n_est = float(sum(len(f) for f in resampled))
    weights = {}
    for chroma in ("", "Chroma "):
        tp = round(scores[f"{chroma}Recall"] * n_ref)
        weights.update(
            {
                f"{chroma}Precision": n_est,
                f"{chroma}Recall": n_ref,
                f"{chroma}Accuracy": n_est + n_ref - tp,
                **{f"{chroma}{e} Error": n_ref for e in ("Substitution", "Miss", "False Alarm", "Total")},
            }
        )
    return {SHORT[m]: {"score": float(scores[m]), "weight": float(weights[m])} for m in MULTIPITCH_METRICS}
