"""Validated cluster configuration (cluster.yaml): sync, LocalCluster, a running scheduler,
or a batch system through dask-jobqueue. Checked before anything is started.

Keys may be spelled with underscores or with hyphens (``job_extra_directives`` or
``job-extra-directives``, the spelling of dask-jobqueue's ``jobqueue.yaml``).

For the batch systems, only the keys a cluster.yaml SETS are passed to dask-jobqueue; the rest
come from the site's dask configuration (``jobqueue.<type>.*``, e.g. ~/.config/dask/jobqueue.yaml),
as they would for a plain ``SLURMCluster()``. The walltime is read and written in the syntax of
each scheduler (SLURM ``-t``, PBS ``walltime=``, SGE ``h_rt=``, LSF ``-W [hours:]minutes``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

StageResources = dict[str, dict[str, float]]

SCHEDULERS = ("slurm", "pbs", "sge", "lsf")

WALLTIME_FORMS = {
    "slurm": "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (SLURM -t)",
    "pbs": "HH:MM:SS (PBS walltime=)",
    "sge": "HH:MM:SS (SGE h_rt=)",
    "lsf": "[hours:]minutes (LSF -W: '90' is 90 minutes, '04:00' is 4 hours)",
}

_N = r"(\d+)"
_WALLTIME_PATTERNS: dict[str, list[tuple[re.Pattern, tuple[str, ...]]]] = {
    # per scheduler: (pattern, the unit of each group); a leading field may exceed its usual range
    "slurm": [
        (re.compile(rf"^{_N}$"), ("m",)),
        (re.compile(rf"^{_N}:{_N}$"), ("m", "s")),
        (re.compile(rf"^{_N}:{_N}:{_N}$"), ("h", "m", "s")),
        (re.compile(rf"^{_N}-{_N}$"), ("d", "h")),
        (re.compile(rf"^{_N}-{_N}:{_N}$"), ("d", "h", "m")),
        (re.compile(rf"^{_N}-{_N}:{_N}:{_N}$"), ("d", "h", "m", "s")),
    ],
    "pbs": [(re.compile(rf"^{_N}:{_N}:{_N}$"), ("h", "m", "s"))],
    "sge": [(re.compile(rf"^{_N}:{_N}:{_N}$"), ("h", "m", "s"))],
    "lsf": [
        (re.compile(rf"^{_N}$"), ("m",)),
        (re.compile(rf"^{_N}:{_N}$"), ("h", "m")),
    ],
}
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_UNIT_LIMIT = {"h": 24, "m": 60, "s": 60}  # for every field but the leading one


def parse_walltime(v: str, scheduler: str = "slurm") -> float:
    """A walltime in the syntax of `scheduler` (slurm, pbs, sge, lsf) to seconds; ValueError naming
    the accepted forms otherwise. LSF's -W is [hours:]minutes, so '04:00' is four hours there."""
    if scheduler not in _WALLTIME_PATTERNS:
        raise ValueError(f"unknown scheduler {scheduler!r} (one of {', '.join(SCHEDULERS)})")
    text = str(v).strip()
    for pattern, units in _WALLTIME_PATTERNS[scheduler]:
        m = pattern.match(text)
        if not m:
            continue
        nums = [int(g) for g in m.groups()]
        for i, (n, unit) in enumerate(zip(nums, units)):
            if i > 0 and n >= _UNIT_LIMIT[unit]:
                raise ValueError(f"walltime {v!r}: {n} is out of range for {scheduler.upper()}; use {WALLTIME_FORMS[scheduler]}")
        total = float(sum(n * _UNIT_SECONDS[u] for n, u in zip(nums, units)))
        if total <= 0:
            raise ValueError(f"walltime {v!r} must be positive")
        return total
    raise ValueError(f"walltime {v!r} is not a {scheduler.upper()} walltime; use {WALLTIME_FORMS[scheduler]}")


