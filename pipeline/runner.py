"""The DAG runner: plan each stage against the ledger, schedule only what is not done, report."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mirpipe import __version__, stop
from mirpipe.columns import Row
from mirpipe.errors import ConfigurationError, DiskFullError, WorkdirError, disk_full_error
from mirpipe.records import ItemResult, RecordView, StatusRow
from mirpipe.stage import damage_reason
from mirpipe.stages import STAGES, Done, Stage, StageContext, WorkItem
from mirpipe.storage.atomic import remove_leftovers
from mirpipe.workdir import Workdir

from .config import PipelineBase
from .execute import execute_item
from .ledger import QUARANTINED, Ledger, QuarantinedError
from .progress import StageProgress

LOCK_NAME = Workdir.LOCK


class WorkdirBusyError(WorkdirError, RuntimeError):
    """Another mirpipe run holds the workdir (the CLI exits 2)."""


class WorkdirReadOnlyError(WorkdirError):
    """The workdir cannot be written (a read-only filesystem, or no write permission): a run or a repair
    cannot start there (the CLI exits 2); ``mirpipe status`` still reads it."""


def stage_order(config: PipelineBase) -> list[str]:
    """The stages a configuration runs, in the order their ``needs`` give."""
    return config.stage_order()


def fingerprint(stage: Stage, item: WorkItem, ctx: StageContext, params_json: str | None = None) -> str:
    """The item's fingerprint: sha256 of its stage, version, parameters, id, identity and upstream.

    The JSON is the one ``json.dumps({...}, sort_keys=True, default=str)`` gives, assembled from
    parts so that a stage's parameters (``params_json``, from ``params_blob``) are serialized
    once per plan, not once per item.
    """
    if params_json is None:
        params_json = params_blob(stage, ctx)
    esc = _STRING  # strings straight to the C encoder: json's encode() costs a Python call each
    up = item.upstream
    upstream = "[" + ", ".join(map(esc, up)) + "]" if all(type(u) is str for u in up) else _ENCODE(list(up))
    version = esc(stage.version) if type(stage.version) is str else _ENCODE(stage.version)
    blob = (
        f'{{"identity": {_ENCODE(item.identity)}, "item": {esc(item.id)}, "params": {params_json}, '
        f'"stage": {esc(stage.name)}, "upstream": {upstream}, "version": {version}}}'
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


_ENCODE = json.JSONEncoder(sort_keys=True, default=str).encode
_STRING = json.encoder.encode_basestring_ascii  # what that encoder writes for a str


def params_blob(stage: Stage, ctx: StageContext) -> str:
    return json.dumps(stage.fingerprint_params(ctx), sort_keys=True, default=str)


HEALED_BY_FEATURES = "EntryReadError"  # a failure class that recomputing the track's features repairs


@dataclass
class StagePlan:
    stage: str
    todo: list[tuple[WorkItem, str]] = field(default_factory=list)
    done: dict[str, Done] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # known failures, not retried
    total: int = 0
    done_items: dict[str, WorkItem] = field(default_factory=dict)  # the work items behind ``done`` and ``changed``
    # recorded done with this fingerprint, but planning's check of the outputs fails (a file missing, cut or
    # rewritten): pending (in ``todo``); ``mirpipe verify`` says what is wrong with them
    changed: dict[str, Done] = field(default_factory=dict)
    # failed for a full disk (with this fingerprint): in ``todo`` too, as a plain rerun tries them again; ``status``
    # shows them as failed until then, and the stages that need this one do not start while there are any
    retrying: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class StageReport:
    stage: str
    total: int = 0
    scheduled: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    quarantined: int = 0
    interrupted: int = 0  # items saved and stopped on request (SIGTERM): pending, the next run resumes them
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    # why the run stopped at this stage (a full disk: "disk full at PATH (N bytes free): ..."); None when it did not
    stopped: str | None = None
    unscheduled: int = 0  # items not submitted because the run stopped (pending for the next run)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = [
            {k: f.get(k) for k in ("item", "error_class", "kind", "file", "message", "attempts")} for f in self.failures
        ]
        return d


@contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Exclusive lock on a workdir: a second concurrent run is refused, not interleaved.
    The lock file says who holds it (pid, host, since when) for ``mirpipe status``."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fh = open(workdir / LOCK_NAME, "a+")
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise WorkdirReadOnlyError(
            f"{workdir}: workdir is read-only ({exc.strerror}): a run writes there; `mirpipe status` still reads it"
        ) from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        holder = active_run(workdir)
        who = f" (pid {holder['pid']} on {holder['host']}, since {holder['since']})" if holder and "pid" in holder else ""
        raise WorkdirBusyError(f"{workdir} is in use by another mirpipe run{who}; wait for it to finish") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
        )
        fh.flush()
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def active_run(workdir: Path) -> dict[str, Any] | None:
    """Who holds the workdir's lock ({pid, host, since}), or None when no run does (or this process)."""
    path = Path(workdir) / LOCK_NAME
    try:
        fh = open(path)
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: read who holds it
            try:
                holder = json.loads(fh.read() or "{}")
            except json.JSONDecodeError:
                return {}
            mine = holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
            return None if mine else holder
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


