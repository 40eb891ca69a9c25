"""Chord task: the 170-class vocabulary of McFee & Bello (2017) and its frame targets.

Classes 0..167 are 12 roots x 14 qualities (root-major order), 168 is ``N`` (no
chord) and 169 is ``X`` (a chord outside the vocabulary). The structured targets
are root (13 = 12 pitch classes + N), bass (13) and the 12 sounding pitch classes.
``-1`` marks frames without a usable reference (no chord annotation, ``X`` for
root/bass/pitches): losses must ignore them.
"""

from __future__ import annotations

import numpy as np
import mir_eval.chord

FEATURE = "cqt"

PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

QUALITIES = (
    "maj", "min", "dim", "aug", "min6", "maj6", "min7",
    "minmaj7", "maj7", "7", "dim7", "hdim7", "sus2", "sus4",
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

_QUALITY_BITMAPS = np.stack([mir_eval.chord.quality_to_bitmap(q) for q in QUALITIES])


def quality_intervals(quality: str) -> list[int]:
    """Semitone intervals above the root of a vocabulary quality."""
    return [int(i) for i in np.flatnonzero(mir_eval.chord.quality_to_bitmap(quality))]


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
    root, bitmap, bass = mir_eval.chord.encode(label, reduce_extended_chords=True)
    if label == "X" or (root < 0 and np.all(bitmap < 0)):
        return IGNORE, np.full(12, IGNORE, dtype=np.int8), IGNORE, TAG_X
    if root < 0:
        return NO_ROOT, np.zeros(12, dtype=np.int8), NO_ROOT, TAG_N
    pitches = np.roll(bitmap, root).astype(np.int8)
    bass_abs = (root + bass) % 12
    pitches[bass_abs] = 1  # the bass sounds even when it is not a chord tone (C:maj/b7)
    # The class ignores the inversion: match the quality of the label without its bass.
    _, quality_bitmap, _ = mir_eval.chord.encode(label.split("/")[0], reduce_extended_chords=True)
    match = np.flatnonzero((_QUALITY_BITMAPS == quality_bitmap).all(axis=1))
    tag = int(root * len(QUALITIES) + match[0]) if match.size else TAG_X
    return int(root), pitches, int(bass_abs), tag


def transpose_label(label: str, n_semitones: int) -> str:
    """Transpose a Harte chord (or key) label; degrees are relative, so only the root moves.

    Output roots are ASCII sharps (``D#``), which JAMS and mir_eval both accept.
    """
    if label in ("N", "X") or not label:
        return label
    root_end = 1
    while root_end < len(label) and label[root_end] in "b#":
        root_end += 1
    root = label[:root_end]
    pc = mir_eval.chord.pitch_class_to_semitone(root)
    return PITCH_NAMES[(pc + int(n_semitones)) % 12] + label[root_end:]


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
    """Chord targets on a frame grid from the first ``chord`` annotation of a JAMS.

    Frames outside every chord observation are N; a track without any chord
    annotation gets ``IGNORE`` everywhere (e.g. solo recordings).
    """
    n = len(frame_times)
    anns = [a for a in jam.annotations if a.namespace == "chord"]  # jam.search serializes all data: slow
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