def format_walltime(seconds: float, scheduler: str) -> str:
    """Seconds in `scheduler`'s walltime syntax: SLURM HH:MM:SS (D-HH:MM:SS from a day on), PBS/SGE
    HH:MM:SS (hours may exceed 24), LSF HH:MM (whole minutes, rounded up)."""
    secs = int(round(seconds))
    if scheduler == "lsf":
        minutes = -(-secs // 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"
    if scheduler not in _WALLTIME_PATTERNS:
        raise ValueError(f"unknown scheduler {scheduler!r}")
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    if scheduler == "slurm" and h >= 24:
        return f"{h // 24}-{h % 24:02d}:{m:02d}:{s:02d}"
    return f"{h:02d}:{m:02d}:{s:02d}"


def jobqueue_config(scheduler: str, key: str, default: Any = None) -> Any:
    """The site's dask-jobqueue setting ``jobqueue.<scheduler>.<key>`` (jobqueue.yaml, DASK_* variables),
    dask-jobqueue's own defaults included when it is installed."""
    import dask

    try:  # importing dask_jobqueue registers its defaults (jobqueue.yaml) in dask.config
        import dask_jobqueue  # noqa: F401 - only whether it imports matters here
    except ImportError:
        pass
    return dask.config.get(f"jobqueue.{scheduler}.{key}", default)


def _check_resources(v: StageResources) -> StageResources:
    for stage, res in v.items():
        for name, amount in res.items():
            if amount <= 0:
                raise ValueError(f"resources.{stage}.{name} must be > 0, got {amount}")
    return v


def _underscored(data: Any, what: str = "key") -> Any:
    """Hyphenated keys (the jobqueue.yaml spelling) as the underscored field names; both at once is an error."""
    if not isinstance(data, dict):
        return data
    out: dict[Any, Any] = {}
    for k, v in data.items():
        key = k.replace("-", "_") if isinstance(k, str) else k
        if key in out:
            raise ValueError(f"{what} {key!r} is given twice (as {key!r} and {key.replace('_', '-')!r}); keep one")
        out[key] = v
    return out


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

    @model_validator(mode="before")
    @classmethod
    def _hyphenated_keys(cls, data: Any) -> Any:
        return _underscored(data)

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
    host: str = Field(
        "127.0.0.1",
        description="address the scheduler and workers listen on; 127.0.0.1 (default) keeps them off the network; "
        "'0.0.0.0' or a host's address lets other machines connect (keep tls: true then)",
    )
    dashboard_address: str | None = Field(
        "127.0.0.1:0",
        description="where the dashboard listens: '127.0.0.1:0' (default) a free port on this machine only "
        "(reach it from elsewhere through an SSH tunnel); ':8787' every interface; null disables it",
    )
    tls: bool = Field(
        True,
        description="TLS with temporary credentials (made for each run, held in this process) between scheduler, "
        "workers and this client: a connection without them is refused. false: plain TCP, and anyone who can "
        "reach the listeners (on 127.0.0.1, every user of this machine: an HPC login node has hundreds) can run "
        "code in the driver and every worker; for a machine you alone use",
    )
    worker_resources: dict[str, float] = Field(
        default_factory=dict, description="resources every worker advertises, e.g. {GPU: 1}"
    )

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, v: str) -> str:
        return v if v == "auto" else _check_bytes(v)


class AddressCluster(_ClusterBase):
    """An already running Dask scheduler (its allowed-failures is its own). Its security is its own too:
    for a ``tls://`` scheduler, this client's credentials come from dask's configuration
    (``distributed.comm.tls.ca-file`` and ``distributed.comm.tls.client.cert`` / ``.key``)."""

    type: Literal["address"]
    address: str = Field(description="the scheduler, e.g. tls://host:8786 (credentials: dask's distributed.comm.tls.*)")


# keys mirpipe passes to dask-jobqueue only when cluster.yaml sets them (else jobqueue.<type>.* applies)
PASSED_WHEN_SET = (
    "cores",
    "memory",
    "processes",
    "walltime",
    "queue",
    "account",
    "job_extra_directives",
    "job_script_prologue",
    "local_directory",
    "log_directory",
    "python",
    "shared_temp_directory",
)
# dask-jobqueue keywords mirpipe itself controls: not allowed under extra
_RESERVED_EXTRA = {"security", "protocol", "dashboard_address", "host", "n_workers", "job_cls", "scheduler", "name"}


