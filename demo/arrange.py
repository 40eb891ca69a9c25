"""A demo performance as MIDI: band arrangements, lead melodies and solo phrases, with exact labels.

Everything is drawn from a seeded RNG, so a (seed, index) gives the same performance.
Event times sit on fluidsynth's 64-sample block grid at the render rate: an event
takes effect exactly at its time, so the ``pitch_contour`` computed here from the
note and pitch-bend data is the one the synthesizer plays (12-TET, A4 = 440 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mirpipe.models.chord import PITCH_NAMES, QUALITIES, QUALITY_DEGREES, quality_intervals

from .families import COMP_FAMILIES, DRUM_KITS, FAMILIES, LEAD_FAMILIES, SOLO_FAMILIES, Family
from .track import INVERSION_P, QUALITY_P, SCALES, SYMMETRIC, ChordSegment, MelodyNote

BLOCK = 64  # fluidsynth's internal block: events are applied on block boundaries
BEND_RANGE = 12  # semitones, set on every channel with RPN 0 (glides up to an octave)
BEND_STEP_BLOCKS = 2  # pitch-bend updates every 2 blocks (5.8 ms at 22.05 kHz) during glides and vibrato
DRUM_CHANNEL = 9
GUITAR_STRINGS = (40, 45, 50, 55, 59, 64)
_ORDER = {"program": 0, "off": 1, "cc": 2, "bend": 3, "on": 4}


@dataclass(frozen=True)
class Part:
    channel: int
    role: str  # melody, comp, pad, bass, drums
    tag: str  # family tag (tag_open)
    bank: int
    program: int
    volume: int  # CC7
    pan: int  # CC10
    reverb: int  # CC91


@dataclass(frozen=True)
class Event:
    time: float  # seconds, on the block grid
    channel: int
    kind: str  # on, off, cc, bend
    a: int  # key / controller / bend value (signed, -8192..8191)
    b: int = 0  # velocity / controller value

    def sort_key(self) -> tuple:
        # controller changes at one time keep the order they were written in (a stable sort): an RPN
        # is a sequence (101, 100, then the data entry 6, 38), and sorted by controller number the
        # data entry came first and was dropped, leaving FluidSynth's bend range at 2 semitones
        return (self.time, _ORDER[self.kind], self.channel, 0 if self.kind == "cc" else self.a)


@dataclass(frozen=True)
class Note:
    start: float
    end: float
    key: int


@dataclass(frozen=True)
class Performance:
    kind: str  # mixture, solo, clip
    duration: float
    tempo: float  # bpm of the first section
    keys: tuple[tuple[float, float, str], ...]
    parts: tuple[Part, ...]
    events: tuple[Event, ...]
    chords: tuple[ChordSegment, ...]
    melody: tuple[Note, ...]
    melody_channel: int | None
    tags: tuple[tuple[str, float, float], ...]  # (family, start, end)
    gain_db: float


class _Writer:
    """Collects events, snapping times to the block grid of the render rate."""

    def __init__(self, sr: int):
        self.sr = sr
        self.events: list[Event] = []

    def q(self, t: float) -> float:
        return round(t * self.sr / BLOCK) * BLOCK / self.sr

    def note(self, ch: int, start: float, end: float, key: int, vel: int) -> None:
        s, e = self.q(start), self.q(end)
        if e <= s or not 0 <= key <= 127:
            return
        self.events.append(Event(s, ch, "on", int(key), int(np.clip(vel, 1, 127))))
        self.events.append(Event(e, ch, "off", int(key)))

    def cc(self, ch: int, t: float, ctrl: int, value: int) -> None:
        self.events.append(Event(self.q(t), ch, "cc", ctrl, int(np.clip(value, 0, 127))))

    def bend(self, ch: int, t: float, value: int) -> None:
        self.events.append(Event(self.q(t), ch, "bend", int(np.clip(value, -8192, 8191))))

    def setup(self, part: Part) -> None:
        """Volume, pan, reverb and chorus sends and the pitch-bend range (RPN 0), at time 0."""
        for ctrl, v in (
            (7, part.volume),
            (10, part.pan),
            (91, part.reverb),
            (93, 0),
            (11, 127),
            (101, 0),
            (100, 0),
            (6, BEND_RANGE),
            (38, 0),
            (101, 127),
            (100, 127),
        ):
            self.cc(part.channel, 0.0, ctrl, v)
        self.bend(part.channel, 0.0, 0)

    def sorted(self) -> tuple[Event, ...]:
        return tuple(sorted(self.events, key=Event.sort_key))


def _part(rng, channel: int, role: str, tag: str, volume: tuple[int, int], pan: int) -> Part:
    fam = FAMILIES[tag]
    return Part(
        channel,
        role,
        tag,
        0,
        int(rng.choice(fam.programs)),
        int(rng.integers(*volume)),
        int(np.clip(64 + pan + rng.integers(-8, 9), 0, 127)),
        int(rng.integers(20, 61)),
    )


# -- harmony ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chord:
    start: float
    end: float
    beat: float
    label: str
    pcs: tuple[int, ...]  # chord pitch classes, root first
    bass_pc: int | None  # None: N


def _chords(rng, start: float, length: float, beat: float, key_pc: int, scale) -> list[_Chord]:
    lengths = [k for k in (2, 3, 4, 6, 8) if 1.0 <= k * beat <= 4.0] or [max(1, round(2.0 / beat))]
    out, t = [], start
    while t < start + length:
        seg = float(rng.choice(lengths)) * beat
        if rng.random() < 0.06:
            out.append(_Chord(t, t + seg, beat, "N", (), None))
            t += seg
            continue
        root = (key_pc + int(rng.choice(scale))) % 12 if rng.random() < 0.75 else int(rng.integers(12))
        quality = str(rng.choice(QUALITIES, p=QUALITY_P))
        intervals = quality_intervals(quality)
        label, bass_iv = f"{PITCH_NAMES[root]}:{quality}", 0
        if quality not in SYMMETRIC and rng.random() < INVERSION_P:
            k = int(rng.integers(1, len(intervals)))
            bass_iv = intervals[k]
            label += "/" + QUALITY_DEGREES[quality][k]
        out.append(_Chord(t, t + seg, beat, label, tuple((root + i) % 12 for i in intervals), (root + bass_iv) % 12))
        t += seg
    return out


def _stack(pcs: tuple[int, ...], low: int) -> list[int]:
    """The pitch classes stacked upwards from the first one's lowest key >= low."""
    notes = [low + (pcs[0] - low) % 12]
    for pc in pcs[1:]:
        notes.append(notes[-1] + 1 + (pc - notes[-1] - 1) % 12)
    return notes


