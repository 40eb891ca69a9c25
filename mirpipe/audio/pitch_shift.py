"""Pitch-shift backends for replaying a deformation on audio in memory.

A backend is a function ``(y, sr, n_semitones) -> y`` registered with
``@PITCH_SHIFTERS.register(name=...)``; ``augment.backend`` names one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import numpy as np

from mirpipe.registry import Registry

PitchShifter = Callable[[np.ndarray, int, float], np.ndarray]
PITCH_SHIFTERS: Registry[PitchShifter] = Registry("pitch-shift backend", entry_points="mirpipe.pitch_shifters")


@PITCH_SHIFTERS.register(name="librosa")
def _librosa(y: np.ndarray, sr: int, n_semitones: float) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(y, sr=sr, n_steps=n_semitones, res_type="soxr_hq")


@PITCH_SHIFTERS.register(name="rubberband")
def _rubberband(y: np.ndarray, sr: int, n_semitones: float) -> np.ndarray:
    import pyrubberband

    if shutil.which("rubberband") is None:
        raise RuntimeError("the rubberband backend needs the 'rubberband' program (Debian package rubberband-cli)")
    return pyrubberband.pitch_shift(y, sr, n_semitones)


def pitch_shift(y: np.ndarray, sr: int, n_semitones: float, backend: str = "librosa") -> np.ndarray:
    """Shift ``y`` by ``n_semitones`` keeping its duration; 0 returns the input unchanged."""
    shifter = PITCH_SHIFTERS.get(backend)
    if n_semitones == 0:
        return y
    out = shifter(np.asarray(y, dtype=np.float32), sr, n_semitones).astype(np.float32)
    if len(out) != len(y):  # keep the frame grid of every variant identical
        out = np.pad(out, (0, max(0, len(y) - len(out))))[: len(y)]
    return out