class JobqueueCluster(_ClusterBase):
    """A batch system through dask-jobqueue (install the 'hpc' extra). Every job key left out here
    comes from the site's dask configuration, ``jobqueue.<type>.*`` (jobqueue.yaml)."""

    type: Literal["slurm", "pbs", "sge", "lsf"]
    cores: int | None = Field(None, ge=1, description="cores per job (threads of its workers); default: jobqueue.<type>.cores")
    memory: str | None = Field(None, description="memory per job, e.g. '32GiB'; default: jobqueue.<type>.memory")
    processes: int | None = Field(None, ge=1, description="worker processes per job; default: jobqueue.<type>.processes")
    walltime: str | None = Field(
        None,
        description="in the scheduler's own syntax: SLURM MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; "
        "PBS/SGE HH:MM:SS; LSF [hours:]minutes ('04:00' = 4 h); default: jobqueue.<type>.walltime",
    )
    queue: str | None = None
    account: str | None = None
    job_extra_directives: list[str] | None = Field(None, description="more #SBATCH/#PBS/#$/#BSUB lines")
    local_directory: str | None = None
    log_directory: str | None = Field(
        None, description="job logs; default: jobqueue.<type>.log-directory, else <workdir>/logs/jobs"
    )
    jobs: int | None = Field(None, ge=1, description="fixed number of jobs; or adapt between minimum and maximum")
    minimum: int = Field(0, ge=0)
    maximum: int = Field(4, ge=1)
    python: str | None = Field(
        None, description="python of the worker jobs (default: jobqueue.<type>.python, else this interpreter)"
    )
    worker_extra_args: list[str] | None = Field(
        None, description="more dask worker arguments (default: jobqueue.<type>.worker-extra-args); mirpipe adds --lifetime etc."
    )
    job_script_prologue: list[str] | None = Field(None, description="shell lines before the worker starts")
    worker_resources: dict[str, float] = Field(
        default_factory=dict, description="resources each worker advertises, e.g. {GPU: 1}"
    )
    lifetime: str | None = Field(None, description="worker --lifetime; default: walltime minus 10% (at least 1 min)")
    lifetime_stagger: str | None = Field(None, description="worker --lifetime-stagger; default: 5% of walltime, at most 5 min")
    lifetime_restart: bool = Field(
        False, description="restart the worker inside its job after --lifetime (only useful when walltime is far away)"
    )
    tls: bool = Field(
        True,
        description="TLS between scheduler, workers and client, with temporary credentials made for this run "
        "(written, mode 0600, to shared_temp_directory for the worker jobs to read). Without it anyone who can "
        "reach the scheduler's port can run code as you: turn off only on a trusted, closed network",
    )
    shared_temp_directory: str | None = Field(
        None,
        description="directory on a filesystem the worker jobs see, for the TLS credentials of this run; "
        "default: jobqueue.<type>.shared-temp-directory, else <workdir>/.mirpipe-tls (mode 0700)",
    )
    dashboard_address: str | None = Field(
        "127.0.0.1:8787",
        description="where the scheduler's dashboard listens: '127.0.0.1:8787' (default) only on the submitting "
        "host (reach it with ssh -L 8787:localhost:8787 HOST); ':8787' on every interface; null disables it",
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="further dask-jobqueue keyword arguments")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str | None, info) -> str | None:
        if v is not None:
            parse_walltime(v, info.data.get("type", "slurm"))
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        return None if v is None else _check_bytes(v)

    @field_validator("lifetime", "lifetime_stagger")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        if v is not None:
            _seconds(v)
        return v

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_keys(cls, v: Any) -> Any:
        v = _underscored(v, "extra key")
        if not isinstance(v, dict):
            return v
        own = sorted(set(v) & (set(PASSED_WHEN_SET) | {"worker_extra_args"}))
        if own:
            raise ValueError(f"extra {own}: set these as cluster keys, not under extra")
        reserved = sorted(set(v) & _RESERVED_EXTRA)
        if reserved:
            raise ValueError(f"extra {reserved}: mirpipe sets these (use tls: true|false and dashboard_address)")
        if "dashboard_address" in (v.get("scheduler_options") or {}):
            raise ValueError("extra.scheduler_options.dashboard_address: use the cluster key dashboard_address")
        known = jobqueue_keywords()
        unknown = sorted(set(v) - known) if known is not None else []
        if unknown:
            raise ValueError(f"unknown dask-jobqueue keyword(s) {unknown}")
        return v

    @model_validator(mode="after")
    def _limits(self):
        if self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} > maximum {self.maximum}")
        for key in ("cores", "memory"):
            if self.setting(key) is None:
                raise ValueError(
                    f"{key}: not set here and the dask config has no jobqueue.{self.type}.{key} (jobqueue.yaml); "
                    f"set {key} in cluster.yaml, e.g. cores: 8, memory: 32GiB"
                )
        wall = self.walltime_seconds()
        life, stagger = self.lifetime_seconds()
        if wall is not None and life is not None and life + stagger >= wall:
            raise ValueError(
                f"lifetime {life:.0f}s + stagger {stagger:.0f}s must end before walltime {self.setting('walltime')} ({wall:.0f}s)"
            )
        return self

    def is_set(self, key: str) -> bool:
        """True when cluster.yaml gave `key` a value (null counts as not set)."""
        return key in self.model_fields_set and getattr(self, key) is not None

    def setting(self, key: str) -> Any:
        """The value a job gets: cluster.yaml's, else the dask config's jobqueue.<type>.<key>."""
        return getattr(self, key) if self.is_set(key) else jobqueue_config(self.type, key.replace("_", "-"))

    def walltime_seconds(self) -> float | None:
        """The job walltime in seconds: cluster.yaml's, else jobqueue.<type>.walltime; None when neither."""
        if self.is_set("walltime"):
            assert self.walltime is not None  # is_set: not null
            return parse_walltime(self.walltime, self.type)
        site = jobqueue_config(self.type, "walltime")
        if site is None:
            return None
        try:
            return parse_walltime(site, self.type)
        except ValueError as exc:
            raise ValueError(
                f"walltime: the dask config's jobqueue.{self.type}.walltime: {exc}; set walltime in cluster.yaml"
            ) from None

    def lifetime_seconds(self) -> tuple[float | None, float | None]:
        """(lifetime, stagger) in seconds, derived from the walltime unless set; (None, None) when neither
        a lifetime nor any walltime is known (the workers then run until the scheduler ends the job)."""
        wall = self.walltime_seconds()
        if self.lifetime:
            life = _seconds(self.lifetime)
        elif wall is not None:
            life = wall - max(60.0, 0.1 * wall)
        else:
            return None, None
        base = wall if wall is not None else life
        stagger = _seconds(self.lifetime_stagger) if self.lifetime_stagger else min(300.0, 0.05 * base)
        return life, stagger

    def worker_args(self) -> list[str]:
        """The dask worker arguments: mirpipe's (lifetime: planned retirement; resources), then
        worker_extra_args (cluster.yaml's, else jobqueue.<type>.worker-extra-args)."""
        life, stagger = self.lifetime_seconds()
        args: list[str] = []
        if life is not None:
            assert stagger is not None  # lifetime_seconds gives both or neither
            args += ["--lifetime", f"{int(life)}s", "--lifetime-stagger", f"{int(stagger)}s"]
        if self.lifetime_restart:
            args.append("--lifetime-restart")
        if self.worker_resources:
            args += ["--resources", ",".join(f"{k}={v:g}" for k, v in self.worker_resources.items())]
        return args + list(self.setting("worker_extra_args") or [])

    def jobqueue_kwargs(self, python: str) -> dict[str, Any]:
        """Keyword arguments of the dask-jobqueue cluster (and job) class: the keys cluster.yaml set
        (walltime in the scheduler's syntax), mirpipe's worker arguments and the dashboard; `python`
        only where neither cluster.yaml nor jobqueue.<type>.python names one. No security object
        (see pipeline.cluster): only `protocol` tells whether TLS is on."""
        kwargs = self.model_dump(include=set(PASSED_WHEN_SET), exclude_unset=True, exclude_none=True)
        if "walltime" in kwargs:
            assert self.walltime is not None  # dumped with exclude_none
            kwargs["walltime"] = format_walltime(parse_walltime(self.walltime, self.type), self.type)
        if "python" not in kwargs and jobqueue_config(self.type, "python") is None:
            kwargs["python"] = python
        kwargs["worker_extra_args"] = self.worker_args()
        if self.tls:
            kwargs["protocol"] = "tls://"
        extra = dict(self.extra)
        options = {**(jobqueue_config(self.type, "scheduler-options") or {}), **(extra.pop("scheduler_options", None) or {})}
        if self.dashboard_address is None:  # the scheduler's HTTP server (health, metrics) stays local
            options.update(dashboard=False, dashboard_address="127.0.0.1:0")
        else:
            options["dashboard_address"] = self.dashboard_address
        kwargs["scheduler_options"] = options
        kwargs.update(extra)
        return kwargs


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_COMPOUND_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[dhms]){2,}")


