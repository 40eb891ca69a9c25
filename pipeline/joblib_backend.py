"""``mirpipe.cluster``: the cluster of a cluster.yaml as joblib's backend, so per-track scripts
written as ``Parallel(n_jobs)(delayed(fn)(path) for path in paths)`` run on it unchanged::

    import mirpipe
    from joblib import Parallel, delayed

    with mirpipe.cluster("cluster.yaml"):
        results = Parallel(n_jobs=-1)(delayed(fn)(path) for path in paths)

The cluster is the one ``mirpipe run`` opens (``pipeline.cluster.open_executor``): a
LocalCluster, a running scheduler, or SLURM/PBS/SGE/LSF jobs through dask-jobqueue, with the
same validation, TLS and job settings. Inside the block joblib's default backend is Dask
(joblib's own ``DaskDistributedBackend`` on this client); ``type: sync`` runs joblib's
sequential backend in-process (for pdb). Functions defined in the script itself reach the
workers by value (cloudpickle), as with any Dask client.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .cluster_config import ClusterConfig, SyncCluster


def _config(config: str | Path | Mapping[str, Any] | ClusterConfig | None) -> ClusterConfig:
    """A cluster.yaml path, its mapping (``{"type": "local", ...}`` or ``{"cluster": {...}}``), a
    parsed config, or None: ./cluster.yaml when there is one, else a LocalCluster. A file with named
    pools gives its default pool (``cluster:``)."""
    from .config import PooledCluster, load_cluster, parse_cluster

    if config is None:
        loaded = load_cluster("cluster.yaml") if Path("cluster.yaml").is_file() else parse_cluster({"type": "local"})
    elif isinstance(config, (str, Path)):
        loaded = load_cluster(config)
    elif isinstance(config, Mapping):
        loaded = parse_cluster(dict(config))
    else:
        loaded = config
    return loaded.cluster if isinstance(loaded, PooledCluster) else loaded


@contextmanager
def cluster(
    config: str | Path | Mapping[str, Any] | ClusterConfig | None = None,
    *,
    workdir: str | Path | None = None,
    wait_for_workers: float = 600.0,
    quiet: bool = False,
    **joblib_options: Any,
) -> Iterator[Any]:
    """Open the cluster that ``config`` describes and make it joblib's default backend inside the block.

    Yields the ``distributed.Client`` (None for ``type: sync``). ``workdir``: where batch job logs
    go (``<workdir>/logs/jobs``) and, with TLS, the run's credentials (default: the current
    directory's ``.mirpipe-tls``). ``wait_for_workers``: seconds a Parallel call waits for the
    first worker (batch jobs may queue). ``joblib_options`` go to ``joblib.parallel_config``
    (e.g. ``verbose=10``). The cluster is closed (its jobs cancelled) when the block ends.
    """
    import joblib

    from .cluster import DaskExecutor, open_executor

    cfg = _config(config)
    with open_executor(cfg, Path(workdir) if workdir is not None else None) as executor:
        if not quiet:
            link = f"; dashboard {executor.dashboard_link}" if executor.dashboard_link else ""
            print(f"mirpipe.cluster: {executor.description}{link}", file=sys.stderr, flush=True)
        if isinstance(cfg, SyncCluster):
            with joblib.parallel_config(backend="sequential", **joblib_options):
                yield None
            return
        assert isinstance(executor, DaskExecutor)  # (only type: sync opens a SyncExecutor)
        client = executor.client
        with joblib.parallel_config(backend="dask", client=client, wait_for_workers_timeout=wait_for_workers, **joblib_options):
            yield client
