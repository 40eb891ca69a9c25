"""Exact annotations of a MIDI performance: the JAMS the sampled renderer writes next to its audio."""

from __future__ import annotations

from typing import Any

import jams
import numpy as np

from .arrange import BEND_RANGE, Performance, bend_track
from .demo_jams import demo_jams
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
    shift = sounding_shift(perf)
    jam = demo_jams(
        track_id, "mirpipe demo (sampled)", perf.duration, "synthetic: General MIDI soundfont rendering",
        chords=((seg.start, seg.end - seg.start, seg.label) for seg in perf.chords),
        keys=((start, end - start, label) for start, end, label in perf.keys),
        contour=contour(perf),
        notes=((n.start, n.end - n.start, float(n.key + shift)) for n in perf.melody),
        tags=((start, end - start, name) for name, start, end in perf.tags),
    )
    jam.sandbox.mirpipe_demo = {
        "kind": perf.kind,
        "tempo": perf.tempo,
        "parts": [{"role": p.role, "family": p.tag, "bank": p.bank, "program": p.program, "channel": p.channel}
                  for p in perf.parts],
        **sandbox,
    }
    return jam
