"""Typed records: the data that crosses stages (manifest rows, store index rows, the
record each stage's ``run`` returns) as frozen dataclasses instead of string-keyed dicts.

A record is written as plain JSON (the ledger marker, ``manifest.json``, the store
index) and read back with ``from_json``, which refuses missing and unknown keys, so a
misspelt field fails where it is read rather than as a ``KeyError`` three stages later.
Fields typed as another record, or a list or dict of them, are rebuilt too.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from functools import cache
from typing import Any, TypeVar, cast

from mirpipe import columns as columns_format

R = TypeVar("R", bound="Record")
_F = TypeVar("_F", bound=Callable[..., Any])


def _per_class(fn: _F) -> _F:
    """``functools.cache`` typed as the function it wraps: mypy does not take a record class for
    Hashable (it checks the class against its instances' ``__hash__``)."""
    return cast(_F, cache(fn))


class RecordError(ValueError):
    """JSON that does not have the fields of the record it should be."""


@dataclass(frozen=True)
class Record:
    """Base of every typed record (subclasses are ``@dataclass(frozen=True)``)."""

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (nested records as objects); leaves are shared, not copied."""
        return {name: _dump(getattr(self, name)) for name in _fields(type(self))}

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        if type(data) is not dict:  # (checked first: isinstance against typing's Mapping is slow)
            if isinstance(data, cls):
                return data
        if not isinstance(data, (dict, Mapping)):
            raise RecordError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        names, required, loaders = _plan(cls)
        keys = data.keys()
        if not (required <= keys and keys <= names):
            missing, unknown = sorted(required - keys), sorted(keys - names)
            raise RecordError(
                f"{cls.__name__}: "
                + "; ".join(
                    part for part in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "") if part
                )
            )
        if not loaders:  # no nested records: the JSON values are the fields (the common, fast case)
            return cls(**data)
        return cls(**{k: (loaders[k](v) if k in loaders and v is not None else v) for k, v in data.items()})

    def replace(self: R, **changes: Any) -> R:
        return dataclasses.replace(self, **changes)


_SCALARS = (str, int, float, bool, type(None))


def _dump(value: Any) -> Any:
    """A field's JSON value: records and dataclasses as objects, lists, tuples and dicts walked."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, Record):
        return value.to_json()
    if kind is list or kind is tuple:
        return [_dump(v) for v in value]
    if kind is dict:
        return {k: _dump(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


@_per_class
def _fields(cls: type) -> dict[str, tuple[Any, bool]]:
    """Field name -> (resolved type, has a default)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints[f.name], f.default is not MISSING or f.default_factory is not MISSING) for f in dataclasses.fields(cls)
    }


def record_fields(cls: type) -> list[str]:
    """A record type's field names, in order."""
    return list(_fields(cls))


@_per_class
def _plan(cls: type) -> tuple[frozenset[str], frozenset[str], dict[str, Callable[[Any], Any]]]:
    """Per record class, once: its field names, the required ones, and a loader for each field
    whose type holds records (the other JSON values are taken as they are)."""
    fields = _fields(cls)
    loaders = {name: loader for name, (tp, _) in fields.items() if (loader := _loader(tp)) is not None}
    return frozenset(fields), frozenset(n for n, (_, has_default) in fields.items() if not has_default), loaders


def _loader(tp: Any) -> Callable[[Any], Any] | None:
    """How to rebuild the nested records in a JSON value of type ``tp``; None when there are none."""
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple) and args:
        inner = _loader(args[0])
        if inner is None:
            return (lambda v: tuple(v) if isinstance(v, list) else v) if origin is tuple else None
        load_item = inner  # narrowed to a callable (mypy drops the narrowing of inner: it is reassigned below)
        return lambda v: origin(load_item(x) if x is not None else None for x in v) if type(v) is list else v
    if origin is dict and len(args) == 2:
        inner = _loader(args[1])
        if inner is None:
            return None
        return lambda v: {k: (inner(x) if x is not None else None) for k, x in v.items()} if isinstance(v, (dict, Mapping)) else v
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, Record):
                return arg.from_json
    return None


class RecordTable(Mapping[str, R]):
    """Records of one type stored by column and keyed by one field (the manifest, the store index).

    Stored as a column document (``mirpipe.columns``: one line per column), a table decodes only the
    columns it is asked for, and a row is rebuilt as its record only when it is asked for
    (``table[key]``); the hot loops of planning read single fields (``value``) or whole columns
    (``column``) without building records at all. Tables are read-only.
    """

    FORMAT = columns_format.FORMAT

    def __init__(self, record_type: type[R], key: str, columns: Mapping[str, list], extra: dict[str, Any] | None = None):
        names, required, _ = _plan(record_type)
        given = columns.keys()
        if not (required <= given and given <= names and key in given):
            missing, unknown = sorted(required - given), sorted(given - names)
            raise RecordError(f"{record_type.__name__} table: missing columns {missing}, unknown {unknown}")
        if not isinstance(columns, columns_format.Columns) or columns.rows is None:  # decoded: check them now
            lengths = {len(columns[n]) for n in given}
            if len(lengths) > 1:
                raise RecordError(f"{record_type.__name__} table: columns of different lengths {sorted(lengths)}")
            columns = columns_format.Columns(decoded={n: columns[n] for n in given}, rows=lengths.pop() if lengths else 0)
        self.record_type, self.key, self.columns = record_type, key, columns
        self.extra = dict(extra or {})  # document-level values beside the columns (the manifest's scan)
        try:
            self._pos = {k: i for i, k in enumerate(columns[key])}
        except columns_format.ColumnError as exc:
            raise RecordError(f"{record_type.__name__} table: {exc}") from None
        self._rows: dict[str, R] = {}

    @classmethod
    def from_rows(
        cls, record_type: type[R], key: str, rows: typing.Iterable[R], extra: dict[str, Any] | None = None
    ) -> RecordTable[R]:
        names = list(_fields(record_type))
        dumped = [row.to_json() for row in rows]
        return cls(record_type, key, {n: [d[n] for d in dumped] for n in names}, extra)

    @classmethod
    def from_dicts(
        cls, record_type: type[R], key: str, rows: typing.Iterable[Mapping[str, Any]], extra: dict[str, Any] | None = None
    ) -> RecordTable[R]:
        """A table from rows already in JSON form (ledger records): nothing is built or dumped."""
        names = list(_fields(record_type))
        columns: dict[str, list] = {n: [] for n in names}
        for row in rows:
            if row.keys() != columns.keys():
                raise RecordError(f"{record_type.__name__} table: a row with fields {sorted(row)}, expected {sorted(names)}")
            for n in names:
                columns[n].append(row[n])
        return cls(record_type, key, columns, extra)

    @classmethod
    def from_columns(
        cls,
        record_type: type[R],
        key: str,
        columns: Mapping[str, list | columns_format.Raw],
        rows: int,
        extra: dict[str, Any] | None = None,
    ) -> RecordTable[R]:
        """A table from whole columns, some of them JSON text copied from another column document
        (``Raw``: a rerun that changes nothing writes the manifest from the ledger's bytes)."""
        raw = {n: c.text for n, c in columns.items() if isinstance(c, columns_format.Raw)}
        decoded = {n: c for n, c in columns.items() if not isinstance(c, columns_format.Raw)}
        if any(len(c) != rows for c in decoded.values()):
            raise RecordError(f"{record_type.__name__} table: columns of different lengths")
        return cls(record_type, key, columns_format.Columns(raw, decoded, rows, order=list(columns)), extra)

    @classmethod
    def from_json(cls, record_type: type[R], key: str, data: Any, rows_key: str | None = None) -> RecordTable[R]:
        """A table from its JSON document, or from a list of row objects under ``rows_key`` (the
        layout before tables), keyed by the field ``key``."""
        if not isinstance(data, Mapping):
            raise RecordError(f"{record_type.__name__} table: expected an object, got {type(data).__name__}")
        if data.get("format") == cls.FORMAT:
            if not isinstance(data.get("columns"), Mapping) or not isinstance(data.get("key"), str):
                raise RecordError(f"{record_type.__name__} table: no columns")
            extra = {k: v for k, v in data.items() if k not in ("format", "key", "columns", "rows")}
            return cls(record_type, key, dict(data["columns"]), extra)
        if rows_key is not None and isinstance(data.get(rows_key), list):
            extra = {k: v for k, v in data.items() if k != rows_key}
            return cls.from_rows(record_type, key, [record_type.from_json(r) for r in data[rows_key]], extra)
        raise RecordError(f"{record_type.__name__} table: not a table of this mirpipe")

    @classmethod
    def from_bytes(cls, record_type: type[R], key: str, data: bytes, rows_key: str | None = None) -> RecordTable[R]:
        """A table from a file's bytes: a column document (its columns decoded when used), or one of
        the older JSON layouts ``from_json`` reads."""
        try:
            header, cols = columns_format.loads(data)
        except columns_format.ColumnError as exc:
            raise RecordError(f"{record_type.__name__} table: {exc}") from None
        if cols is None:
            return cls.from_json(record_type, key, header, rows_key)
        if not isinstance(header.get("key"), str):
            raise RecordError(f"{record_type.__name__} table: no key")
        extra = {k: v for k, v in header.items() if k not in ("format", "key", "rows")}
        return cls(record_type, key, cols, extra)

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "format": self.FORMAT, "key": self.key, "columns": {n: self.columns[n] for n in self.columns}}

    def to_bytes(self) -> bytes:
        """The table as a column document (columns read from a file and unchanged are copied as text)."""
        return columns_format.dumps({**self.extra, "key": self.key}, {n: self.columns.source(n) for n in self.columns}, len(self))

    def __getitem__(self, key: str) -> R:
        row = self._rows.get(key)
        if row is None:
            i = self._pos[key]
            row = self._rows[key] = self.record_type.from_json({n: col[i] for n, col in self.columns.items()})
        return row

    def __iter__(self):
        return iter(self.columns[self.key])

    def __len__(self) -> int:
        return len(self._pos)

    def __contains__(self, key: object) -> bool:
        return key in self._pos

    def position(self, key: str) -> int | None:
        """The row of ``key`` in every column (None when absent)."""
        return self._pos.get(key)

    def value(self, key: str, name: str) -> Any:
        """One field of one row as stored (JSON), without building the record."""
        return self.columns[name][self._pos[key]]

    def column(self, name: str) -> list:
        """A field of every row, in row order (``column(table.key)`` are the keys)."""
        return self.columns[name]


