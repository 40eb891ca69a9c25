"""synthesize: render the embedded demo corpus (FLAC + JAMS per track), deterministic for a seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mirpipe.records import Record
from mirpipe.storage.atomic import temp_path

from .base import STAGES, Done, Stage, StageContext, WorkItem
from .synth.track import annotate, compose, render

CORPUS_DIR = "corpus"


class SynthesizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracks: int = Field(24, ge=1, le=100_000, description="number of demo tracks")
    seed: int = Field(0, description="corpus seed: same seed, same corpus")
    sr: int = Field(22050, ge=8000)
    min_duration: float = Field(20.0, gt=2.0)
    max_duration: float = Field(60.0, gt=2.0)
    solo_fraction: float = Field(0.25, ge=0.0, le=1.0, description="share of melody-only solo tracks")

    @model_validator(mode="after")
    def _durations(self):
        if self.max_duration < self.min_duration:
            raise ValueError(f"max_duration {self.max_duration} < min_duration {self.min_duration}")
        return self


@dataclass(frozen=True)
class SynthRecord(Record):
    track: str
    duration: float
    solo: bool
    instruments: list[str]


def track_id(index: int) -> str:
    return f"demo-{index:04d}"


@STAGES.register
class Synthesize(Stage):
    name = "synthesize"
    params = SynthesizeParams
    optional = True  # only when pipeline.yaml (or `mirpipe demo`) asks for the demo corpus
    version = "2"  # 2: quality prior, fewer inversions, symmetric chords in root position
    record_type = SynthRecord

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        p: SynthesizeParams = ctx.params["synthesize"]
        n_solo = round(p.tracks * p.solo_fraction)
        return [
            WorkItem(track_id(i), payload={"index": i, "solo": i >= p.tracks - n_solo}, identity={"index": i, "solo": i >= p.tracks - n_solo})
            for i in range(p.tracks)
        ]

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        # The track count and solo share only decide which items exist: growing the corpus keeps old tracks.
        return ctx.params["synthesize"].model_dump(mode="json", exclude={"tracks", "solo_fraction"})

    def run(self, item: WorkItem, ctx: StageContext) -> SynthRecord:
        p: SynthesizeParams = ctx.params["synthesize"]
        index, solo = item.payload["index"], item.payload["solo"]
        score = compose(index, p.seed, solo, p.min_duration, p.max_duration)
        y = render(score, p.sr, p.seed, index)
        jam = annotate(score, item.id, solo)
        corpus = ctx.path(CORPUS_DIR)
        corpus.mkdir(parents=True, exist_ok=True)
        audio, jams_path = corpus / f"{item.id}.flac", corpus / f"{item.id}.jams"
        tmp = temp_path(audio)
        sf.write(tmp, y, p.sr, format="FLAC", subtype="PCM_16")
        tmp.replace(audio)
        tmp = temp_path(jams_path)
        jam.save(str(tmp), strict=True, fmt="json")
        tmp.replace(jams_path)
        return SynthRecord(item.id, float(score.duration), bool(solo), sorted({score.melody_instrument, score.accompaniment} - {None}))

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: SynthRecord) -> bool:
        corpus = ctx.path(CORPUS_DIR)
        return (corpus / f"{item.id}.flac").exists() and (corpus / f"{item.id}.jams").exists()
