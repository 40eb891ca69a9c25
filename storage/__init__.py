"""The feature store: one interface, registered backends (Zarr v3, HDF5, in-memory),
atomic entries, a driver-written index, pescador streams over the store."""

from .base import STORE_BACKENDS, ArraySpec, Entry, FeatureStore, IndexRow, open_store

__all__ = ["ArraySpec", "Entry", "FeatureStore", "IndexRow", "open_store", "STORE_BACKENDS"]