def _seconds(v: str) -> float:
    """'90s', '5m', '1h', '3h30m', 'HH:MM:SS', 'MM:SS' or a plain number of seconds."""
    import dask.utils

    text = str(v).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
                raise ValueError
            return float(sum(int(p) * 60**i for i, p in enumerate(reversed(parts))))
        if _COMPOUND_DURATION.fullmatch(text.replace(" ", "")):  # '3h30m', which dask does not read
            return float(sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)))
        return float(dask.utils.parse_timedelta(text, default="seconds"))
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"not a duration: {v!r} (use e.g. '90s', '50m', '1h', '3h30m' or 'HH:MM:SS')") from None


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
        from dask_jobqueue import lsf, pbs, sge, slurm
        from dask_jobqueue.core import Job, JobQueueCluster
    except ImportError:  # without the hpc extra the keys cannot be checked here; the cluster start will
        return None
    names: set[str] = set()
    for obj in (Job, JobQueueCluster, slurm.SLURMJob, pbs.PBSJob, sge.SGEJob, lsf.LSFJob):
        names |= {p for p in inspect.signature(obj.__init__).parameters if p not in ("self", "args", "kwargs")}
    return names - {"scheduler", "name", "config_name", "base_class_kwargs", "job_kwargs", "job_cls"}


