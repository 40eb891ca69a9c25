"""Harmonic CQT (Bittner et al. 2017) from one stored wide log-CQT.

Instead of six ``librosa.cqt`` calls (one per harmonic h, fmin = h * C1) we compute ONE
log-CQT per track on the same 60 bins/octave lattice, from ``0.5 * fmin`` (minus a
pitch-shift margin) up to the 5th harmonic of the top note (plus margin), cut below
Nyquist (two ``librosa.cqt`` calls in practice, see ``PASSBAND``). At read time a slab ``(T, n_wide_bins)`` becomes the ``(H, T, n_bins)`` stack
by bin offsets: harmonic h starts ``bpo * log2(h / 0.5)`` bins above the lowest
harmonic -- an integer for 0.5, 1, 2, 4 and fractional for 3 and 5 (linear
interpolation in dB between neighbouring bins).

Pitch shift (sampling-time augmentation) is a further offset of ``shift * bpo / 12``
bins. Sign convention: shifting UP by ``n`` semitones moves content to HIGHER bins::

    view[h, t, k] = wide[t, k + harmonic_offset(h) - n * bins_per_semitone]

Wide bin ``j`` has centre ``wide_fmin * 2**(j / bpo)`` and ``harmonic_offset(h)``
includes the margin, so view bin ``k`` reads the stored energy at
``h * fmin * 2**(k / bpo) * 2**(-n / 12)``. A stored tone at ``f`` therefore peaks,
in channel ``h`` of the shift-``n`` view, at the bin ``k`` with
``h * fmin * 2**(k / bpo) == f * 2**(n / 12)``: exactly where an HCQT of the audio
pitch-shifted by ``n`` semitones would put it (when that ``k`` is in ``[0, n_bins)``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import librosa
import numpy as np

HARMONICS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)

# Fixed dB range of the 8-bit code (absolute reference, ref=1.0, amin=1e-5).
# lo = -100 dB is the amin floor (20*log10(1e-5)): nothing can fall below it.
# hi = +50 dB: with librosa's default ``scale=True`` the magnitude grows like
# sqrt(filter length), i.e. it is largest in the lowest wide bin (~11.6 Hz). Measured
# there (librosa 0.11, sr 22050, 60 bpo): a full-scale sine gives +46.2 dB and a
# full-scale square wave (the sign-matched, worst case for |y| <= 1) +48.3 dB;
# at 1 kHz a full-scale sine gives +26.8 dB, and the synth demo track peaks at
# +13.2 dB. So no audio in [-1, 1] clips; the price is a 150/255 = 0.59 dB step
# (round-trip error <= 0.29 dB).
DB_RANGE: tuple[float, float] = (-100.0, 50.0)


@dataclass(frozen=True)
class WideCQT:
    """Geometry of one wide CQT holding every harmonic of a target grid plus shift margins."""

    sr: int = 22050
    hop_length: int = 256
    fmin: float = 32.703195662574764  # target grid's lowest frequency (C1)
    bins_per_octave: int = 60
    n_bins: int = 360  # target grid bins per harmonic
    harmonics: tuple[float, ...] = HARMONICS
    margin_semitones: int = 6  # largest |pitch shift| the stored array supports

    def __post_init__(self) -> None:
        if self.bins_per_octave % 12:
            raise ValueError(f"bins_per_octave={self.bins_per_octave} must be a multiple of 12")
        if not self.harmonics or min(self.harmonics) <= 0:
            raise ValueError(f"harmonics must be positive, got {self.harmonics}")
        if self.margin_semitones < 0:
            raise ValueError("margin_semitones must be >= 0")
        object.__setattr__(self, "harmonics", tuple(float(h) for h in self.harmonics))

    @property
    def bins_per_semitone(self) -> int:
        """Bins per semitone (``bins_per_octave // 12``)."""
        return self.bins_per_octave // 12

    @property
    def margin_bins(self) -> int:
        """Extra bins kept on each side for the largest shift."""
        return self.margin_semitones * self.bins_per_semitone

    @property
    def wide_fmin(self) -> float:
        """Centre frequency of wide bin 0: ``fmin * min(harmonics) * 2**(-margin_semitones/12)``."""
        return self.fmin * min(self.harmonics) * 2.0 ** (-self.margin_semitones / 12.0)

    @property
    def n_wanted_bins(self) -> int:
        """Bins needed to hold every harmonic's full grid at every shift, ignoring Nyquist."""
        top = max(self.harmonic_offset(h) for h in self.harmonics) + self.n_bins - 1
        return int(math.ceil(top - 1e-9)) + self.margin_bins + 1

    @property
    def n_wide_bins(self) -> int:
        """Stored bins: ``n_wanted_bins``, cut to what ``librosa.cqt`` accepts below Nyquist.

        ``librosa.cqt`` refuses a basis whose top filter's upper band edge
        (centre * (1 + bandwidth / 2)) exceeds Nyquist, so we drop top bins until
        it accepts; in particular the top bin's centre frequency stays below Nyquist.
        Target bins that would read beyond the cut are filled (see ``harmonic_view``).
        """
        return _fit_below_nyquist(self.sr, self.wide_fmin, self.bins_per_octave, self.n_wanted_bins)

    def frequencies(self) -> np.ndarray:
        """Centre frequencies (Hz) of the stored wide bins."""
        return self.wide_fmin * 2.0 ** (np.arange(self.n_wide_bins) / self.bins_per_octave)

    def harmonic_offset(self, h: float) -> float:
        """Bins from wide bin 0 to harmonic ``h``'s target bin 0 at shift 0 (margin included)."""
        if h <= 0:
            raise ValueError(f"harmonic must be positive, got {h}")
        return self.margin_bins + self.bins_per_octave * math.log2(h / min(self.harmonics))

    def to_json(self) -> dict:
        """Plain dict (JSON-able) for entry attributes."""
        d = asdict(self)
        d["harmonics"] = list(self.harmonics)
        return d

    @classmethod
    def from_json(cls, d: dict) -> WideCQT:
        """Inverse of ``to_json``; unknown keys raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        extra = set(d) - names
        if extra:
            raise ValueError(f"unknown WideCQT fields: {sorted(extra)}")
        kw = dict(d)
        if "harmonics" in kw:
            kw["harmonics"] = tuple(float(h) for h in kw["harmonics"])
        return cls(**kw)


@lru_cache(maxsize=64)
def _fit_below_nyquist(sr: int, fmin: float, bpo: int, n_bins: int) -> int:
    """Largest ``n <= n_bins`` whose CQT basis librosa accepts (filter cutoff <= Nyquist).

    Uses ``librosa.filters.wavelet_lengths`` -- the check ``librosa.cqt`` itself makes.
    """
    freqs = fmin * 2.0 ** (np.arange(n_bins) / bpo)
    nyquist = sr / 2.0
    for n in range(n_bins, 1, -1):
        _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs[:n], sr=sr)
        if cutoff <= nyquist and freqs[n - 1] < nyquist:
            return n
    raise ValueError("fewer than two CQT bins fit below Nyquist")


# librosa.cqt computes each octave below the top one on a signal downsampled by 2 per
# octave (soxr_hq). Every lower octave therefore sits at the same fraction of its own
# Nyquist as the top bin does of sr/2; near 1.0 the resampler's transition band eats the
# top ~5 bins of each such octave (measured on white noise: -0.6, -2, -6, -12, -23, -36 dB
# for the 6 topmost bins when the top bin is at 0.99 Nyquist; <= 0.2 dB at 0.9). So the
# bins above PASSBAND * sr/2 (less than an octave, all computed at full rate without
# resampling) get their own call, and the rest a call whose top bin is below it.
PASSBAND = 0.9


def _cqt_db(y: np.ndarray, geom: WideCQT, start: int, stop: int, amin: float) -> np.ndarray:
    """dB of wide bins [start, stop) from one librosa.cqt call, shape (stop - start, T)."""
    with warnings.catch_warnings():
        # short clips (a few seconds): the lowest octaves' downsampled signal is shorter than their
        # FFT, which librosa pads and warns about once per octave and track; the values are what
        # librosa computes either way
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal")
        C = librosa.cqt(
            y,
            sr=geom.sr,
            hop_length=geom.hop_length,
            fmin=geom.wide_fmin * 2.0 ** (start / geom.bins_per_octave),
            n_bins=stop - start,
            bins_per_octave=geom.bins_per_octave,
            tuning=0.0,
        )
    return librosa.amplitude_to_db(np.abs(C), ref=1.0, amin=amin, top_db=None)


def _calls(geom: WideCQT) -> list[tuple[int, int]]:
    """The wide bins ``[start, stop)`` of each ``librosa.cqt`` call ``compute_wide_cqt`` makes."""
    n = geom.n_wide_bins
    # bins whose centre is within the resampler's passband (the rest: less than one octave)
    n_low = int(np.searchsorted(geom.frequencies(), PASSBAND * geom.sr / 2.0, side="right"))
    return [(0, n)] if n_low >= n else [(0, n_low), (n_low, n)]


def wide_cqt_plans(geom: WideCQT) -> list:
    """The time-axis plan (``cqt_plan.CQTPlan``) of each ``librosa.cqt`` call of ``compute_wide_cqt``."""
    from .cqt_plan import cqt_plan

    return [
        cqt_plan(geom.sr, geom.hop_length, geom.wide_fmin * 2.0 ** (a / geom.bins_per_octave), b - a, geom.bins_per_octave)
        for a, b in _calls(geom)
    ]


def compute_wide_cqt(y: np.ndarray, geom: WideCQT, amin: float = 1e-5) -> np.ndarray:
    """(T, n_wide_bins) float32 log-magnitude in dB, absolute reference.

    ``librosa.amplitude_to_db(|C|, ref=1.0, amin=amin, top_db=None)`` with ``tuning=0`` so the
    grid is exactly ``geom.frequencies()``. One ``librosa.cqt`` call when the top bin is below
    ``PASSBAND * sr/2``; otherwise two (the few bins above it alone + the rest, see ``PASSBAND``)
    so that no octave's top bins fall in the resampler's transition band.
    """
    y = np.asarray(y, dtype=np.float32)
    parts = [_cqt_db(y, geom, a, b, amin) for a, b in _calls(geom)]
    db = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return np.ascontiguousarray(db.T, dtype=np.float32)


def _harmonic_source(geom: WideCQT, h: float, shift: int) -> tuple[int, float, int]:
    """Where harmonic ``h`` at ``shift`` semitones reads the wide slab: the first source bin, the
    interpolation fraction towards the next one (0 on exact bins), and how many target bins have
    their (interpolated) source inside the stored range."""
    pos = geom.harmonic_offset(h) - int(shift) * geom.bins_per_semitone
    i0 = math.floor(pos + 1e-9)
    frac = pos - i0
    if frac < 1e-9:
        frac = 0.0
    last = geom.n_wide_bins - 1 if frac == 0.0 else geom.n_wide_bins - 2
    return i0, frac, int(np.clip(last - i0 + 1, 0, geom.n_bins))


def harmonic_view(slab: np.ndarray, geom: WideCQT, shift: int = 0, fill: float | None = None) -> np.ndarray:
    """(H, T, n_bins) float32 HCQT stack from a (T, n_wide_bins) dB slab, pitch-shifted by ``shift`` semitones.

    ``view[h, :, k] = wide[:, k + harmonic_offset(h) - shift * bins_per_semitone]``; fractional
    positions interpolate linearly in dB. Target bins past the stored range (cut at Nyquist) get
    ``fill`` (default: the slab's minimum). ``|shift| > margin_semitones`` raises ``ValueError``.
    """
    if shift != int(shift) or abs(shift) > geom.margin_semitones:
        raise ValueError(f"shift={shift} must be an integer with |shift| <= {geom.margin_semitones}")
    slab = np.asarray(slab)
    n_wide = geom.n_wide_bins
    if slab.ndim != 2 or slab.shape[1] != n_wide:
        raise ValueError(f"slab must be (T, {n_wide}), got {slab.shape}")
    slab = slab.astype(np.float32, copy=False)
    T = slab.shape[0]
    if fill is None:
        fill = float(slab.min()) if slab.size else 0.0
    out = np.empty((len(geom.harmonics), T, geom.n_bins), dtype=np.float32)
    for i, h in enumerate(geom.harmonics):
        i0, frac, n_ok = _harmonic_source(geom, h, shift)
        lo = slab[:, i0 : i0 + n_ok]
        if frac == 0.0:
            out[i, :, :n_ok] = lo
        else:
            hi = slab[:, i0 + 1 : i0 + 1 + n_ok]
            np.multiply(lo, np.float32(1.0 - frac), out=out[i, :, :n_ok])
            out[i, :, :n_ok] += np.float32(frac) * hi
        out[i, :, n_ok:] = fill
    return out


def quantize_db(db: np.ndarray, lo: float = DB_RANGE[0], hi: float = DB_RANGE[1]) -> np.ndarray:
    """uint8 code of dB values: linear over [lo, hi] in 255 steps, clipped outside."""
    if not hi > lo:
        raise ValueError("need hi > lo")
    scale = 255.0 / (hi - lo)
    q = np.rint((np.asarray(db, dtype=np.float32) - np.float32(lo)) * np.float32(scale))
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize_db(q: np.ndarray, lo: float = DB_RANGE[0], hi: float = DB_RANGE[1]) -> np.ndarray:
    """float32 dB from the uint8 code of ``quantize_db``."""
    if not hi > lo:
        raise ValueError("need hi > lo")
    step = np.float32((hi - lo) / 255.0)
    return np.asarray(q, dtype=np.float32) * step + np.float32(lo)


class _ShiftTable:
    """Per shift (``-margin_semitones..margin_semitones``) and harmonic: the first source bin, the
    two interpolation weights (float32) and the bins inside the stored range, computed exactly as
    ``harmonic_view`` computes them (the same doubles, the same float32 roundings)."""

    def __init__(self, geom: WideCQT):
        shifts = range(-geom.margin_semitones, geom.margin_semitones + 1)
        rows = []
        for shift in shifts:
            row = []
            for h in geom.harmonics:
                i0, frac, n_ok = _harmonic_source(geom, h, shift)
                row.append((i0, float(np.float32(1.0 - frac)), float(np.float32(frac)), n_ok))
            rows.append(row)
        table = np.array(rows, dtype=np.float64)  # (shifts, harmonics, 4); every value exact in float64
        self.start = table[..., 0].astype(np.int64)
        self.keep = table[..., 1].astype(np.float32)
        self.take = table[..., 2].astype(np.float32)
        self.n_ok = table[..., 3].astype(np.int64)
        self.interpolates = [bool((self.take[:, i] != 0).any()) for i in range(len(geom.harmonics))]
        self.on: dict = {}  # device -> the tables as tensors there

    def tensors(self, device):
        import torch

        if device not in self.on:
            self.on[device] = tuple(torch.from_numpy(a).to(device) for a in (self.start, self.keep, self.take, self.n_ok))
        return self.on[device]


@lru_cache(maxsize=16)
def _shift_table(geom: WideCQT) -> _ShiftTable:
    return _ShiftTable(geom)


def torch_harmonic_view(codes, shift, geom: WideCQT, db_range=DB_RANGE):
    """``harmonic_view`` of a batch in torch, on the tensors' device: ``codes`` ``(B, T, n_wide_bins)``
    (uint8 codes of ``quantize_db`` over ``db_range``, or dB when ``db_range`` is None), ``shift``
    ``(B,)`` semitones per patch -> ``(B, H, T, n_bins)`` float32, each patch equal to
    ``harmonic_view(dequantize_db(codes[b], *db_range), geom, shift[b])`` (the same float32
    operations in the same order; bins past the stored range get each patch's minimum)."""
    import torch

    if codes.ndim != 3 or codes.shape[2] != geom.n_wide_bins:
        raise ValueError(f"codes must be (B, T, {geom.n_wide_bins}), got {tuple(codes.shape)}")
    device = codes.device
    if db_range:
        lo, hi = float(db_range[0]), float(db_range[1])
        if not hi > lo:
            raise ValueError("need hi > lo")
        step = torch.tensor(np.float32((hi - lo) / 255.0), device=device)
        db = codes.to(torch.float32) * step + torch.tensor(np.float32(lo), device=device)
    else:
        db = codes.to(torch.float32)
    shift = shift.to(device=device, dtype=torch.int64).reshape(-1)
    if bool((shift.abs() > geom.margin_semitones).any()):
        raise ValueError(f"shifts must have |shift| <= {geom.margin_semitones}, got {shift.tolist()}")
    B, T, n_wide = db.shape
    table = _shift_table(geom)
    start, keep, take, n_ok = table.tensors(device)
    row = shift + geom.margin_semitones
    fill = db.reshape(B, -1).amin(dim=1) if T else torch.zeros(B, device=device)
    k = torch.arange(geom.n_bins, device=device)
    out = torch.empty((B, len(geom.harmonics), T, geom.n_bins), dtype=torch.float32, device=device)
    for i in range(len(geom.harmonics)):
        cols = start[row, i][:, None] + k[None, :]  # (B, n_bins)
        inside = k[None, :] < n_ok[row, i][:, None]
        lo_idx = cols.clamp(0, n_wide - 1)[:, None, :].expand(B, T, geom.n_bins)
        lo_val = torch.gather(db, 2, lo_idx)
        if table.interpolates[i]:
            hi_idx = (cols + 1).clamp(0, n_wide - 1)[:, None, :].expand(B, T, geom.n_bins)
            val = lo_val * keep[row, i][:, None, None] + take[row, i][:, None, None] * torch.gather(db, 2, hi_idx)
        else:
            val = lo_val
        out[:, i] = torch.where(inside[:, None, :], val, fill[:, None, None])
    return out
