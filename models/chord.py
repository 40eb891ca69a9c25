"""Chord task: the 170-class vocabulary of McFee & Bello (2017) and its frame targets.

Classes 0..167 are 12 roots x 14 qualities (root-major order), 168 is ``N`` (no
chord) and 169 is ``X`` (a chord outside the vocabulary). The structured targets
are root (13 = 12 pitch classes + N), bass (13) and the 12 sounding pitch classes.
``-1`` marks frames without a usable reference (no chord annotation, ``X`` for
root/bass/pitches): losses must ignore them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mirpipe.annotations.namespaces import PITCH_NAMES
from mirpipe.annotations.transpose import transpose_labels

from .task import TASKS, Decoder, Network, Scorer, Scores, Targets, Task, annotations

QUALITIES = (
    "maj",
    "min",
    "dim",
    "aug",
    "min6",
    "maj6",
    "min7",
    "minmaj7",
    "maj7",
    "7",
    "dim7",
    "hdim7",
    "sus2",
    "sus4",
)

# Harte scale degrees of each quality, in the order of its tones.
QUALITY_DEGREES: dict[str, tuple[str, ...]] = {
    "maj": ("1", "3", "5"),
    "min": ("1", "b3", "5"),
    "dim": ("1", "b3", "b5"),
    "aug": ("1", "3", "#5"),
    "min6": ("1", "b3", "5", "6"),
    "maj6": ("1", "3", "5", "6"),
    "min7": ("1", "b3", "5", "b7"),
    "minmaj7": ("1", "b3", "5", "7"),
    "maj7": ("1", "3", "5", "7"),
    "7": ("1", "3", "5", "b7"),
    "dim7": ("1", "b3", "b5", "bb7"),
    "hdim7": ("1", "b3", "b5", "b7"),
    "sus2": ("1", "2", "5"),
    "sus4": ("1", "4", "5"),
}

N_ROOTS = 13  # 12 pitch classes + N
N_TAGS = 170
TAG_N = 168
TAG_X = 169
NO_ROOT = 12
IGNORE = -1


def _mir_eval_chord():
    """``mir_eval.chord``, imported when first used: ``import mir_eval`` loads scipy.stats (~1.3 s),
    which planning a run (it loads every registered task) should not pay."""
    import mir_eval.chord

    return mir_eval.chord


@functools.cache
def _quality_bitmaps() -> np.ndarray:
    return np.stack([_mir_eval_chord().quality_to_bitmap(q) for q in QUALITIES])


def quality_intervals(quality: str) -> list[int]:
    """Semitone intervals above the root of a vocabulary quality."""
    return [int(i) for i in np.flatnonzero(_mir_eval_chord().quality_to_bitmap(quality))]


def tag_to_label(tag: int) -> str:
    """Harte label of a vocabulary class (root position, sharps in ASCII)."""
    if tag == TAG_N:
        return "N"
    if tag == TAG_X:
        return "X"
    if not 0 <= tag < TAG_N:
        raise ValueError(f"chord class {tag} outside 0..{N_TAGS - 1}")
    root, quality = divmod(tag, len(QUALITIES))
    return f"{PITCH_NAMES[root]}:{QUALITIES[quality]}"


def encode_label(label: str) -> tuple[int, np.ndarray, int, int]:
    """Encode a Harte label as (root, absolute pitch-class bitmap, bass, tag).

    root and bass are 0..11, ``NO_ROOT`` for N, ``IGNORE`` for X; the bitmap is
    ``IGNORE`` everywhere for X. Raises ``mir_eval.chord.InvalidChordException``
    for labels mir_eval cannot parse.
    """
    root, bitmap, bass = _mir_eval_chord().encode(label, reduce_extended_chords=True)
    if label == "X" or (root < 0 and np.all(bitmap < 0)):
        return IGNORE, np.full(12, IGNORE, dtype=np.int8), IGNORE, TAG_X
    if root < 0:
        return NO_ROOT, np.zeros(12, dtype=np.int8), NO_ROOT, TAG_N
    pitches = np.roll(bitmap, root).astype(np.int8)
    bass_abs = (root + bass) % 12
    pitches[bass_abs] = 1  # the bass sounds even when it is not a chord tone (C:maj/b7)
    # The class ignores the inversion: match the quality of the label without its bass.
    _, quality_bitmap, _ = _mir_eval_chord().encode(label.split("/")[0], reduce_extended_chords=True)
    match = np.flatnonzero((_quality_bitmaps() == quality_bitmap).all(axis=1))
    tag = int(root * len(QUALITIES) + match[0]) if match.size else TAG_X
    return int(root), pitches, int(bass_abs), tag


def transpose_targets(targets: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Chord targets moved by ``n`` semitones: roots and bass rotate, pitch classes roll,
    a vocabulary class keeps its quality and moves its root; N, X and ``IGNORE`` stay."""
    out = dict(targets)
    for name in ("targets/chord_root", "targets/chord_bass"):
        if name in targets:
            a = targets[name]
            out[name] = np.where((a >= 0) & (a < 12), (a.astype(np.int64) + n) % 12, a).astype(a.dtype)
    if "targets/chord_pitches" in targets:
        out["targets/chord_pitches"] = np.roll(targets["targets/chord_pitches"], n, axis=-1)
    if "targets/chord_tag" in targets:
        t = targets["targets/chord_tag"]
        root, quality = np.divmod(t.astype(np.int64), len(QUALITIES))
        out["targets/chord_tag"] = np.where((t >= 0) & (t < TAG_N), (root + n) % 12 * len(QUALITIES) + quality, t).astype(t.dtype)
    return out


