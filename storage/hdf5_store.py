"""HDF5 backend: one file per entry, written to a temporary file and renamed into place."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from .atomic import temp_path
from .base import STORE_BACKENDS, Entry, FeatureStore, time_chunks

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
                    # HDF5 cannot chunk scalar or empty datasets
                    filters = {"chunks": time_chunks(data.shape), **COMPRESSION} if data.ndim and data.size else {}
                    f.create_dataset(name, data=data, track_times=False, **filters)
                f.attrs[ATTRS_KEY] = json.dumps(attrs, sort_keys=True)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def read_slab(self, track, variant, names: Iterable[str] | None, start: int, stop: int | None) -> Entry:
        with h5py.File(self.entry_path(track, variant), "r") as f:
            names = list(names) if names is not None else _array_names(f)
            arrays = {n: f[n][start:stop] for n in names}
            return Entry(arrays, json.loads(f.attrs[ATTRS_KEY]))

    def open_arrays(self, track: str, variant: str, names: Iterable[str]) -> tuple[dict[str, Any], Any]:
        f = h5py.File(self.entry_path(track, variant), "r")
        return {n: f[n] for n in names}, f

    def read_attrs(self, track: str, variant: str) -> dict[str, Any]:
        with h5py.File(self.entry_path(track, variant), "r") as f:
            return json.loads(f.attrs[ATTRS_KEY])

    def is_valid(self, track: str, variant: str) -> bool:
        try:
            with h5py.File(self.entry_path(track, variant), "r") as f:
                names = _array_names(f)
                for n in names:
                    f[n][-1:]
                return bool(names) and ATTRS_KEY in f.attrs
        except Exception:
            return False
