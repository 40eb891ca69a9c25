"""HDF5 backend: one file per entry, written to a temporary file and renamed into place."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .atomic import temp_path
from .base import STORE_BACKENDS, FeatureStore, time_chunks

# gzip level 1 with shuffle: portable to every HDF5 reader, cheap to decode
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}

ATTRS_KEY = "json"  # all attributes as one JSON string: exact round trip of nested values


def _array_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


@STORE_BACKENDS.register(name="hdf5")
class HDF5Store(FeatureStore):
    backend = "hdf5"
    suffix = ".h5"

    def _write(self, final: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        tmp = temp_path(final)
        try:
            with h5py.File(tmp, "w", track_order=True) as f:
                for name, data in arrays.items():
                    # HDF5 cannot chunk empty datasets
                    filters = {"chunks": time_chunks(data.shape), **COMPRESSION} if data.size else {}
                    f.create_dataset(name, data=data, track_times=False, **filters)
                f.attrs[ATTRS_KEY] = json.dumps(attrs, sort_keys=True)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def open_arrays(self, track: str, names: Iterable[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        f = h5py.File(self.entry_path(track), "r")
        try:
            names = _array_names(f) if names is None else list(names)
            return {n: f[n] for n in names}, json.loads(f.attrs[ATTRS_KEY]), f
        except BaseException:
            f.close()
            raise

    def is_valid(self, track: str) -> bool:
        try:
            with h5py.File(self.entry_path(track), "r") as f:
                names = _array_names(f)
                for n in names:
                    if f[n].size:
                        f[n][-1:]  # the last chunk decodes: the file was not cut short
                return bool(names) and ATTRS_KEY in f.attrs
        except Exception:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError... by cause: any means recompute it
            return False