def piano_voicing(rng, pcs: tuple[int, ...], center: float) -> list[int]:
    """Close, drop-2 and open voicings of every inversion; the one nearest the last (voice leading)."""
    cands: list[list[int]] = []
    for rot in range(len(pcs)):
        order = pcs[rot:] + pcs[:rot]
        for low in (50, 56):
            close = _stack(order, low)
            cands.append(close)
            if len(close) >= 4:
                cands.append(sorted(close[:-2] + [close[-2] - 12, close[-1]]))
            else:
                cands.append(sorted([close[0], close[2], close[1] + 12]))
    cands = [c for c in cands if c[0] >= 43 and c[-1] <= 81]
    dist = np.array([abs(np.mean(c) - center) + rng.uniform(0, 3) for c in cands])
    return cands[int(np.argmin(dist))]


def guitar_voicing(rng, pcs: tuple[int, ...], bass_pc: int) -> list[int] | None:
    """A fretted shape: one note per string within a 4-fret window, lowest string on the bass."""
    for pos in rng.permutation(8):
        frets = [0, *range(max(int(pos), 1), int(pos) + 4)] if pos <= 2 else list(range(int(pos), int(pos) + 4))
        notes: list[int] = []
        for s in GUITAR_STRINGS:
            options = [s + f for f in frets if (s + f) % 12 in pcs]
            if not notes:
                options = [n for n in options if n % 12 == bass_pc]
                if options:
                    notes.append(min(options))
                continue
            if options:
                missing = [n for n in options if n % 12 not in {m % 12 for m in notes}]
                notes.append(int(rng.choice(missing or options)))
        if len(notes) >= 3 and {n % 12 for n in notes} == set(pcs):
            return notes
    return None


# -- parts --------------------------------------------------------------------------------------


