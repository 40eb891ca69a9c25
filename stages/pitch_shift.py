"""Pluggable pitch-shift backends for replaying a deformation on audio in memory."""

from __future__ import annotations

import shutil
from typing import Callable

import numpy as np

BACKENDS = ("librosa", "rubberband")


def _librosa(y: np.ndarray, sr: int, n_semitones: float) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(y, sr=sr, n_steps=n_semitones, res_type="soxr_hq")


def _rubberband(y: np.ndarray, sr: int, n_semitones: float) -> np.ndarray:
    import pyrubberband

    if shutil.which("rubberband") is None:
        raise RuntimeError("the rubberband backend needs the 'rubberband' program (Debian package rubberband-cli)")
    return pyrubberband.pitch_shift(y, sr, n_semitones)


_IMPL: dict[str, Callable[[np.ndarray, int, float], np.ndarray]] = {"librosa": _librosa, "rubberband": _rubberband}


def pitch_shift(y: np.ndarray, sr: int, n_semitones: float, backend: str = "librosa") -> np.ndarray:
    """Shift ``y`` by ``n_semitones`` keeping its duration; 0 returns the input unchanged."""
    if backend not in _IMPL:
        raise ValueError(f"unknown pitch-shift backend {backend!r}; choose one of {BACKENDS}")
    if n_semitones == 0:
        return y
    out = _IMPL[backend](np.asarray(y, dtype=np.float32), sr, n_semitones).astype(np.float32)
    if len(out) != len(y):  # keep the frame grid of every variant identical
        out = np.pad(out, (0, max(0, len(y) - len(out))))[: len(y)]
    return out
