"""The feature store: one interface, Zarr v3 and HDF5 backends, atomic entries, a driver-written index."""

from .base import Entry, FeatureStore, open_store, BACKENDS

__all__ = ["Entry", "FeatureStore", "open_store", "BACKENDS"]
