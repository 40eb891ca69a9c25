"""The fully convolutional salience network of Bittner et al. (2017), "Deep Salience
Representations for F0 Estimation in Polyphonic Music".

Input: the HCQT view (B, H, T, F) in dB (H harmonics as channels, T frames, F bins);
output: salience (B, T, F) in [0, 1]. Every layer keeps the (T, F) size ("same" padding):
small 5x5 / 3x3 convolutions (time x frequency), then one tall kernel spanning
``tall_bins`` frequency bins by 3 frames (70 bins = 1 1/6 octaves at 60 bins/octave; the
paper's "octave and a half" receptive field comes from stacking it on the 5x5s), batch
normalization and ReLU after each, and a 1x1 convolution with a sigmoid.

The paper's sizes: ``channels=[128, 64, 64, 64], tall_channels=8, tall_bins=70``.
"""

from __future__ import annotations

import torch
from torch import nn

# dB of the stored 8-bit HCQT code spans -100..+50; centre and scale it before the first conv
DB_CENTER, DB_SCALE = -50.0, 25.0
OUT_BIAS = -4.5  # sigmoid(-4.5) ~ 0.011


class SalienceNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        tall_channels: int = 8,
        tall_bins: int = 70,
        tall_frames: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(channels):
            k = 5 if i < 2 else 3
            layers += [nn.Conv2d(c_in, c, (k, k), padding=(k // 2, k // 2)), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        # time x frequency: tall_frames x tall_bins
        layers += [TallConv(c_in, tall_channels, tall_frames, tall_bins), nn.BatchNorm2d(tall_channels), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout2d(dropout))
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(tall_channels, 1, (1, 1))
        with torch.no_grad():  # start near the targets' mean (a few bins of 360 lit): BCE then learns
            assert self.out.bias is not None  # (Conv2d with bias)
            self.out.bias.fill_(OUT_BIAS)  # the peaks instead of spending its first steps on the offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, F) dB -> (B, T, F) logits (the loss takes logits; ``torch.sigmoid`` gives salience)."""
        x = (x - DB_CENTER) / DB_SCALE
        return self.out(self.body(x))[:, 0]


def masked_bce(logits: torch.Tensor, target: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on the salience, over frames with a reference (f0 >= 0).

    Float32 throughout, whatever the logits' dtype: under CUDA autocast the logits are float16,
    and a float16 count of a batch's frames times 360 bins overflows (65504) to inf, which made
    the loss 0 and stopped all learning.
    """
    mask = (f0 >= 0).float()[..., None]
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return (loss * mask).sum() / (mask.sum() * logits.shape[-1]).clamp_min(1.0)


class TallConv(nn.Module):
    """A (frames x bins) convolution with a tall frequency kernel, "same" output size.

    Same parameters and result as ``nn.Conv2d(c_in, c_out, (frames, bins))`` with same padding
    (an even ``bins`` pads one more below). On CUDA it is that convolution; on CPU, where a
    70-bin-wide kernel falls off oneDNN's fast paths (~4x slower than the matmul below), it is a
    banded matrix product over blocks of output bins.
    """

    def __init__(self, c_in: int, c_out: int, frames: int, bins: int, block: int = 60):
        super().__init__()
        self.frames, self.bins, self.block = frames, bins, block
        self.weight = nn.Parameter(torch.empty(c_out, c_in, frames, bins))
        self.bias = nn.Parameter(torch.empty(c_out))
        ref = nn.Conv2d(c_in, c_out, (frames, bins))  # its initialization
        with torch.no_grad():
            self.weight.copy_(ref.weight)
            assert ref.bias is not None  # (Conv2d with bias)
            self.bias.copy_(ref.bias)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        k, f = self.bins, self.frames
        return nn.functional.pad(x, (k // 2, (k - 1) // 2, f // 2, (f - 1) // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return nn.functional.conv2d(self._pad(x), self.weight, self.bias)
        B, C, T, F = x.shape
        O, K, D = self.weight.shape[0], self.bins, self.frames  # noqa: E741 - O: output channels, as in the conv2d docs
        blk = min(self.block, F)
        n_blocks = -(-F // blk)
        xp = self._pad(x)
        extra = n_blocks * blk - F
        if extra:
            xp = nn.functional.pad(xp, (0, extra))
        L = blk + K - 1
        # (B, T, C, D, F + K - 1): the D frames each output frame reads, as channels
        taps = torch.stack([xp[:, :, d : d + T] for d in range(D)], dim=2).permute(0, 3, 1, 2, 4)
        i = torch.arange(L, device=x.device)[:, None]
        j = torch.arange(blk, device=x.device)[None, :]
        k = i - j
        band = ((k >= 0) & (k < K)).to(self.weight.dtype)
        W = self.weight[..., k.clamp(0, K - 1)] * band  # (O, C, D, L, blk)
        W = W.permute(1, 2, 3, 0, 4).reshape(C * D * L, O * blk)
        out = torch.cat([taps[..., b * blk : b * blk + L].reshape(B * T, C * D * L) @ W for b in range(n_blocks)], dim=1)
        out = out.reshape(B, T, n_blocks, O, blk).permute(0, 3, 1, 2, 4).reshape(B, O, T, n_blocks * blk)[..., :F]
        return out + self.bias[None, :, None, None]
