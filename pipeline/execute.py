"""The task a worker runs for one item: run the stage, retry transient errors, write the ledger.

A full disk (``ENOSPC``, or ``EDQUOT``: a quota used up) anywhere in an error's chain becomes a
``DiskFullError`` naming the path and the free space; it is not retried (space does not come back
within seconds) and not the input's fault (a plain rerun tries the item again). The ledger's own
writes may fail so too: a record that cannot be written leaves the item pending (never done without
its record), and the failure still comes back to the driver in the result."""

from __future__ import annotations

import dataclasses
import time
import traceback

from mirpipe.errors import DiskFullError, TimeLimitError, disk_full_error, is_retryable
from mirpipe.records import ItemResult
from mirpipe.registry import import_plugins
from mirpipe.stages import STAGES, StageContext, WorkItem
from mirpipe.stop import StopRequested

from .allocator import reuse_freed_memory
from .ledger import Ledger
from .timelimit import ItemTimeout, time_limit


def item_file(item: WorkItem) -> str:
    """The input file an item is about (named in time-limit failures)."""
    for key in ("audio", "jams"):
        value = item.payload.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            return str(value)
    return item.id


def execute_item(
    stage_name: str,
    item: WorkItem,
    fingerprint: str,
    ctx: StageContext,
    retries: int,
    backoff: float,
    limit: float | None = None,
    token: str | None = None,
) -> ItemResult:
    """Never raises for the item's own errors: returns an ``ItemResult``, done or failed.

    ``token`` names this submission: each start is noted in the ledger (the runner
    counts them to tell an item that kills its worker from a bystander), and a
    failure the watchdog recorded for this token is returned, not rerun.
    """
    reuse_freed_memory()  # Dask workers start with glibc returning every freed block > 64 KB to the OS
    import_plugins(ctx.plugins)  # a fresh worker process knows only the built-in implementations
    stage = STAGES.get(stage_name)
    ledger = Ledger(ctx.workdir)
    t0 = time.perf_counter()
    attempts = 0

    def full(exc: BaseException) -> DiskFullError | None:
        return disk_full_error(exc, stage.writes_to(ctx))

    def failed(exc: BaseException, trace: str) -> ItemResult:
        """Record the failure (when the ledger can still be written) and return it."""
        failure = ledger.failure_of(item.id, fingerprint, exc, attempts, trace, token=token)
        try:
            ledger.record_failure(stage_name, failure)
        except Exception as write_exc:  # noqa: BLE001 - only a full disk is tolerated here; anything else is the task's error
            if full(write_exc) is None:
                raise
        return ItemResult("failed", item.id, failure=failure.as_dict(), seconds=time.perf_counter() - t0)

    if token is not None:
        prior = ledger.timed_out(stage_name, token)  # this submission already ran out of time on a worker
        if prior is not None:
            return ItemResult("failed", item.id, failure=prior, seconds=0.0)
        try:
            ledger.note_start(stage_name, item.id, token)
        except Exception as exc:  # noqa: BLE001 - a full disk before the item starts: nothing was written
            disk = full(exc)
            if disk is None:
                raise
            return failed(disk, traceback.format_exc())
    item = dataclasses.replace(item, payload={**item.payload, "fingerprint": fingerprint})

    def _expired() -> None:  # worker case: recorded here, then the watchdog ends the process
        exc = TimeLimitError(item_file(item), f"exceeded the time limit of {limit:g}s ({stage_name} {item.id})")
        ledger.mark_failed(stage_name, item.id, fingerprint, exc, attempts, "", token=token, timed_out=True)

    while True:
        attempts += 1
        try:
            try:
                with time_limit(limit, _expired):
                    record = stage.run(item, ctx)
            except ItemTimeout as timeout:
                raise TimeLimitError(item_file(item), f"{timeout} ({stage_name} {item.id})") from None
        except StopRequested:  # saved and stopped on request (SIGTERM): not a failure, the next run resumes it
            return ItemResult("stopped", item.id, seconds=time.perf_counter() - t0, attempts=attempts)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, classified
            trace = traceback.format_exc()
            exc = full(exc) or exc
            if not is_retryable(exc) or attempts > retries:
                return failed(exc, trace)
            time.sleep(backoff * 2 ** (attempts - 1))
            continue
        seconds = time.perf_counter() - t0
        record = stage.dump_record(record)
        try:
            ledger.mark_done(stage_name, item.id, fingerprint, record, attempts, seconds)
        except Exception as exc:  # noqa: BLE001 - the outputs are in place but their record is not: the item stays pending
            disk = full(exc)
            if disk is None:
                raise
            return failed(disk, traceback.format_exc())
        return ItemResult("done", item.id, record=record, seconds=seconds, attempts=attempts)
