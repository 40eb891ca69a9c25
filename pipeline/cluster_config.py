"""Validated cluster configuration (cluster.yaml): sync, LocalCluster, a running scheduler,
or a batch system through dask-jobqueue. Checked before anything is started."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


StageResources = dict[str, dict[str, float]]


def _check_resources(v: StageResources) -> StageResources:
    for stage, res in v.items():
        for name, amount in res.items():
            if amount <= 0:
                raise ValueError(f"resources.{stage}.{name} must be > 0, got {amount}")
    return v


class _ClusterBase(BaseModel):
    """Fields every cluster type shares."""

    model_config = ConfigDict(extra="forbid")
    resources: StageResources = Field(
        default_factory=dict,
        description="per stage, the worker resources its tasks ask for, e.g. {train: {GPU: 1}}; "
        "used only when some worker advertises them (else the stage runs anywhere)",
    )
    allowed_failures: int = Field(
        2, ge=0, le=20, description="worker deaths an item may cause before it is quarantined (Dask allowed-failures)"
    )

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: StageResources) -> StageResources:
        return _check_resources(v)


class SyncCluster(_ClusterBase):
    """In-process, one item after another: for debugging (pdb works)."""

    type: Literal["sync"]


class LocalClusterConfig(_ClusterBase):
    """dask.distributed LocalCluster on this machine (the default)."""

    type: Literal["local"]
    n_workers: int | None = Field(None, ge=1, description="default: one per core")
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = Field("auto", description="per worker, e.g. '4GiB'")
    dashboard_address: str | None = Field(":0", description="':0' picks a free port; null disables")
    worker_resources: dict[str, float] = Field(default_factory=dict, description="resources every worker advertises, e.g. {GPU: 1}")

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, v: str) -> str:
        return v if v == "auto" else _check_bytes(v)


class AddressCluster(_ClusterBase):
    """An already running Dask scheduler (its allowed-failures is its own)."""

    type: Literal["address"]
    address: str


class JobqueueCluster(_ClusterBase):
    """A batch system through dask-jobqueue (install the 'hpc' extra)."""

    type: Literal["slurm", "pbs", "sge", "lsf"]
    cores: int = Field(..., ge=1)
    memory: str
    processes: int = Field(1, ge=1)
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    job_extra_directives: list[str] = Field(default_factory=list)
    local_directory: str | None = None
    log_directory: str | None = None
    jobs: int | None = Field(None, ge=1, description="fixed number of jobs; or adapt between minimum and maximum")
    minimum: int = Field(0, ge=0)
    maximum: int = Field(4, ge=1)
    python: str | None = Field(None, description="python of the worker jobs (default: this interpreter)")
    worker_extra_args: list[str] = Field(default_factory=list, description="more dask worker command-line arguments")
    job_script_prologue: list[str] = Field(default_factory=list, description="shell lines before the worker starts")
    worker_resources: dict[str, float] = Field(default_factory=dict, description="resources each worker advertises, e.g. {GPU: 1}")
    lifetime: str | None = Field(None, description="worker --lifetime; default: walltime minus 10% (at least 1 min)")
    lifetime_stagger: str | None = Field(None, description="worker --lifetime-stagger; default: 5% of walltime, at most 5 min")
    lifetime_restart: bool = Field(
        False, description="restart the worker inside its job after --lifetime (only useful when walltime is far away)"
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="further dask-jobqueue keyword arguments")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        parse_walltime(v)
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        return _check_bytes(v)

    @field_validator("lifetime", "lifetime_stagger")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        if v is not None:
            _seconds(v)
        return v

    @field_validator("extra")
    @classmethod
    def _extra_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = jobqueue_keywords()
        unknown = sorted(set(v) - known) if known is not None else []
        if unknown:
            raise ValueError(f"unknown dask-jobqueue keyword(s) {unknown}")
        return v

    @model_validator(mode="after")
    def _limits(self):
        if self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} > maximum {self.maximum}")
        wall = parse_walltime(self.walltime)
        life, stagger = self.lifetime_seconds()
        if life + stagger >= wall:
            raise ValueError(f"lifetime {life:.0f}s + stagger {stagger:.0f}s must end before walltime {self.walltime} ({wall:.0f}s)")
        return self

    def lifetime_seconds(self) -> tuple[float, float]:
        """(lifetime, stagger) in seconds, derived from walltime unless set."""
        wall = parse_walltime(self.walltime)
        life = _seconds(self.lifetime) if self.lifetime else wall - max(60.0, 0.1 * wall)
        stagger = _seconds(self.lifetime_stagger) if self.lifetime_stagger else min(300.0, 0.05 * wall)
        return life, stagger

    def worker_args(self) -> list[str]:
        """The dask worker arguments mirpipe adds: lifetime (planned retirement) and resources."""
        life, stagger = self.lifetime_seconds()
        args = ["--lifetime", f"{int(life)}s", "--lifetime-stagger", f"{int(stagger)}s"]
        if self.lifetime_restart:
            args.append("--lifetime-restart")
        if self.worker_resources:
            args += ["--resources", ",".join(f"{k}={v:g}" for k, v in self.worker_resources.items())]
        return args + list(self.worker_extra_args)

    def jobqueue_kwargs(self, python: str) -> dict[str, Any]:
        """Keyword arguments of the dask-jobqueue cluster (and job) class."""
        kwargs = self.model_dump(
            include={"cores", "memory", "processes", "walltime", "queue", "account", "job_extra_directives",
                     "local_directory", "log_directory", "job_script_prologue"},
            exclude_none=True,
        )
        kwargs["python"] = self.python or python
        kwargs["worker_extra_args"] = self.worker_args()
        kwargs.update(self.extra)
        return kwargs


def _seconds(v: str) -> float:
    """'90s', '5m', '1h', '00:05:00' or a plain number of seconds."""
    import dask.utils

    text = str(v).strip()
    try:
        if ":" in text:
            return parse_walltime(text)
        return float(dask.utils.parse_timedelta(text, default="seconds"))
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"not a duration: {v!r} (use e.g. '90s', '50m', '1h' or 'HH:MM:SS')") from None


def parse_walltime(v: str) -> float:
    """SLURM/PBS walltime 'D-HH:MM:SS', 'HH:MM:SS', 'MM:SS' or 'MM' to seconds."""
    days = 0
    text = str(v).strip()
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d) if d.isdigit() else -1
    parts = text.split(":")
    if days < 0 or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"walltime {v!r} is not [D-]HH:MM:SS, MM:SS or MM")
    nums = [int(p) for p in parts]
    secs = nums[0] * 60 if len(nums) == 1 else sum(n * 60 ** i for i, n in enumerate(reversed(nums)))
    total = days * 86400 + secs
    if total <= 0:
        raise ValueError(f"walltime {v!r} must be positive")
    return float(total)


def _check_bytes(v: str) -> str:
    import dask.utils

    try:
        if dask.utils.parse_bytes(v) <= 0:
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"not a memory size: {v!r} (use e.g. '4GiB', '500MB')") from None
    return v


def jobqueue_keywords() -> set[str] | None:
    """Keyword arguments dask-jobqueue's cluster and job classes accept (None without dask-jobqueue)."""
    import inspect

    try:
        from dask_jobqueue.core import Job, JobQueueCluster
        from dask_jobqueue import lsf, pbs, sge, slurm
    except ImportError:  # without the hpc extra the keys cannot be checked here; the cluster start will
        return None
    names: set[str] = set()
    for obj in (Job, JobQueueCluster, slurm.SLURMJob, pbs.PBSJob, sge.SGEJob, lsf.LSFJob):
        names |= {p for p in inspect.signature(obj.__init__).parameters if p not in ("self", "args", "kwargs")}
    return names - {"scheduler", "name", "config_name", "base_class_kwargs", "job_kwargs", "job_cls"}



ClusterConfig = Annotated[Union[SyncCluster, LocalClusterConfig, AddressCluster, JobqueueCluster], Field(discriminator="type")]