class Runner:
    # times an item whose worker was stopped under it (pre-emption) is resubmitted within one run
    PREEMPTIONS = 10

    def __init__(
        self,
        workdir: Path,
        config: PipelineBase,
        log: Callable[[str], None] = print,
        progress: bool = True,
        shared: Path | None = None,
        upstream: Mapping[str, dict[str, Done]] | None = None,
    ):
        """``shared`` and ``upstream`` run an experiment (``pipeline.experiments``): its workdir reads the
        manifest and store of ``shared``, and ``upstream`` gives the done items of the stages it does not
        run there (ingest, features: planned in the shared workdir's own runner)."""
        self.workdir = Path(workdir)
        self.config = config
        self.ledger = Ledger(self.workdir)
        self.ctx = StageContext(self.workdir, config.stage_params(), tuple(config.plugins), shared)
        self.log = log
        self.progress = progress
        self._done_cache: dict[str, dict[str, Done]] = dict(upstream or {})
        self._upstream = frozenset(upstream or {})  # stages run elsewhere (an experiment's workdir)
        self._started: dict[str, set[str]] = {}  # items whose run began, as the last plan of each stage read the ledger
        self._retrying: dict[str, dict[str, dict[str, Any]]] = {}  # per stage, its items that failed for a full disk
        self._warned: set[str] = set()  # driver-side writes already reported as failing (said once each)

    # -- planning ------------------------------------------------------------
    def plan(self, name: str, force: bool = False, retry_failed: bool = False) -> StagePlan:
        stage = STAGES.get(name)
        upstream = {need: self.done_items(need) for need in stage.needs}
        items = stage.items(self.ctx, upstream)
        state = self.ledger.state(name)
        self._started[name] = set(state.starts)
        markers = state.done
        failures = state.failed
        plan = StagePlan(name, total=len(items))
        params_json = params_blob(stage, self.ctx)
        fits: dict[int, bool] = {}  # per set of record fields (a compacted table has one), whether they fit
        recorded = {} if force else markers.fingerprints()
        fps = [fingerprint(stage, item, self.ctx, params_json) for item in items]
        candidates, raws = [], []  # recorded done with this fingerprint: are the outputs still there?
        for item, fp in zip(items, fps):
            if recorded.get(item.id) == fp:
                raw = markers.record(item.id)
                if raw is not None and self._fits(stage, raw, fits):
                    candidates.append(item)
                    raws.append(raw)
        valid = stage.outputs_valid_many(candidates, self.ctx, raws) if candidates else []
        done = {item.id: raw for item, raw, ok in zip(candidates, raws, valid) if ok}
        changed = {item.id: raw for item, raw, ok in zip(candidates, raws, valid) if not ok}
        load = stage.load_record
        for item, fp in zip(items, fps):
            raw = done.get(item.id)
            if raw is not None:
                plan.done[item.id] = Done(fp, raw=raw, load=load)
                plan.done_items[item.id] = item
                continue
            if item.id in changed:
                plan.changed[item.id] = Done(fp, raw=changed[item.id], load=load)
                plan.done_items[item.id] = item
            failure = failures.get(item.id)
            # a damaged store entry is the workdir's fault, not the item's: retried once its entry is recomputed
            healable = failure is not None and failure.get("error_class") == HEALED_BY_FEATURES
            if failure and failure["fingerprint"] == fp and failure.get("kind") == DiskFullError.kind:
                plan.retrying[item.id] = failure  # not the item's fault: tried again without --retry-failed
            elif failure and failure["fingerprint"] == fp and not retry_failed and not healable:
                plan.failed[item.id] = failure
                continue
            plan.todo.append((item, fp))
        self._retrying[name] = plan.retrying
        return plan

    @staticmethod
    def _fits(stage: Stage, raw: Mapping[str, Any], fits: dict[int, bool]) -> bool:
        """A done item's record (JSON form) has the fields of the stage's record type; one that no
        longer fits makes the item run again. A compacted table's rows share their fields: checked once."""
        if stage.record_type is None:
            return isinstance(raw, Mapping)
        if type(raw) is Row:
            ok = fits.get(id(raw.fields))
            if ok is None:
                ok = fits[id(raw.fields)] = RecordView.fits(stage.record_type, raw.fields.keys())
            return ok
        return isinstance(raw, dict) and RecordView.fits(stage.record_type, raw.keys())

    def done_items(self, name: str) -> dict[str, Done]:
        """Done items of a stage that has been run (or planned) in this runner."""
        if name not in self._done_cache:
            self._done_cache[name] = self.plan(name).done
        return self._done_cache[name]

    # -- running -------------------------------------------------------------
    def run_stage(self, name: str, executor, force: bool = False, retry_failed: bool = False) -> StageReport:
        t0 = time.perf_counter()
        stage = STAGES.get(name)
        plan = self.plan(name, force=force, retry_failed=retry_failed)
        report = StageReport(name, total=plan.total, scheduled=len(plan.todo), skipped=len(plan.done))
        report.failures = list(plan.failed.values())
        done = dict(plan.done)
        retrying: dict[str, dict[str, Any]] = {}  # this run's disk-full failures
        if plan.todo:
            for line in stage.start_notes(self.ctx):
                self.log(line)
            for_stage = getattr(executor, "for_stage", None)  # named pools: this stage's pool, started now
            if for_stage is not None:
                executor = for_stage(name)
            bar = StageProgress(name, len(plan.todo), enabled=self.progress and not stage.reports_progress)
            todo, final = list(plan.todo), False
            submitted = 0
            preempted: dict[str, int] = {}  # per item, how often its worker was stopped under it

            def halted() -> bool:  # a full disk: no new item is submitted (those in flight finish or fail)
                return report.stopped is not None

            while todo and not halted():  # a second pass resubmits bystanders of a killed worker once
                retry = []
                for item, fp, result in self._submit(stage, todo, executor, final, halted):
                    submitted += 1
                    if result is None:
                        retry.append((item, fp))
                        continue
                    if result.done:
                        report.done += 1
                        done[item.id] = Done(fp, raw=result.record, load=stage.load_record)
                    elif result.status == "stopped" and not stop.requested() and preempted.get(item.id, 0) < self.PREEMPTIONS:
                        # the WORKER was stopped (its batch job pre-empted, cancelled or at its walltime), not
                        # this run: the item saved its checkpoint there; it goes to another worker and resumes
                        preempted[item.id] = preempted.get(item.id, 0) + 1
                        self.log(
                            f"mirpipe: {name} {item.id}: its worker was stopped (pre-empted or at its walltime); "
                            "resubmitted, it resumes from its checkpoint"
                        )
                        retry.append((item, fp))
                    elif result.status == "stopped":
                        report.interrupted += 1
                    else:
                        report.failures.append(result.failure)
                        self._log_failure(name, result.failure)
                        if result.failure.get("kind") == DiskFullError.kind:
                            retrying[item.id] = result.failure
                            if report.stopped is None:
                                report.stopped = result.failure["message"]
                                self._warn(f"{name}: {report.stopped}; no more items are started")
                    bar.update(failed=len(report.failures))
                todo, final = retry, True
                submitted -= len(retry)
            report.unscheduled = len(plan.todo) - submitted
            bar.close()
        self._retrying[name] = retrying
        report.quarantined = sum(f.get("kind") == QUARANTINED for f in report.failures)
        report.failed = len(report.failures) - report.quarantined  # as in status: the two are apart
        if report.stopped is None:  # a stage stopped by a full disk writes nothing more (its index stays as it was)
            try:
                self._finish(stage, done, fresh=not plan.todo)
            except Exception as exc:  # noqa: BLE001 - only a full disk is tolerated: the stage stops there
                disk = disk_full_error(exc, stage.writes_to(self.ctx))
                if disk is None:
                    raise
                report.stopped = disk.reason
                self._warn(f"{name}: {disk.reason} (while finishing the stage)")
        self._done_cache[name] = done
        report.seconds = round(time.perf_counter() - t0, 3)
        return report

    def _finish(self, stage: Stage, done: Mapping[str, Done], fresh: bool) -> None:
        """The stage's ``finalize`` (unless nothing it reads changed), then the ledger compacted."""
        name = stage.name
        key = self._finalize_key(stage, done) if fresh else None
        if key is None or key != self.ledger.finalized(name):  # else: nothing finalize reads has changed
            stage.finalize(self.ctx, done)
        compacted = self.ledger.compact(name)  # the stage's logs folded into one file (we hold the workdir lock)
        self.ledger.set_finalized(name, key if key is not None and not compacted else self._finalize_key(stage, done))

    def _warn(self, message: str) -> None:
        """A line on stderr (never on the disk that may be full); an unwritable stderr is ignored."""
        try:
            print(f"mirpipe: {message}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def _finalize_key(self, stage: Stage, done: Mapping[str, Done]) -> str | None:
        """A digest of what the stage's ``finalize`` reads (see ``Stage.finalize_outputs``); None where
        the stage declares no outputs or one is missing: finalize must run."""
        outputs = stage.finalize_outputs(self.ctx)
        if outputs is None or not all(os.path.exists(p) for p in outputs):
            return None
        module = sys.modules[type(stage).__module__].__file__
        assert module is not None  # a stage's module is a file (its digest is part of the key)
        h = hashlib.sha256(
            json.dumps(
                [
                    stage.name,
                    stage.version,
                    __version__,
                    hashlib.sha256(Path(module).read_bytes()).hexdigest(),
                    {n: p.model_dump(mode="json") if p is not None else None for n, p in self.ctx.params.items()},
                    stage.finalize_inputs(self.ctx),
                    self.ledger.stamp(stage.name),
                ],
                sort_keys=True,
                default=str,
            ).encode()
        )
        h.update("".join(f"{item_id}\t{done[item_id].fingerprint}\n" for item_id in sorted(done)).encode())
        return h.hexdigest()

    def _submit(self, stage: Stage, todo: list[tuple[WorkItem, str]], executor, final: bool, stop=None):
        """Run items on the executor; yield (item, fingerprint, result), result None = resubmit. Once
        ``stop()`` is true no further item is submitted (those in flight still come back)."""
        rp = self.config.run
        calls, by_key = [], {}
        for item, fp in todo:
            key = f"{stage.name}-{item.id}-{fp[:8]}-{uuid.uuid4().hex[:8]}"  # also the submission token
            calls.append(
                (
                    key,
                    (
                        stage.name,
                        item,
                        fp,
                        self.ctx,
                        rp.retries,
                        rp.retry_backoff,
                        rp.time_limit if stage.bounded_time else None,
                        key,
                    ),
                )
            )
            by_key[key] = (item, fp)
        resources = executor.resources_for(stage.name, stage.resources)
        for key, result in executor.run(execute_item, calls, resources=resources, stop=stop):
            item, fp = by_key[key]
            if isinstance(result, BaseException):  # the task itself was lost (its worker died)
                result = self._lost(stage.name, item, fp, key, result, executor, final)
            yield item, fp, result

    def _lost(self, name: str, item: WorkItem, fp: str, token: str, exc: BaseException, executor, final: bool):
        """A task whose worker died: a failure recorded for this submission (time limit), a quarantine
        (it killed its worker more than the allowed failures), or None to resubmit a bystander once."""
        from .execute import item_file

        recorded = self.ledger.timed_out(name, token)
        if recorded is not None:
            return ItemResult("failed", item.id, failure=recorded)
        starts = self.ledger.starts(name, item.id, token)
        if type(exc).__name__ == "KilledWorker":
            if starts > executor.allowed_failures or final:
                exc = QuarantinedError(f"killed its worker {starts} time(s); quarantined after the allowed failures ({exc})")
            else:
                return None
        failure = self.ledger.failure_of(item.id, fp, exc, attempts=max(starts, 1), token=token, file=item_file(item))
        self._driver_write(f"the ledger of {name}", lambda: self.ledger.record_failure(name, failure))
        return ItemResult("failed", item.id, failure=failure.as_dict())

    def _driver_write(self, what: str, write: Callable[[], None]) -> bool:
        """A write of the driver's that the run can do without (a failure's record, a log line): an
        ``OSError`` (a full disk, above all) is said once on stderr and the run goes on."""
        try:
            write()
            return True
        except OSError as exc:
            if what not in self._warned:
                self._warned.add(what)
                disk = disk_full_error(exc, [self.workdir])
                self._warn(f"cannot write {what}: {disk.reason if disk is not None else exc}; going on without it")
            return False

    def _log_failure(self, stage: str, failure: dict[str, Any]) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {stage} {failure['item']} {failure.get('kind')} {failure['error_class']}: {failure.get('file') or ''} {failure['message']}"

        def append() -> None:
            logs = Workdir(self.workdir).logs
            logs.mkdir(parents=True, exist_ok=True)
            with open(Workdir(self.workdir).failures_log, "a") as fh:
                fh.write(line.replace("\n", " ") + "\n")

        self._driver_write(str(Workdir(self.workdir).failures_log), append)

    def run(
        self,
        executor,
        until: str | None = None,
        only: str | None = None,
        force: tuple[str, ...] = (),
        retry_failed: bool = False,
    ) -> list[StageReport]:
        order = stage_order(self.config)
        for name in [until, only, *force]:
            if name is not None and name not in order:
                raise ConfigurationError(f"unknown stage {name!r}; stages are {order}")
        if only:
            selected = [only]
        elif until:
            selected = order[: order.index(until) + 1]
        else:
            selected = order
        remove_leftovers(self.workdir)  # temporary files of killed writers (we hold the workdir lock)
        reports: list[StageReport] = []
        for i, n in enumerate(selected):
            if i > 0:  # named pools: a pool no later stage uses is closed now (its jobs end)
                ended = getattr(executor, "stage_ended", None)
                if ended is not None:
                    ended(selected[i - 1], selected[i:])
            if stop.requested():  # SIGTERM: no later stage starts on what did not finish
                break
            blocked = self._disk_full_upstream(n)
            if blocked is not None:  # training must not start on a partial store
                reports.append(StageReport(n, stopped=blocked))
                break
            report = self.run_stage(n, executor, force=n in force, retry_failed=retry_failed)
            # an experiment reads another workdir's store: its damage is healed by a run of that workdir
            healable = n != "features" and "features" in order and getattr(self.ctx, "shared", None) is None
            damaged = self._damaged_entries(report) if healable else {}
            if damaged and report.stopped is None and not stop.requested():
                report = self._heal(n, damaged, report, reports, executor, force=n in force, retry_failed=retry_failed)
            reports.append(report)
            if report.stopped is not None:  # a full disk: later stages do not start
                break
        if any(r.stage == "evaluate" and r.stopped is None for r in reports):
            self._write_report()
        return reports

    def _write_report(self) -> None:
        """``reports/index.html`` (``pipeline.report``); a page that cannot be written is said, never fatal."""
        from .report import write_report

        try:
            write_report(self.workdir)
        except Exception as exc:  # noqa: BLE001 - the page is a view: the run's results stand without it
            self._warn(f"cannot write reports/index.html: {type(exc).__name__}: {exc}; mirpipe report writes it again")

    def _damaged_entries(self, report: StageReport) -> dict[str, str]:
        """The tracks whose store entry failed to read back in ``report``'s items (``EntryReadError``), with the file."""
        failed = [f for f in report.failures if f.get("error_class") == HEALED_BY_FEATURES and f.get("file")]
        if not failed:
            return {}
        from mirpipe.stages.features import FeaturesParams
        from mirpipe.storage import open_store

        fp: FeaturesParams = self.ctx.params["features"]
        store = open_store(fp.store, self.ctx.dirs.store_root(fp.store_path))
        out = {}
        for f in failed:
            track = store.track_of(f["file"])
            if track is not None:
                out[track] = f["file"]
        return out

    def _heal(
        self, name: str, damaged: dict[str, str], report: StageReport, reports: list[StageReport], executor, **run
    ) -> StageReport:
        """Damaged store entries met by ``name``'s items: their features items pending again, recomputed,
        then ``name`` run again (its items that failed on them retried), in this same run."""
        shown = ", ".join(f"{t} ({Path(p).name})" for t, p in list(damaged.items())[:3])
        more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
        self.log(f"mirpipe: {name}: damaged store entries of {shown}{more}: recomputing their features, then {name} again")
        for track in damaged:
            self.ledger.forget("features", track)
        healed = self.run_stage("features", executor)
        for i, r in enumerate(reports):  # the run's features report counts the recomputed items too
            if r.stage == "features":
                reports[i] = replace(
                    r,
                    scheduled=r.scheduled + healed.scheduled,
                    done=r.done + healed.done,
                    failures=r.failures + healed.failures,
                    failed=r.failed + healed.failed,
                )
        return self.run_stage(name, executor, **run)

    def _disk_full_upstream(self, name: str) -> str | None:
        """Why ``name`` must not start: a stage it needs (directly or not) has items that failed for a
        full disk and have not been done since (the stage is incomplete); None when none has."""
        seen: set[str] = set()
        todo = list(STAGES.get(name).needs)
        while todo:
            need = todo.pop()
            if need in seen:
                continue
            seen.add(need)
            self.done_items(need)  # plans it when this runner has not yet
            failures = self._retrying.get(need) or {}
            if failures:
                first = next(iter(failures.values()))
                return f"not started: {need} has {len(failures)} item(s) that failed for a full disk ({first['message']})"
            todo += STAGES.get(need).needs
        return None

    def verify(self, repair: bool = False) -> list[dict[str, Any]]:
        """Open the outputs of every done item (``Stage.verify_outputs``); the damaged ones
        (``{stage, item, reason}``: what is wrong, naming the file), which ``repair`` returns to
        pending (their markers forgotten) so the next run recomputes them."""
        damaged = []
        for name in stage_order(self.config):
            stage = STAGES.get(name)
            plan = self.plan(name)
            self._done_cache[name] = plan.done
            for item_id, done in sorted([*plan.done.items(), *plan.changed.items()], key=lambda kv: kv[0]):
                try:
                    reason = damage_reason(stage.verify_outputs(plan.done_items[item_id], self.ctx, done.record))
                except Exception as exc:  # noqa: BLE001 - a check that cannot read the outputs found them damaged
                    reason = f"the check failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
                if reason is not None:
                    damaged.append({"stage": name, "item": item_id, "reason": reason})
                    if repair:
                        self.ledger.forget(name, item_id)
            if repair:
                self.ledger.compact(name)
        return damaged

    def status(self) -> list[dict[str, Any]]:
        """Per stage: items done / running / pending / failed, each failure, and the stage's notes.
        Items count as running only while a run holds the workdir and their run has begun."""
        out = []
        live = active_run(self.workdir) is not None
        for name in stage_order(self.config):
            if name in self._upstream:
                continue  # the shared workdir's stages: its own status shows them
            plan = self.plan(name)
            self._done_cache[name] = plan.done
            started = self._started[name] if live else set()
            running = sum(item.id in started for item, _ in plan.todo)
            # failed for a full disk and not running again: shown as failed (the next run tries them again)
            disk_full = [f for item_id, f in plan.retrying.items() if item_id not in started]
            failed = [*plan.failed.values(), *disk_full]
            out.append(
                StatusRow(
                    stage=name,
                    total=plan.total,
                    done=len(plan.done),
                    running=running,
                    pending=len(plan.todo) - running - len(disk_full),
                    failed=sum(f.get("kind") != QUARANTINED for f in failed),
                    quarantined=sum(f.get("kind") == QUARANTINED for f in failed),
                    failures=[
                        {k: f.get(k) for k in ("item", "error_class", "kind", "file", "message", "attempts")} for f in failed
                    ],
                    notes=STAGES.get(name).status_notes(self.ctx),
                    details=STAGES.get(name).status_details(self.ctx) or None,
                ).to_json()
            )
        return out
