"""The task a worker runs for one item: run the stage, retry transient errors, write the ledger."""

from __future__ import annotations

import dataclasses
import time
import traceback

from mirpipe.errors import TimeLimitError, is_permanent
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
    if token is not None:
        prior = ledger.timed_out(stage_name, token)  # this submission already ran out of time on a worker
        if prior is not None:
            return ItemResult("failed", item.id, failure=prior, seconds=0.0)
        ledger.note_start(stage_name, item.id, token)
    item = dataclasses.replace(item, payload={**item.payload, "fingerprint": fingerprint})
    attempts = 0

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
            if is_permanent(exc) or attempts > retries:
                failure = ledger.mark_failed(stage_name, item.id, fingerprint, exc, attempts, traceback.format_exc(), token=token)
                return ItemResult("failed", item.id, failure=failure.as_dict(), seconds=time.perf_counter() - t0)
            time.sleep(backoff * 2 ** (attempts - 1))
            continue
        seconds = time.perf_counter() - t0
        record = stage.dump_record(record)
        ledger.mark_done(stage_name, item.id, fingerprint, record, attempts, seconds)
        return ItemResult("done", item.id, record=record, seconds=seconds, attempts=attempts)
