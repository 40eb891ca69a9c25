"""The ``augment:`` section: which pitch shifts training sees, and how they are made.

- ``mode: feature`` (default): features are computed once per track with margin bins
  for the largest shift; a shift of n semitones is a bin offset when a patch is cut and
  the task moves its targets by n (``Task.transpose``). Nothing per shift is stored.
- ``mode: audio``: the features stage shifts the waveform (a registered pitch-shift
  backend) and the annotations (muda, in memory) for every shift, and stores every
  variant in the track's one entry. The fidelity reference for feature mode, and the
  place for deformations that are not pure pitch shifts.

There is no augment stage: the features stage reads this section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirpipe.audio.pitch_shift import PITCH_SHIFTERS


class AugmentParams(BaseModel):
    """Pitch-shift augmentation (read by the features and train stages)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["feature", "audio"] = Field(
        "feature", description="feature: shifts as bin offsets at sampling; audio: shifted audio per variant"
    )
    enabled: bool = Field(True, description="false: no shifts at all (to see what augmentation buys)")
    shifts: list[int] = Field(default_factory=lambda: list(range(-6, 7)), description="semitones; 0 is the original")
    backend: str = Field("librosa", description="audio mode's pitch-shift backend (registered: librosa, rubberband, plugins)")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return PITCH_SHIFTERS.check(v)

    @field_validator("shifts")
    @classmethod
    def _shifts(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or any(abs(s) > 12 for s in v) or 0 not in v:
            raise ValueError(f"shifts must be distinct integers within -12..12 including 0, got {v}")
        return sorted(v)

    def active_shifts(self) -> list[int]:
        return self.shifts if self.enabled else [0]

    def margin(self) -> int:
        """Semitones of margin a feature-mode entry holds on each side."""
        return max(abs(s) for s in self.active_shifts()) if self.mode == "feature" else 0

    def stored_variants(self) -> list[int]:
        """The shifts stored as whole variants in an entry (feature mode: only the original)."""
        return self.active_shifts() if self.mode == "audio" else [0]
