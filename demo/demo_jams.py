"""The JAMS both demo renderers write: the same namespaces, metadata and conventions,
built from (time, duration, value) events so each renderer only says what it played."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jams
import numpy as np

Event = tuple[float, float, Any]  # time, duration, value


def demo_jams(
    track_id: str,
    artist: str,
    duration: float,
    data_source: str,
    *,
    chords: Iterable[Event],
    keys: Iterable[Event],
    contour: tuple[np.ndarray, np.ndarray, np.ndarray],
    notes: Iterable[Event],
    tags: Iterable[Event],
) -> jams.JAMS:
    """chord (only when there are chords), key_mode, pitch_contour (times, hz, voiced),
    note_midi and tag_open, each observation with confidence 1."""
    jam = jams.JAMS()
    jam.file_metadata.title = track_id
    jam.file_metadata.artist = artist
    jam.file_metadata.duration = duration
    meta = dict(annotator={"name": "mirpipe.synthesize"}, data_source=data_source)

    def add(namespace: str, events: Iterable[Event]) -> None:
        ann = jams.Annotation(namespace, time=0, duration=duration, annotation_metadata=meta)
        for time, length, value in events:
            ann.append(time=time, duration=length, value=value, confidence=1.0)
        jam.annotations.append(ann)

    chords = list(chords)
    if chords:
        add("chord", chords)
    add("key_mode", keys)
    times, hz, voiced = contour
    add(
        "pitch_contour",
        ((float(t), 0.0, {"index": 0, "frequency": float(f), "voiced": bool(v)}) for t, f, v in zip(times, hz, voiced)),
    )
    add("note_midi", notes)
    add("tag_open", tags)
    return jam
