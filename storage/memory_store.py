"""In-memory backend: entries held in this process under a store name (the ``root``).

The upper bound in benchmarks (no decoding, no file system) and a scratch store for
tests. Streamers carry the store name, never the arrays; each process has its own
entries, so it suits in-process runs only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .base import STORE_BACKENDS, Entry, FeatureStore, IndexRow

_ENTRIES: dict[str, dict[tuple[str, str], Entry]] = {}


@STORE_BACKENDS.register(name="memory")
class MemoryStore(FeatureStore):
    backend = "memory"
    suffix = ""

    def __init__(self, root: Path | str):
        super().__init__(root)
        self.entries = _ENTRIES.setdefault(str(root), {})

    def has_entry(self, track: str, variant: str) -> bool:
        return (track, variant) in self.entries

    def _write(self, final: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        track, variant = final.parent.name, final.name
        self.entries[(track, variant)] = Entry({k: np.array(v) for k, v in arrays.items()}, attrs)

    def _entry(self, track: str, variant: str) -> Entry:
        try:
            return self.entries[(track, variant)]
        except KeyError:
            raise FileNotFoundError(f"memory store {self.root}: no entry {track}/{variant}") from None

    def read_slab(self, track, variant, names: Iterable[str] | None, start: int, stop: int | None) -> Entry:
        entry = self._entry(track, variant)
        names = list(entry.arrays) if names is None else list(names)
        return Entry({n: entry.arrays[n][start:stop] for n in names}, dict(entry.attrs))

    def open_arrays(self, track: str, variant: str, names: Iterable[str]) -> tuple[dict[str, Any], Any]:
        arrays = self._entry(track, variant).arrays
        return {n: arrays[n] for n in names}, None

    def read_attrs(self, track: str, variant: str) -> dict[str, Any]:
        return dict(self._entry(track, variant).attrs)

    def is_valid(self, track: str, variant: str) -> bool:
        return self.has_entry(track, variant)

    def write_index(self, rows: list[IndexRow]) -> None:
        self.index = rows

    def read_index(self) -> list[IndexRow]:
        return getattr(self, "index", [])

    def remove_leftovers(self) -> int:
        return 0


def preload_memory(name: str, store: FeatureStore, keys: Sequence, names: Sequence[str]) -> None:
    """Copy entries (``keys`` with ``track``/``variant``) of another store into the memory store ``name``."""
    memory = MemoryStore(name)
    for k in keys:
        entry = store.read_entry(k.track, k.variant, names)
        memory.entries[(k.track, k.variant)] = entry
