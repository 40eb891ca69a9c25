"""A small CNN for instrument recognition on HCQT patches (~1 s), with two heads.

Input: the HCQT view (B, H, T, F) in dB. The patch is centred on its own mean level (the
soundfonts' and recordings' gains differ), average-pooled to semitone bins and ~43 frames/s,
then three conv blocks (3x3, batch norm, ReLU, 2x2 max pooling after the first two). Time is
pooled by mean and max; frequency stays (an instrument's register is evidence), flattened
into one hidden layer. Heads: ``clip`` (softmax logits: one instrument per solo patch) and
``tags`` (sigmoid logits: every instrument sounding in the patch).
"""

from __future__ import annotations

import torch
from torch import nn

DB_SCALE = 20.0


class InstrumentNet(nn.Module):
    def __init__(self, in_channels: int, n_bins: int, n_classes: int, channels: list[int], hidden: int = 64,
                 pool_frames: int = 2, pool_bins: int = 5, dropout: float = 0.3):
        super().__init__()
        self.pool = nn.AvgPool2d((pool_frames, pool_bins), ceil_mode=True)
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
        self.hidden = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c_in * bins, hidden), nn.ReLU(inplace=True),
                                    nn.Dropout(dropout))
        self.clip = nn.Linear(hidden, n_classes)
        self.tags = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, H, T, F) dB -> {"clip": (B, C) softmax logits, "tags": (B, C) sigmoid logits}."""
        x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / DB_SCALE
        h = self.body(self.pool(x))  # (B, C', T', F')
        h = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1).flatten(1)
        h = self.hidden(h)
        return {"clip": self.clip(h), "tags": self.tags(h)}
