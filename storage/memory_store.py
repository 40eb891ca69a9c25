"""In-memory backend: entries held in this process under a store name (the ``root``).

The upper bound in benchmarks (no decoding, no file system) and a scratch store for
tests. Streamers carry the store name, never the arrays; each process has its own
entries, so it suits in-process runs only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mirpipe.records import RecordTable

from .base import STORE_BACKENDS, Entry, FeatureStore, IndexRow

_ENTRIES: dict[str, dict[str, Entry]] = {}


@STORE_BACKENDS.register(name="memory")
class MemoryStore(FeatureStore):
    backend = "memory"
    suffix = ""

    def __init__(self, root: Path | str):
        super().__init__(root)
        self.entries = _ENTRIES.setdefault(str(root), {})

    def has_entry(self, track: str) -> bool:
        return track in self.entries

    def _write(self, final: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        self.entries[final.name] = Entry({k: np.array(v) for k, v in arrays.items()}, attrs)

    def open_arrays(self, track: str, names: Iterable[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        try:
            entry = self.entries[track]
        except KeyError:
            raise FileNotFoundError(f"memory store {self.root}: no entry {track}") from None
        names = list(entry.arrays) if names is None else list(names)
        return {n: entry.arrays[n] for n in names}, dict(entry.attrs), None

    def is_valid(self, track: str) -> bool:
        return self.has_entry(track)

    def entry_stamp(self, track: str) -> list[int] | None:
        return [0, 0] if self.has_entry(track) else None

    def write_index_table(self, table: RecordTable[IndexRow]) -> None:
        self.index = table

    def read_index(self) -> RecordTable[IndexRow]:
        return getattr(self, "index", None) or RecordTable.from_rows(IndexRow, "track", [])

    def remove_leftovers(self) -> int:
        return 0


def preload_memory(name: str, store: FeatureStore, keys: Sequence, names: Sequence[str]) -> None:
    """Copy entries (``keys`` with a ``track``) of another store into the memory store ``name``."""
    memory = MemoryStore(name)
    for k in keys:
        memory.entries[k.track] = store.read_entry(k.track, names)