def _comp(w: _Writer, rng, part: Part, chords: list[_Chord], style: str, level: float, bassless: bool) -> None:
    fam = FAMILIES[part.tag]
    ch, center = part.channel, 62.0
    guitar = "guitar" in part.tag
    for c in chords:
        if c.bass_pc is None:
            continue
        voicing = guitar_voicing(rng, c.pcs, c.bass_pc) if guitar else None
        if voicing is None:
            voicing = piano_voicing(rng, c.pcs, center)
            if bassless and style != "pad":
                voicing = [36 + (c.bass_pc - 36) % 12, *voicing]
        center = 0.7 * center + 0.3 * float(np.mean(voicing))
        vel = lambda accent=0: int(level * rng.uniform(0.75, 0.95) + accent)
        beats = np.arange(c.start, c.end - 1e-6, c.beat)
        if style in ("block", "pad"):
            for k in voicing:
                w.note(ch, c.start, c.end, k, vel())
            if fam.tag in ("piano", "electric piano"):
                w.cc(ch, c.start, 64, 0)
                w.cc(ch, c.start + 0.05, 64, 127)
                w.cc(ch, c.end - 0.02, 64, 0)
        elif style == "pulse":
            for i, b in enumerate(beats):
                e = beats[i + 1] if i + 1 < len(beats) else c.end
                for k in voicing:
                    w.note(ch, b, b + 0.9 * (e - b), k, vel(8 if i == 0 else 0))
        elif style == "arpeggio":
            step = c.beat / (4 if c.beat > 0.75 else 2)
            order = voicing + voicing[-2:0:-1] if rng.random() < 0.5 else voicing
            t, i = c.start, 0
            while t < c.end - 1e-6:
                ring = c.end if guitar or fam.tag == "piano" else t + 2 * step
                w.note(ch, t, min(ring, c.end), order[i % len(order)], vel(10 if i == 0 else 0))
                t, i = t + step, i + 1
            if fam.tag == "piano":
                w.cc(ch, c.start, 64, 0)
                w.cc(ch, c.start + 0.05, 64, 127)
                w.cc(ch, c.end - 0.02, 64, 0)
        else:  # strum: eighth-note strums, down on the beat, up on the off-beat, a few skipped
            step = c.beat / 2
            hits = [c.start + k * step for k in range(int(round((c.end - c.start) / step)))]
            hits = [h for k, h in enumerate(hits) if k == 0 or rng.random() < 0.7]
            for k, h in enumerate(hits):
                e = hits[k + 1] if k + 1 < len(hits) else c.end
                down = round((h - c.start) / step) % 2 == 0
                strings = voicing if down else voicing[::-1][: max(3, len(voicing) - 2)]
                spread = rng.uniform(0.008, 0.022)
                for j, key in enumerate(strings):
                    w.note(ch, h + j * spread, e, key, vel(12 if down else -10))


def _bass(w: _Writer, rng, part: Part, chords: list[_Chord], style: str, level: float) -> None:
    ch = part.channel
    for i, c in enumerate(chords):
        if c.bass_pc is None:
            continue
        root = 28 + (c.bass_pc - 28) % 12
        tones = sorted({root + (pc - root) % 12 for pc in c.pcs} | {root + 12})
        beats = list(np.arange(c.start, c.end - 1e-6, c.beat))
        nxt = chords[i + 1].bass_pc if i + 1 < len(chords) else None
        vel = lambda: int(level * rng.uniform(0.8, 1.0))
        if style == "whole":
            w.note(ch, c.start, c.end, root, vel())
            continue
        if style == "eighths":
            t = c.start
            while t < c.end - 1e-6:
                w.note(ch, t, t + 0.45 * c.beat, root, vel())
                t += c.beat / 2
            continue
        for k, b in enumerate(beats):
            last = k == len(beats) - 1 and k > 0
            if k == 0:
                key = root
            elif style == "walking" and last and nxt is not None:
                target = 28 + (nxt - 28) % 12
                key = target + int(rng.choice([-1, 1]))  # chromatic approach into the next chord
            elif style == "walking":
                key = int(rng.choice(tones))
            else:  # root-fifth: chord tones on 3, root elsewhere
                key = int(rng.choice(tones)) if k % 2 == 0 else root
            w.note(ch, b, b + 0.9 * c.beat, key, vel())


def _drums(w: _Writer, rng, sections: list[tuple[float, float, float]], style: str, level: float) -> None:
    ch = DRUM_CHANNEL
    for si, (s0, s1, beat) in enumerate(sections):
        if si > 0 or rng.random() < 0.5:
            w.note(ch, s0, s0 + 0.2, 49, int(level))
        n_beats = int(round((s1 - s0) / beat))
        for k in range(n_beats):
            t, pos, bar = s0 + k * beat, k % 4, k // 4
            v = lambda base: int(np.clip(level * base * rng.uniform(0.85, 1.0), 1, 127))
            if bar % 4 == 3 and pos == 3:  # a fill at the end of every fourth bar
                for j, tom in enumerate((50, 48, 47, 45)):
                    w.note(ch, t + j * beat / 4, t + (j + 1) * beat / 4, tom, v(0.9))
                continue
            if style == "ride":
                w.note(ch, t, t + 0.1, 51, v(0.7))
                if pos in (1, 3):
                    w.note(ch, t, t + 0.1, 44, v(0.6))
                    w.note(ch, t + 2 * beat / 3, t + beat, 51, v(0.5))
                if pos == 0:
                    w.note(ch, t, t + 0.1, 36, v(0.5))
                continue
            hats = 4 if style == "pop16" else 2
            for j in range(hats):
                w.note(ch, t + j * beat / hats, t + (j + 1) * beat / hats, 42, v(0.55 if j else 0.7))
            kick = {"rock": (0, 2), "pop16": (0, 2), "halftime": (0,), "bossa": (0, 2)}[style]
            snare = {"rock": (1, 3), "pop16": (1, 3), "halftime": (2,), "bossa": (1,)}[style]
            if pos in kick:
                w.note(ch, t, t + 0.1, 36, v(0.9))
            if style in ("rock", "pop16", "bossa") and pos in (1, 3) and rng.random() < 0.35:
                w.note(ch, t + beat / 2, t + 0.75 * beat, 36, v(0.7))
            if pos in snare:
                w.note(ch, t, t + 0.1, 37 if style == "bossa" else 38, v(0.85))


