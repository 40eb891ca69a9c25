"""augment: per track, one deformed JAMS per pitch shift (the recipe); audio only when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirpipe.records import Record
from mirpipe.storage.atomic import temp_path

from .audio_io import load_mono
from .base import STAGES, Done, Stage, StageContext, WorkItem
from .deform import deform, variant_name
from .pitch_shift import PITCH_SHIFTERS
from .ingest import read_manifest

AUGMENT_DIR = "augment"


class AugmentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="false: only the unshifted variant (to see what augmentation buys)")
    shifts: list[int] = Field(default_factory=lambda: list(range(-6, 7)), description="semitones; 0 is the original")
    backend: str = Field("librosa", description="pitch-shift backend (registered: librosa, rubberband, plugins)")
    keep_audio: bool = Field(False, description="also write shifted audio (FLAC); the features stage never needs it")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return PITCH_SHIFTERS.check(v)

    @field_validator("shifts")
    @classmethod
    def _shifts(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or any(abs(s) > 12 for s in v):
            raise ValueError(f"shifts must be distinct integers within -12..12, got {v}")
        return sorted(v)

    def active_shifts(self) -> list[int]:
        return self.shifts if self.enabled else [0]


@dataclass(frozen=True)
class Variant(Record):
    variant: str  # its name in the store and the augment folder (variant_name)
    semitones: int


@dataclass(frozen=True)
class AugmentRecord(Record):
    track: str
    variants: list[Variant]


def variant_jams_path(workdir: Path, track: str, variant: str) -> Path:
    return workdir / AUGMENT_DIR / track / f"{variant}.jamz"


@STAGES.register
class Augment(Stage):
    name = "augment"
    params = AugmentParams
    needs = ("ingest",)
    version = "1"
    record_type = AugmentRecord

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        p: AugmentParams = ctx.params["augment"]
        return {"shifts": p.active_shifts(), "backend": p.backend, "keep_audio": p.keep_audio}

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        manifest = read_manifest(ctx)
        return [
            WorkItem(t, payload={"track": t, "audio": manifest[t].audio, "jams": manifest[t].jams}, upstream=(d.fingerprint,))
            for t, d in sorted(upstream["ingest"].items())
            if t in manifest
        ]

    def run(self, item: WorkItem, ctx: StageContext) -> AugmentRecord:
        import jams

        p: AugmentParams = ctx.params["augment"]
        jam = jams.load(item.payload["jams"], validate=False)
        audio = load_mono(item.payload["audio"]) if p.keep_audio else None
        variants = []
        for n, out, y in deform(jam, p.active_shifts(), p.backend, audio):
            variant = variant_name(n)
            path = variant_jams_path(ctx.workdir, item.id, variant)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path)
            out.save(str(tmp), strict=True, fmt="jamz")  # validates against the schema first
            tmp.replace(path)
            if y is not None:
                tmp = temp_path(path.with_suffix(".flac"))
                sf.write(tmp, y, audio[1], format="FLAC", subtype="PCM_24")
                tmp.replace(path.with_suffix(".flac"))
            variants.append(Variant(variant, n))
        return AugmentRecord(item.id, variants)

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: AugmentRecord) -> bool:
        return all(variant_jams_path(ctx.workdir, item.id, v.variant).exists() for v in record.variants)
