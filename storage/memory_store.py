"""In-memory backend: entries held in this process under a store name (the ``root``).

The upper bound in benchmarks (no decoding, no file system) and a scratch store for
tests. Streamers carry the store name, never the arrays; each process has its own
entries, so it suits in-process runs only. An entry's two files are two keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mirpipe.records import RecordTable

from .base import FEATURES, STORE_BACKENDS, ArraySink, Entry, FeatureStore, IndexRow

_ENTRIES: dict[str, dict[str, Entry]] = {}


class _MemorySink(ArraySink):
    def __init__(self, entries: dict[str, Entry], key: str, attrs: dict[str, Any]):
        self.entry = entries[key] = Entry({}, attrs)

    def create(self, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...]) -> None:
        self.entry.arrays[name] = np.zeros(shape, dtype)

    def put(self, name: str, variant: int, start: int, frames: np.ndarray) -> None:
        self.entry.arrays[name][variant, start : start + len(frames)] = frames

    def close(self) -> None:
        pass


@STORE_BACKENDS.register(name="memory")
class MemoryStore(FeatureStore):
    backend = "memory"
    suffix = ""

    def __init__(self, root: Path | str):
        super().__init__(root)
        self.entries = _ENTRIES.setdefault(str(root), {})

    def _key(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    def has_part(self, track: str, part: str) -> bool:
        return self._key(self.entry_path(track, part)) in self.entries

    def has_entry(self, track: str) -> bool:
        return self.has_part(track, FEATURES)

    def _sink(self, tmp: Path, attrs: dict[str, Any]) -> ArraySink:
        return _MemorySink(self.entries, self._key(tmp), attrs)

    def _publish(self, tmp: Path, final: Path) -> None:
        self.entries[self._key(final)] = self.entries.pop(self._key(tmp))

    def remove_part(self, track: str, part: str) -> None:
        self.entries.pop(self._key(self.entry_path(track, part)), None)

    def _open(self, path: Path, names: list[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        try:
            entry = self.entries[self._key(path)]
        except KeyError:
            raise FileNotFoundError(f"memory store {self.root}: no entry {self._key(path)}") from None
        names = list(entry.arrays) if names is None else list(names)
        return {n: entry.arrays[n] for n in names}, dict(entry.attrs), None

    def _valid(self, path: Path) -> bool:
        return self._key(path) in self.entries

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
        memory.write_entry(k.track, dict(store.read_entry(k.track, names).arrays), store.read_attrs(k.track))
