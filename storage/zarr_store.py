"""Zarr v3 backend: one directory group per entry, time-chunked arrays (zstd)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import zarr

from .atomic import replace_dir, temp_path
from .base import STORE_BACKENDS, Entry, FeatureStore, time_chunks


def _array_names(group: zarr.Group, prefix: str = "") -> list[str]:
    names = [prefix + k for k in group.array_keys()]
    for k in group.group_keys():
        names += _array_names(group[k], f"{prefix}{k}/")
    return sorted(names)


@STORE_BACKENDS.register(name="zarr")
class ZarrStore(FeatureStore):
    backend = "zarr"
    suffix = ".zarr"

    def _write(self, final: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        tmp = temp_path(final)
        try:
            group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
            for name, data in arrays.items():
                # every chunk on disk, fill-valued or not, so a missing one marks a broken entry
                group.create_array(name, data=data, chunks=time_chunks(data.shape), config={"write_empty_chunks": True})
            group.attrs.update(attrs)
            replace_dir(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _open(self, track: str, variant: str) -> zarr.Group:
        return zarr.open_group(store=str(self.entry_path(track, variant)), mode="r", zarr_format=3)

    def read_slab(self, track, variant, names: Iterable[str] | None, start: int, stop: int | None) -> Entry:
        group = self._open(track, variant)
        names = list(names) if names is not None else _array_names(group)
        return Entry({n: np.asarray(group[n][start:stop]) for n in names}, dict(group.attrs))

    def open_arrays(self, track: str, variant: str, names: Iterable[str]) -> tuple[dict[str, Any], Any]:
        group = self._open(track, variant)
        return {n: group[n] for n in names}, None

    def read_attrs(self, track: str, variant: str) -> dict[str, Any]:
        return dict(self._open(track, variant).attrs)

    def is_valid(self, track: str, variant: str) -> bool:
        try:
            group = self._open(track, variant)
            names = _array_names(group)
            return bool(names) and all(group[n].nchunks_initialized == group[n].nchunks for n in names)
        except Exception:
            return False
