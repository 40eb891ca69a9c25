"""Executors: where work items run. ``sync`` runs them in-process; the others on Dask."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mirpipe.errors import ConfigurationError
from mirpipe.stop import request_async
from mirpipe.stop import requested as stop_requested

from .cluster_config import (
    DEFAULT_POOL,
    AddressCluster,
    ClusterConfig,
    JobqueueCluster,
    LocalClusterConfig,
    PooledCluster,
    SyncCluster,
)

Call = tuple[str, tuple[Any, ...]]  # (key, args)


class SyncExecutor:
    """One item after another in this process."""

    dashboard_link: str | None = None
    description = "synchronous (in-process)"
    allowed_failures = 0

    def resources_for(self, stage: str, default: dict[str, float]) -> dict[str, float] | None:
        return None

    def run(
        self, fn: Callable, calls: list[Call], resources: dict | None = None, stop: Callable[[], bool] | None = None
    ) -> Iterator[tuple[str, Any]]:
        """``fn(*args)`` of each call in turn; once ``stop()`` is true, no further call starts."""
        for key, args in calls:
            if stop_requested() or (stop is not None and stop()):  # SIGTERM, or the runner's stop (a full disk)
                return
            try:
                yield key, fn(*args)
            except Exception as exc:  # noqa: BLE001 - as Dask hands back a task's exception: the runner classifies it
                yield key, exc


class _StopWatcher(threading.Thread):
    """Passes a stop request of the driver (SIGTERM) on to every worker process, once: their long work
    (training) saves and stops too, whether or not the signal reached them."""

    def __init__(self, client):
        super().__init__(daemon=True, name="mirpipe-stop-watcher")
        self.client = client
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            if stop_requested():
                try:
                    self.client.run(request_async, wait=False)
                except Exception:  # noqa: BLE001 - a cluster shutting down: its workers stop with it
                    pass
                return


class DaskExecutor:
    """Items as Dask tasks; results (small records) come back as they finish."""

    def __init__(self, client, description: str, cfg: ClusterConfig | None = None):
        self.client = client
        self.description = description
        self.cfg = cfg
        self.stage_resources: dict[str, dict[str, float]] = dict(cfg.resources) if cfg is not None else {}
        self.declared: dict[str, float] = dict(getattr(cfg, "worker_resources", {}) or {})
        self.allowed_failures: int = cfg.allowed_failures if cfg is not None else 3

    def resources_for(self, stage: str, default: dict[str, float]) -> dict[str, float] | None:
        """The resources a stage's tasks ask for: cluster.yaml's mapping, else the stage's own; None
        when no worker advertises them (declared in cluster.yaml or seen live), so nothing waits forever."""
        wanted = self.stage_resources.get(stage, default)
        if not wanted:
            return None
        if all(self.declared.get(k, 0) >= v for k, v in wanted.items()):
            return dict(wanted)
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        if any(all((w.get("resources") or {}).get(k, 0) >= v for k, v in wanted.items()) for w in workers):
            return dict(wanted)
        return None

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's address as it is bound: a scheduler started here whose dashboard listens on
        127.0.0.1 only is shown as http://127.0.0.1:PORT/status (Dask would print the scheduler's
        network address, which does not answer); None when cluster.yaml disabled the dashboard."""
        if self.cfg is not None and getattr(self.cfg, "dashboard_address", "") is None:
            return None
        try:
            link = self.client.dashboard_link
        except Exception:  # noqa: BLE001 - a client without a dashboard (or whose cluster is gone): show none
            return None
        server: Any = getattr(getattr(getattr(self.client, "cluster", None), "scheduler", None), "http_server", None)
        try:
            bound = [sock.getsockname()[:2] for sock in server._sockets.values()]
        except AttributeError:
            return link
        if bound and all(host in ("127.0.0.1", "::1") for host, _ in bound):
            return f"http://127.0.0.1:{bound[0][1]}/status"
        return link

    # Items in flight at once: a few per worker thread, so the scheduler holds a bounded number of tasks
    # (a few ms and some memory each) whatever the stage's size; results are consumed as they complete.
    WINDOW_PER_THREAD = 4
    MIN_WINDOW = 32  # also while an HPC cluster's first worker jobs are still queued

    def window(self) -> int:
        try:
            threads = sum(self.client.nthreads().values())
        except Exception:  # noqa: BLE001 - a scheduler that does not answer right now
            threads = 0
        return max(self.MIN_WINDOW, self.WINDOW_PER_THREAD * threads)

    def run(
        self, fn: Callable, calls: list[Call], resources: dict | None = None, stop: Callable[[], bool] | None = None
    ) -> Iterator[tuple[str, Any]]:
        """Submit the calls, a window at a time, and yield (key, result) as they finish; once ``stop()``
        is true nothing more is submitted, and the calls in flight still come back."""
        import time

        from distributed import as_completed

        pending = iter(calls)
        futures: dict[Any, str] = {}
        done = as_completed()
        window, sized_at = self.window(), time.monotonic()

        watcher = _StopWatcher(self.client)

        def top_up() -> None:
            nonlocal window, sized_at
            if stop_requested():  # SIGTERM: nothing more is submitted; what runs saves and stops
                return
            if time.monotonic() - sized_at > 1.0:  # workers come and go (adaptive HPC clusters)
                window, sized_at = self.window(), time.monotonic()
            while len(futures) < window and not (stop is not None and stop()):
                nxt = next(pending, None)
                if nxt is None:
                    return
                key, args = nxt
                fut = self.client.submit(fn, *args, key=key, pure=False, resources=resources)
                futures[fut] = key
                done.add(fut)

        top_up()
        finished = 0
        watcher.start()
        for fut in done:
            key = futures.pop(fut)
            try:
                yield key, fut.result()
            except Exception as exc:  # noqa: BLE001 - worker died, task lost: the driver records it
                yield key, exc
            finally:
                fut.release()
            finished += 1
            if finished % self.TRIM_EVERY == 0:
                self.trim_scheduler()
            top_up()
        watcher.done.set()

    # What the scheduler keeps per task after the task is gone, trimmed every TRIM_EVERY results
    # (~0.3 KB a task before, 30 MB per 100,000 items): distributed records {"type": "Future"} in
    # the span's metadata for every ``submit`` for the scheduler's life (distributed PR #8612), and
    # dask.utils.key_split caches the prefix of every key it has seen (an LRU of 100,000 keys).
    TRIM_EVERY = 2000

    def trim_scheduler(self) -> int:
        """Drop what the scheduler holds for tasks long forgotten: the repeated entries of its span
        metadata (the distinct ones stay) and the key-prefix cache. Returns how many metadata
        entries were dropped."""
        try:
            return int(self.client.run_on_scheduler(_trim_scheduler))
        except Exception:  # noqa: BLE001 - a scheduler without spans, or an older distributed: nothing to trim
            return 0


