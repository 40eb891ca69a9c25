"""HDF5 backend: one file per entry, written to a temporary file and renamed into place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .base import STORE_BACKENDS, ArraySink, FeatureStore

# gzip level 1 with shuffle: portable to every HDF5 reader, cheap to decode
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}

ATTRS_KEY = "json"  # all attributes as one JSON string: exact round trip of nested values


def _array_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


class _HDF5Sink(ArraySink):
    """A new entry file: datasets created at their final shape, filled chunk by chunk."""

    def __init__(self, tmp: Path, attrs: dict[str, Any]):
        self.file = h5py.File(tmp, "w", track_order=True)
        self.file.attrs[ATTRS_KEY] = json.dumps(attrs, sort_keys=True)

    def create(self, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...]) -> None:
        empty = 0 in shape  # HDF5 cannot chunk empty datasets
        self.file.create_dataset(
            name, shape=shape, dtype=dtype, track_times=False, **({} if empty else {"chunks": chunks, **COMPRESSION})
        )

    def put(self, name: str, variant: int, start: int, frames: np.ndarray) -> None:
        self.file[name][variant, start : start + len(frames)] = frames

    def close(self) -> None:
        self.file.close()


@STORE_BACKENDS.register(name="hdf5")
class HDF5Store(FeatureStore):
    backend = "hdf5"
    suffix = ".h5"

    def _sink(self, tmp: Path, attrs: dict[str, Any]) -> ArraySink:
        return _HDF5Sink(tmp, attrs)

    def _open(self, path: Path, names: list[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        f = h5py.File(path, "r")
        try:
            names = _array_names(f) if names is None else list(names)
            return {n: f[n] for n in names}, json.loads(f.attrs[ATTRS_KEY]), f
        except BaseException:
            f.close()
            raise

    def _valid(self, path: Path) -> bool:
        try:
            with h5py.File(path, "r") as f:
                names = _array_names(f)
                for n in names:
                    if f[n].size:
                        f[n][-1:]  # the last chunk decodes: the file was not cut short
                return bool(names) and ATTRS_KEY in f.attrs
        except Exception:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError... by cause: any means recompute it
            return False
