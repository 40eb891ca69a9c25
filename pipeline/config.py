"""Validated configuration: stage parameters (pipeline.yaml) and the cluster (cluster.yaml).

Everything is checked before any work is submitted; an unknown key or a bad
value fails with the file and the offending field named.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from mirpipe.errors import ConfigurationError
from mirpipe.registry import import_plugins
from mirpipe.stages import STAGES, run_order

from .cluster_config import (  # noqa: F401 - re-exported
    DEFAULT_POOL,
    AddressCluster,
    ClusterConfig,
    JobqueueCluster,
    LocalClusterConfig,
    PooledCluster,
    SyncCluster,
    parse_walltime,
)


class RunParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retries: int = Field(2, ge=0, le=20, description="extra attempts for an item that raised a non-input error")
    retry_backoff: float = Field(0.5, ge=0.0, description="seconds before the first retry (doubles each time)")
    time_limit: float | None = Field(600.0, gt=0, description="seconds one item may take before it is failed as hung; null: none")


class PipelineBase(BaseModel):
    """What every pipeline configuration has; ``config_model`` adds one section per registered stage."""

    model_config = ConfigDict(extra="forbid")
    plugins: list[str] = Field(
        default_factory=list, description="modules imported first (driver and workers): they register tasks, stages or backends"
    )
    run: RunParams = Field(default_factory=RunParams)

    def stage_params(self) -> dict[str, BaseModel]:
        """The sections of the stages that run (an optional stage runs when its section is given),
        and the further sections stages read (``Stage.sections``)."""
        names = [*STAGES.names(), *(n for s in STAGES.values() for n in s.sections)]
        return {name: value for name in dict.fromkeys(names) if isinstance(value := getattr(self, name, None), BaseModel)}

    def stage_order(self) -> list[str]:
        """The stages this configuration runs, in DAG order."""
        return run_order(set(self.stage_params()) & set(STAGES.names()))


_MODELS: dict[tuple, type[PipelineBase]] = {}


def config_model() -> type[PipelineBase]:
    """The pipeline.yaml model: one section per registered stage (rebuilt when stages register)."""
    stages = [STAGES.get(n) for n in run_order() if STAGES.get(n).params is not None]
    key = tuple((s.name, s.params, s.optional, tuple(s.sections.items())) for s in stages)
    if key not in _MODELS:
        fields: dict = {}
        for s in stages:
            for section, model in s.sections.items():
                doc = (model.__doc__ or "").strip().splitlines()
                fields.setdefault(section, (model, Field(default_factory=model, description=doc[0] if doc else section)))
            assert s.params is not None  # (kept above: the stages with a section)
            doc = (s.params.__doc__ or "").strip().splitlines()
            desc = f"{s.name} stage" + (f": {doc[0]}" if doc else "")
            if s.optional:
                fields[s.name] = (s.params | None, Field(None, description=desc + " (runs only when given)"))
            else:
                fields[s.name] = (s.params, Field(default_factory=s.params, description=desc))
        _MODELS[key] = create_model("PipelineConfig", __base__=PipelineBase, **fields)
    return _MODELS[key]


def __getattr__(name: str):
    if name == "PipelineConfig":  # the model of the stages registered now
        return config_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ClusterFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cluster: ClusterConfig


class ConfigError(ConfigurationError):
    """A configuration file that does not validate; the message names the file and fields
    (a ``ConfigurationError``, so a ``MirpipeError`` and a ``ValueError``)."""


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


def parse_pipeline(data: dict, source: str = "<pipeline>") -> PipelineBase:
    """Validate a pipeline configuration, importing its ``plugins`` first (they may add stages or tasks)."""
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(m, str) for m in plugins):
        raise ConfigError(f"{source}: plugins must be a list of module names")
    try:
        import_plugins(plugins)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return config_model().model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(source, exc)) from None


def parse_cluster(data: dict, source: str = "<cluster>") -> ClusterConfig | PooledCluster:
    """A cluster.yaml: one cluster spec (``cluster: {...}``, or the spec itself at the top level), or
    named pools (``pools:`` and ``stages:`` beside ``cluster:``, the default pool) as a ``PooledCluster``."""
    if "pools" in data or "stages" in data:
        try:
            pooled = PooledCluster.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_format(source, exc)) from None
        return pooled if pooled.pools or pooled.stages else pooled.cluster
    if "cluster" not in data:
        data = {"cluster": data}
    try:
        return ClusterFile.model_validate(data).cluster
    except ValidationError as exc:
        raise ConfigError(_format(source, exc)) from None


def load_pipeline(path: Path | str) -> PipelineBase:
    return parse_pipeline(_read_yaml(Path(path)), str(path))


def load_cluster(path: Path | str) -> ClusterConfig | PooledCluster:
    return parse_cluster(_read_yaml(Path(path)), str(path))


def dump(model: BaseModel) -> dict:
    return model.model_dump(mode="json")
