"""The ledger: what is done and what failed, per stage, in O(1) files under <workdir>/ledger/<stage>/.

- ``state.json``: the compacted state, ``{"done": {item: marker}, "failed": {item: failure}}``,
  replaced atomically by the driver at the end of a stage (it holds the workdir lock);
- ``log/<host>-<pid>-<random>.jsonl``: one append-only log per process that writes
  (each worker, the driver). A line is one event (``done``, ``failed``, ``start``,
  ``forget``), appended with one ``write`` and fsynced before the call returns; a torn
  last line (a crash mid-write) is ignored;
- ``timeouts/<token>.json``: a failure the time-limit watchdog recorded for one
  submission, found by its token without reading the logs (a resubmitted task asks).

A worker appends an item's ``done`` event only after its outputs are committed, so a crash
in between leaves the item pending, as before. The state is the compacted file folded
with the logs' events in time order; compaction folds the logs into ``state.json`` and
deletes them. Markers of the older one-file-per-item layout (``<item>.done.json``) are
read too and folded in at the next compaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import threading
import time
import traceback as tb
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirpipe.stages.errors import InputError
from mirpipe.storage.atomic import write_bytes

LEDGER_DIR = "ledger"
STATE = "state.json"
LOG_DIR = "log"
TIMEOUTS_DIR = "timeouts"
LEGACY_SUFFIXES = {".done.json": "done", ".failed.json": "failed"}  # the one-file-per-item layout
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


@dataclass
class StageState:
    """A stage's ledger folded: done markers and failure records by item, and the tokens of the
    submissions that started since the last compaction (per item, in order)."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    starts: dict[str, list[str]] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        op, item = event.pop("op"), event["item"]
        if op == "done":
            self.done[item] = event
            self.failed.pop(item, None)
            self.starts.pop(item, None)
        elif op == "failed":
            self.failed[item] = event
        elif op == "start":
            self.starts.setdefault(item, []).append(event["token"])
        elif op == "forget":
            self.done.pop(item, None)


