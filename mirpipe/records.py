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
from typing import Any, Callable, Mapping, TypeVar

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
        names, required, loaders = _plan(cls)
        keys = data.keys()
        if not (required <= keys and keys <= names):
            missing, unknown = sorted(required - keys), sorted(keys - names)
            raise RecordError(f"{cls.__name__}: " + "; ".join(
                part for part in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "") if part))
        if not loaders:  # no nested records: the JSON values are the fields (the common, fast case)
            return cls(**data)
        return cls(**{k: (loaders[k](v) if k in loaders and v is not None else v) for k, v in data.items()})

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


@cache
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
        return lambda v: origin(inner(x) if x is not None else None for x in v) if isinstance(v, list) else v
    if origin is dict and len(args) == 2:
        inner = _loader(args[1])
        if inner is None:
            return None
        return lambda v: {k: (inner(x) if x is not None else None) for k, x in v.items()} if isinstance(v, Mapping) else v
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, Record):
                return arg.from_json
    return None
