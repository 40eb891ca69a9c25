"""Store interface: one entry per track, variant-major then time-major arrays, JSON attributes.

Every array of an entry is shaped ``(V, T, ...)``: V variants stored whole (1 in
feature mode, where pitch shifts are bin offsets taken at sampling time; one per
shift in audio mode), T frames. A patch is a slice ``[v, start:stop]``. Workers
write entries (each atomically, as one file); only the driver writes the index.
Array names may be nested with ``/`` (``targets/chord_root``).

A backend is one module: a ``FeatureStore`` subclass registered with
``@STORE_BACKENDS.register(name=...)``; ``features.store`` names one.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirpipe.errors import WorkdirFileError
from mirpipe.records import Record, RecordError, RecordTable
from mirpipe.registry import Registry

from .atomic import read_cached, read_file, remove_leftovers, write_bytes_if_changed

INDEX_NAME = "index.json"
CHUNK_FRAMES = 1024  # frames per chunk: a whole-track slab is a few reads, a patch one or two


def time_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk shape of a ``(V, T, ...)`` array: one variant, ``CHUNK_FRAMES`` frames, everything else."""
    if len(shape) < 2:
        return tuple(max(1, n) for n in shape)
    return (1, min(CHUNK_FRAMES, max(1, shape[1]))) + tuple(max(1, n) for n in shape[2:])


@dataclass(frozen=True)
class ArraySpec(Record):
    shape: list[int]
    dtype: str

    @classmethod
    def of(cls, array: np.ndarray) -> ArraySpec:
        return cls([int(n) for n in array.shape], str(array.dtype))


@dataclass(frozen=True)
class IndexRow(Record):
    """One entry of the store index (``index.json``), written by the driver after features."""

    track: str
    split: str
    variants: list[int]  # the pitch shift stored in each variant (feature mode: [0])
    shifts: list[int]  # the shifts a patch may be cut at (feature mode: by bin offsets)
    frames: dict[str, int]  # frames per feature (each feature has its own frame grid)
    arrays: dict[str, ArraySpec]
    path: str  # relative to the store root


@dataclass
class Entry:
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    """Round-trip attributes through JSON so both backends store and return the same values."""
    return json.loads(json.dumps(attrs, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


class FeatureStore(ABC):
    backend: str
    suffix: str

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def entry_path(self, track: str) -> Path:
        return self.root / self.entry_relpath(track)

    def entry_relpath(self, track: str) -> str:
        """The entry's path relative to the store root (the index's ``path``)."""
        return f"{track}{self.suffix}"

    def has_entry(self, track: str) -> bool:
        return self.entry_path(track).exists()

    def entry_stamp(self, track: str) -> list[int] | None:
        """(size, mtime_ns) of the entry file, None when it is missing: what a completion record keeps
        so that planning notices a damaged or replaced entry without opening it."""
        try:  # a string path: planning stats every entry, and pathlib costs more than the stat
            st = os.stat(f"{self.root}{os.sep}{self.entry_relpath(track)}")
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def write_entry(self, track: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
        """Write one entry atomically (one file); a concurrent or repeated write of the same entry is harmless."""
        bad = {k: v.shape for k, v in arrays.items() if np.ndim(v) < 2}
        if bad:
            raise ValueError(f"entry {track}: arrays must be (variants, frames, ...), got {bad}")
        final = self.entry_path(track)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._write(final, {k: np.ascontiguousarray(v) for k, v in arrays.items()}, _jsonable(attrs))
        return final

    def read_entry(self, track: str, names: Iterable[str] | None = None) -> Entry:
        """Whole arrays, every variant."""
        with self.opened(track, names) as (arrays, attrs):
            return Entry({n: np.asarray(a[...]) for n, a in arrays.items()}, attrs)

    def read_slab(self, track: str, names: Iterable[str] | None, start: int, stop: int | None, variant: int = 0) -> Entry:
        """Frames [start, stop) of one variant of the named arrays (all arrays when ``names`` is None)."""
        with self.opened(track, names) as (arrays, attrs):
            return Entry({n: np.asarray(a[variant, start:stop]) for n, a in arrays.items()}, attrs)

    @contextmanager
    def opened(self, track: str, names: Iterable[str] | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        handles, attrs, owner = self.open_arrays(track, names)
        try:
            yield handles, attrs
        finally:
            if owner is not None:
                owner.close()

    @abstractmethod
    def _write(self, final: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None: ...

    @abstractmethod
    def open_arrays(self, track: str, names: Iterable[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """Sliceable handles of the named arrays (all when None), the attributes, and a
        ``close()``-able owner (or None).

        For readers that cut many slabs from the same entries (streaming): opening
        costs metadata reads that one open handle pays only once.
        """

    def read_attrs(self, track: str) -> dict[str, Any]:
        with self.opened(track, ()) as (_, attrs):
            return attrs

    @abstractmethod
    def is_valid(self, track: str) -> bool:
        """True when the entry opens and holds all its chunks (a killed writer leaves it invalid)."""

    # -- index (driver only) -------------------------------------------------
    def write_index(self, rows: list[IndexRow]) -> None:
        self.write_index_json([row.to_json() for row in rows])

    def write_index_json(self, rows: Iterable[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
        """The index from rows in JSON form (the fields of ``IndexRow``) and document-level ``extra``
        values (the corpus's class vocabularies); the file is left as it is when it already holds them."""
        self.write_index_table(RecordTable.from_dicts(IndexRow, "track", rows, extra={**(extra or {}), "backend": self.backend}))

    def write_index_table(self, table: RecordTable[IndexRow]) -> None:
        """The index as a column document (left as it is when the file already holds it)."""
        table.extra["backend"] = self.backend
        write_bytes_if_changed(self.root / INDEX_NAME, table.to_bytes())

    def read_index(self) -> RecordTable[IndexRow]:
        """The index rows by track (empty before features ran), read once per version of the file
        in a process; a malformed index is a ``WorkdirFileError``."""
        path = self.root / INDEX_NAME
        if not path.exists():
            return RecordTable.from_rows(IndexRow, "track", [])
        return read_cached(path, _load_index)

    def remove_leftovers(self) -> int:
        return remove_leftovers(self.root)


def _load_index(path: Path) -> RecordTable[IndexRow]:
    try:
        return RecordTable.from_bytes(IndexRow, "track", read_file(path), rows_key="entries")
    except (KeyError, TypeError, RecordError) as exc:
        raise WorkdirFileError(path, f"not a store index written by this mirpipe ({exc}); rerun features") from None


STORE_BACKENDS: Registry[type[FeatureStore]] = Registry(
    "store backend",
    builtin=("mirpipe.storage.zarr_store", "mirpipe.storage.hdf5_store", "mirpipe.storage.memory_store"),
    entry_points="mirpipe.store_backends",
)


def open_store(backend: str, root: Path | str) -> FeatureStore:
    """The store of a registered backend at ``root`` (for ``memory``, the name of a preloaded store)."""
    return STORE_BACKENDS.get(backend)(root)
