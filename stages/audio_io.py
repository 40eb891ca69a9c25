"""Audio decoding shared by stages: soundfile first, audioread (via librosa) for other containers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".m4a", ".opus", ".au")


def load_mono(path: Path | str, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32, resampled to ``sr`` when given (soxr, high quality)."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, file_sr = librosa.load(str(path), sr=sr, mono=True, res_type="soxr_hq")
    return y.astype(np.float32, copy=False), int(file_sr)


def header_frames(path: Path | str) -> tuple[int, int, int] | None:
    """(frames, samplerate, channels) from the header when soundfile reads the container, else None."""
    try:
        info = sf.info(str(path))
    except Exception:
        return None
    return int(info.frames), int(info.samplerate), int(info.channels)
