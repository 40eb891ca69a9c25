"""How an annotation moves under a pitch shift of n semitones: exact rewrites of its values.

A *transposer* takes an annotation and n and returns the annotation of the audio shifted by n
(a new one; the given one is left as it is). Each task declares its own on its ``Targets``
(``transpose_annotation``, for the namespaces named by ``Targets.moves``); the deformer of
audio-mode augmentation (``mirpipe.audio.deform``) takes a table ``{namespace regex:
transposer}`` collected from the registered tasks (``mirpipe.models.task.annotation_transposers``).
``UNCLAIMED`` holds the pitched JAMS namespaces that no built-in task reads (keys, raw f0 and
notes in Hz or MIDI), so that they still move in an augmented JAMS; a task's entry for a
namespace comes first.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import copy
from typing import Any

from jams.core import Observation

from .namespaces import transpose_label

Transposer = Callable[[Any, int], Any]  # (jams.Annotation, n semitones) -> jams.Annotation


def rewrite(annotation, value_of: Callable[[Any], Any]):
    """A copy of ``annotation`` whose every observation's value is ``value_of(value)`` (times,
    durations, confidences kept; the source and its observations untouched)."""
    out = copy(annotation)
    old = out.pop_data()  # a fresh container on the copy; the source keeps its own
    out.data.update([Observation(o.time, o.duration, value_of(o.value), o.confidence) for o in old])
    return out


def transpose_labels(annotation, n: int):
    """Harte chord or key labels: the root moves by n (ASCII sharps), degrees stay."""
    return rewrite(annotation, lambda v: transpose_label(v, n))


def scale_contour(annotation, n: int):
    """A ``pitch_contour``: frequencies scaled by 2^(n/12), index and voicing kept."""
    scale = 2.0 ** (n / 12.0)
    return rewrite(annotation, lambda v: {"index": v["index"], "frequency": scale * v["frequency"], "voiced": v["voiced"]})


def scale_hz(annotation, n: int):
    """Values in Hz (``note_hz``, ``pitch_hz``; negative: unvoiced) scaled by 2^(n/12)."""
    scale = 2.0 ** (n / 12.0)
    return rewrite(annotation, lambda v: scale * v)


def add_semitones(annotation, n: int):
    """Values in MIDI numbers (``note_midi``, ``pitch_midi``) plus n."""
    return rewrite(annotation, lambda v: v + n)


# pitched namespaces no built-in task claims (a task's Targets.moves comes first): they move too
UNCLAIMED: dict[str, Transposer] = {
    "key_mode": transpose_labels,
    "pitch_hz": scale_hz,
    "pitch_midi|note_midi": add_semitones,
}
