"""The ledger: per-item completion markers and failure records under <workdir>/ledger/<stage>/.

An item is done when its marker holds the current fingerprint and its outputs
are in place. Markers are written atomically after the outputs, by the task that
produced them, so a crash in between leaves the item pending.
"""

from __future__ import annotations

import json
import os
import time
import traceback as tb
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirpipe.stages.errors import InputError
from mirpipe.storage.atomic import write_json

LEDGER_DIR = "ledger"
DONE_SUFFIX = ".done.json"
FAILED_SUFFIX = ".failed.json"
STARTED_SUFFIX = ".started"
QUARANTINED = "quarantined"


class QuarantinedError(RuntimeError):
    """An item whose task killed its worker every time it ran (Dask KilledWorker)."""

    kind = QUARANTINED


@dataclass(frozen=True)
class Failure:
    item: str
    fingerprint: str
    error_class: str
    kind: str  # "input" (the data's fault) or "error" (ours or the system's)
    message: str
    file: str | None
    traceback: str
    attempts: int
    token: str | None = None  # the submission that failed (see execute_item)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Ledger:
    def __init__(self, workdir: Path | str):
        self.root = Path(workdir) / LEDGER_DIR

    def _path(self, stage: str, item: str, suffix: str) -> Path:
        return self.root / stage / f"{item}{suffix}"

    def mark_done(self, stage: str, item: str, fingerprint: str, record: dict[str, Any], attempts: int, seconds: float) -> None:
        write_json(
            self._path(stage, item, DONE_SUFFIX),
            {"item": item, "fingerprint": fingerprint, "record": record, "attempts": attempts, "seconds": seconds, "at": time.time()},
        )
        self._path(stage, item, FAILED_SUFFIX).unlink(missing_ok=True)
        self._path(stage, item, STARTED_SUFFIX).unlink(missing_ok=True)

    def mark_failed(
        self,
        stage: str,
        item: str,
        fingerprint: str,
        exc: BaseException,
        attempts: int,
        trace: str | None = None,
        token: str | None = None,
        file: str | None = None,
    ) -> Failure:
        failure = Failure(
            item=item,
            fingerprint=fingerprint,
            error_class=type(exc).__name__,
            kind=getattr(exc, "kind", "error"),
            message=getattr(exc, "reason", None) or str(exc) or repr(exc),
            file=getattr(exc, "path", None) if isinstance(exc, InputError) else file,
            traceback=trace if trace is not None else "".join(tb.format_exception(exc)),
            attempts=attempts,
            token=token,
        )
        write_json(self._path(stage, item, FAILED_SUFFIX), {**failure.as_dict(), "at": time.time()})
        return failure

    def _scan(self, stage: str, suffix: str) -> dict[str, dict[str, Any]]:
        base = self.root / stage
        out: dict[str, dict[str, Any]] = {}
        if not base.exists():
            return out
        for path in base.rglob(f"*{suffix}"):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # unreadable marker: the item counts as pending
            out[data["item"]] = data
        return out

    def done(self, stage: str) -> dict[str, dict[str, Any]]:
        return self._scan(stage, DONE_SUFFIX)

    def failures(self, stage: str) -> dict[str, dict[str, Any]]:
        return self._scan(stage, FAILED_SUFFIX)

    def failure(self, stage: str, item: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(stage, item, FAILED_SUFFIX).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    # -- starts: one line per time a submission began running (worker side) ----
    def note_start(self, stage: str, item: str, token: str) -> None:
        path = self._path(stage, item, STARTED_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def starts(self, stage: str, item: str, token: str) -> int:
        try:
            return self._path(stage, item, STARTED_SUFFIX).read_text().split().count(token)
        except OSError:
            return 0

    def started(self, stage: str) -> set[str]:
        """Items of a stage whose run began and has not been recorded done since."""
        base = self.root / stage
        if not base.exists():
            return set()
        return {path.relative_to(base).as_posix()[: -len(STARTED_SUFFIX)] for path in base.rglob(f"*{STARTED_SUFFIX}")}

    def clear_starts(self, stage: str, item: str) -> None:
        self._path(stage, item, STARTED_SUFFIX).unlink(missing_ok=True)

    def forget(self, stage: str, item: str) -> None:
        self._path(stage, item, DONE_SUFFIX).unlink(missing_ok=True)