class RecordView:
    """A record read from its JSON form one field at a time: ``view.audio`` is what the typed record's
    ``audio`` would be (nested records built), without building the others. Planning checks each done
    item's outputs through one (``Stage.outputs_valid``); ``fits`` says first whether the fields are
    those of the record type."""

    __slots__ = ("_type", "_data")

    def __init__(self, record_type: type[Record], data: Mapping[str, Any]):
        object.__setattr__(self, "_type", record_type)
        object.__setattr__(self, "_data", data)

    @staticmethod
    def fits(record_type: type[Record], keys: typing.AbstractSet[str]) -> bool:
        names, required, _ = _plan(record_type)
        return required <= keys and keys <= names

    def __getattr__(self, name: str) -> Any:
        loader = _view_loaders(self._type).get(name, _NO_FIELD)
        if loader is _NO_FIELD:
            raise AttributeError(f"{self._type.__name__} has no field {name!r}")
        try:
            value = self._data[name]
        except KeyError:  # a field left to its default
            return getattr(self._type.from_json(self._data), name)
        return loader(value) if loader is not None and value is not None else value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a record view is read-only")

    def __repr__(self) -> str:
        return f"RecordView({self._type.__name__})"


_NO_FIELD: Any = object()  # Any: a sentinel beside the loaders (callables or None)


