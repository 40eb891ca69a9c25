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

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirpipe.audio.pitch_shift import PITCH_SHIFTERS


@dataclass(frozen=True)
class Timbre:
    """Feature-domain timbre deformations a training patch draws (``augment.eq_tilt_db``,
    ``augment.noise_snr_db``, ``augment.gain_db``): made on the trainer's device from a few numbers
    per patch."""

    tilt_db: float = 0.0  # a tilt uniform in +-tilt_db dB per octave (0: none)
    snr_db: tuple[float, float] | None = None  # noise at an SNR uniform in this range (None: none)
    noise_share: float = 0.5  # the share of patches that get noise
    gain_db: float = 0.0  # a level change uniform in +-gain_db dB (0: none)

    def to_json(self) -> dict[str, Any]:
        out = {"tilt_db": self.tilt_db, "snr_db": list(self.snr_db) if self.snr_db else None, "noise_share": self.noise_share}
        if self.gain_db:  # only when on: the training identity of runs from before gain_db stays theirs
            out["gain_db"] = self.gain_db
        return out


class AugmentParams(BaseModel):
    """Pitch-shift augmentation (read by the features and train stages)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["feature", "audio"] = Field(
        "feature", description="feature: shifts as bin offsets at sampling; audio: shifted audio per variant"
    )
    enabled: bool = Field(True, description="false: no shifts at all (to see what augmentation buys)")
    shifts: list[int] = Field(default_factory=lambda: list(range(-6, 7)), description="semitones; 0 is the original")
    backend: str = Field("librosa", description="audio mode's pitch-shift backend (registered: librosa, rubberband, plugins)")
    eq_tilt_db: float = Field(
        0.0,
        ge=0,
        le=12,
        description="timbre, in either mode, made where training patches are fed: a random EQ tilt, a per-bin gain "
        "uniform in +-this many dB per octave for each patch (0: off)",
    )
    noise_snr_db: tuple[float, float] | None = Field(
        None,
        description="timbre: additive noise in power, white, pink or brown (drawn), at a signal-to-noise ratio (the "
        "patch's peak level over the noise level at mid-range) uniform in [low, high] dB; null: off",
    )
    noise_share: float = Field(0.5, gt=0, le=1, description="the share of training patches that get noise_snr_db's noise")
    gain_db: float = Field(
        0.0,
        ge=0,
        le=40,
        description="level, made where training patches are fed: each patch louder or quieter by a gain uniform in "
        "+-this many dB, silence kept at the store's floor, so that a model does not learn that quiet means no "
        "chord or no voice (real recordings lie 10-30 dB apart; 0: off)",
    )
    deformations: list[Any] = Field(
        default_factory=list,
        description="audio deformations stored as extra variants of every entry, each unshifted (muda's: "
        "{kind: drc, preset: ...}, {kind: noise, color: ..., weight: [low, high]}, {kind: ir, rt60_s: ... | file: ...}; "
        "mirpipe.audio.deformations); evaluation reads the original variants only",
    )
    deform_share: float = Field(
        0.5, gt=0, le=1, description="the share of training activations drawn from a deformed variant (when there are any)"
    )

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

    @field_validator("deformations")
    @classmethod
    def _deformations(cls, v: list[Any]) -> list[Any]:
        if not v:  # muda and jams cost ~2.7 s to import: only a config that lists deformations pays it
            return []
        from mirpipe.audio.deformations import label_of, validate_deformation

        out = [validate_deformation(raw) for raw in v]
        labels = [label_of(d) for d in out]
        if len(set(labels)) != len(labels):
            raise ValueError(f"deformations must differ: {labels}")
        return out

    @field_validator("noise_snr_db")
    @classmethod
    def _snr(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not -20 <= v[0] <= v[1] <= 100:
            raise ValueError(f"noise_snr_db must be [low, high] with -20 <= low <= high <= 100 dB, got {list(v)}")
        return v

    def timbre(self) -> Timbre | None:
        """The timbre deformations training patches draw; None when off (or ``enabled: false``)."""
        if not self.enabled or (self.eq_tilt_db == 0 and self.noise_snr_db is None and self.gain_db == 0):
            return None
        return Timbre(self.eq_tilt_db, self.noise_snr_db, self.noise_share, self.gain_db)

    def active_shifts(self) -> list[int]:
        return self.shifts if self.enabled else [0]

    def margin(self) -> int:
        """Semitones of margin a feature-mode entry holds on each side."""
        return max(abs(s) for s in self.active_shifts()) if self.mode == "feature" else 0

    def shifted_variants(self) -> list[int]:
        """The shifts stored as whole original variants in an entry (feature mode: only the original)."""
        return self.active_shifts() if self.mode == "audio" else [0]

    def active_deformations(self) -> list[Any]:
        """The deformations' settings stored as extra variants (none with ``enabled: false``)."""
        return list(self.deformations) if self.enabled else []

    def stored_variants(self) -> list[int]:
        """The shift of each variant an entry stores: the original ones first, then one unshifted
        variant per deformation (``variant_deformations`` says which)."""
        return self.shifted_variants() + [0] * len(self.active_deformations())

    def variant_deformations(self) -> list[str | None]:
        """The deformation of each stored variant by label (None: the original audio)."""
        original: list[str | None] = [None] * len(self.shifted_variants())
        if not self.active_deformations():
            return original
        from mirpipe.audio.deformations import label_of

        return original + [label_of(d) for d in self.active_deformations()]

    def deformation_labels(self) -> list[str]:
        return [d for d in self.variant_deformations() if d is not None]

    def variants_identity(self) -> dict[str, Any]:
        """What stored variants an entry holds, for fingerprints: the shifts (and backend when any is
        shifted audio), and the deformations' settings when there are any (none: as before them)."""
        return {
            "variants": self.stored_variants(),
            "backend": self.backend if self.shifted_variants() != [0] else None,
            **self.deformations_identity(),
        }

    def deformations_identity(self) -> dict[str, Any]:
        """The deformations' settings for fingerprints; empty without any (fingerprints as before them)."""
        active = self.active_deformations()
        return {"deformations": [d.model_dump(mode="json") for d in active]} if active else {}
