"""What one ``librosa.cqt`` call does to the time axis, without computing it.

``librosa.cqt`` (librosa 0.10-0.11, ``vqt``) may first downsample the signal by ``2**k``
("early downsampling", when the top filter is far below Nyquist and the hop has enough
factors of two), then computes one octave at a time from the top: an STFT (``center=True``,
zero padding, window of ``n_fft`` samples at the octave's rate) times the octave's filter
basis, then halves the signal with ``soxr_hq`` and the hop, as long as the hop is even.
The frame count is the smallest of the octaves' ``1 + len // hop``.

``CQTPlan`` mirrors that arithmetic (``n_frames``) and bounds how far, in input samples,
a frame reaches (``reach``): the widest octave window, scaled to the input rate, plus the
support of the resamplers in front of it. Block-wise feature computation
(``mirpipe.storage.blockwise``) uses both: a block's kept frames equal the whole track's
when the block carries ``reach`` samples of context on each side and starts on a multiple
of the hop (every downsampling factor divides the hop, so a hop-aligned block start lands
on the same sample phase in every octave).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Half-support of librosa's soxr_hq 2:1 decimator, in OUTPUT samples: measured on an impulse
# (librosa 0.11, soxr 1.1), the response is above 1e-7 of its peak for |k| <= 97 output
# samples; beyond that only FFT rounding noise (< 1e-7 relative) that soxr's block convolution
# spreads further. An F:1 early downsampling (one soxr call) reaches ~103 output samples.
SOXR_HALF_SUPPORT_OUT = 110


# Context kept beyond ``reach``, relative (see ``context_from_reach``).
CONTEXT_SAFETY = 1.25


def context_from_reach(reach: int, hop_length: int) -> int:
    """Context samples on each side of a block for frames that reach ``reach`` samples:
    ``CONTEXT_SAFETY * reach``, rounded up to a multiple of the hop (block starts stay aligned)."""
    return int(math.ceil(CONTEXT_SAFETY * reach / hop_length)) * hop_length


@dataclass(frozen=True)
class CQTPlan:
    """The time-axis arithmetic of one ``librosa.cqt`` call (see the module doc)."""

    hop_length: int
    early_factor: int  # 2**k of the early downsampling (1: none)
    octaves: tuple[tuple[int, int, int], ...]  # per octave, top first: (rate divisor, hop, n_fft)

    def n_frames(self, n_samples: int) -> int:
        """Frames ``librosa.cqt`` returns for ``n_samples`` input samples."""
        n = int(n_samples)
        if self.early_factor > 1:
            n = int(np.ceil(n * (1.0 / self.early_factor)))  # librosa.resample's length
        frames = []
        for _, o_hop, _ in self.octaves:
            frames.append(1 + n // o_hop)
            if o_hop % 2 == 0:
                n = int(np.ceil(n * 0.5))
        return min(frames)

    def reach(self) -> int:
        """Input samples a frame depends on, on each side of its centre (an upper bound)."""
        reach = 0
        resamplers = 0  # reach of the resampling chain in front of this octave, input samples
        if self.early_factor > 1:
            resamplers = SOXR_HALF_SUPPORT_OUT * self.early_factor
        prev_div = self.early_factor
        for div, _, n_fft in self.octaves:
            if div != prev_div:  # one more 2:1 stage, at rate sr / prev_div
                resamplers += SOXR_HALF_SUPPORT_OUT * div
                prev_div = div
            reach = max(reach, (n_fft // 2) * div + resamplers)
        return reach


@lru_cache(maxsize=64)
def cqt_plan(sr: int, hop_length: int, fmin: float, n_bins: int, bins_per_octave: int) -> CQTPlan:
    """The plan of ``librosa.cqt(y, sr=sr, hop_length=..., fmin=fmin, n_bins=..., bins_per_octave=...,
    tuning=0)`` with librosa's other defaults (filter_scale 1, hann window, gamma 0)."""
    import librosa

    n_octaves = int(np.ceil(float(n_bins) / bins_per_octave))
    n_filters = min(bins_per_octave, n_bins)
    freqs = librosa.cqt_frequencies(n_bins=n_bins, fmin=fmin, bins_per_octave=bins_per_octave)
    # lengths at the input rate with vqt's relative bandwidths (computed over all bins), and the cutoff
    lengths, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr)
    nyquist = sr / 2.0
    count1 = max(0, int(np.ceil(np.log2(nyquist / cutoff)) - 1) - 1)
    num_twos = (hop_length & -hop_length).bit_length() - 1
    count2 = max(0, num_twos - n_octaves + 1)
    early = 2 ** min(count1, count2)
    div, hop = early, hop_length // early
    octaves = []
    for i in range(n_octaves):
        sl = slice(-n_filters, None) if i == 0 else slice(-n_filters * (i + 1), -n_filters * i)
        longest = float(np.max(lengths[sl])) / div  # filter length at the octave's rate
        n_fft = int(2.0 ** math.ceil(math.log2(longest)))
        octaves.append((div, hop, n_fft))
        if hop % 2 == 0:
            hop //= 2
            div *= 2
    return CQTPlan(hop_length=hop_length, early_factor=early, octaves=tuple(octaves))
