"""Executors: where work items run. ``sync`` runs them in-process; the others on Dask."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .config import AddressCluster, ClusterConfig, JobqueueCluster, LocalClusterConfig, SyncCluster

Call = tuple[str, tuple[Any, ...]]  # (key, args)


class SyncExecutor:
    """One item after another in this process."""

    dashboard_link: str | None = None
    description = "synchronous (in-process)"

    def run(self, fn: Callable, calls: list[Call], resources: dict | None = None) -> Iterator[tuple[str, Any]]:
        for key, args in calls:
            try:
                yield key, fn(*args)
            except Exception as exc:  # noqa: BLE001
                yield key, exc


class DaskExecutor:
    """Items as Dask tasks; results (small records) come back as they finish."""

    def __init__(self, client, description: str):
        self.client = client
        self.description = description

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:
            return None

    def run(self, fn: Callable, calls: list[Call], resources: dict | None = None) -> Iterator[tuple[str, Any]]:
        from distributed import as_completed

        futures = {}
        for key, args in calls:
            fut = self.client.submit(fn, *args, key=key, pure=False, resources=resources)
            futures[fut] = key
        for fut in as_completed(list(futures)):
            key = futures.pop(fut)
            try:
                yield key, fut.result()
            except Exception as exc:  # noqa: BLE001 - worker died, task lost: the driver records it
                yield key, exc
            finally:
                fut.release()


def _jobqueue_cluster(cfg: JobqueueCluster):
    try:
        import dask_jobqueue
    except ImportError:
        raise RuntimeError(f"cluster type {cfg.type!r} needs dask-jobqueue: pip install 'mirpipe[hpc]'") from None
    cls = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}[cfg.type]
    kwargs = cfg.model_dump(exclude={"type", "jobs", "minimum", "maximum", "extra"}, exclude_none=True)
    kwargs.update(cfg.extra)
    cluster = getattr(dask_jobqueue, cls)(**kwargs)
    if cfg.jobs:
        cluster.scale(jobs=cfg.jobs)
    else:
        cluster.adapt(minimum_jobs=cfg.minimum, maximum_jobs=cfg.maximum)
    return cluster


@contextmanager
def open_executor(cfg: ClusterConfig) -> Iterator[SyncExecutor | DaskExecutor]:
    """Start (or connect to) the configured cluster for the duration of a run."""
    if isinstance(cfg, SyncCluster):
        yield SyncExecutor()
        return
    from distributed import Client, LocalCluster

    if isinstance(cfg, LocalClusterConfig):
        cluster = LocalCluster(
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard_address,
            processes=True,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        try:
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            yield DaskExecutor(client, f"LocalCluster, {n} workers x {cfg.threads_per_worker} threads")
        finally:
            client.close()
            cluster.close()
    elif isinstance(cfg, AddressCluster):
        client = Client(cfg.address)
        try:
            yield DaskExecutor(client, f"scheduler at {cfg.address}")
        finally:
            client.close()
    else:
        cluster = _jobqueue_cluster(cfg)
        client = Client(cluster)
        try:
            yield DaskExecutor(client, f"{cfg.type.upper()} through dask-jobqueue")
        finally:
            client.close()
            cluster.close()
