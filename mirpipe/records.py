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
from dataclasses import MISSING, dataclass
from functools import cache
from typing import Any, Mapping, TypeVar

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """JSON that does not have the fields of the record it should be."""


@dataclass(frozen=True)
class Record:
    """Base of every typed record (subclasses are ``@dataclass(frozen=True)``)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise RecordError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        fields = _fields(cls)
        required = {n for n, (_, has_default) in fields.items() if not has_default}
        missing, unknown = sorted(required - data.keys()), sorted(data.keys() - fields.keys())
        if missing or unknown:
            raise RecordError(f"{cls.__name__}: " + "; ".join(
                part for part in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "") if part))
        return cls(**{k: _load(fields[k][0], v) for k, v in data.items()})

    def replace(self: R, **changes: Any) -> R:
        return dataclasses.replace(self, **changes)


@cache
def _fields(cls: type) -> dict[str, tuple[Any, bool]]:
    """Field name -> (resolved type, has a default)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints[f.name], f.default is not MISSING or f.default_factory is not MISSING)
        for f in dataclasses.fields(cls)
    }


def _load(tp: Any, value: Any) -> Any:
    """Rebuild nested records inside a JSON value according to the field's type."""
    if value is None:
        return None
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple) and args and isinstance(value, list):
        return origin(_load(args[0], v) for v in value)
    if origin is dict and len(args) == 2 and isinstance(value, Mapping):
        return {k: _load(args[1], v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, Record):
                return arg.from_json(value)
    return value
