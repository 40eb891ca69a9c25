"""Exact annotations of a MIDI performance: the JAMS the sampled renderer writes next to its audio.

- ``pitch_contour``: the lead's f0 from its note and pitch-bend data, voiced from note-on until
  the note has died away after its note-off (its release and reverb, measured on the rendered
  lead alone: ``release_ends``), as melody annotators mark what is audible.
- ``note_midi``: every note of every pitched part (lead, comp, pad, bass; not drums) as the
  synthesizer sounds it: note-on to note-off, held on by the sustain pedal, ended early by a
  re-strike of the same key.
- Both at the octave each preset sounds (``sounding_offsets``): measured on a probe note of the
  soundfont's preset, since GM soundfonts disagree (FluidR3's drawbar organ sounds two octaves
  below the key, its church organ at the key, TimGM6mb's drawbar organ one octave below).
"""

from __future__ import annotations

from typing import Any

import jams
import numpy as np

from .arrange import DRUM_CHANNEL, Event, Part, Performance, bend_semitones, bend_track
from .demo_jams import demo_jams
from .families import FAMILIES
from .track import CONTOUR_HOP, midi_to_hz

Sounding = dict[tuple[int, int], int]  # (channel, key) -> semitones from the key to the pitch it sounds

PERIODIC = 0.85  # a probe is periodic at a lag where its autocorrelation reaches this share of its energy
PROBE_NOTE, PROBE_GAP = 0.5, 0.25  # seconds each probe note sounds, and of silence after it
_PROBED: dict[tuple[str, int, int, int, int], int] = {}  # (soundfont, sr, bank, program, key) -> offset


def sounding_offsets(perf: Performance, soundfont_name: str, sr: int) -> Sounding:
    """The octave each (part, key) sounds at: 0, or -12 / -24 where the preset sounds one / two
    octaves below the key (organs' 16' and 32' stops; GM soundfonts disagree, and even one
    preset changes with the key: TimGM6mb's church organ sounds at the key up to G4, an octave
    below from A4). Measured on probe notes of the preset (reverb off): the sounding period is
    the shortest of 1, 2, 4 key periods at which the probe's autocorrelation (from its power
    spectrum, so at the partials' true frequencies) reaches ``PERIODIC``. This agrees with pyin
    on every organ preset and key of the demo's three soundfonts. Each (soundfont, preset, key)
    is probed once per process; a track's new keys of one preset share one rendering."""
    from . import soundfont

    parts = {p.channel: p for p in perf.parts if p.role != "drums"}
    wanted = sorted({(e.channel, e.a) for e in perf.events if e.kind == "on" and e.channel in parts})
    missing: dict[tuple[int, int], set[int]] = {}
    for ch, key in wanted:
        p = parts[ch]
        if (soundfont_name, sr, p.bank, p.program, key) not in _PROBED:
            missing.setdefault((p.bank, p.program), set()).add(key)
    for (bank, program), key_set in missing.items():
        keys = sorted(key_set)
        starts = [round(i * (PROBE_NOTE + PROBE_GAP) * sr / 64) * 64 / sr for i in range(len(keys))]
        events = [Event(0.0, 0, "cc", 91, 0), Event(0.0, 0, "cc", 93, 0)]
        for t, key in zip(starts, keys):
            events += [Event(t, 0, "on", key, 100), Event(t + PROBE_NOTE, 0, "off", key)]
        probe = Performance(
            "clip",
            starts[-1] + PROBE_NOTE + PROBE_GAP,
            120.0,
            (),
            (Part(0, "melody", "probe", bank, program, 100, 64, 0),),
            tuple(sorted(events, key=Event.sort_key)),
            (),
            (),
            0,
            (),
            0.0,
        )
        y, _ = soundfont.render(probe, soundfont_name, sr)
        for t, key in zip(starts, keys):
            _PROBED[(soundfont_name, sr, bank, program, key)] = period_octave(
                y[int((t + 0.1) * sr) : int((t + PROBE_NOTE) * sr)], sr, key
            )
    return {(ch, key): _PROBED[(soundfont_name, sr, parts[ch].bank, parts[ch].program, key)] for ch, key in wanted}


