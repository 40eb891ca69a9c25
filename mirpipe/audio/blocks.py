"""Streamed mono decoding at a target rate: ``load_mono``'s samples, a block at a time.

``MonoStream(path, sr, channel)`` reads the file with soundfile in blocks, downmixes each
block as ``downmix`` does (the channel mean, or one channel) and resamples it with a
``soxr.ResampleStream`` at the quality ``load_mono`` uses (soxr HQ, through
``librosa.resample(res_type="soxr_hq")``). Its samples, concatenated, are ``load_mono``'s:

- the count is exact: ``mono_length`` gives ``load_mono``'s length from the header alone
  (``ceil(frames * sr / file_sr)``, as ``librosa.resample`` fixes it), and the stream is cut
  or zero-padded to it, as ``librosa.resample`` does;
- the values are bitwise equal: python-soxr's ``resample`` (what librosa calls) runs the same
  streaming engine as ``ResampleStream``, and the downmix is the same float32 reduction
  (measured for 44.1 and 16 kHz FLAC, 48 kHz WAV -> 22.05 kHz, whatever the read size;
  tests/test_blockwise.py asserts it, so a soxr that rounds otherwise shows up there).

Files soundfile cannot stream exactly fall back to ``load_mono`` whole (memory grows with
the duration): containers libsndfile does not read (m4a, opus through audioread) and MPEG
(libsndfile's mp3 frame count comes from the header's estimate, not the stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from .io import downmix, load_mono

READ_FRAMES = 1 << 16  # soundfile frames per read (at the file's rate)

# libsndfile formats whose header frame count is what a full decode yields
_EXACT_FORMATS = frozenset({"WAV", "WAVEX", "AIFF", "AU", "FLAC", "OGG", "CAF", "W64", "RF64", "RAW"})


def resampled_length(n_frames: int, file_sr: int, sr: int | None) -> int:
    """Samples ``librosa.resample`` (hence ``load_mono``) returns for ``n_frames`` at ``file_sr``."""
    if sr is None or sr == file_sr:
        return int(n_frames)
    ratio = float(sr) / file_sr  # librosa.resample's own arithmetic
    return int(np.ceil(n_frames * ratio))


def streamable(path: Path | str) -> sf._SoundFileInfo | None:
    """soundfile's header of ``path`` when the file can be streamed exactly, else None."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, OSError):  # not a container libsndfile reads
        return None
    return info if info.format in _EXACT_FORMATS and info.frames > 0 else None


def mono_length(path: Path | str, sr: int | None = None, channel: int | None = None) -> int:
    """The exact sample count of ``load_mono(path, sr, channel)``: from the header when the file
    streams (no decode), else by decoding it whole."""
    info = streamable(path)
    if info is None:
        return len(load_mono(path, sr, channel)[0])
    if channel is not None and channel >= info.channels:
        raise ValueError(f"{path}: channel {channel} asked for, the file has {info.channels}")
    return resampled_length(info.frames, int(info.samplerate), sr)


class MonoStream:
    """Consecutive mono float32 samples of ``load_mono(path, sr, channel)``, in blocks.

    ``n_samples`` is the total; iterate for blocks (their concatenation is the track), or
    ``read(n)`` for exactly ``n`` samples (fewer only at the end). ``streamed`` is False when
    the file fell back to ``load_mono`` whole (see the module doc).
    """

    def __init__(self, path: Path | str, sr: int | None = None, channel: int | None = None, read_frames: int = READ_FRAMES):
        self.path, self.channel, self.read_frames = str(path), channel, int(read_frames)
        self._info = streamable(path)
        self.streamed = self._info is not None
        self._whole: np.ndarray | None = None
        if self._info is None:
            self._whole, self.sr = load_mono(path, sr, channel)
            self.n_samples = len(self._whole)
        else:
            if channel is not None and channel >= self._info.channels:
                raise ValueError(f"{path}: channel {channel} asked for, the file has {self._info.channels}")
            self.file_sr = int(self._info.samplerate)
            self.sr = int(sr) if sr is not None else self.file_sr
            self.n_samples = resampled_length(self._info.frames, self.file_sr, sr)
        self._blocks: Iterator[np.ndarray] | None = None
        self._pending = np.zeros(0, np.float32)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._whole is not None:
            whole, self._whole = self._whole, None  # handed over once
            yield whole
            return
        yield from self._stream()

    def _stream(self) -> Iterator[np.ndarray]:
        import soxr  # type: ignore[import-untyped]  # no stubs (kept out of pyproject: fewer merge conflicts)

        assert self._info is not None
        resampler = None
        if self.sr != self.file_sr:
            resampler = soxr.ResampleStream(self.file_sr, self.sr, 1, dtype="float32", quality="HQ")
        left = self.n_samples  # samples still owed
        decoded = 0
        with sf.SoundFile(self.path) as f:
            while True:
                block = f.read(self.read_frames, dtype="float32", always_2d=True)
                decoded += len(block)
                last = len(block) < self.read_frames or decoded >= self._info.frames
                y = downmix(block.T, self.channel)  # load_channels' (C, n) view, the same reduction
                if resampler is not None:
                    y = resampler.resample_chunk(np.ascontiguousarray(y, dtype=np.float32), last=last)
                y = np.ascontiguousarray(y[:left], dtype=np.float32)
                left -= len(y)
                if len(y):
                    yield y
                if last:
                    break
        if decoded != self._info.frames:
            raise RuntimeError(f"{self.path}: the header says {self._info.frames} frames, {decoded} decoded")
        if left > 0:  # librosa.resample pads its output to ceil(n * ratio)
            yield np.zeros(left, np.float32)

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples (fewer only at the end of the track)."""
        if self._blocks is None:
            self._blocks = iter(self)
        parts, have = [self._pending], len(self._pending)
        while have < n:
            try:
                block = next(self._blocks)
            except StopIteration:
                break
            parts.append(block)
            have += len(block)
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._pending = out[n:].copy()
        return out[:n]
