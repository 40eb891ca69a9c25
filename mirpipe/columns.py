"""Column documents: one JSON object whose columns are each one line, so a reader decodes only the
columns it asks for, and a writer copies a column it did not change without decoding it.

The layout (valid JSON, read by any JSON reader as one object)::

    {...header values...,"format":"columns","key":"track","rows":3,"columns":{
    "track":["a","b","c"],
    "split":["train","test","val"]
    }}

The header line holds the document's small values; each following line is one column, a JSON
array (compact JSON never holds a raw newline: strings escape it). At 100,000 rows the ledger's
state, the manifest and the store index are tens of megabytes of JSON; planning reads a few of
their columns, and a rerun that changes nothing writes them back from the bytes it read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

FORMAT = "columns"
_OPEN = b'"columns":{'
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_DUMPS = json.JSONEncoder(separators=(",", ":"), default=str).encode


class ColumnError(ValueError):
    """A column document that is not well formed."""


class Raw:
    """A column's JSON text, copied as it is when written again."""

    __slots__ = ("text",)

    def __init__(self, text: bytes):
        self.text = text


class Columns(Mapping[str, list]):
    """Columns by name, each decoded on first use (and its JSON text kept for writing it back)."""

    def __init__(
        self,
        raw: Mapping[str, bytes] | None = None,
        decoded: Mapping[str, list] | None = None,
        rows: int | None = None,
        order: list[str] | None = None,
    ):
        self._raw = dict(raw or {})
        self._decoded = dict(decoded or {})
        self.rows = rows
        self._order = list(order) if order is not None else [*self._raw, *(n for n in self._decoded if n not in self._raw)]

    def __getitem__(self, name: str) -> list:
        col = self._decoded.get(name)
        if col is None:
            text = self._raw[name]  # KeyError for an unknown column, as a dict
            try:
                col = json.loads(text)
            except ValueError as exc:
                raise ColumnError(f"column {name!r}: {exc}") from None
            if not isinstance(col, list) or (self.rows is not None and len(col) != self.rows):
                raise ColumnError(
                    f"column {name!r}: expected {self.rows} values, got "
                    f"{len(col) if isinstance(col, list) else type(col).__name__}"
                )
            self._decoded[name] = col
        return col

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._raw or name in self._decoded

    def raw(self, name: str) -> bytes:
        """The column's JSON text (encoded when it was never read from a file)."""
        text = self._raw.get(name)
        if text is None:
            text = self._raw[name] = _DUMPS(self._decoded[name]).encode()
        return text

    def source(self, name: str) -> Raw | list:
        """What to write for the column: its text when it was read from a file (columns are read-only:
        nobody changes a decoded column in place), else the list."""
        return Raw(self._raw[name]) if name in self._raw else self._decoded[name]


def dumps(header: Mapping[str, Any], columns: Mapping[str, list | Raw], rows: int) -> bytes:
    """A column document: ``header`` values on the first line, then one line per column."""
    head = {k: v for k, v in header.items() if k not in ("format", "rows", "columns")}
    head.update(format=FORMAT, rows=rows)
    parts = [_DUMPS(head)[:-1].encode() + b"," + _OPEN]
    lines = []
    for name, col in columns.items():
        if not _NAME.fullmatch(name):
            raise ColumnError(f"column name {name!r}: letters, digits, _ . - only")
        text = col.text if isinstance(col, Raw) else _DUMPS(col).encode()
        lines.append(b'"' + name.encode() + b'":' + text)
    parts.append(b",\n".join(lines))
    return b"\n".join(parts) + b"\n}}\n"


def loads(data: bytes) -> tuple[dict[str, Any], Columns | None]:
    """(header, columns) of a column document; a document in one line (an older writer, or any JSON
    object with ``"format": "columns"``) is decoded whole. Any other JSON object comes back whole as
    the header, with columns None (the caller reads its older layout)."""
    first, sep, rest = data.partition(b"\n")
    if first.endswith(_OPEN) and sep:
        try:
            header = json.loads(first + b"}}")
        except ValueError as exc:
            raise ColumnError(f"header: {exc}") from None
        body = rest.rstrip()
        if not body.endswith(b"}}"):
            raise ColumnError("cut short (no closing line)")
        raw: dict[str, bytes] = {}
        for line in body[:-2].split(b"\n"):
            line = line.rstrip(b",\r ")
            if not line:
                continue
            name, colon, text = line.partition(b":")
            if not (colon and name.startswith(b'"') and name.endswith(b'"')):
                raise ColumnError(f"not a column line: {line[:40]!r}")
            raw[name[1:-1].decode()] = text
        return header, Columns(raw, rows=header.get("rows"))
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ColumnError(str(exc)) from None
    if not isinstance(doc, dict):
        raise ColumnError(f"expected an object, got {type(doc).__name__}")
    if doc.get("format") == FORMAT and isinstance(doc.get("columns"), dict):
        cols = doc.pop("columns")
        return doc, Columns(decoded=cols, rows=doc.get("rows"))
    return doc, None


def read(path: Path | str) -> tuple[dict[str, Any], Columns | None]:
    return loads(Path(path).read_bytes())


class Row(Mapping[str, Any]):
    """One row of a column document seen as an object: ``fields`` maps each of its keys to the
    column that holds it (the ledger keeps a record's field ``audio`` in the column ``record.audio``)."""

    __slots__ = ("columns", "fields", "index")

    def __init__(self, columns: Columns, fields: Mapping[str, str], index: int):
        self.columns, self.fields, self.index = columns, fields, index

    def __getitem__(self, key: str) -> Any:
        return self.columns[self.fields[key]][self.index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __contains__(self, key: object) -> bool:
        return key in self.fields


def _whole(rows: list[Mapping[str, Any]]) -> Row | None:
    """The first row, when ``rows`` are every row of one column document in its order."""
    first = rows[0] if rows else None
    if (
        type(first) is Row
        and first.columns.rows == len(rows)
        and all(
            type(r) is Row and r.columns is first.columns and r.fields is first.fields and r.index == i
            for i, r in enumerate(rows)
        )
    ):
        return first
    return None


def gather(rows: list[Mapping[str, Any]], names: list[str]) -> dict[str, list | Raw]:
    """The named fields of ``rows`` as columns. When the rows are every row of one column document,
    in its order (a rerun whose items are all done), each column is that document's text, undecoded."""
    first = _whole(rows)
    if first is not None:
        return {n: Raw(first.columns.raw(first.fields[n])) for n in names}
    return {n: [r[n] for r in rows] for n in names}


_MISSING: Any = object()


def values(rows: list[Mapping[str, Any]], name: str, default: Any = _MISSING) -> list:
    """One field of ``rows`` as a list (the decoded column itself when the rows are a whole document);
    ``default`` for rows without it (else a KeyError)."""
    first = _whole(rows)
    if first is not None and name in first.fields:
        return first.columns[first.fields[name]]
    if default is _MISSING:
        return [r[name] for r in rows]
    return [r.get(name, default) for r in rows]


def is_column_document(fh) -> bool:
    """Whether an open file (at its start) is a column document with one line per column."""
    return fh.readline().rstrip(b"\n").endswith(_OPEN)
