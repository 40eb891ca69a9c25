"""The ledger: what is done and what failed, per stage, in O(1) files under <workdir>/ledger/<stage>/.

- ``state.json``: the compacted state, replaced atomically by the driver at the end of a stage
  (it holds the workdir lock): a column document (``mirpipe.columns``) with one row per done
  item (columns ``item``, ``fingerprint``, ``attempts``, ``seconds``, ``at`` and one column
  ``record.<field>`` per field of the records) and the failure records in its header. Planning
  decodes the item, fingerprint and the few record columns its validity checks read; a rerun
  that changes nothing passes the other columns on as text (the manifest, the store index);
- ``log/<host>-<pid>-<random>.jsonl``: one append-only log per process that writes
  (each worker, the driver). A line is one event (``done``, ``failed``, ``start``,
  ``forget``), appended with one ``write`` and fsynced before the call returns; a torn
  last line (a crash mid-write) is ignored;
- ``timeouts/<token>.json``: a failure the time-limit watchdog recorded for one
  submission, found by its token without reading the logs (a resubmitted task asks).

A worker appends an item's ``done`` event only after its outputs are committed, so a crash
in between leaves the item pending, as before. The state is the compacted file folded
with the logs' events in time order; compaction folds the logs into ``state.json`` and
deletes them. The older layouts, ``state.json`` as one object ``{"done": {item: marker},
"failed": {item: failure}}`` and one marker file per item (``<item>.done.json``), are read too
and rewritten in this one at the next compaction.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from mirpipe import columns
from mirpipe.errors import DiskFullError, InputError, WorkdirFileError
from mirpipe.storage.atomic import write_bytes
from mirpipe.workdir import Workdir

LEDGER_DIR = Workdir.LEDGER
STATE = "state.json"
LOG_DIR = "log"
TIMEOUTS_DIR = "timeouts"
FINALIZED = "finalized.json"  # per stage, the key of what its last finalize read (at the ledger's root)
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


MARKER_COLUMNS = ("fingerprint", "attempts", "seconds", "at")  # a done marker's values beside item and record
RECORD = "record."  # prefix of the record's columns


class DoneTable(Mapping[str, dict]):
    """A stage's done markers by item (``{item, fingerprint, record, attempts, seconds, at}``): the
    compacted columns, with the logs' events laid over them. Planning asks ``fingerprint`` and
    ``record`` (a view of the record's columns) per item; a whole marker is built only when indexed."""

    def __init__(
        self, base: columns.Columns | None = None, record_fields: list[str] | None = None, overlay: dict[str, dict] | None = None
    ):
        self.base = base
        self.fields = None if record_fields is None else {f: RECORD + f for f in record_fields}
        self.overlay: dict[str, dict] = dict(overlay or {})
        self.removed: set[str] = set()
        self._pos: dict[str, int] | None = None

    @property
    def pos(self) -> dict[str, int]:
        """Row of each item of the compacted columns."""
        if self._pos is None:
            self._pos = {} if self.base is None else {k: i for i, k in enumerate(self.base["item"])}
        return self._pos

    def _row(self, item: str) -> int | None:
        if item in self.removed or item in self.overlay:
            return None
        return self.pos.get(item)

    def fingerprint(self, item: str) -> str | None:
        marker = self.overlay.get(item)
        if marker is not None:
            return marker.get("fingerprint")
        i = self._row(item)
        if i is None:
            return None
        assert self.base is not None  # a row number is a row of the base
        return self.base["fingerprint"][i]

    def fingerprints(self) -> dict[str, str]:
        """The fingerprint of every done item (one dict, built at C speed from the columns)."""
        out = {} if self.base is None else dict(zip(self.base["item"], self.base["fingerprint"]))
        for item in self.removed:
            out.pop(item, None)
        out.update((item, marker.get("fingerprint")) for item, marker in self.overlay.items())
        return out

    def record(self, item: str) -> Mapping[str, Any] | None:
        """The item's record in JSON form (for compacted rows, a view that decodes a column when read)."""
        marker = self.overlay.get(item)
        if marker is not None:
            return marker.get("record")
        i = self._row(item)
        if i is None:
            return None
        assert self.base is not None  # a row number is a row of the base
        return self.base["record"][i] if self.fields is None else columns.Row(self.base, self.fields, i)

    def set(self, item: str, marker: dict) -> None:
        self.overlay[item] = marker
        self.removed.discard(item)

    def discard(self, item: str) -> None:
        self.overlay.pop(item, None)
        self.removed.add(item)

    def __getitem__(self, item: str) -> dict:
        marker = self.overlay.get(item)
        if marker is not None:
            return marker
        i = self._row(item)
        if i is None:
            raise KeyError(item)
        record = self.record(item)
        assert self.base is not None and record is not None  # a row of the base has a record
        return {"item": item, **{c: self.base[c][i] for c in MARKER_COLUMNS}, "record": dict(record)}

    def __iter__(self) -> Iterator[str]:
        if self.base is not None:
            yield from (k for k in self.base["item"] if k not in self.removed and k not in self.overlay)
        yield from self.overlay

    def __len__(self) -> int:
        base = sum(1 for k in self.pos if k not in self.removed and k not in self.overlay)
        return base + len(self.overlay)

    def __contains__(self, item: object) -> bool:
        return item in self.overlay or (item not in self.removed and item in self.pos)

    def unchanged(self) -> bool:
        """Nothing laid over the compacted columns."""
        return not self.overlay and not self.removed

    def to_columns(self) -> tuple[dict[str, list | columns.Raw], list[str] | None]:
        """Every marker as columns, rows sorted by item, and the record's fields (None when the records do
        not all have the same fields: one column ``record`` of objects instead)."""
        if self.base is not None and self.unchanged():
            names = ["item", *MARKER_COLUMNS, *(["record"] if self.fields is None else self.fields.values())]
            return {n: self.base.source(n) for n in names}, None if self.fields is None else list(self.fields)
        items = sorted(self)
        # int: a row of the base; dict: an overlay marker (type() dispatch below: mypy does not narrow on it)
        rows: list[Any] = [self.overlay[k] if k in self.overlay else self.pos[k] for k in items]
        out: dict[str, list | columns.Raw] = {"item": items}
        for c in MARKER_COLUMNS:  # col: a base column (None without a base: then every row is a marker)
            col: Any = self.base[c] if self.base is not None and c in self.base else None
            out[c] = [r.get(c) if type(r) is dict else col[r] for r in rows]
        fields = list(self.fields) if self.fields is not None else None
        overlay_records = [r.get("record") for r in rows if type(r) is dict]
        if fields is None and self.base is None and overlay_records and isinstance(overlay_records[0], dict):
            fields = list(overlay_records[0])
        if fields is not None and all(isinstance(rec, dict) and rec.keys() == set(fields) for rec in overlay_records):
            for f in fields:
                col = self.base[RECORD + f] if self.base is not None and self.fields is not None else None
                out[RECORD + f] = [r["record"][f] if type(r) is dict else col[r] for r in rows]
            return out, fields
        out["record"] = [r.get("record") if type(r) is dict else dict(cast(Mapping, self.record(k))) for k, r in zip(items, rows)]
        return out, None


@dataclass
class StageState:
    """A stage's ledger folded: done markers and failure records by item, and the tokens of the
    submissions that started since the last compaction (per item, in order)."""

    done: DoneTable = field(default_factory=DoneTable)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    starts: dict[str, list[str]] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        op, item = event.pop("op"), event["item"]
        if op == "done":
            self.done.set(item, event)
            self.failed.pop(item, None)
            self.starts.pop(item, None)
        elif op == "failed":
            self.failed[item] = event
        elif op == "start":
            self.starts.setdefault(item, []).append(event["token"])
        elif op == "forget":
            self.done.discard(item)


class _Logs:
    """This process's open append-only log per stage folder (shared by its threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fds: dict[Path, tuple[int, int]] = {}  # stage folder -> (pid, fd)

    def append(self, base: Path, line: bytes, durable: bool) -> None:
        """Append one whole line, or nothing: a write cut short (a full disk, a quota) is taken back,
        so the next event does not join a torn line (which would lose both) and the space is freed."""
        with self.lock:
            fd = self._fd(base)
            end = os.fstat(fd).st_size  # this process alone appends to its log (under the lock)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            except BaseException:
                try:
                    os.ftruncate(fd, end)
                except OSError:
                    pass
                raise

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
        failure = self.failure_of(item, fingerprint, exc, attempts, trace, token, file)
        if timed_out and token is not None:
            write_bytes(self._timeout_path(stage, token), json.dumps(failure.as_dict()).encode())
        self.record_failure(stage, failure)
        return failure

    @staticmethod
    def failure_of(
        item: str,
        fingerprint: str,
        exc: BaseException,
        attempts: int,
        trace: str | None = None,
        token: str | None = None,
        file: str | None = None,
    ) -> Failure:
        """The failure record of ``exc`` (not written: ``record_failure``). The file is the one an
        ``InputError`` or a ``DiskFullError`` names, else ``file``."""
        return Failure(
            item=item,
            fingerprint=fingerprint,
            error_class=type(exc).__name__,
            kind=getattr(exc, "kind", "error"),
            message=getattr(exc, "reason", None) or str(exc) or repr(exc),
            file=getattr(exc, "path", None) if isinstance(exc, (InputError, DiskFullError, WorkdirFileError)) else file,
            traceback=trace if trace is not None else "".join(tb.format_exception(exc)),
            attempts=attempts,
            token=token,
        )

    def record_failure(self, stage: str, failure: Failure) -> None:
        self._append(stage, "failed", **failure.as_dict())

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
            header, cols = columns.read(base / STATE)
            if cols is None:  # the layout before columns: one object
                state.done, state.failed = DoneTable(overlay=header["done"]), dict(header["failed"])
            else:
                fields = header["record_fields"]
                needed = {"item", *MARKER_COLUMNS, *([RECORD + f for f in fields] if isinstance(fields, list) else ["record"])}
                if not (fields is None or isinstance(fields, list)) or not cols.keys() >= needed:
                    raise ValueError("no item, fingerprint or record columns")
                state.done, state.failed = DoneTable(cols, fields), dict(header["failed"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            from mirpipe.errors import WorkdirFileError

            raise WorkdirFileError(
                base / STATE, f"not a ledger written by this mirpipe ({exc}); delete the folder to recompute the stage"
            ) from None
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

    def done(self, stage: str) -> DoneTable:
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
    # -- what finalize last read (the driver) -----------------------------------------------
    def stamp(self, stage: str) -> list:
        """Size and modification time of the stage's state and logs: any event recorded changes it."""
        base = self._base(stage)
        out = []
        for path in [base / STATE, *sorted((base / LOG_DIR).glob("*.jsonl"))]:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append([path.name, st.st_size, st.st_mtime_ns])
        return out

    def finalized(self, stage: str) -> str | None:
        try:
            return json.loads((self.root / FINALIZED).read_bytes()).get(stage)
        except (FileNotFoundError, ValueError, AttributeError):
            return None

    def set_finalized(self, stage: str, key: str | None) -> None:
        try:
            keys = json.loads((self.root / FINALIZED).read_bytes())
            keys = keys if isinstance(keys, dict) else {}
        except (FileNotFoundError, ValueError):
            keys = {}
        if keys.get(stage) == key:
            return
        if key is None:
            keys.pop(stage, None)
        else:
            keys[stage] = key
        write_bytes(self.root / FINALIZED, json.dumps(keys, sort_keys=True, indent=1).encode())

    def compact(self, stage: str) -> bool:
        """Fold the logs into ``state.json``, then delete them (and the watchdog's token files
        and older markers). A log a straggler appends to meanwhile loses at most that event: its
        item runs again. False when there was nothing to fold."""
        base = self._base(stage)
        if not base.is_dir():
            return False
        folded = [p for p in (base / LOG_DIR).glob("*.jsonl")] if (base / LOG_DIR).is_dir() else []
        legacy = [e for e in os.scandir(base) if e.name not in (STATE, LOG_DIR, TIMEOUTS_DIR)]
        if not folded and not legacy and not (base / TIMEOUTS_DIR).exists() and not _old_state(base / STATE):
            return False
        state = self.state(stage)
        cols, fields = state.done.to_columns()
        header = {"key": "item", "record_fields": fields, "failed": state.failed}
        write_bytes(base / STATE, columns.dumps(header, cols, len(state.done)))
        for path in folded:
            path.unlink(missing_ok=True)
        for entry in legacy:
            if entry.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        shutil.rmtree(base / TIMEOUTS_DIR, ignore_errors=True)
        return True


def _old_state(path: Path) -> bool:
    """``state.json`` in the layout before columns (rewritten at the next compaction)."""
    try:
        with open(path, "rb") as fh:
            return not columns.is_column_document(fh)
    except FileNotFoundError:
        return False
