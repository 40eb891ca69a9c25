"""Audio decoding shared by stages: soundfile first, audioread (via librosa) for other containers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".m4a", ".opus", ".au")


def decode_errors() -> tuple[type[BaseException], ...]:
    """What the decoders raise for a file they cannot decode, i.e. the file's fault: libsndfile's errors
    (``soundfile.SoundFileError``), audioread's (``DecodeError``: no backend, ffmpeg, gstreamer or raw
    decoder errors), and what its raw backend lets through from the standard library's readers: a bare
    ``RuntimeError`` (``wave`` on a chunk that runs past the end), ``wave.Error``, ``struct.error`` and
    ``EOFError`` (a stream that ends early). Anything else, a ``MemoryError`` or a ``TypeError`` from a
    bug, is not the file's fault and must not be blamed on it."""
    import struct
    import wave

    from audioread.exceptions import DecodeError

    return (sf.SoundFileError, DecodeError, RuntimeError, wave.Error, struct.error, EOFError)


class AudioDecodeFailure(RuntimeError):
    """No decoder reads the file; the message says what each one said (audioread's ``NoBackendError``
    alone says nothing: libsndfile's message, e.g. "flac decoder lost sync", is the reason)."""


def load_channels(path: Path | str) -> tuple[np.ndarray, int]:
    """Decode a file to float32 channels ``(C, n)`` at its own rate.

    soundfile decodes what libsndfile reads (no sample checks, so ingest can
    classify NaN/inf itself); other containers go through audioread via librosa.
    """
    import librosa

    try:
        y, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
        y = y.T
    except sf.LibsndfileError as first:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y, file_sr = librosa.load(str(path), sr=None, mono=False)
        except decode_errors() as exc:
            said = str(exc).strip() or "no backend reads it"
            reason = (getattr(first, "error_string", "") or str(first)).strip().rstrip(".")
            reason = reason.removeprefix("Error :").strip()  # libsndfile's "Error : flac decoder lost sync."
            raise AudioDecodeFailure(f"libsndfile: {reason}; audioread: {type(exc).__name__}: {said}") from exc
        y = np.atleast_2d(y)
    return np.asarray(y, dtype=np.float32), int(file_sr)


def downmix(channels: np.ndarray, channel: int | None = None) -> np.ndarray:
    """The mean of the channels, or channel ``channel`` alone (ingest's choice for a track
    whose channels cancel when averaged)."""
    return channels.mean(axis=0) if channel is None else channels[channel]


def load_mono(path: Path | str, sr: int | None = None, channel: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32 (the channel mean, or one channel), resampled to ``sr``
    when given (soxr, high quality)."""
    channels, file_sr = load_channels(path)
    if channel is not None and channel >= channels.shape[0]:
        raise ValueError(f"{path}: channel {channel} asked for, the file has {channels.shape[0]}")
    return to_mono(channels, file_sr, sr, channel)


def to_mono(channels: np.ndarray, file_sr: int, sr: int | None = None, channel: int | None = None) -> tuple[np.ndarray, int]:
    """``load_mono`` of channels already decoded (the same downmix and resampler)."""
    import librosa

    y = downmix(channels, channel)
    if sr is not None and sr != file_sr:
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
        file_sr = sr
    return np.ascontiguousarray(y, dtype=np.float32), int(file_sr)


def header_frames(path: Path | str) -> tuple[int, int, int] | None:
    """(frames, samplerate, channels) from the header when soundfile reads the container, else None."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, OSError):  # not a container libsndfile reads (or not readable): no header
        return None
    return int(info.frames), int(info.samplerate), int(info.channels)


def riff_declared_frames(path: Path | str) -> int | None:
    """Frames a WAV header declares (its ``data`` chunk size over the block size), or None.

    libsndfile clips a truncated WAV's frame count to what the file holds, so a
    truncation is only visible by comparing with the header's own claim.
    """
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size + (size & 1))
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                elif cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):  # streaming writers leave these
                        return None
                    return size // block_align
                else:
                    fh.seek(size + (size & 1), 1)
    except OSError:
        return None