def _melody_notes(
    rng,
    fam: Family,
    start: float,
    end: float,
    beat_at,
    key_at,
    chord_at,
    low: int,
    high: int,
    sung: np.random.Generator | None = None,
) -> list[MelodyNote]:
    """A phrase of single notes: chord tones on strong positions, steps and leaps, rests, glides.
    ``sung`` (a generator of its own, or None): the notes are the same, their bends a singer's
    (``sung_bends``)."""
    notes: list[MelodyNote] = []
    t, prev, adjacent = start + 0.25 * beat_at(start), None, False
    while t < end - 0.3:
        beat = beat_at(t)
        if rng.random() < 0.12:
            t += float(rng.choice([0.5, 1.0])) * beat
            adjacent = False
            continue
        dur = min(float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0])) * beat, end - t)
        key_pc, scale = key_at(t)
        pool = [m for m in range(low, high + 1) if (m - key_pc) % 12 in scale]
        pcs = chord_at(t)
        if pcs and rng.random() < 0.6:
            pool = [m for m in range(low, high + 1) if m % 12 in pcs] or pool
        if prev is not None:
            pool = [m for m in pool if abs(m - prev) <= 7 and m != prev] or pool
        midi = int(rng.choice(pool))
        glide = fam.vibrato and prev is not None and adjacent and rng.random() < 0.35
        notes.append(
            MelodyNote(
                start=t,
                duration=dur,
                midi=midi,
                glide_from=prev if glide else None,
                glide_time=float(rng.uniform(0.06, 0.12)),
                vibrato_cents=float(rng.uniform(10, 35)) if fam.vibrato and dur > 0.4 else 0.0,
                vibrato_rate=float(rng.uniform(4.5, 6.5)),
                vibrato_phase=float(rng.uniform(0, 2 * np.pi)),
            )
        )
        if sung is not None and bends_like_a_singer(fam):
            notes[-1] = sung_bends(sung, notes[-1], prev if adjacent else None)
        prev, adjacent = midi, True
        t += dur
    return notes


SUNG_GLIDE_P = 0.5  # of notes joined to the one before
SUNG_SCOOP_P = 0.5  # of the other notes
SUNG_FAMILIES = ("voice",)  # bend like singers though their GM presets never did (Family.vibrato False)


def bends_like_a_singer(fam: Family) -> bool:
    """The families a sung-bends corpus bends: those whose players bend, and the voices."""
    return fam.vibrato or fam.tag in SUNG_FAMILIES


def sung_bends(rng: np.random.Generator, note: MelodyNote, prev: int | None) -> MelodyNote:
    """``note`` with a singer's pitch motion, as real vocal (and expressive string and wind) leads
    have it and the demo's keyed leads do not: a glide of 80-300 ms from the note before it
    (portamento), or an onset scoop from 0.5-3 semitones below (a sixth of them 0.3-1 above)
    easing in over 60-250 ms, and a vibrato of 20-90 cents at 4.5-7 Hz fading in after 0.1-0.35 s.
    Every value is drawn, in a fixed order, from ``rng``: the note itself (pitch, timing) is not."""
    glide = prev is not None and rng.random() < SUNG_GLIDE_P
    glide_time = float(rng.uniform(0.08, 0.3))
    scoop_on = rng.random() < SUNG_SCOOP_P
    scoop = float(rng.uniform(0.3, 1.0)) if rng.random() < 1 / 6 else -float(rng.uniform(0.5, 3.0))
    scoop_time = float(rng.uniform(0.06, 0.25))
    vibrato = float(rng.uniform(20, 90))
    rate = float(rng.uniform(4.5, 7.0))
    phase = float(rng.uniform(0, 2 * np.pi))
    delay, ramp = float(rng.uniform(0.1, 0.35)), float(rng.uniform(0.1, 0.3))
    return replace(
        note,
        glide_from=prev if glide else None,
        glide_time=min(glide_time, 0.6 * note.duration),
        scoop=0.0 if glide or not scoop_on else scoop,
        scoop_time=min(scoop_time, 0.5 * note.duration),
        vibrato_cents=vibrato if note.duration > 0.3 else 0.0,
        vibrato_rate=rate,
        vibrato_phase=phase,
        vibrato_delay=delay,
        vibrato_ramp=ramp,
    )


LEAD_LOW = 60  # the lowest key of a band mixture's lead by default (C4: above the comping)
PHRASE_BEATS = (8, 16)  # a phrase of the phrased lead: 2-4 bars of four beats
REST_BEATS = (4, 8)  # the band alone between phrases: 1-2 bars
INTRO_REST_P = 0.5  # of tracks where the band plays 1-2 bars before the lead comes in
MIN_HELD = 0.1  # s: a note cut shorter than this by a rest is not played


