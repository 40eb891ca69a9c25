"""One demo track: a score drawn from a seeded RNG, rendered to audio, annotated exactly.

Registers are kept apart so the annotations can be checked from the audio:
chord tones sound in MIDI 52-63, the bass in 40-51, the melody in 72-88.
"""

from __future__ import annotations

from dataclasses import dataclass

import jams
import numpy as np

from mirpipe.models.chord import PITCH_NAMES, QUALITIES, QUALITY_DEGREES, quality_intervals

from .demo_jams import demo_jams
from .timbres import INSTRUMENTS, TIMBRES

CHORD_REGISTER = 52  # lowest MIDI note of the chord voicing (one octave up from here)
BASS_REGISTER = 40
MELODY_RANGE = (72, 88)
CONTOUR_HOP = 0.01  # seconds between pitch_contour samples
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
CHORD_TONE_AMP = 0.10
BASS_AMP = 0.14
MELODY_AMP = 0.3


@dataclass(frozen=True)
class ChordSegment:
    start: float
    end: float
    label: str
    tones: tuple[int, ...]  # MIDI notes of the voicing (chord register)
    bass: int | None  # MIDI bass note, None for N


@dataclass(frozen=True)
class MelodyNote:
    start: float
    duration: float
    midi: int
    glide_from: int | None
    glide_time: float
    vibrato_cents: float
    vibrato_rate: float
    vibrato_phase: float
    # a singer's onset: the note starts ``scoop`` semitones off (below when negative) and eases onto
    # its pitch over ``scoop_time`` s; the vibrato fades in from ``vibrato_delay`` s over ``vibrato_ramp`` s
    scoop: float = 0.0
    scoop_time: float = 0.0
    vibrato_delay: float = 0.15
    vibrato_ramp: float = 0.2

    def midi_at(self, t: np.ndarray) -> np.ndarray:
        """Sounding pitch (fractional MIDI) at absolute times ``t`` inside the note."""
        rel = t - self.start
        m = np.full(rel.shape, float(self.midi))
        if self.glide_from is not None:
            frac = np.clip(rel / self.glide_time, 0.0, 1.0)
            m = self.glide_from + (self.midi - self.glide_from) * frac
        elif self.scoop and self.scoop_time > 0:
            m = m + self.scoop * (1.0 - np.clip(rel / self.scoop_time, 0.0, 1.0)) ** 2
        fade = np.clip((rel - self.vibrato_delay) / self.vibrato_ramp, 0.0, 1.0)
        vib = self.vibrato_cents / 100.0 * np.sin(2 * np.pi * self.vibrato_rate * rel + self.vibrato_phase)
        return m + fade * vib


@dataclass(frozen=True)
class TrackScore:
    duration: float
    tempo: float
    key: str
    accompaniment: str | None
    melody_instrument: str
    chords: tuple[ChordSegment, ...]
    notes: tuple[MelodyNote, ...]
    gain_db: float
    noise_db: float


def midi_to_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=float) - 69.0) / 12.0)


# A popular-music prior over the qualities (maj and min dominate, as in annotated corpora),
# with every quality present. Uniform draws would make a large share of the chords
# pitch-set twins of another label (C:maj6/6 = A:min7, G:sus2/2 = D:sus4, dim7, aug),
# which no model can tell apart without musical context.
QUALITY_WEIGHTS = {"maj": 0.32, "min": 0.20, "7": 0.10, "min7": 0.08, "maj7": 0.05}
_REST = (1.0 - sum(QUALITY_WEIGHTS.values())) / (len(QUALITIES) - len(QUALITY_WEIGHTS))
INVERSION_P = 0.15
SYMMETRIC = ("aug", "dim7")
QUALITY_P = np.array([QUALITY_WEIGHTS.get(q, _REST) for q in QUALITIES])