def _intervals_at(times: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the interval covering each time (latest start wins), -1 where none does."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    pos = np.searchsorted(s, times, side="right") - 1
    idx = np.full(times.shape, -1, dtype=np.int64)
    ok = pos >= 0
    covered = ok.copy()
    covered[ok] = times[ok] < e[pos[ok]]
    idx[covered] = order[pos[covered]]
    return idx


def encode(jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
    """Chord targets on a frame grid from the first ``chord`` annotation of a JAMS
    (``chord_harte`` converted).

    Frames outside every chord observation are N; a track without any chord
    annotation gets ``IGNORE`` everywhere (e.g. solo recordings).
    """
    n = len(frame_times)
    anns = annotations(jam, "chord")  # type: ignore[operator]  # mypy takes the name for the __future__ feature
    if not anns:
        return {
            "chord_root": np.full(n, IGNORE, np.int16),
            "chord_bass": np.full(n, IGNORE, np.int16),
            "chord_pitches": np.full((n, 12), IGNORE, np.int8),
            "chord_tag": np.full(n, IGNORE, np.int16),
        }
    data = anns[0].data
    labels = [obs.value for obs in data]
    starts = np.array([obs.time for obs in data], dtype=float)
    ends = starts + np.array([obs.duration for obs in data], dtype=float)
    codes = [encode_label(label) for label in labels] + [encode_label("N")]
    idx = _intervals_at(np.asarray(frame_times, float), starts, ends)
    idx[idx < 0] = len(labels)  # the appended N
    root = np.array([c[0] for c in codes], np.int16)[idx]
    pitches = np.stack([c[1] for c in codes]).astype(np.int8)[idx]
    bass = np.array([c[2] for c in codes], np.int16)[idx]
    tag = np.array([c[3] for c in codes], np.int16)[idx]
    return {"chord_root": root, "chord_bass": bass, "chord_pitches": pitches, "chord_tag": tag}


# -- decoding ------------------------------------------------------------------


def self_transition(tag_sequences, n_classes: int = N_TAGS, prior_weight: float = 10.0) -> np.ndarray:
    """Per-class probability of staying in a class from one frame to the next.

    Estimated from training label sequences (``IGNORE`` frames break a run); each
    class is shrunk toward the global rate with ``prior_weight`` pseudo-counts,
    so rare classes still get a sensible value.
    """
    stay = np.zeros(n_classes)
    total = np.zeros(n_classes)
    for tags in tag_sequences:
        tags = np.asarray(tags, dtype=np.int64)
        a, b = tags[:-1], tags[1:]
        ok = (a >= 0) & (b >= 0)
        np.add.at(total, a[ok], 1)
        np.add.at(stay, a[ok], (a[ok] == b[ok]).astype(float))
    if total.sum() == 0:
        raise ValueError("no labelled frames to estimate the self-transition prior from")
    overall = stay.sum() / total.sum()
    denom = total + prior_weight
    p = np.where(denom > 0, (stay + prior_weight * overall) / np.maximum(denom, 1e-12), overall)
    return np.clip(p, 1e-3, 1 - 1e-3)


def viterbi_tags(posteriors: np.ndarray, p_self: np.ndarray) -> np.ndarray:
    """Most likely tag sequence from (T, 170) frame posteriors under a self-loop prior."""
    import librosa

    prob = np.asarray(posteriors, dtype=np.float64).T
    prob = prob / np.maximum(prob.sum(axis=0, keepdims=True), 1e-12)
    transition = librosa.sequence.transition_loop(prob.shape[0], p_self)
    return librosa.sequence.viterbi_discriminative(prob, transition)


def tags_to_annotation(tags: np.ndarray, frame_times: np.ndarray, duration: float):
    """A JAMS ``chord`` annotation of frame tags: one observation per run of equal tags.

    Boundaries are frame times picked by index, so a segment ends exactly where the
    next begins; the duration is nudged down where ``time + duration`` would round
    past the next start (mir_eval rejects overlapping intervals).
    """
    import jams

    ann = jams.Annotation(namespace="chord", duration=duration)
    tags = np.asarray(tags)
    if len(tags) == 0:
        return ann
    starts = np.concatenate([[0], np.flatnonzero(np.diff(tags)) + 1])
    times = np.append(np.asarray(frame_times, float), duration)
    bounds = np.minimum(np.append(times[starts], duration), duration)
    for i, s in enumerate(starts):
        t0, t1 = float(bounds[i]), float(bounds[i + 1])
        if t1 <= t0:
            continue
        length = t1 - t0
        while t0 + length > t1:  # floating-point: the end must not pass the next start
            length = float(np.nextafter(length, 0.0))
        ann.append(time=t0, duration=length, value=tag_to_label(int(tags[s])), confidence=None)
    return ann


def decode(posteriors: np.ndarray, frame_times: np.ndarray, duration: float, p_self: np.ndarray | None):
    """Tag posteriors -> JAMS chord annotation (Viterbi when a prior is given, else argmax)."""
    tags = viterbi_tags(posteriors, p_self) if p_self is not None else np.argmax(posteriors, axis=1)
    return tags_to_annotation(tags, frame_times, duration)


# -- scoring -------------------------------------------------------------------

COMPARISONS = (
    "root",
    "majmin",
    "majmin_inv",
    "mirex",
    "thirds",
    "thirds_inv",
    "triads",
    "triads_inv",
    "sevenths",
    "sevenths_inv",
    "tetrads",
    "tetrads_inv",
)
SEGMENTATION = ("seg", "overseg", "underseg")
METRICS = COMPARISONS + SEGMENTATION


def score(ref, est) -> Scores:
    """mir_eval.chord scores of one track, each with the seconds that pool it over tracks.

    Scores are ``mir_eval.chord.evaluate``'s own. The weights are the seconds each
    comparison counts (frames where it is defined), and the reference span for the
    segmentation scores, so duration-weighted totals over tracks are exact.
    """
    import mir_eval

    ref_int, ref_lab = ref.to_interval_values()
    est_int, est_lab = est.to_interval_values()
    ref_int, est_int = np.asarray(ref_int, float), np.asarray(est_int, float)
    scores = mir_eval.chord.evaluate(ref_int, list(ref_lab), est_int, list(est_lab))
    # the bookkeeping evaluate does internally, for the weights
    est_adj, est_lab_adj = mir_eval.util.adjust_intervals(
        est_int, list(est_lab), ref_int.min(), ref_int.max(), mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD
    )
    intervals, ref_l, est_l = mir_eval.util.merge_labeled_intervals(ref_int, list(ref_lab), est_adj, est_lab_adj)
    durations = mir_eval.util.intervals_to_durations(intervals)
    out: Scores = {}
    for name in COMPARISONS:
        comp = np.asarray(getattr(mir_eval.chord, name)(ref_l, est_l), dtype=float)
        out[name] = {"score": float(scores[name]), "weight": float(np.sum(durations[comp >= 0]))}
    ref_span = float(ref_int.max() - ref_int.min())
    for name in SEGMENTATION:
        out[name] = {"score": float(scores[name]), "weight": ref_span}
    return out


# -- the task ------------------------------------------------------------------


class ChordModel(BaseModel):
    """CR1/CR2 of McFee & Bello (2017)."""

    model_config = ConfigDict(extra="forbid")
    architecture: Literal["cr1", "cr2"] = Field("cr2", description="1 or 2 bidirectional GRU layers")
    structured: bool = Field(True, description="root/pitches/bass heads; false: chord tag only (ablation)")
    hidden: int = Field(128, ge=8, description="GRU units per direction")
    channels: int = Field(36, ge=1, description="filters of the full-height conv")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class ChordDecoding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    viterbi: bool = Field(True, description="decode with the self-transition prior; false: frame argmax")


class ChordTargets(Targets):
    """Root, pitches, bass and tag per frame; labels (and the arrays) move by n semitones."""

    namespace = "chord"
    version = "1"
    arrays = ("targets/chord_root", "targets/chord_pitches", "targets/chord_bass", "targets/chord_tag")
    moves = "chord|chord_harte"

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        return encode(jam, frame_times)

    def transpose(self, targets: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        return transpose_targets(targets, n)

    def transpose_annotation(self, annotation, n: int):
        return transpose_labels(annotation, n)


class ChordNetwork(Network):
    Params = ChordModel
    metric_name = "tag_accuracy"

    def build(self, n_bins: int, params: ChordModel):
        from .chord_net import ChordNet

        return ChordNet(n_bins=n_bins, **params.model_dump())

    def loss(self, outputs, batch):
        from .chord_net import loss

        return loss(outputs, batch)

    def metric(self, outputs, batch) -> tuple[float, float]:
        from .chord_net import metric

        return metric(outputs, batch)

    def fit_state(self, training_targets) -> dict[str, Any]:
        tags = (t["targets/chord_tag"] for t in training_targets)
        return {"self_transition": self_transition(tags).tolist()}


class ChordDecoder(Decoder):
    DecodeParams = ChordDecoding

    def predict(self, model, features: np.ndarray, device) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = model(torch.from_numpy(features.astype(np.float32))[None].to(device))["tag"][0]
            return logits.float().softmax(-1).cpu().numpy()

    def decode(self, prediction, frame_times, duration, state: Mapping[str, Any], options: ChordDecoding):
        p_self = np.asarray(state["self_transition"]) if options.viterbi and state.get("self_transition") else None
        return decode(prediction, frame_times, duration, p_self)


class ChordScorer(Scorer):
    metrics = METRICS
    score_columns = ("root", "majmin", "mirex", "thirds", "triads", "sevenths", "tetrads", "seg")

    def score(self, ref, est) -> Scores:
        return score(ref, est)

    def plot(self, path: Path, features: np.ndarray, frame_rate: float, ref, est, title: str, prediction: np.ndarray) -> None:
        from .figures import plot_segments

        plot_segments(path, features, frame_rate, [("reference", ref), ("estimate", est)], title, ylabel="CQT bin")


@TASKS.register
class ChordTask(Task):
    """Chord recognition: 170 chord classes plus structured root/pitches/bass heads."""

    name = "chord"
    feature = "cqt"
    targets = ChordTargets()
    network = ChordNetwork()
    decoder = ChordDecoder()
    scorer = ChordScorer()
