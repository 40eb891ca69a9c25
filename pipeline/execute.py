"""The task a worker runs for one item: run the stage, retry transient errors, write the ledger."""

from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path
from typing import Any

from stages import STAGES, StageContext, WorkItem
from stages.errors import is_permanent

from .ledger import Ledger


def execute_item(
    stage_name: str, item: WorkItem, fingerprint: str, ctx: StageContext, retries: int, backoff: float
) -> dict[str, Any]:
    """Never raises for the item's own errors: returns ``{"status": "done"|"failed", ...}``."""
    stage = STAGES[stage_name]
    ledger = Ledger(ctx.workdir)
    item = dataclasses.replace(item, payload={**item.payload, "fingerprint": fingerprint})
    attempts = 0
    t0 = time.perf_counter()
    while True:
        attempts += 1
        try:
            record = stage.run(item, ctx)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, classified
            if is_permanent(exc) or attempts > retries:
                failure = ledger.mark_failed(stage_name, item.id, fingerprint, exc, attempts, traceback.format_exc())
                return {"status": "failed", "item": item.id, "failure": failure.as_dict(), "seconds": time.perf_counter() - t0}
            time.sleep(backoff * 2 ** (attempts - 1))
            continue
        seconds = time.perf_counter() - t0
        ledger.mark_done(stage_name, item.id, fingerprint, record, attempts, seconds)
        return {"status": "done", "item": item.id, "record": record, "seconds": seconds, "attempts": attempts}


