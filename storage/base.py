"""Store interface: one entry per (track, variant), time-major arrays, JSON attributes.

Workers write entries (each atomically, into its own path); only the driver
writes the index. Array names may be nested with ``/`` (``targets/chord_root``).

A backend is one module: a ``FeatureStore`` subclass registered with
``@STORE_BACKENDS.register(name=...)``; ``features.store`` names one.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mirpipe.errors import WorkdirFileError
from mirpipe.records import Record, RecordError
from mirpipe.registry import Registry

from .atomic import read_json, remove_leftovers, write_json

INDEX_NAME = "index.json"
CHUNK_FRAMES = 1024  # frames per chunk: a whole-track slab is a few reads, a patch one or two


def time_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk shape of a time-major array: ``CHUNK_FRAMES`` frames by everything else."""
    return (min(CHUNK_FRAMES, max(1, shape[0])),) + tuple(shape[1:]) if shape else ()


@dataclass(frozen=True)
class ArraySpec(Record):
    shape: list[int]
    dtype: str

    @classmethod
    def of(cls, array: np.ndarray) -> "ArraySpec":
        return cls([int(n) for n in array.shape], str(array.dtype))


@dataclass(frozen=True)
class IndexRow(Record):
    """One entry of the store index (``index.json``), written by the driver after features."""

    track: str
    variant: str
    semitones: int
    split: str
    n_frames: int
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

    def entry_path(self, track: str, variant: str) -> Path:
        return self.root / track / f"{variant}{self.suffix}"

    def has_entry(self, track: str, variant: str) -> bool:
        return self.entry_path(track, variant).exists()

    def write_entry(self, track: str, variant: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
        """Write one entry atomically; a concurrent or repeated write of the same entry is harmless."""
        final = self.entry_path(track, variant)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._write(final, {k: np.ascontiguousarray(v) for k, v in arrays.items()}, _jsonable(attrs))
        return final

    def read_entry(self, track: str, variant: str, names: Iterable[str] | None = None) -> Entry:
        return self.read_slab(track, variant, names, 0, None)

    @abstractmethod
    def _write(self, final: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None: ...

    @abstractmethod
    def read_slab(
        self, track: str, variant: str, names: Iterable[str] | None, start: int, stop: int | None
    ) -> Entry:
        """Frames [start, stop) of the named arrays (all arrays when ``names`` is None)."""

    @abstractmethod
    def open_arrays(self, track: str, variant: str, names: Iterable[str]) -> tuple[dict[str, Any], Any]:
        """Sliceable handles of the named arrays and a ``close()``-able owner (or None).

        For readers that cut many slabs from the same entries (streaming): opening
        costs metadata reads that one open handle pays only once.
        """

    @abstractmethod
    def read_attrs(self, track: str, variant: str) -> dict[str, Any]: ...

    @abstractmethod
    def is_valid(self, track: str, variant: str) -> bool:
        """True when the entry opens and holds its arrays (a killed writer leaves it invalid)."""

    # -- index (driver only) -------------------------------------------------
    def write_index(self, rows: list[IndexRow]) -> None:
        write_json(self.root / INDEX_NAME, {"backend": self.backend, "entries": [r.to_json() for r in rows]})

    def read_index(self) -> list[IndexRow]:
        """The index rows ([] before features ran); a malformed index is a ``WorkdirFileError``."""
        path = self.root / INDEX_NAME
        if not path.exists():
            return []
        try:
            return [IndexRow.from_json(row) for row in read_json(path)["entries"]]
        except (KeyError, TypeError, RecordError) as exc:
            raise WorkdirFileError(path, f"not a store index written by this mirpipe ({exc}); rerun features") from None

    def remove_leftovers(self) -> int:
        return remove_leftovers(self.root)


STORE_BACKENDS: Registry[type[FeatureStore]] = Registry(
    "store backend",
    builtin=("mirpipe.storage.zarr_store", "mirpipe.storage.hdf5_store", "mirpipe.storage.memory_store"),
    entry_points="mirpipe.store_backends",
)


def open_store(backend: str, root: Path | str) -> FeatureStore:
    """The store of a registered backend at ``root`` (for ``memory``, the name of a preloaded store)."""
    return STORE_BACKENDS.get(backend)(root)
