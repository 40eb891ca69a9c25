"""JAMS namespace facts every room uses: which namespaces convert to a task's, and how a Harte
chord or key label moves under a pitch shift (only the root moves; degrees are relative)."""

from __future__ import annotations

import re

PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def converts_to(namespace: str, target: str) -> bool:
    """Is an annotation in ``namespace`` one of ``target`` (itself or convertible with jams.nsconvert)?"""
    import jams

    conversions = jams.nsconvert.__CONVERSION__.get(target, {})
    return namespace == target or any(matches(namespace, src) for src in conversions)


def matches(namespace: str, pattern: str) -> bool:
    """Does ``namespace`` match a jams.nsconvert source pattern (a regular expression)?"""
    return re.fullmatch(pattern, namespace) is not None


def transpose_label(label: str, n_semitones: int) -> str:
    """Transpose a Harte chord (or key) label; degrees are relative, so only the root moves.

    Output roots are ASCII sharps (``D#``), which JAMS and mir_eval both accept.
    """
    if label in ("N", "X") or not label:
        return label
    import mir_eval.chord  # imported when first used: it loads scipy.stats (~1.3 s)

    root_end = 1
    while root_end < len(label) and label[root_end] in "b#":
        root_end += 1
    root = label[:root_end]
    pc = mir_eval.chord.pitch_class_to_semitone(root)
    return PITCH_NAMES[(pc + int(n_semitones)) % 12] + label[root_end:]