class _Logs:
    """This process's open append-only log per stage folder (shared by its threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fds: dict[Path, tuple[int, int]] = {}  # stage folder -> (pid, fd)

    def append(self, base: Path, line: bytes, durable: bool) -> None:
        with self.lock:
            fd = self._fd(base)
            os.write(fd, line)
            if durable:
                os.fsync(fd)

    def _fd(self, base: Path) -> int:
        held = self.fds.get(base)
        if held is not None:
            pid, fd = held
            if pid == os.getpid() and os.fstat(fd).st_nlink > 0:
                return fd
            if pid == os.getpid():  # compacted away since: start a new log
                os.close(fd)
        folder = base / LOG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        fd = os.open(folder / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.fds[base] = (os.getpid(), fd)
        return fd


_LOGS = _Logs()


class Ledger:
    def __init__(self, workdir: Path | str, durable: bool = True):
        self.root = Path(workdir) / LEDGER_DIR
        self.durable = durable  # fsync every event (benchmarks that fabricate ledgers turn it off)

    def _base(self, stage: str) -> Path:
        return self.root / stage

    # -- writing (workers and the driver) ------------------------------------------------
    def _append(self, stage: str, op: str, **event: Any) -> None:
        line = json.dumps({"op": op, **event, "at": time.time()}, default=str, separators=(",", ":"))
        _LOGS.append(self._base(stage), (line.replace("\n", " ") + "\n").encode(), self.durable)

    def mark_done(self, stage: str, item: str, fingerprint: str, record: dict[str, Any], attempts: int, seconds: float) -> None:
        self._append(stage, "done", item=item, fingerprint=fingerprint, record=record, attempts=attempts, seconds=seconds)

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
        timed_out: bool = False,
    ) -> Failure:
        """Record a failure; ``timed_out`` (the watchdog's) also files it under its token."""
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
        if timed_out and token is not None:
            write_bytes(self._timeout_path(stage, token), json.dumps(failure.as_dict()).encode())
        self._append(stage, "failed", **failure.as_dict())
        return failure

    def note_start(self, stage: str, item: str, token: str) -> None:
        """One event per time a submission begins running (worker side)."""
        self._append(stage, "start", item=item, token=token)

    def forget(self, stage: str, item: str) -> None:
        """The item is pending again (its outputs were found damaged)."""
        self._append(stage, "forget", item=item)

    # -- reading -------------------------------------------------------------------------
    def state(self, stage: str) -> StageState:
        """The compacted state folded with every log event since, in time order."""
        base = self._base(stage)
        state = StageState()
        try:
            data = json.loads((base / STATE).read_bytes())
            state.done, state.failed = data["done"], data["failed"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            from mirpipe.errors import WorkdirFileError

            raise WorkdirFileError(base / STATE, f"not a ledger written by this mirpipe ({exc}); "
                                   "delete the folder to recompute the stage") from None
        for event in sorted(self._events(base), key=lambda e: e["at"]):
            state.apply(event)
        return state

    def _events(self, base: Path) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        logs = base / LOG_DIR
        if logs.is_dir():
            for path in sorted(logs.glob("*.jsonl")):
                try:
                    lines = path.read_bytes().split(b"\n")
                except OSError:
                    continue
                for line in lines:
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        continue  # the empty tail, or a line torn by a crash mid-write
        events += self._legacy(base)
        return events

    def _legacy(self, base: Path) -> list[dict[str, Any]]:
        """Events from the older one-file-per-item markers (``<item>.done.json``)."""
        out: list[dict[str, Any]] = []
        if not base.is_dir():
            return out
        for entry in os.scandir(base):
            if entry.name in (STATE, LOG_DIR, TIMEOUTS_DIR):
                continue
            paths = [Path(entry.path)] if entry.is_file() else list(Path(entry.path).rglob("*.json"))
            for path in paths:
                op = next((op for suffix, op in LEGACY_SUFFIXES.items() if path.name.endswith(suffix)), None)
                try:
                    data = json.loads(path.read_text()) if op else None
                except (OSError, ValueError):
                    continue
                if data is not None:
                    out.append({**data, "op": op, "at": data.get("at", 0.0)})
        return out

    def done(self, stage: str) -> dict[str, dict[str, Any]]:
        return self.state(stage).done

    def failures(self, stage: str) -> dict[str, dict[str, Any]]:
        return self.state(stage).failed

    def failure(self, stage: str, item: str) -> dict[str, Any] | None:
        return self.failures(stage).get(item)

    def _timeout_path(self, stage: str, token: str) -> Path:
        return self._base(stage) / TIMEOUTS_DIR / f"{hashlib.sha1(token.encode()).hexdigest()}.json"

    def timed_out(self, stage: str, token: str) -> dict[str, Any] | None:
        """The failure the watchdog recorded for this submission, if any (one file lookup)."""
        try:
            return json.loads(self._timeout_path(stage, token).read_bytes())
        except (OSError, ValueError):
            return None

    def starts(self, stage: str, item: str, token: str) -> int:
        """How many times this submission began running."""
        return self.state(stage).starts.get(item, []).count(token)

    def started(self, stage: str) -> set[str]:
        """Items of a stage whose run began and has not been recorded done since."""
        return set(self.state(stage).starts)

    # -- compaction (the driver, holding the workdir lock) -----------------------------
    def compact(self, stage: str) -> None:
        """Fold the logs into ``state.json``, then delete them (and the watchdog's token files
        and older markers). A log a straggler appends to meanwhile loses at most that event: its
        item runs again."""
        base = self._base(stage)
        if not base.is_dir():
            return
        folded = [p for p in (base / LOG_DIR).glob("*.jsonl")] if (base / LOG_DIR).is_dir() else []
        legacy = [e for e in os.scandir(base) if e.name not in (STATE, LOG_DIR, TIMEOUTS_DIR)]
        if not folded and not legacy and not (base / TIMEOUTS_DIR).exists():
            return
        state = self.state(stage)
        body = json.dumps({"done": state.done, "failed": state.failed}, default=str, separators=(",", ":"))
        write_bytes(base / STATE, body.encode())
        for path in folded:
            path.unlink(missing_ok=True)
        for entry in legacy:
            if entry.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        shutil.rmtree(base / TIMEOUTS_DIR, ignore_errors=True)
