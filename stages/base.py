"""The stage contract: enumerate work items, fingerprint them, run one, finalize on the driver.

A stage knows nothing about Dask or the ledger. ``run`` is idempotent, writes
only its own outputs and returns a small JSON-able record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel


@dataclass(frozen=True)
class WorkItem:
    """One unit of work. ``id`` is unique within the stage and path-safe (``/`` allowed)."""

    id: str
    payload: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)  # hashed into the fingerprint
    upstream: tuple[str, ...] = ()  # upstream fingerprints, hashed too


@dataclass(frozen=True)
class Done:
    """An upstream item that is complete: its fingerprint and the record its run returned."""

    fingerprint: str
    record: dict[str, Any]


@dataclass(frozen=True)
class StageContext:
    """What a stage may look at: the workdir and every stage's parameters."""

    workdir: Path
    params: Mapping[str, BaseModel]

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)


class Stage(ABC):
    name: str
    needs: tuple[str, ...] = ()
    version: str = "1"  # bump when the code changes what the stage writes
    bounded_time: bool = True  # run.time_limit applies to each item (not to long training runs)
    resources: dict[str, float] = {}  # worker resources its tasks ask for (e.g. {"GPU": 1}); cluster.yaml overrides

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        """The parameters that affect each item's outputs (hashed into its fingerprint)."""
        params = ctx.params.get(self.name)
        return params.model_dump(mode="json") if params is not None else {}

    @abstractmethod
    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        """Work items, from the done items of the stages this one needs."""

    @abstractmethod
    def run(self, item: WorkItem, ctx: StageContext) -> dict[str, Any]:
        """Compute one item's outputs; return a small record."""

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: Mapping[str, Any]) -> bool:
        """Whether the outputs of a done item are still in place (checked before skipping it)."""
        return True

    def finalize(self, ctx: StageContext, done: Mapping[str, Done]) -> None:
        """Driver-side step after the stage: shared metadata (manifest, store index)."""
