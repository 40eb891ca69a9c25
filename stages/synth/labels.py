"""Exact annotations of a MIDI performance: the JAMS the sampled renderer writes next to its audio."""

from __future__ import annotations

from typing import Any

import jams
import numpy as np

from .arrange import BEND_RANGE, Performance, bend_track
from .families import FAMILIES
from .track import CONTOUR_HOP, midi_to_hz


def sounding_shift(perf: Performance) -> int:
    """Semitones from the lead's keys to the pitch it sounds (an organ's 16' stop: an octave down)."""
    lead = next((p for p in perf.parts if p.channel == perf.melody_channel), None)
    return FAMILIES[lead.tag].sounding if lead is not None else 0


def contour(perf: Performance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lead f0 every ``CONTOUR_HOP`` s from the note and pitch-bend data: (times, hz, voiced).

    The bend in effect at t is the last bend event at or before t (events sit on the
    render block grid, where the synthesizer applies them); 12-TET, A4 = 440 Hz.
    """
    times = np.arange(int(perf.duration / CONTOUR_HOP) + 1) * CONTOUR_HOP
    hz = np.zeros_like(times)
    voiced = np.zeros(times.shape, bool)
    if perf.melody_channel is None or not perf.melody:
        return times, hz, voiced
    bt, bv = bend_track(perf.events, perf.melody_channel)
    shift = sounding_shift(perf)
    for n in perf.melody:
        inside = (times >= n.start - 1e-9) & (times < n.end - 1e-9)
        idx = np.searchsorted(bt, times[inside] + 1e-9, side="right") - 1
        bend = np.where(idx >= 0, bv[np.maximum(idx, 0)], 0.0)
        hz[inside] = midi_to_hz(n.key + shift + bend * BEND_RANGE / 8192.0)
        voiced |= inside
    return times, hz, voiced


def annotate(perf: Performance, track_id: str, sandbox: dict[str, Any]) -> jams.JAMS:
    """chord (mixtures), key_mode, pitch_contour, note_midi (the lead) and tag_open (families with spans)."""
    jam = jams.JAMS()
    jam.file_metadata.title = track_id
    jam.file_metadata.artist = "mirpipe demo (sampled)"
    jam.file_metadata.duration = perf.duration
    meta = dict(annotator={"name": "mirpipe.synthesize"}, data_source="synthetic: General MIDI soundfont rendering")
    if perf.chords:
        ann = jams.Annotation("chord", time=0, duration=perf.duration, annotation_metadata=meta)
        for seg in perf.chords:
            ann.append(time=seg.start, duration=seg.end - seg.start, value=seg.label, confidence=1.0)
        jam.annotations.append(ann)
    key = jams.Annotation("key_mode", time=0, duration=perf.duration, annotation_metadata=meta)
    for start, end, label in perf.keys:
        key.append(time=start, duration=end - start, value=label, confidence=1.0)
    jam.annotations.append(key)
    times, hz, voiced = contour(perf)
    pc = jams.Annotation("pitch_contour", time=0, duration=perf.duration, annotation_metadata=meta)
    for t, f, v in zip(times, hz, voiced):
        pc.append(time=float(t), duration=0.0, value={"index": 0, "frequency": float(f), "voiced": bool(v)}, confidence=1.0)
    jam.annotations.append(pc)
    notes = jams.Annotation("note_midi", time=0, duration=perf.duration, annotation_metadata=meta)
    shift = sounding_shift(perf)
    for n in perf.melody:
        notes.append(time=n.start, duration=n.end - n.start, value=float(n.key + shift), confidence=1.0)
    jam.annotations.append(notes)
    tags = jams.Annotation("tag_open", time=0, duration=perf.duration, annotation_metadata=meta)
    for name, start, end in perf.tags:
        tags.append(time=start, duration=end - start, value=name, confidence=1.0)
    jam.annotations.append(tags)
    jam.sandbox.mirpipe_demo = {
        "kind": perf.kind,
        "tempo": perf.tempo,
        "parts": [{"role": p.role, "family": p.tag, "bank": p.bank, "program": p.program, "channel": p.channel}
                  for p in perf.parts],
        **sandbox,
    }
    return jam