def _trim_scheduler(dask_scheduler=None) -> int:
    """On the scheduler: each span's ``collections`` metadata reduced to its distinct entries, and
    ``dask.utils.key_split``'s cache emptied (a cache: it refills with the keys still in use)."""
    from dask.utils import key_split

    clear = getattr(key_split, "cache_clear", None)
    if clear is not None:
        clear()
    spans = dask_scheduler.extensions.get("spans")
    dropped = 0
    for span in getattr(spans, "spans", {}).values():
        metadata = getattr(span, "_metadata", None)
        collections = metadata.get("collections") if isinstance(metadata, dict) else None
        if not collections or len(collections) < 2:
            continue
        distinct: list = []
        for entry in collections:
            if entry not in distinct:
                distinct.append(entry)
        dropped += len(collections) - len(distinct)
        collections[:] = distinct
    return dropped


JOBQUEUE_CLASSES = {"slurm": "SLURM", "pbs": "PBS", "sge": "SGE", "lsf": "LSF"}
TLS_DIRNAME = ".mirpipe-tls"


def _dask_jobqueue():
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigurationError("cluster types slurm/pbs/sge/lsf need dask-jobqueue: pip install 'mirpipe[hpc]'") from None
    return dask_jobqueue


def jobqueue_kwargs(cfg: JobqueueCluster, workdir: Path | None = None, pool: str = DEFAULT_POOL) -> dict[str, Any]:
    """The keyword arguments mirpipe gives dask-jobqueue: the keys cluster.yaml set, mirpipe's worker
    arguments and dashboard; job logs default to <workdir>/logs/jobs (<workdir>/logs/jobs/<pool> for a
    named pool, whose jobs are also named dask-<pool>) and, with TLS, the credentials directory to
    <workdir>/.mirpipe-tls, unless the dask config (jobqueue.yaml) names one.
    JSON-serializable: the security object itself is made only when a cluster starts."""
    kwargs = cfg.jobqueue_kwargs(python=sys.executable)
    base = Path(workdir).resolve() if workdir is not None else Path.cwd()
    if "log_directory" not in kwargs and cfg.setting("log_directory") is None and workdir is not None:
        kwargs["log_directory"] = str(base / "logs" / "jobs" / (pool if pool != DEFAULT_POOL else ""))
    if pool != DEFAULT_POOL and "job_name" not in kwargs and cfg.setting("job_name") in (None, "dask-worker"):
        kwargs["job_name"] = f"dask-{pool}"
    if cfg.tls and "shared_temp_directory" not in kwargs and cfg.setting("shared_temp_directory") is None:
        kwargs["shared_temp_directory"] = str(base / TLS_DIRNAME)
    return kwargs