ClusterConfig = Annotated[SyncCluster | LocalClusterConfig | AddressCluster | JobqueueCluster, Field(discriminator="type")]
"""Executors: where work items run. ``sync`` runs them in-process; the others on Dask."""


DEFAULT_POOL = "default"


class PooledCluster(BaseModel):
    """A cluster.yaml with named pools: ``cluster`` is the default pool (the single cluster of a file
    without pools), ``pools`` further cluster specs by name, ``stages`` which pool runs which stage
    (a stage not named runs in the default pool). A pool starts when the first of its stages has work
    and closes once the run has no later stage for it."""

    model_config = ConfigDict(extra="forbid")
    cluster: ClusterConfig = Field(
        default_factory=lambda: LocalClusterConfig(type="local"),
        description="the default pool: the stages `stages` does not name (default: a LocalCluster)",
    )
    pools: dict[str, ClusterConfig] = Field(
        default_factory=dict, description="named pools, each a cluster spec (local, address, slurm, pbs, sge, lsf)"
    )
    stages: dict[str, str] = Field(
        default_factory=dict, description="stage -> pool name, e.g. {features: cpu, train: gpu}; others: the default pool"
    )

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if name == DEFAULT_POOL:
                raise ValueError(f"pool name {DEFAULT_POOL!r} is the `cluster:` key's pool; name the others differently")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"pool name {name!r}: use letters, digits, '_', '-', '.'")
        return v

    @model_validator(mode="after")
    def _stages(self):
        from mirpipe.stages import STAGES

        known = list(STAGES.names())
        for stage, pool in self.stages.items():
            if stage not in known:
                raise ValueError(f"stages.{stage}: unknown stage (stages are {', '.join(known)})")
            if pool != DEFAULT_POOL and pool not in self.pools:
                names = ", ".join([DEFAULT_POOL, *self.pools])
                raise ValueError(f"stages.{stage}: unknown pool {pool!r} (pools are {names})")
        return self

    def names(self) -> list[str]:
        """The pools: the default first, then as the file lists them."""
        return [DEFAULT_POOL, *self.pools]

    def pool(self, name: str) -> Any:
        """The cluster spec of pool ``name``."""
        return self.cluster if name == DEFAULT_POOL else self.pools[name]

    def pool_of(self, stage: str | None) -> str:
        """The pool that runs ``stage`` (None: the default pool)."""
        return self.stages.get(stage, DEFAULT_POOL) if stage is not None else DEFAULT_POOL

    @property
    def allowed_failures(self) -> int:
        return self.cluster.allowed_failures