def period_octave(seg: np.ndarray, sr: int, key: int) -> int:
    power = np.abs(np.fft.rfft(np.asarray(seg, np.float64) * np.hanning(len(seg)))) ** 2
    if power.sum() <= 0:
        return 0
    freqs = np.fft.rfftfreq(len(seg), 1.0 / sr)
    period = 1.0 / float(midi_to_hz(key))
    for m, octave in ((1, 0), (2, -12), (4, -24)):
        if (power * np.cos(2 * np.pi * freqs * m * period)).sum() / power.sum() >= PERIODIC:
            return octave
    return 0


def family_offsets(perf: Performance) -> Sounding:
    """The families' nominal octaves (``Family.sounding``), where no soundfont was measured."""
    tag = {p.channel: p.tag for p in perf.parts if p.role != "drums"}
    return {(e.channel, e.a): FAMILIES[tag[e.channel]].sounding for e in perf.events if e.kind == "on" and e.channel in tag}


def sounding_shift(perf: Performance, key: int, sounding: Sounding | None = None) -> int:
    """Semitones from a lead key to the pitch it sounds."""
    if perf.melody_channel is None:
        return 0
    return (sounding or family_offsets(perf)).get((perf.melody_channel, key), 0)


# A released lead note counts as sounding until its level falls this far below the note's peak:
# sampled winds and strings release over ~0.1 s (measured: -2..-5 dB of the note's peak in the
# first 50 ms after note-off, -11..-13 dB at 50-100 ms), long enough to hear the pitch.
RELEASE_DB = 20.0
RELEASE_MAX = 1.0  # seconds after note-off at most
LEVEL_WINDOW = 0.02  # seconds of audio around each contour time for its level


def levels_db(audio: np.ndarray, sr: int, times: np.ndarray) -> np.ndarray:
    """RMS level (dB) of ``audio`` in a ``LEVEL_WINDOW`` centred on each time."""
    half = int(round(LEVEL_WINDOW * sr / 2))
    power = np.concatenate([[0.0], np.cumsum(np.asarray(audio, np.float64) ** 2)])
    c = np.round(np.asarray(times) * sr).astype(int)
    lo, hi = np.clip(c - half, 0, len(audio)), np.clip(c + half, 0, len(audio))
    mean = (power[hi] - power[lo]) / np.maximum(hi - lo, 1)
    return 10 * np.log10(mean + 1e-20)


def release_ends(perf: Performance, lead_audio: np.ndarray, sr: int) -> list[float]:
    """Per lead note, when it has died away: the first contour time at or after its note-off
    where the lead alone sounds ``RELEASE_DB`` below the note's peak, no later than the next
    note's start or ``RELEASE_MAX`` after note-off."""
    times = np.arange(int(perf.duration / CONTOUR_HOP) + 1) * CONTOUR_HOP
    level = levels_db(lead_audio, sr, times)
    ends = []
    for i, n in enumerate(perf.melody):
        stop = min(perf.melody[i + 1].start if i + 1 < len(perf.melody) else perf.duration, n.end + RELEASE_MAX)
        inside = (times >= n.start - 1e-9) & (times < n.end - 1e-9)
        if not inside.any() or stop <= n.end:
            ends.append(min(n.end, stop))
            continue
        floor = level[inside].max() - RELEASE_DB
        after = np.flatnonzero((times >= n.end - 1e-9) & (times < stop - 1e-9))
        quiet = after[level[after] < floor]
        ends.append(float(times[quiet[0]]) if len(quiet) else stop)
    return ends