def phrase_rests(
    rng: np.random.Generator, notes: list[MelodyNote], beat_at, duration: float
) -> tuple[list[MelodyNote], list[tuple[float, float]]]:
    """``notes`` sung in phrases, as songs breathe: 2-4 bars of the line, then 1-2 bars where the
    lead rests and the band plays alone (half the tracks also open with the band alone). Notes that
    start in a rest are dropped, a note held into one stops where it begins, and the first note of a
    phrase does not glide from the last note of the one before. Returns the notes and the rests
    ((start, end) s). The windows are drawn from ``rng`` alone: the notes themselves are not drawn
    again, so the band, and the key and onset of every kept note, are those of the unphrased lead."""
    rests: list[tuple[float, float]] = []
    t = 0.0
    if rng.random() < INTRO_REST_P:
        t = float(rng.integers(REST_BEATS[0], REST_BEATS[1] + 1)) * beat_at(0.0)
        rests.append((0.0, t))
    while t < duration:
        rest_start = t + float(rng.integers(PHRASE_BEATS[0], PHRASE_BEATS[1] + 1)) * beat_at(t)
        rest_end = rest_start + float(rng.integers(REST_BEATS[0], REST_BEATS[1] + 1)) * beat_at(rest_start)
        if rest_start < duration:
            rests.append((rest_start, min(rest_end, duration)))
        t = rest_end
    kept: list[MelodyNote] = []
    after_rest = True
    for n in notes:
        if any(r0 <= n.start < r1 for r0, r1 in rests):
            after_rest = True
            continue
        end = min([n.start + n.duration] + [r0 for r0, _ in rests if n.start < r0 < n.start + n.duration])
        if end - n.start < MIN_HELD:
            after_rest = True
            continue
        if end < n.start + n.duration:
            n = replace(
                n,
                duration=end - n.start,
                glide_time=min(n.glide_time, 0.6 * (end - n.start)),
                scoop_time=min(n.scoop_time, 0.5 * (end - n.start)),
            )
        if after_rest and n.glide_from is not None:
            n = replace(n, glide_from=None)
        kept.append(n)
        after_rest = False
    return kept, rests


