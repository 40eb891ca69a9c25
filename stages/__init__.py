"""Pipeline stages, one module each; ``STAGES`` is the DAG in run order."""

from __future__ import annotations

from .augment import Augment, AugmentParams
from .base import Done, Stage, StageContext, WorkItem
from .features import Features, FeaturesParams
from .ingest import Ingest, IngestParams
from .evaluate import Evaluate, EvaluateParams
from .synthesize import Synthesize, SynthesizeParams
from .train import Train, TrainParams

STAGES: dict[str, Stage] = {s.name: s for s in (Synthesize(), Ingest(), Augment(), Features(), Train(), Evaluate())}

__all__ = [
    "STAGES", "Stage", "StageContext", "WorkItem", "Done",
    "SynthesizeParams", "IngestParams", "AugmentParams", "FeaturesParams", "TrainParams", "EvaluateParams",
]
