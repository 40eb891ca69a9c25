"""Pipeline stages, one module each, registered in ``STAGES``; ``run_order`` derives the DAG from ``needs``."""

from __future__ import annotations

from mirpipe.stage import STAGES, Done, Stage, StageContext, WorkItem, run_order

__all__ = ["STAGES", "Stage", "StageContext", "WorkItem", "Done", "run_order"]
