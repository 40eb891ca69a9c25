"""Synthetic instrument timbres for the demo corpus (numpy only).

Every timbre renders one note from a per-sample f0 trajectory, so vibrato and
glides come out exactly as annotated. Partials are harmonic: the pitch of every
note is its f0, which keeps the chord and melody annotations exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NYQUIST_GUARD = 0.45  # drop partials above this fraction of the sample rate


def _phase(f0: np.ndarray, sr: int) -> np.ndarray:
    return 2.0 * np.pi * np.cumsum(f0) / sr


def _partials(f0: np.ndarray, sr: int, amps: dict[int, float], decay: dict[int, float] | None = None) -> np.ndarray:
    """Sum of harmonic partials ``h`` with amplitude ``amps[h]`` (optionally decaying at rate decay[h] /s)."""
    phase = _phase(f0, sr)
    t = np.arange(len(f0)) / sr
    out = np.zeros(len(f0))
    for h, a in amps.items():
        partial = a * np.sin(h * phase)
        partial[h * f0 >= NYQUIST_GUARD * sr] = 0.0
        if decay:
            partial *= np.exp(-decay.get(h, 0.0) * t)
        out += partial
    return out


def _adsr(n: int, sr: int, attack: float, release: float, decay_rate: float = 0.0) -> np.ndarray:
    """Attack ramp, optional exponential decay, release ramp at the end."""
    env = np.ones(n)
    a = min(n, max(1, int(attack * sr)))
    env[:a] = np.linspace(0.0, 1.0, a)
    if decay_rate:
        env *= np.exp(-decay_rate * np.arange(n) / sr)
    r = min(n, max(1, int(release * sr)))
    env[-r:] *= np.linspace(1.0, 0.0, r)
    return env


def organ(f0, sr, rng):
    """Additive drawbars on octave partials: pitch-class pure."""
    return _partials(f0, sr, {1: 1.0, 2: 0.45, 4: 0.2, 8: 0.08}) * _adsr(len(f0), sr, 0.01, 0.03)


def pluck(f0, sr, rng):
    """Plucked string: bright attack, upper partials die first."""
    amps = {h: 1.0 / h**2 for h in range(1, 9)}
    decay = {h: 1.5 + 1.2 * h for h in range(1, 9)}
    return _partials(f0, sr, amps, decay) * _adsr(len(f0), sr, 0.003, 0.03)


def epiano(f0, sr, rng):
    """Two-operator FM (1:1), the modulation index falls with time: bell-ish then mellow."""
    t = np.arange(len(f0)) / sr
    phase = _phase(f0, sr)
    index = 1.2 * np.exp(-4.0 * t)
    y = np.sin(phase + index * np.sin(phase))
    return y * _adsr(len(f0), sr, 0.004, 0.04, decay_rate=1.2)


def mallet(f0, sr, rng):
    """Marimba-like bar: fundamental plus a fast-dying 4th partial."""
    y = _partials(f0, sr, {1: 1.0, 4: 0.35}, {1: 2.5, 4: 12.0})
    return y * _adsr(len(f0), sr, 0.002, 0.03)


def bowed(f0, sr, rng):
    """Bowed string: sawtooth-like spectrum rolling off as 1/h^2, slow attack."""
    amps = {h: 1.0 / h**2 for h in range(1, 13)}
    return _partials(f0, sr, amps) * _adsr(len(f0), sr, 0.08, 0.06)


def reed(f0, sr, rng):
    """Clarinet-like: odd harmonics only."""
    amps = {h: 1.0 / h for h in (1, 3, 5, 7, 9)}
    return _partials(f0, sr, amps) * _adsr(len(f0), sr, 0.03, 0.04)


def flute(f0, sr, rng):
    """Near-sine with a weak octave and breath noise that follows the envelope."""
    y = _partials(f0, sr, {1: 1.0, 2: 0.18, 3: 0.05})
    noise = rng.standard_normal(len(f0))
    noise = np.convolve(noise, np.ones(8) / 8, mode="same") * 0.04
    return (y + noise) * _adsr(len(f0), sr, 0.06, 0.05)


def brass(f0, sr, rng):
    """Brass: 1/h spectrum whose upper partials swell in with the attack."""
    t = np.arange(len(f0)) / sr
    phase = _phase(f0, sr)
    y = np.zeros(len(f0))
    for h in range(1, 11):
        bright = 1.0 - np.exp(-t * 40.0 / h)
        partial = np.sin(h * phase) / h * bright
        partial[h * f0 >= NYQUIST_GUARD * sr] = 0.0
        y += partial
    return y * _adsr(len(f0), sr, 0.04, 0.05)


@dataclass(frozen=True)
class Timbre:
    name: str
    render: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    sustained: bool  # False: the note dies away, so chords are re-struck on every beat
    accompaniment: bool  # weak 3rd/5th partials: safe for chords (chroma stays exact)


# The numpy renderer's timbre names, in a fixed order (what its tracks draw from and tag).
INSTRUMENTS = ("organ", "pluck", "epiano", "mallet", "bowed", "reed", "flute", "brass")

TIMBRES: dict[str, Timbre] = {
    t.name: t
    for t in (
        Timbre("organ", organ, True, True),
        Timbre("pluck", pluck, False, True),
        Timbre("epiano", epiano, False, True),
        Timbre("mallet", mallet, False, True),
        Timbre("bowed", bowed, True, True),
        Timbre("reed", reed, True, False),
        Timbre("flute", flute, True, False),
        Timbre("brass", brass, True, False),
    )
}