def _chord_segments(rng, duration, beat, key_pc, scale) -> list[ChordSegment]:
    lengths = [k for k in (2, 3, 4, 6, 8) if 1.0 <= k * beat <= 4.0] or [max(1, round(2.0 / beat))]
    segments, t = [], 0.0
    while t < duration:
        seg = float(rng.choice(lengths)) * beat
        if rng.random() < 0.08:
            segments.append(ChordSegment(t, t + seg, "N", (), None))
            t += seg
            continue
        if rng.random() < 0.7:
            root = (key_pc + int(rng.choice(scale))) % 12
        else:
            root = int(rng.integers(12))
        quality = str(rng.choice(QUALITIES, p=QUALITY_P))
        intervals = quality_intervals(quality)
        degrees = QUALITY_DEGREES[quality]
        label = f"{PITCH_NAMES[root]}:{quality}"
        bass_interval = 0
        # inversions as often as in annotated pop corpora; symmetric chords (aug, dim7) are
        # spelled from their bass, as annotators do, so they stay in root position
        if quality not in SYMMETRIC and rng.random() < INVERSION_P:
            k = int(rng.integers(1, len(intervals)))
            bass_interval = intervals[k]
            label += "/" + degrees[k]
        pcs = [(root + iv) % 12 for iv in intervals]
        tones = tuple(sorted(CHORD_REGISTER + (pc - CHORD_REGISTER) % 12 for pc in pcs))
        bass_pc = (root + bass_interval) % 12
        segments.append(ChordSegment(t, t + seg, label, tones, BASS_REGISTER + (bass_pc - BASS_REGISTER) % 12))
        t += seg
    return segments


def _melody(rng, duration, beat, key_pc, scale, chords) -> list[MelodyNote]:
    lo, hi = MELODY_RANGE
    scale_notes = [m for m in range(lo, hi + 1) if (m - key_pc) % 12 in scale]
    notes: list[MelodyNote] = []
    t, prev, adjacent = 0.25 * beat, None, False
    while t < duration - 0.3:
        if rng.random() < 0.12:  # rest
            t += float(rng.choice([0.5, 1.0])) * beat
            adjacent = False
            continue
        dur = min(float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0])) * beat, duration - t)
        chord = next((c for c in chords if c.start <= t < c.end and c.tones), None)
        pool = scale_notes
        if chord is not None and rng.random() < 0.6:
            pcs = {n % 12 for n in chord.tones}
            pool = [m for m in range(lo, hi + 1) if m % 12 in pcs]
        if prev is not None:
            near = [m for m in pool if abs(m - prev) <= 7 and m != prev]
            pool = near or pool
        midi = int(rng.choice(pool))
        glide = prev is not None and adjacent and rng.random() < 0.35
        notes.append(
            MelodyNote(
                start=t,
                duration=dur,
                midi=midi,
                glide_from=prev if glide else None,
                glide_time=float(rng.uniform(0.06, 0.12)),
                vibrato_cents=float(rng.uniform(10, 35)) if dur > 0.4 else 0.0,
                vibrato_rate=float(rng.uniform(4.5, 6.5)),
                vibrato_phase=float(rng.uniform(0, 2 * np.pi)),
            )
        )
        prev, adjacent = midi, True
        t += dur
    return notes


def compose(index: int, seed: int, solo: bool, min_duration: float, max_duration: float) -> TrackScore:
    """Draw the score of track ``index``: deterministic for (seed, index, solo, durations)."""
    rng = np.random.default_rng([seed, index])
    tempo = float(rng.uniform(70, 140))
    beat = 60.0 / tempo
    target = float(rng.uniform(min_duration, max(min_duration, max_duration - 4.0)))
    key_pc = int(rng.integers(12))
    mode = str(rng.choice(list(SCALES)))
    scale = SCALES[mode]
    chords: list[ChordSegment] = []
    accompaniment = None
    if solo:
        duration = target
        melody_instrument = str(rng.choice(INSTRUMENTS))
    else:
        chords = _chord_segments(rng, target, beat, key_pc, scale)
        duration = chords[-1].end
        accompaniment = str(rng.choice([n for n, t in TIMBRES.items() if t.accompaniment]))
        # A lead over a band is sustained; decaying timbres lead only in solo tracks.
        leads = [n for n in INSTRUMENTS if TIMBRES[n].sustained and n != accompaniment]
        melody_instrument = str(rng.choice(leads))
    notes = _melody(rng, duration, beat, key_pc, scale, chords)
    return TrackScore(
        duration=duration,
        tempo=tempo,
        key=f"{PITCH_NAMES[key_pc]}:{mode}",
        accompaniment=accompaniment,
        melody_instrument=melody_instrument,
        chords=tuple(chords),
        notes=tuple(notes),
        gain_db=float(rng.uniform(-9.0, 0.0)),
        noise_db=float(rng.uniform(-55.0, -45.0)),
    )


def _add_note(out, sr, rng, timbre, start, duration, f0, amp):
    i0 = int(round(start * sr))
    n = min(len(f0), len(out) - i0)
    if n <= 0:
        return
    out[i0 : i0 + n] += amp * timbre.render(f0[:n], sr, rng)


