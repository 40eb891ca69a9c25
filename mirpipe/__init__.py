"""mirpipe: an out-of-core data pipeline for music information retrieval research.

The top-level folders of the repository install as sub-packages of this one
(``mirpipe.pipeline``, ``mirpipe.stages``, ``mirpipe.importers``, ``mirpipe.storage``,
``mirpipe.models``, and the demo plugin ``mirpipe.demo``), so nothing named ``models``
or ``storage`` lands on a user's ``sys.path``. Dependency direction (checked by
tests/test_layout.py): ``pipeline -> stages, importers, demo -> models, storage ->
core``, where the core is every other module here (registry, records, errors, the
stage contract ``stage``, ``audio``, ``annotations``, ``corpus``, ``shifts``). This
module is the public facade above them all.
"""

from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["Workbench", "__version__", "cluster", "open"]


def __getattr__(name: str):
    """``mirpipe.cluster`` (joblib scripts on the cluster of a cluster.yaml) and ``mirpipe.open`` /
    ``mirpipe.Workbench`` (a workdir opened for your own code, docs/api.md), imported on first use so
    that ``import mirpipe`` stays cheap (no Dask, no joblib, no torch)."""
    if name == "cluster":
        from mirpipe.pipeline.joblib_backend import cluster

        return cluster
    if name in ("open", "Workbench"):
        from mirpipe.pipeline import workbench

        return getattr(workbench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
