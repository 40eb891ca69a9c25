"""Read a Gravis UltraSound patch (``.pat``, the format of the freepats set and TiMidity):
its samples' PCM, rate, root frequency, key range and sustain loop.

Layout (GF1PATCH110): a 129-byte file header, a 63-byte instrument header, a 47-byte layer
header (its byte 6: the number of samples), then per sample a 96-byte header followed by its
data. Sizes and loop points in a sample header count bytes, so 16-bit samples halve them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGICS = (b"GF1PATCH110\0", b"GF1PATCH100\0")
_FILE, _INSTRUMENT, _LAYER, _SAMPLE = 129, 63, 47, 96
MODE_16BIT, MODE_UNSIGNED, MODE_LOOP = 1, 2, 4


class PatchError(ValueError):
    """A file that is not a readable GUS patch (the message names it and why)."""


@dataclass(frozen=True)
class PatchSample:
    name: str
    rate: int  # Hz
    root_hz: float  # the pitch it sounds at its own rate
    low_hz: float  # the key range it plays
    high_hz: float
    loop: tuple[float, float] | None  # sustain loop (start, end) in samples; None without one
    data: np.ndarray  # float32 in [-1, 1)


def read_patch(path: str | Path) -> list[PatchSample]:
    b = Path(path).read_bytes()
    if b[:12] not in MAGICS:
        raise PatchError(f"{path}: not a GUS patch (GF1PATCH110 header)")
    pos = _FILE + _INSTRUMENT
    if len(b) < pos + _LAYER:
        raise PatchError(f"{path}: truncated before its layer header")
    count = b[pos + 6]
    pos += _LAYER
    out = []
    for i in range(count):
        h = b[pos : pos + _SAMPLE]
        if len(h) < _SAMPLE:
            raise PatchError(f"{path}: sample {i} of {count}: truncated header")
        name = h[:7].split(b"\0", 1)[0].decode("latin-1").strip()
        size, loop_start, loop_end = struct.unpack("<III", h[8:20])
        (rate,) = struct.unpack("<H", h[20:22])
        low, high, root = struct.unpack("<III", h[22:34])
        modes = h[55]
        pos += _SAMPLE
        raw = b[pos : pos + size]
        if len(raw) < size or rate == 0 or root == 0:
            raise PatchError(f"{path}: sample {i} ({name}): truncated data or zero rate/root")
        pos += size
        width = 2 if modes & MODE_16BIT else 1
        dtype = {(2, False): "<i2", (2, True): "<u2", (1, False): "i1", (1, True): "u1"}[(width, bool(modes & MODE_UNSIGNED))]
        x = np.frombuffer(raw[: size - size % width], dtype).astype(np.float32)
        if modes & MODE_UNSIGNED:
            x -= 2 ** (8 * width - 1)
        x /= 2 ** (8 * width - 1)
        fraction = h[7]  # the loop points' fractional parts (4 bits each, sixteenths)
        loop = None
        if modes & MODE_LOOP and loop_end > loop_start:
            loop = (loop_start / width + (fraction & 0x0F) / 16, loop_end / width + (fraction >> 4) / 16)
        out.append(PatchSample(name, rate, root / 1000.0, low / 1000.0, high / 1000.0, loop, x))
    return out