def _job_class(cfg: JobqueueCluster):
    return getattr(_dask_jobqueue(), f"{JOBQUEUE_CLASSES[cfg.type]}Cluster").job_cls


def job_script(cfg: JobqueueCluster, workdir: Path | None = None, pool: str = DEFAULT_POOL) -> str:
    """The batch script dask-jobqueue would submit (no scheduler is started, no credentials are made:
    with TLS the script names where the run's temporary credentials will be)."""
    import inspect

    job_cls = _job_class(cfg)
    kwargs = jobqueue_kwargs(cfg, workdir, pool)
    accepted = set(inspect.signature(job_cls.__init__).parameters) | set(
        inspect.signature(job_cls.__mro__[1].__init__).parameters
    )
    tls_dir = kwargs.get("shared_temp_directory") or cfg.setting("shared_temp_directory")
    job_kwargs = {k: v for k, v in kwargs.items() if k in accepted and k not in ("scheduler", "name")}
    protocol = "tls" if cfg.tls else "tcp"
    if cfg.tls:
        from distributed.security import Security

        where = Path(str(tls_dir))
        job_kwargs["security"] = Security(
            tls_ca_file=str(where / ".dask-jobqueue.worker.ca_file.<run>"),
            tls_worker_cert=str(where / ".dask-jobqueue.worker.cert.<run>"),
            tls_worker_key=str(where / ".dask-jobqueue.worker.key.<run>"),
            require_encryption=True,
        )
    return job_cls(scheduler=f"{protocol}://<scheduler>:8786", name="mirpipe-worker", **job_kwargs).job_script()


def temporary_security():
    """TLS credentials made for one run (a CA and a certificate in memory, encryption required): a client
    without them is refused by the scheduler and the workers."""
    from distributed.security import Security

    try:
        return Security.temporary()  # require_encryption=True
    except ImportError:
        raise ConfigurationError(
            "tls: true needs the 'cryptography' package to make temporary credentials "
            "(pip install cryptography), or set tls: false in cluster.yaml on a machine only you use"
        ) from None


def _tls_security(cfg: JobqueueCluster, kwargs: dict[str, Any]):
    """Temporary TLS credentials for one run, and the directory (created mode 0700) where dask-jobqueue
    writes the worker's copy (files mode 0600) for the job script to read."""
    security = temporary_security()
    where = kwargs.get("shared_temp_directory") or cfg.setting("shared_temp_directory")
    if where:
        path = Path(os.path.expanduser(os.path.expandvars(str(where))))
        if not path.exists():
            path.mkdir(parents=True, mode=0o700)
    return security