@_per_class
def _view_loaders(cls: type) -> dict[str, Callable[[Any], Any] | None]:
    """Per record class: each field's loader (None: the JSON value is the field)."""
    names, _, loaders = _plan(cls)
    return {n: loaders.get(n) for n in names}


# -- records that cross rooms: checkpoints, item results, status rows, training progress --------------------------


@dataclass(frozen=True)
class CheckpointMeta(Record):
    """What a checkpoint holds beside the weights to rebuild and decode its model (``meta``): built once
    by training, changed with ``replace`` (tuning adds to ``state``), stored as plain JSON values
    (``to_json``: what ``torch.load(weights_only=True)`` reads back). ``model`` and ``n_bins`` are what
    every reader needs; the rest has the value a reader assumed when it was absent."""

    model: dict[str, Any]
    n_bins: int
    task: str = ""
    state: dict[str, Any] = dataclasses.field(default_factory=dict)  # the task's fitted/tuned decoding state
    vocabulary: dict[str, Any] | None = None  # the classes trained on (None: the task's own)
    train_entries: int | None = None
    val_entries: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The keys in the order training has always written them."""
        return {
            "task": self.task,
            "model": self.model,
            "n_bins": self.n_bins,
            "state": self.state,
            "vocabulary": self.vocabulary,
            "train_entries": self.train_entries,
            "val_entries": self.val_entries,
        }


@dataclass(frozen=True)
class ItemResult(Record):
    """What running one item returns to the runner (``pipeline.execute.execute_item``): done with the
    stage's record in JSON form, or failed with the ledger's failure row."""

    status: str  # "done" | "failed" | "stopped" (saved and stopped on request: resumed by the next run)
    item: str | None = None
    record: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    seconds: float = 0.0
    attempts: int | None = None

    @property
    def done(self) -> bool:
        return self.status == "done"


@dataclass(frozen=True)
class StatusRow(Record):
    """One stage in ``mirpipe status`` (the table and ``--json``): item counts, failures, notes and,
    where the stage has them, details (absent from the JSON when there are none)."""

    stage: str
    total: int
    done: int
    running: int
    pending: int
    failed: int
    quarantined: int
    failures: list[dict[str, Any]]
    notes: list[str]
    details: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if out["details"] is None:
            del out["details"]
        return out


@dataclass(frozen=True)
class TrainingProgress(Record):
    """A task's last epoch of training (``train/<task>/progress.json``, read by ``mirpipe status``)."""

    task: str
    epoch: int
    max_epochs: int
    step: int
    total_steps: int
    train_loss: float | None
    val_loss: float | None
    metric: str
    value: float | None
    best: float | None
    best_step: int
    lr: float
    patches_per_s: float | None
    finished: bool
    tensorboard: str | None
    updated: str


