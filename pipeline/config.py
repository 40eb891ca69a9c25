"""Validated configuration: stage parameters (pipeline.yaml) and the cluster (cluster.yaml).

Everything is checked before any work is submitted; an unknown key or a bad
value fails with the file and the offending field named.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .cluster_config import (  # noqa: F401 - re-exported
    AddressCluster,
    ClusterConfig,
    JobqueueCluster,
    LocalClusterConfig,
    SyncCluster,
    parse_walltime,
)

from mirpipe.stages import AugmentParams, EvaluateParams, FeaturesParams, IngestParams, SynthesizeParams, TrainParams


class RunParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retries: int = Field(2, ge=0, le=20, description="extra attempts for an item that raised a non-input error")
    retry_backoff: float = Field(0.5, ge=0.0, description="seconds before the first retry (doubles each time)")
    time_limit: float | None = Field(600.0, gt=0, description="seconds one item may take before it is failed as hung; null: none")


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    synthesize: SynthesizeParams | None = Field(None, description="set to synthesize the demo corpus first")
    ingest: IngestParams = Field(default_factory=IngestParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    run: RunParams = Field(default_factory=RunParams)

    def stage_params(self) -> dict[str, BaseModel]:
        params: dict[str, BaseModel] = {
            "ingest": self.ingest, "augment": self.augment, "features": self.features,
            "train": self.train, "evaluate": self.evaluate,
        }
        if self.synthesize is not None:
            params["synthesize"] = self.synthesize
        return params


class ClusterFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cluster: ClusterConfig


class ConfigError(ValueError):
    """A configuration file that does not validate; the message names the file and fields."""


def _format(path: Path | str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def parse_pipeline(data: dict, source: str = "<pipeline>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(source, exc)) from None


def parse_cluster(data: dict, source: str = "<cluster>") -> ClusterConfig:
    if "cluster" not in data:
        data = {"cluster": data}
    try:
        return ClusterFile.model_validate(data).cluster
    except ValidationError as exc:
        raise ConfigError(_format(source, exc)) from None


def load_pipeline(path: Path | str) -> PipelineConfig:
    return parse_pipeline(_read_yaml(Path(path)), str(path))


def load_cluster(path: Path | str) -> ClusterConfig:
    return parse_cluster(_read_yaml(Path(path)), str(path))


def dump(model: BaseModel) -> dict:
    return model.model_dump(mode="json")
