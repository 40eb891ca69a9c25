"""Audio decoding shared by stages: soundfile first, audioread (via librosa) for other containers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".m4a", ".opus", ".au")


def load_mono(path: Path | str, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32, resampled to ``sr`` when given (soxr, high quality).

    soundfile decodes what libsndfile reads (no sample checks, so ingest can
    classify NaN/inf itself); other containers go through audioread via librosa.
    """
    import librosa

    try:
        y, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
        y = y.mean(axis=1)
    except sf.LibsndfileError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, file_sr = librosa.load(str(path), sr=None, mono=True)
    if sr is not None and sr != file_sr:
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
        file_sr = sr
    return np.ascontiguousarray(y, dtype=np.float32), int(file_sr)


def header_frames(path: Path | str) -> tuple[int, int, int] | None:
    """(frames, samplerate, channels) from the header when soundfile reads the container, else None."""
    try:
        info = sf.info(str(path))
    except Exception:
        return None
    return int(info.frames), int(info.samplerate), int(info.channels)