def _jobqueue_cluster(cfg: JobqueueCluster, workdir: Path | None = None, pool: str = DEFAULT_POOL):
    cls = getattr(_dask_jobqueue(), f"{JOBQUEUE_CLASSES[cfg.type]}Cluster")
    kwargs = jobqueue_kwargs(cfg, workdir, pool)
    if cfg.tls:
        kwargs["security"] = _tls_security(cfg, kwargs)
    cluster = cls(**kwargs)
    if cfg.jobs:
        # adapt, not scale: a fixed scale never replaces a job whose worker retired (--lifetime)
        # or was cancelled, so the run would wait forever; adapt keeps `jobs` jobs alive
        cluster.adapt(minimum_jobs=cfg.jobs, maximum_jobs=cfg.jobs)
    else:
        cluster.adapt(minimum_jobs=cfg.minimum, maximum_jobs=cfg.maximum)
    return cluster


def _remove_worker_credentials(cluster) -> None:
    """dask-jobqueue keeps the worker's copy of temporary credentials as open temporary files on the
    cluster object; close (delete) them now rather than whenever it is garbage collected."""
    for key in ("ca_file", "cert", "key"):
        f = getattr(cluster, f"_job_{key}", None)
        if f is not None:
            try:
                f.close()
            except OSError:
                pass


def scheduler_settings(cfg: ClusterConfig) -> dict[str, Any]:
    """Dask settings of the scheduler mirpipe starts (LocalCluster, jobqueue): how many worker deaths
    an item may cause before KilledWorker, and no queued extra task per thread, so a dying worker
    takes down only the items it was running (not bystanders waiting behind them)."""
    return {
        "distributed.scheduler.allowed-failures": cfg.allowed_failures,
        "distributed.scheduler.worker-saturation": 1.0,
    }


@contextmanager
def open_executor(
    cfg: ClusterConfig | PooledCluster, workdir: Path | None = None, pool: str = DEFAULT_POOL
) -> Iterator[SyncExecutor | DaskExecutor | PoolExecutor]:
    """Start (or connect to) the configured cluster for the duration of a run; with named pools, a
    ``PoolExecutor`` that starts each pool when a stage of it first has work."""
    if isinstance(cfg, PooledCluster):
        pools = PoolExecutor(cfg, workdir)
        try:
            yield pools
        finally:
            pools.close()
        return
    if isinstance(cfg, SyncCluster):
        yield SyncExecutor()
        return
    import dask
    from distributed import Client, LocalCluster

    from .worker_plugin import WorkerStopPlugin

    if isinstance(cfg, LocalClusterConfig):
        with dask.config.set(scheduler_settings(cfg)):
            cluster = LocalCluster(
                n_workers=cfg.n_workers,
                threads_per_worker=cfg.threads_per_worker,
                memory_limit=cfg.memory_limit,
                host=cfg.host,
                dashboard_address=cfg.dashboard_address,
                security=temporary_security() if cfg.tls else None,
                processes=True,
                silence_logs=logging.ERROR,
                resources=cfg.worker_resources or None,
            )
        client = Client(cluster)
        try:
            client.register_plugin(WorkerStopPlugin())  # workers save and stop on SIGTERM too
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            tls = ", TLS" if cfg.tls else ""
            yield DaskExecutor(client, f"LocalCluster, {n} workers x {cfg.threads_per_worker} threads{tls}", cfg)
        finally:
            client.close()
            cluster.close()
    elif isinstance(cfg, AddressCluster):
        client = Client(cfg.address)
        try:
            yield DaskExecutor(client, f"scheduler at {cfg.address}", cfg)
        finally:
            client.close()
    else:
        with dask.config.set(scheduler_settings(cfg)):
            cluster = _jobqueue_cluster(cfg, workdir, pool)
        client = Client(cluster)
        try:
            # a batch job's SIGTERM (pre-emption, scancel, walltime) reaches the worker process too: its
            # training saves a checkpoint after the current step, and the runner resubmits the item
            client.register_plugin(WorkerStopPlugin())
            jobs = f"{cfg.jobs} jobs" if cfg.jobs else f"adaptive {cfg.minimum}..{cfg.maximum} jobs"
            tls = "TLS" if cfg.tls else "no TLS"
            queue = cfg.setting("queue")
            where = f", queue {queue}" if queue else ""
            yield DaskExecutor(
                client,
                f"{cfg.type.upper()} through dask-jobqueue, {jobs} x {cfg.setting('cores')} cores{where}, {tls}",
                cfg,
            )
        finally:
            adaptive = getattr(cluster, "_adaptive", None)
            if adaptive is not None:  # else it may submit a replacement job while the cluster closes
                adaptive.stop()
            client.close()
            cluster.close()
            _remove_worker_credentials(cluster)