def phrase_spans(played: list[Note], rests: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(first onset, last offset) of the played notes of each phrase: where the lead's tag holds."""
    spans: list[tuple[float, float]] = []
    bounds = [0.0] + [x for r in rests for x in r] + [np.inf]
    for lo, hi in zip(bounds[::2], bounds[1::2]):
        inside = [n for n in played if lo <= n.start < hi]
        if inside:
            spans.append((inside[0].start, inside[-1].end))
    return spans


def _play_melody(w: _Writer, rng, ch: int, notes: list[MelodyNote], level: float, legato: bool) -> list[Note]:
    """Note and pitch-bend events of a lead line; the notes as played (block-grid times)."""
    played: list[Note] = []
    step = BEND_STEP_BLOCKS * BLOCK / w.sr
    for i, n in enumerate(notes):
        s = w.q(n.start)
        joined = i + 1 < len(notes) and abs(notes[i + 1].start - (n.start + n.duration)) < 1e-9
        e = w.q(n.start + n.duration if legato or joined and notes[i + 1].glide_from is not None else n.start + 0.92 * n.duration)
        if e <= s:
            continue
        t = s
        last = None
        while t < e - 1e-9:
            v = int(round((float(n.midi_at(np.array([t]))[0]) - n.midi) / BEND_RANGE * 8192))
            if v != last:
                w.bend(ch, t, v)
                last = v
            if n.glide_from is None and n.vibrato_cents == 0 and not n.scoop:
                break
            t = w.q(t + step)
        w.note(ch, s, e, n.midi, int(level * rng.uniform(0.8, 1.0)))
        played.append(Note(s, e, n.midi))
    return played


def bend_track(events: tuple[Event, ...], channel: int) -> tuple[np.ndarray, np.ndarray]:
    """(times, signed values) of a channel's pitch-bend events, in play order."""
    b = [(e.time, e.a) for e in events if e.kind == "bend" and e.channel == channel]
    return np.array([x[0] for x in b]), np.array([x[1] for x in b], dtype=float)


def bend_semitones(track: tuple[np.ndarray, np.ndarray], times: np.ndarray) -> np.ndarray:
    """The pitch bend in effect at each time (the last bend event at or before it; events sit
    on the render block grid, where the synthesizer applies them), in semitones."""
    bt, bv = track
    idx = np.searchsorted(bt, np.asarray(times) + 1e-9, side="right") - 1
    return np.where(idx >= 0, bv[np.maximum(idx, 0)], 0.0) * BEND_RANGE / 8192.0


# -- whole performances -------------------------------------------------------------------------


def compose_mixture(
    index: int,
    seed: int,
    sr: int,
    min_duration: float,
    max_duration: float,
    solo: bool = False,
    sung: bool = False,
    phrased: bool = False,
    lead_low: int = LEAD_LOW,
) -> Performance:
    """A band (comp, optional pad, bass, drums) under a lead; ``solo``: the lead alone; ``sung``: a
    lead that bends like a singer (``sung_bends``; same notes, drawn from a generator of its own);
    ``phrased``: a lead that rests between phrases (``phrase_rests``; same band, kept notes at the same keys and onsets);
    ``lead_low``: the band's lead plays no key below this one (nor below its family's range)."""
    rng = np.random.default_rng([seed, index, 11])
    w = _Writer(sr)
    tempo = float(rng.uniform(68, 150))
    target = float(rng.uniform(min_duration, max(min_duration, max_duration - 4.0)))
    key_pc, mode = int(rng.integers(12)), str(rng.choice(list(SCALES)))
    two = target > 12 and rng.random() < 0.6
    split_t = target * float(rng.uniform(0.4, 0.6)) if two else target
    tempo2 = tempo * float(rng.uniform(0.88, 1.12)) if rng.random() < 0.4 else tempo
    key2 = (key_pc + int(rng.choice([7, 5, 2, -2, 3, -3]))) % 12 if rng.random() < 0.3 else key_pc
    mode2 = mode if key2 == key_pc else str(rng.choice(list(SCALES)))
    chords1 = _chords(rng, 0.0, split_t, 60.0 / tempo, key_pc, SCALES[mode])
    t1 = chords1[-1].end
    chords2 = _chords(rng, t1, target - t1, 60.0 / tempo2, key2, SCALES[mode2]) if two and target - t1 > 2 else []
    chords = chords1 + chords2
    duration = w.q(chords[-1].end if not solo else target)
    sections = [(0.0, t1, 60.0 / tempo)] + ([(t1, chords[-1].end, 60.0 / tempo2)] if chords2 else [])
    keys = [(0.0, w.q(t1) if chords2 else duration, f"{PITCH_NAMES[key_pc]}:{mode}")]
    if chords2:
        keys.append((w.q(t1), duration, f"{PITCH_NAMES[key2]}:{mode2}"))

    def beat_at(t):
        return sections[-1][2] if t >= sections[-1][0] else sections[0][2]

    def key_at(t):
        return (key2, SCALES[mode2]) if chords2 and t >= t1 else (key_pc, SCALES[mode])

    def chord_at(t):
        return next((c.pcs for c in chords if c.start <= t < c.end), ()) if not solo else ()

    parts: list[Part] = []
    lead_tag = str(rng.choice(SOLO_FAMILIES if solo else LEAD_FAMILIES))
    lead = _part(rng, 0, "melody", lead_tag, (100, 121), int(rng.integers(-10, 11)))
    parts.append(lead)
    levels = [float(rng.uniform(60, 110)) for _ in sections]
    tags: list[tuple[str, float, float]] = []
    if not solo:
        comp_tag = str(rng.choice([f for f in COMP_FAMILIES if f != lead_tag]))
        comp = _part(rng, 1, "comp", comp_tag, (70, 96), -25)
        parts.append(comp)
        guitar = "guitar" in comp_tag
        styles = {
            "piano": ("block", "pulse", "arpeggio"),
            "electric piano": ("block", "pulse", "arpeggio"),
            "mallet percussion": ("arpeggio",),
        }.get(comp_tag, ("strum", "arpeggio") if guitar else ("block", "pulse"))
        has_bass = rng.random() < 0.85
        if rng.random() < 0.35:
            pad_tag = str(rng.choice([f for f in ("strings", "organ", "synthesizer", "voice") if f not in (lead_tag, comp_tag)]))
            parts.append(_part(rng, 2, "pad", pad_tag, (45, 70), 25))
        if has_bass:
            parts.append(_part(rng, 3, "bass", "bass", (85, 106), 0))
        if rng.random() < 0.75:
            kit = int(rng.choice(DRUM_KITS))
            parts.append(Part(DRUM_CHANNEL, "drums", "drums", 128, kit, int(rng.integers(70, 96)), 64, int(rng.integers(20, 50))))
        for si, (s0, s1, _) in enumerate(sections):
            sec = [c for c in chords if s0 <= c.start < s1]
            style = str(rng.choice(styles))
            for p in parts:
                if p.role == "comp":
                    _comp(w, rng, p, sec, style, levels[si], not has_bass)
                elif p.role == "pad":
                    _comp(w, rng, p, sec, "pad", 0.8 * levels[si], False)
                elif p.role == "bass":
                    _bass(w, rng, p, sec, str(rng.choice(["whole", "root5", "eighths", "walking"])), levels[si] + 10)
            if rng.random() < 0.25:  # a crescendo or diminuendo over the section (expression, CC11)
                up = rng.random() < 0.5
                for k in range(17):
                    v = 70 + 57 * (k / 16 if up else 1 - k / 16)
                    for p in parts:
                        if p.role in ("comp", "pad"):
                            w.cc(p.channel, s0 + k * (s1 - s0) / 17, 11, int(v))
        drums = [p for p in parts if p.role == "drums"]
        if drums:
            _drums(w, rng, sections, str(rng.choice(["rock", "pop16", "halftime", "ride", "bossa"])), float(rng.uniform(80, 110)))
    for p in parts:
        w.setup(p)
    fam = FAMILIES[lead_tag]
    low, high = max(fam.low, lead_low if not solo else fam.low), min(fam.high, 91)
    sung_rng = np.random.default_rng([seed, index, 31]) if sung else None
    mel = _melody_notes(rng, fam, 0.0, duration, beat_at, key_at, chord_at, low, high, sung_rng)
    rests: list[tuple[float, float]] = []
    if phrased:
        mel, rests = phrase_rests(np.random.default_rng([seed, index, 41]), mel, beat_at, duration)
    played = _play_melody(w, rng, 0, mel, float(rng.uniform(90, 120)), fam.sustained and rng.random() < 0.5)
    for p in parts:
        if p.role == "melody" and played:
            tags.extend((p.tag, s0, s1) for s0, s1 in phrase_spans(played, rests))
        elif p.role != "melody":
            tags.append((p.tag, 0.0, duration))
    segs = (
        tuple(ChordSegment(w.q(c.start), w.q(c.end), c.label, tuple(sorted(c.pcs)), c.bass_pc) for c in chords)
        if not solo
        else ()
    )
    return Performance(
        "solo" if solo else "mixture",
        duration,
        tempo,
        tuple(keys),
        tuple(parts),
        w.sorted(),
        segs,
        tuple(played),
        0,
        tuple(sorted(set(tags))),
        float(rng.uniform(-6.0, 0.0)),
    )


def compose_clip(index: int, seed: int, family: str, sr: int, min_duration: float, max_duration: float) -> Performance:
    """A short solo phrase of one instrument family (Medley-solos-DB style). A voice clip
    (``SUNG_FAMILIES``; synthesize.voice_clips) is sung: its notes bend as ``sung_bends`` draws them
    (glides, scoops, vibrato), from a generator of its own; every other family's clip is as it was."""
    family_index = list(FAMILIES).index(family)
    rng = np.random.default_rng([seed, family_index, index, 13])
    sung = np.random.default_rng([seed, family_index, index, 31]) if family in SUNG_FAMILIES else None
    fam = FAMILIES[family]
    w = _Writer(sr)
    tempo = float(rng.uniform(70, 150))
    duration = w.q(float(rng.uniform(min_duration, max_duration)))
    key_pc, mode = int(rng.integers(12)), str(rng.choice(list(SCALES)))
    center = int(rng.integers(fam.low + 6, fam.high - 5))
    low, high = max(fam.low, center - 9), min(fam.high, center + 9)
    part = _part(rng, 0, "melody", family, (95, 121), 0)
    w.setup(part)
    mel = _melody_notes(
        rng, fam, 0.0, duration, lambda t: 60.0 / tempo, lambda t: (key_pc, SCALES[mode]), lambda t: (), low, high, sung
    )
    played = _play_melody(w, rng, 0, mel, float(rng.uniform(70, 120)), fam.sustained and rng.random() < 0.5)
    tags = ((family, played[0].start, played[-1].end),) if played else ()
    return Performance(
        "clip",
        duration,
        tempo,
        ((0.0, duration, f"{PITCH_NAMES[key_pc]}:{mode}"),),
        (part,),
        w.sorted(),
        (),
        tuple(played),
        0,
        tags,
        float(rng.uniform(-6.0, 0.0)),
    )


# -- stems: the same performance with fewer parts -------------------------------------------------

STEM_ROLES = ("bass", "drums", "melody")  # what a stem may leave out; the harmony (comp, pad) always plays


def stem_roles(index: int, seed: int) -> tuple[str, ...]:
    """The optional roles a mixture's stem keeps: each of ``STEM_ROLES`` with probability 1/2,
    never all of them (that is the mixture itself)."""
    rng = np.random.default_rng([seed, index, 17])
    while True:
        keep = tuple(r for r in STEM_ROLES if rng.random() < 0.5)
        if len(keep) < len(STEM_ROLES):
            return keep


def spell_over_bass(label: str, bass_pc: int) -> str:
    """``label`` with ``bass_pc`` as its bass: an inversion's degree, or for a symmetric chord (aug,
    dim7, spelled from their bass as annotators do) the root moved to it."""
    root_name, _, rest = label.partition(":")
    quality = rest.split("/")[0]
    root = PITCH_NAMES.index(root_name)
    if quality in SYMMETRIC:
        return f"{PITCH_NAMES[bass_pc]}:{quality}"
    k = quality_intervals(quality).index((bass_pc - root) % 12)
    return f"{root_name}:{quality}" + ("" if k == 0 else "/" + QUALITY_DEGREES[quality][k])


def stem(perf: Performance, keep: tuple[str, ...]) -> Performance:
    """``perf`` with only its harmony parts (comp, pad) and the roles in ``keep``: a band's stem or a
    sparse arrangement (a lone piano, piano and drums, a singer over a guitar), with exact labels.

    Without the bass part, each chord's bass is the lowest key the harmony parts start inside it
    (labels follow what is heard: ``C:maj`` over a bass E becomes ``C:maj/3`` only when an E is
    lowest); without the lead there is no melody; the tags are the parts that play."""
    parts = tuple(p for p in perf.parts if p.role in ("comp", "pad", *keep))
    channels = {p.channel for p in parts}
    events = tuple(e for e in perf.events if e.channel in channels)
    chords = perf.chords
    if "bass" not in keep and any(p.role == "bass" for p in perf.parts):
        harmony = {p.channel for p in parts if p.role in ("comp", "pad")}
        ons = [(e.time, e.a) for e in events if e.kind == "on" and e.channel in harmony]
        relabelled = []
        for seg in chords:
            keys = [k for t, k in ons if seg.start - 1e-9 <= t < seg.end - 1e-9]
            if seg.bass is None or not keys:
                relabelled.append(seg)
                continue
            low = min(keys) % 12
            relabelled.append(ChordSegment(seg.start, seg.end, spell_over_bass(seg.label, low), seg.tones, low))
        chords = tuple(relabelled)
    lead = "melody" in keep
    tags = tuple(t for t in perf.tags if any(p.tag == t[0] for p in parts))
    return Performance(
        perf.kind,
        perf.duration,
        perf.tempo,
        perf.keys,
        parts,
        events,
        chords,
        perf.melody if lead else (),
        perf.melody_channel if lead else None,
        tags,
        perf.gain_db,
    )


# -- chord takes: chords played one at a time, as chord datasets record them ---------------------

TAKE_FAMILIES = ("piano", "electric piano", "acoustic guitar", "electric guitar", "organ", "strings", "synthesizer")


def compose_chord_take(index: int, seed: int, sr: int, min_duration: float, max_duration: float) -> Performance:
    """One harmony instrument playing chords one at a time: each struck once (or strummed) and held
    0.5-4 s, most followed by 0.3-1.5 s of silence (``N``), any root, every quality, voicings in
    any inversion (the label's bass is the lowest key played), sometimes with a bass note under it.

    The demo's band mixtures never leave a chord alone to ring out; an isolated chord between
    silences is how chord datasets and method books record harmony, and what a model that learned
    "no chord" from the band stopping calls "no chord"."""
    rng = np.random.default_rng([seed, index, 23])
    w = _Writer(sr)
    tag = str(rng.choice(TAKE_FAMILIES))
    part = _part(rng, 1, "comp", tag, (80, 118), 0)
    guitar = "guitar" in tag
    left_hand = not guitar and rng.random() < 0.3
    target = float(rng.uniform(min_duration, max_duration))
    gap_p = float(rng.uniform(0.5, 1.0))
    chords: list[ChordSegment] = []
    t = w.q(float(rng.uniform(0.2, 1.0)))
    chords.append(ChordSegment(0.0, t, "N", (), None))
    center = float(rng.uniform(56, 68))
    while t < target:
        root = int(rng.integers(12))
        quality = str(rng.choice(QUALITIES, p=QUALITY_P))
        pcs = tuple((root + iv) % 12 for iv in quality_intervals(quality))
        voicing = (
            guitar_voicing(rng, pcs, pcs[0] if rng.random() < 0.7 else int(rng.choice(pcs))) if guitar else None
        ) or piano_voicing(rng, pcs, center)
        if left_hand:
            voicing = [36 + (pcs[0] - 36) % 12, *voicing]
        start, end = w.q(t), w.q(t + float(rng.uniform(0.5, 4.0)))
        vel = int(rng.uniform(50, 115))
        spread = float(rng.uniform(0.01, 0.03)) if guitar else 0.0
        for j, key in enumerate(sorted(voicing)):
            w.note(part.channel, start + j * spread, end, key, vel + int(rng.integers(-6, 7)))
        low = min(voicing) % 12
        label = spell_over_bass(f"{PITCH_NAMES[root]}:{quality}", low)
        chords.append(ChordSegment(start, end, label, tuple(sorted(pcs)), low))
        t = end
        if rng.random() < gap_p:
            gap_end = w.q(t + float(rng.uniform(0.3, 1.5)))
            chords.append(ChordSegment(t, gap_end, "N", (), None))
            t = gap_end
    duration = w.q(t)
    w.setup(part)
    return Performance(
        "mixture",
        duration,
        120.0,
        ((0.0, duration, "C:major"),),  # no key: roots are drawn freely
        (part,),
        w.sorted(),
        tuple(chords),
        (),
        None,
        ((tag, chords[1].start, duration),),
        float(rng.uniform(-6.0, 0.0)),
    )
