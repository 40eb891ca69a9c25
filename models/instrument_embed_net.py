"""The ``instrument_embed`` head: patches of embedding frames (B, 1, T, D) -> clip and tag logits.

Batch norm over the embedding's dimensions, a 1-D conv over time (ReLU), mean and max pooling
over the patch's frames, a hidden layer, then the instrument task's two heads: ``clip`` (softmax:
one instrument per solo patch) and ``tags`` (sigmoid: every instrument sounding).
"""

from __future__ import annotations

import torch
from torch import nn


class EmbedHead(nn.Module):
    patch_frames: int  # set by the task's build()

    def __init__(
        self, dims: int, n_classes: int, hidden: int = 128, kernel: int = 3, dropout: float = 0.3, input_dropout: float = 0.0
    ):
        super().__init__()
        self.norm = nn.BatchNorm1d(dims)
        self.drop_in = nn.Dropout(input_dropout)
        self.conv = nn.Sequential(nn.Conv1d(dims, hidden, kernel, padding=kernel // 2), nn.ReLU(inplace=True))
        self.hidden = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.clip = nn.Linear(hidden, n_classes)
        self.tags = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 1, T, D) embedding frames -> {"clip": (B, C) softmax logits, "tags": (B, C) sigmoid logits}."""
        h = self.conv(self.drop_in(self.norm(x[:, 0].transpose(1, 2))))  # (B, hidden, T)
        h = self.hidden(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))
        return {"clip": self.clip(h), "tags": self.tags(h)}
