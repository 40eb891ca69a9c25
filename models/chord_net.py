"""The chord networks of McFee & Bello (2017) and their loss: the torch half of the chord task.

Kept apart from ``models/chord.py`` (vocabulary, targets, decoding, scoring) so the
feature workers that encode targets never import torch.

CR1: conv 5x5 -> conv 1xF (36 channels) -> bidirectional GRU -> heads.
CR2: the same encoder, then a second bidirectional GRU in front of the chord-tag head.
Structured: root (13), pitches (12, multi-label) and bass (13) heads from the
encoder; the tag head also sees their outputs. Tag-only: just the tag head.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .chord import IGNORE, N_ROOTS, N_TAGS

TARGETS = ("targets/chord_root", "targets/chord_pitches", "targets/chord_bass", "targets/chord_tag")


class ChordNet(nn.Module):
    def __init__(
        self,
        n_bins: int = 216,
        architecture: Literal["cr1", "cr2"] = "cr2",
        structured: bool = True,
        hidden: int = 128,
        channels: int = 36,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.structured = structured
        self.architecture = architecture
        # no affine parameters: the first conv then needs no input gradient (half its backward cost)
        self.norm_in = nn.BatchNorm2d(1, affine=False)
        self.conv_local = nn.Conv2d(1, 1, kernel_size=5, padding=2)
        self.norm_local = nn.BatchNorm2d(1)
        # the full-height 1xF convolution, computed as the equivalent per-frame linear map (a matmul)
        self.conv_freq = nn.Linear(n_bins, channels)
        self.norm_freq = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.GRU(channels, hidden, batch_first=True, bidirectional=True)
        tag_in = 2 * hidden
        if structured:
            self.root = nn.Linear(2 * hidden, N_ROOTS)
            self.pitches = nn.Linear(2 * hidden, 12)
            self.bass = nn.Linear(2 * hidden, N_ROOTS)
            tag_in += 2 * N_ROOTS + 12
        self.decoder = nn.GRU(tag_in, hidden, batch_first=True, bidirectional=True) if architecture == "cr2" else None
        self.tag = nn.Linear(2 * hidden if self.decoder is not None else tag_in, N_TAGS)

    def forward(self, cqt: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, F) log-CQT -> logits per head, each (B, T, classes)."""
        x = self.norm_in(cqt.unsqueeze(1))
        x = F.relu(self.norm_local(self.conv_local(x)))
        x = self.conv_freq(x.squeeze(1))  # (B, T, C)
        x = self.drop(F.relu(self.norm_freq(x.transpose(1, 2)).transpose(1, 2)))
        h, _ = self.encoder(x)
        h = self.drop(h)
        out: dict[str, torch.Tensor] = {}
        tag_in = h
        if self.structured:
            out["root"], out["pitches"], out["bass"] = self.root(h), self.pitches(h), self.bass(h)
            tag_in = torch.cat([h, out["root"].softmax(-1), out["pitches"].sigmoid(), out["bass"].softmax(-1)], dim=-1)
        if self.decoder is not None:
            tag_in, _ = self.decoder(tag_in)
            tag_in = self.drop(tag_in)
        out["tag"] = self.tag(tag_in)
        return out


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled frames, 0 when there are none: the sum over the count
    (bitwise the mean reduction) rather than a branch on ``any()``, which would wait for the device."""
    target = target.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target, ignore_index=IGNORE, reduction="sum")
    return total / (target != IGNORE).sum().clamp_min(1)


def loss(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of the heads' losses; frames marked ``IGNORE`` (no reference, X, padding) count nowhere."""
    parts = {"tag": _ce(outputs["tag"], batch["targets/chord_tag"])}
    if "root" in outputs:
        parts["root"] = _ce(outputs["root"], batch["targets/chord_root"])
        parts["bass"] = _ce(outputs["bass"], batch["targets/chord_bass"])
        target = batch["targets/chord_pitches"]
        mask = target != IGNORE
        if mask.any():
            parts["pitches"] = F.binary_cross_entropy_with_logits(outputs["pitches"].float()[mask], target[mask].float())
    total = sum(parts.values())
    assert isinstance(total, torch.Tensor)  # (parts holds the tag loss at least)
    return total, {k: v.detach() for k, v in parts.items()}


def metric(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Frame accuracy of the chord tag: (correct frames, labelled frames)."""
    target = batch["targets/chord_tag"]
    mask = target != IGNORE
    correct = (outputs["tag"].argmax(-1) == target) & mask
    return float(correct.sum()), float(mask.sum())