class PoolExecutor:
    """Named pools (cluster.yaml ``pools:`` + ``stages:``): each stage runs on its pool's executor,
    started when a stage of the pool first has work and closed by ``stage_ended`` once no later stage
    of the run needs it (GPU jobs are not held through feature extraction). ``run`` and
    ``resources_for`` without a stage use the default pool (``mirpipe predict``)."""

    def __init__(self, cfg: PooledCluster, workdir: Path | None = None, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.workdir = workdir
        self.allowed_failures = cfg.allowed_failures
        self._open: dict[str, tuple[Any, SyncExecutor | DaskExecutor]] = {}
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.opened: list[str] = []  # pools in the order they started (and ``closed``: ended), for reports and tests
        self.closed: list[str] = []
        stages = ", ".join(f"{s} -> {p}" for s, p in cfg.stages.items())
        self.description = f"pools {', '.join(cfg.names())} (started when their stages have work; {stages})"

    dashboard_link: str | None = None

    def executor(self, pool: str) -> SyncExecutor | DaskExecutor:
        """Pool ``pool``'s executor, started now if it is not running."""
        if pool not in self._open:
            cm = open_executor(self.cfg.pool(pool), self.workdir, pool)
            ex = cm.__enter__()
            assert not isinstance(ex, PoolExecutor)  # a pool is a single cluster spec
            self._open[pool] = (cm, ex)
            self.opened.append(pool)
            link = f"; dashboard {ex.dashboard_link}" if ex.dashboard_link else ""
            self.log(f"mirpipe: pool {pool} started: {ex.description}{link}")
        return self._open[pool][1]

    def for_stage(self, stage: str) -> SyncExecutor | DaskExecutor:
        return self.executor(self.cfg.pool_of(stage))

    def stage_ended(self, stage: str, later: list[str]) -> None:
        """``stage`` is over: close every running pool that none of the ``later`` stages uses."""
        needed = {self.cfg.pool_of(s) for s in later}
        for pool in [p for p in self._open if p not in needed]:
            self._close(pool)

    def _close(self, pool: str) -> None:
        cm, _ = self._open.pop(pool)
        try:
            cm.__exit__(None, None, None)
        finally:
            self.closed.append(pool)
            self.log(f"mirpipe: pool {pool} closed")

    def close(self) -> None:
        errors = []
        for pool in reversed(list(self._open)):
            try:
                self._close(pool)
            except Exception as exc:  # noqa: BLE001 - close the others, then raise the first
                errors.append(exc)
        if errors:
            raise errors[0]

    def resources_for(self, stage: str, default: dict[str, float]) -> dict[str, float] | None:
        return self.for_stage(stage).resources_for(stage, default)

    def run(
        self, fn: Callable, calls: list[Call], resources: dict | None = None, stop: Callable[[], bool] | None = None
    ) -> Iterator[tuple[str, Any]]:
        return self.executor(DEFAULT_POOL).run(fn, calls, resources=resources, stop=stop)
