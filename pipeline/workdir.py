"""A workdir records the configuration it was run with, so ``mirpipe run --workdir DIR`` resumes it."""

from __future__ import annotations

from pathlib import Path

import yaml

from mirpipe.storage.atomic import write_bytes
from mirpipe.workdir import Workdir

from .config import (
    ClusterConfig,
    ConfigError,
    PipelineBase,
    PooledCluster,
    config_model,
    dump,
    load_cluster,
    load_pipeline,
    parse_cluster,
    parse_pipeline,
)

RECORD = Workdir.RECORD
DEFAULT_PIPELINE = Path("pipeline.yaml")
DEFAULT_CLUSTER = Path("cluster.yaml")


def recorded(workdir: Path) -> dict | None:
    path = Path(workdir) / RECORD
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or "pipeline" not in data:
        raise ConfigError(f"{path}: not a mirpipe workdir record")
    return data


def resolve(workdir: Path, config: Path | None, cluster: Path | None) -> tuple[PipelineBase, ClusterConfig | PooledCluster]:
    """Explicit files win; then what the workdir recorded; then ./pipeline.yaml, ./cluster.yaml; then defaults."""
    record = recorded(workdir)
    if config is not None:
        pipeline = load_pipeline(config)
    elif record is not None:
        pipeline = parse_pipeline(record["pipeline"], str(Path(workdir) / RECORD))
    elif DEFAULT_PIPELINE.exists():
        pipeline = load_pipeline(DEFAULT_PIPELINE)
    else:
        pipeline = config_model()()
    if cluster is not None:
        cluster_cfg = load_cluster(cluster)
    elif record is not None and "cluster" in record:
        cluster_cfg = parse_cluster(record["cluster"], str(Path(workdir) / RECORD))
    elif DEFAULT_CLUSTER.exists():
        cluster_cfg = load_cluster(DEFAULT_CLUSTER)
    else:
        cluster_cfg = parse_cluster({"type": "local"})
    return pipeline, cluster_cfg


def record(workdir: Path, pipeline: PipelineBase, cluster: ClusterConfig | PooledCluster) -> None:
    Path(workdir).mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"pipeline": dump(pipeline), "cluster": dump(cluster)}, sort_keys=False)
    write_bytes(Path(workdir) / RECORD, text.encode())
