"""Zarr v3 backend: one zip file per entry (``<track>.zarr.zip``), time-chunked arrays (zstd).

One file per track keeps a 100,000-track corpus far from an HPC file quota (a
directory store costs a file per chunk and per array). The zip is written whole
into a temporary file and renamed into place; members are stored uncompressed
(zarr compresses each chunk), so a slab read is a seek and a chunk decode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import ZipStore

from .atomic import temp_path
from .base import STORE_BACKENDS, FeatureStore, time_chunks


def _array_names(group: zarr.Group, prefix: str = "") -> list[str]:
    names = [prefix + k for k in group.array_keys()]
    for k in group.group_keys():
        sub = group[k]
        assert isinstance(sub, zarr.Group)  # a key of group_keys()
        names += _array_names(sub, f"{prefix}{k}/")
    return sorted(names)


@STORE_BACKENDS.register(name="zarr")
class ZarrStore(FeatureStore):
    backend = "zarr"
    suffix = ".zarr.zip"

    def _write(self, final: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        tmp = temp_path(final)
        try:
            store = ZipStore(tmp, mode="w")
            try:
                # attributes at creation: rewriting zarr.json inside a zip would duplicate the member
                group = zarr.create_group(store=store, zarr_format=3, attributes=attrs)
                for name, data in arrays.items():
                    # every chunk on disk, fill-valued or not, so a missing one marks a broken entry
                    group.create_array(name, data=data, chunks=time_chunks(data.shape), config={"write_empty_chunks": True})
            finally:
                store.close()
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def open_arrays(self, track: str, names: Iterable[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        store = ZipStore(self.entry_path(track), mode="r")
        try:
            group = zarr.open_group(store=store, mode="r", zarr_format=3)
            names = _array_names(group) if names is None else list(names)
            return {n: group[n] for n in names}, dict(group.attrs), store
        except BaseException:
            store.close()
            raise

    def is_valid(self, track: str) -> bool:
        try:
            arrays, _, store = self.open_arrays(track, None)
        except Exception:  # noqa: BLE001 - a missing, partial or foreign entry (zarr raises by cause): recompute it
            return False
        try:
            return bool(arrays) and all(a.nchunks_initialized == a.nchunks for a in arrays.values())
        except Exception:  # noqa: BLE001 - chunk listing failed on a damaged entry: recompute it
            return False
        finally:
            store.close()