@dataclass(frozen=True)
class TaskScores(Record):
    """A task's pooled test scores (``reports/<task>/scores.json``, written by evaluate, read by the CLI).

    On disk the pooled metrics sit at the top level beside the fixed keys, and so do the pooled figures
    of ``Scorer.pool_evidence`` (which override a metric of the same name; ``notes`` is a list of lines
    printed under the table). ``from_json`` reads a file of any mirpipe version: a number or null at the
    top level is a metric, anything else unknown is kept in ``extra``."""

    metrics: dict[str, float | None]  # pooled metric -> value (None: nothing to pool)
    columns: list[str]  # what the summary table shows, in order
    n_tracks: int
    seconds: float
    tracks: dict[str, dict[str, float | None]]  # track -> metric -> score
    scored_by: str = "mir_eval, duration-weighted"  # files written before the key existed
    weighting: str = ""
    baseline: dict[str, Any] | None = None  # a reference method's pooled scores ("name", metrics, "tracks")
    notes: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # further pooled figures (JSON-able)

    _FIXED = ("columns", "scored_by", "n_tracks", "seconds", "weighting", "tracks", "baseline", "notes")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.metrics,
            "columns": self.columns,
            "scored_by": self.scored_by,
            "n_tracks": self.n_tracks,
            "seconds": self.seconds,
            "weighting": self.weighting,
            "tracks": self.tracks,
        }
        if self.baseline is not None:
            out["baseline"] = self.baseline
        out.update(self.extra)
        if self.notes:
            out["notes"] = self.notes
        return out

    @classmethod
    def from_json(cls, data: Any) -> TaskScores:
        if not isinstance(data, Mapping):
            raise RecordError(f"TaskScores: expected an object, got {type(data).__name__}")
        missing = sorted({"n_tracks", "seconds"} - data.keys())
        if missing:
            raise RecordError(f"TaskScores: missing {missing}")
        metrics = {
            k: v
            for k, v in data.items()
            if k not in cls._FIXED and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))
        }
        extra = {k: v for k, v in data.items() if k not in cls._FIXED and k not in metrics}
        columns = data.get("columns") or [k for k, v in metrics.items() if isinstance(v, float)]
        return cls(
            metrics=metrics,
            columns=list(columns),
            n_tracks=int(data["n_tracks"]),
            seconds=float(data["seconds"]),
            tracks=dict(data.get("tracks") or {}),
            scored_by=data.get("scored_by", cls.scored_by),
            weighting=data.get("weighting", ""),
            baseline=data.get("baseline"),
            notes=list(data.get("notes") or []),
            extra=extra,
        )