def render(score: TrackScore, sr: int, seed: int, index: int) -> np.ndarray:
    """Render a score to mono float32 audio at ``sr``."""
    rng = np.random.default_rng([seed, index, 1])
    n = int(np.ceil(score.duration * sr))
    out = np.zeros(n)
    if score.accompaniment:
        timbre = TIMBRES[score.accompaniment]
        beat = 60.0 / score.tempo
        for seg in score.chords:
            if seg.bass is None:
                continue
            strikes = [seg.start] if timbre.sustained else list(np.arange(seg.start, seg.end - 1e-6, beat))
            for k, s in enumerate(strikes):
                e = seg.end if timbre.sustained or k == len(strikes) - 1 else strikes[k + 1]
                length = int(round((e - s) * sr))
                for m in seg.tones:
                    _add_note(out, sr, rng, timbre, s, e - s, np.full(length, midi_to_hz(m)), CHORD_TONE_AMP)
                _add_note(out, sr, rng, timbre, s, e - s, np.full(length, midi_to_hz(seg.bass)), BASS_AMP)
    melody = TIMBRES[score.melody_instrument]
    for note in score.notes:
        i0 = int(round(note.start * sr))
        t = (i0 + np.arange(int(round(note.duration * sr)))) / sr
        velocity = rng.uniform(0.8, 1.0)
        _add_note(out, sr, rng, melody, note.start, note.duration, midi_to_hz(note.midi_at(t)), MELODY_AMP * velocity)
    t = np.arange(n) / sr
    level = 1.0 + 0.15 * np.sin(2 * np.pi * t / max(score.duration, 1.0) + rng.uniform(0, 2 * np.pi))
    out *= level
    out *= 0.9 * 10 ** (score.gain_db / 20.0) / max(np.max(np.abs(out)), 1e-9)
    out += 10 ** (score.noise_db / 20.0) * rng.standard_normal(n)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def contour(score: TrackScore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Melody f0 every ``CONTOUR_HOP`` seconds: (times, hz, voiced); hz is 0 where unvoiced."""
    times = np.arange(int(score.duration / CONTOUR_HOP) + 1) * CONTOUR_HOP
    hz = np.zeros_like(times)
    voiced = np.zeros(times.shape, bool)
    for note in score.notes:
        inside = (times >= note.start) & (times < note.start + note.duration)
        hz[inside] = midi_to_hz(note.midi_at(times[inside]))
        voiced |= inside
    return times, hz, voiced


def sounding_notes(score: TrackScore) -> list[tuple[float, float, float]]:
    """(start, duration, MIDI) of every note ``render`` plays: chord tones and bass (re-struck on
    every beat by a decaying timbre) and the melody; sorted by (start, pitch)."""
    out: list[tuple[float, float, float]] = []
    if score.accompaniment:
        sustained, beat = TIMBRES[score.accompaniment].sustained, 60.0 / score.tempo
        for seg in score.chords:
            if seg.bass is None:
                continue
            strikes = [seg.start] if sustained else list(np.arange(seg.start, seg.end - 1e-6, beat))
            for k, s in enumerate(strikes):
                e = seg.end if sustained or k == len(strikes) - 1 else strikes[k + 1]
                out += [(float(s), float(e - s), float(m)) for m in (*seg.tones, seg.bass)]
    out += [(note.start, note.duration, float(note.midi)) for note in score.notes]
    return sorted(out)


def annotate(score: TrackScore, track_id: str, solo: bool) -> jams.JAMS:
    """The JAMS of a score: chord (mixes only), key_mode, pitch_contour, note_midi (every note
    played), instrument tags."""
    jam = demo_jams(
        track_id,
        "mirpipe demo synthesizer",
        score.duration,
        "synthetic",
        chords=((seg.start, seg.end - seg.start, seg.label) for seg in score.chords),
        keys=[(0.0, score.duration, score.key)],
        contour=contour(score),
        notes=sounding_notes(score),
        tags=(
            (0.0, score.duration, name)
            for name in sorted({n for n in (score.melody_instrument, score.accompaniment) if n is not None})
        ),
    )
    jam.sandbox.mirpipe_demo = {
        "solo": solo,
        "tempo": score.tempo,
        "accompaniment": score.accompaniment,
        "melody": score.melody_instrument,
    }
    return jam
