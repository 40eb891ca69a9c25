"""A small CNN for instrument recognition on HCQT patches (~1 s), with two heads.

Input: the HCQT view (B, H, T, F) in dB. The patch is centred on its own mean level (the
soundfonts' and recordings' gains differ), average-pooled to semitone bins and ~43 frames/s,
then three conv blocks (3x3, batch norm, ReLU, 2x2 max pooling after the first two). Time is
pooled by mean and max; frequency stays (an instrument's register is evidence), flattened
into one hidden layer. Heads: ``clip`` (softmax logits: one instrument per solo patch) and
``tags`` (sigmoid logits: every instrument sounding in the patch).

Training-time augmentation against unseen instrument samples (another soundfont, another
recording chain): a random smooth EQ curve in dB over absolute frequency (a tilt, random
bumps and random band limits; each harmonic channel reads it at its own frequency), a random contrast
(the patch's dB values scaled about their mean), and optionally a random tempo (the patch
resampled in time: attacks and decays faster or slower).
"""

from __future__ import annotations

import math

import torch
from torch import nn

DB_SCALE = 20.0
EQ_POINTS = 8  # control points of the random EQ curve over the semitone axis


class InstrumentNet(nn.Module):
    offsets: torch.Tensor  # a buffer (register_buffer): declared for the type checker
    patch_frames: int  # set by the instrument task's build()

    def __init__(
        self,
        in_channels: int,
        n_bins: int,
        n_classes: int,
        channels: list[int],
        hidden: int = 64,
        pool_frames: int = 2,
        pool_bins: int = 5,
        dropout: float = 0.3,
        freq_pooling: str = "flatten",
        eq_db: float = 0.0,
        contrast: float = 0.0,
        harmonics: list[float] | None = None,
        bins_per_octave: int = 60,
        stretch: float = 0.0,
    ):
        super().__init__()
        self.pool = nn.AvgPool2d((pool_frames, pool_bins), ceil_mode=True)
        self.freq_pooling, self.eq_db, self.contrast, self.stretch = freq_pooling, eq_db, contrast, stretch
        per_octave = bins_per_octave / pool_bins  # pooled bins per octave
        ratios = harmonics if harmonics and len(harmonics) == in_channels else [1.0] * in_channels
        self.register_buffer("offsets", torch.tensor([round(per_octave * math.log2(h)) for h in ratios]), persistent=False)
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in = c
        self.body = nn.Sequential(*layers)
        bins = -(-n_bins // pool_bins)
        for _ in range(len(channels) - 1):
            bins = -(-bins // 2)
        width = 2 * c_in * (bins if freq_pooling == "flatten" else 1)
        self.hidden = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.clip = nn.Linear(hidden, n_classes)
        self.tags = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, H, T, F) dB -> {"clip": (B, C) softmax logits, "tags": (B, C) sigmoid logits}."""
        x = self.pool(x)
        x = x - x.mean(dim=(1, 2, 3), keepdim=True)
        if self.training and (self.eq_db > 0 or self.contrast > 0 or self.stretch > 0):
            x = self.augment(x)
        h = self.body(x / DB_SCALE)  # (B, C', T', F')
        if self.freq_pooling == "flatten":
            h = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1).flatten(1)
        else:
            h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        h = self.hidden(h)
        return {"clip": self.clip(h), "tags": self.tags(h)}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random EQ (dB, smooth over absolute frequency, with random band limits), tempo and contrast
        per patch of (B, H, T, F)."""
        B, H, _, F = x.shape
        if self.eq_db > 0:
            lo, hi = int(self.offsets.min()), int(self.offsets.max())
            span = F + hi - lo  # the semitone axis every harmonic channel reads from
            points = torch.randn(B, 1, EQ_POINTS, device=x.device) * (self.eq_db / 2)
            tilt = torch.linspace(-1, 1, EQ_POINTS, device=x.device)[None, None] * (torch.rand(B, 1, 1, device=x.device) * 2 - 1)
            curve = nn.functional.interpolate(points + tilt * self.eq_db, size=span, mode="linear", align_corners=True)[:, 0]
            # band limits: half the patches lose their top (a low-pass, as band-limited samples), a
            # quarter their bottom, rolling off at 1-4 dB per pooled bin from a random edge
            axis = torch.arange(span, device=x.device, dtype=x.dtype)[None]
            top = span * (0.4 + 0.6 * torch.rand(B, 1, device=x.device))
            low = span * 0.3 * torch.rand(B, 1, device=x.device)
            slope = 1 + 3 * torch.rand(B, 2, device=x.device)
            curve = curve - (torch.rand(B, 1, device=x.device) < 0.5) * (axis - top).clamp_min(0) * slope[:, :1]
            curve = curve - (torch.rand(B, 1, device=x.device) < 0.25) * (low - axis).clamp_min(0) * slope[:, 1:]
            idx = (self.offsets - lo)[:, None] + torch.arange(F, device=x.device)[None]  # (H, F)
            x = x + curve[:, idx][:, :, None, :]  # (B, H, 1, F)
        if self.stretch > 0:  # one tempo factor per batch: notes' attacks and decays faster or slower
            factor = math.exp((torch.rand(()).item() * 2 - 1) * math.log1p(self.stretch))
            T = x.shape[2]
            y = nn.functional.interpolate(x, size=(max(2, round(T * factor)), F), mode="bilinear", align_corners=False)
            x = y[:, :, :T] if y.shape[2] >= T else torch.cat([y, y[:, :, : T - y.shape[2]]], dim=2)
        if self.contrast > 0:
            scale = 1 + (torch.rand(B, 1, 1, 1, device=x.device) * 2 - 1) * self.contrast
            x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) * scale
        return x