def contour(
    perf: Performance, release: list[float] | None = None, sounding: Sounding | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lead f0 every ``CONTOUR_HOP`` s from the note and pitch-bend data: (times, hz, voiced).

    The bend in effect at t is the last bend event at or before t (events sit on the
    render block grid, where the synthesizer applies them); 12-TET, A4 = 440 Hz. A note is
    voiced from its start to its ``release`` end (``release_ends``; default its note-off),
    holding the pitch it had at note-off while it dies away; ``sounding``: the measured octaves
    (``sounding_offsets``; default the families' nominal ones).
    """
    times = np.arange(int(perf.duration / CONTOUR_HOP) + 1) * CONTOUR_HOP
    hz = np.zeros_like(times)
    voiced = np.zeros(times.shape, bool)
    if perf.melody_channel is None or not perf.melody:
        return times, hz, voiced
    bends = bend_track(perf.events, perf.melody_channel)
    sounding = sounding or family_offsets(perf)
    for i, n in enumerate(perf.melody):
        end = max(n.end, release[i]) if release is not None else n.end
        inside = (times >= n.start - 1e-9) & (times < end - 1e-9)
        at = np.minimum(times[inside], n.end - 1e-6)  # after note-off: the bend in effect at note-off
        hz[inside] = midi_to_hz(n.key + sounding_shift(perf, n.key, sounding) + bend_semitones(bends, at))
        voiced |= inside
    return times, hz, voiced


def sounding_notes(perf: Performance, sounding: Sounding | None = None) -> list[tuple[float, float, float]]:
    """(start, duration, sounding MIDI pitch) of every note of every pitched part, as FluidSynth
    plays the events: a note sounds from its note-on until its note-off, or the release of the
    sustain pedal (CC64 >= 64) held at note-off, or a new note-on of the same key on the same
    channel (which releases the old voice), whichever comes first; sorted by (start, pitch)."""
    shift = sounding or family_offsets(perf)
    pitched = {p.channel for p in perf.parts if p.role != "drums"}
    active: dict[tuple[int, int], float] = {}  # (channel, key) -> start
    held: dict[int, set[int]] = {}  # channel -> keys released while the pedal is down
    pedal: dict[int, bool] = {}
    out: list[tuple[float, float, float]] = []

    def close(ch: int, key: int, t: float) -> None:
        start = active.pop((ch, key), None)
        held.get(ch, set()).discard(key)
        if start is not None and t > start:
            out.append((start, t - start, float(key + shift.get((ch, key), 0))))

    for ev in perf.events:  # in play order (at one time: program, off, cc, bend, on)
        ch = ev.channel
        if ch == DRUM_CHANNEL or ch not in pitched:
            continue
        if ev.kind == "on":
            close(ch, ev.a, ev.time)
            active[(ch, ev.a)] = ev.time
        elif ev.kind == "off" and (ch, ev.a) in active:
            if pedal.get(ch):
                held.setdefault(ch, set()).add(ev.a)
            else:
                close(ch, ev.a, ev.time)
        elif ev.kind == "cc" and ev.a == 64:
            down = ev.b >= 64
            if pedal.get(ch) and not down:
                for key in sorted(held.get(ch, set())):
                    close(ch, key, ev.time)
            pedal[ch] = down
    for ch, key in sorted(active):
        close(ch, key, perf.duration)
    return sorted((s, min(d, perf.duration - s), m) for s, d, m in out if s < perf.duration)


def annotate(
    perf: Performance,
    track_id: str,
    sandbox: dict[str, Any],
    lead_audio: np.ndarray | None = None,
    sr: int | None = None,
    sounding: Sounding | None = None,
) -> jams.JAMS:
    """chord (mixtures), key_mode, pitch_contour (voiced through each note's audible release when
    the rendered lead alone, ``lead_audio`` at ``sr``, is given), note_midi (every pitched part)
    and tag_open (families with spans); pitches at the ``sounding`` octaves (``sounding_offsets``;
    default the families' nominal ones)."""
    release: list[float] | None = None
    if lead_audio is not None:
        assert sr is not None  # lead_audio comes with its rate
        release = release_ends(perf, lead_audio, sr)
    sounding = sounding or family_offsets(perf)
    jam = demo_jams(
        track_id,
        "mirpipe demo (sampled)",
        perf.duration,
        "synthetic: General MIDI soundfont rendering",
        chords=((seg.start, seg.end - seg.start, seg.label) for seg in perf.chords),
        keys=((start, end - start, label) for start, end, label in perf.keys),
        contour=contour(perf, release, sounding),
        notes=sounding_notes(perf, sounding),
        tags=((start, end - start, name) for name, start, end in perf.tags),
    )
    jam.sandbox.mirpipe_demo = {
        "kind": perf.kind,
        "tempo": perf.tempo,
        "parts": [
            {
                "role": p.role,
                "family": p.tag,
                "bank": p.bank,
                "program": p.program,
                "channel": p.channel,
                **(
                    {"sounding": {str(k): o for (c, k), o in sorted(sounding.items()) if c == p.channel and o}}
                    if p.role != "drums"
                    else {}
                ),
            }
            for p in perf.parts
        ],
        **sandbox,
    }
    return jam
