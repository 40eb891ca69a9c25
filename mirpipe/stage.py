"""The stage contract and the stage registry.

A stage enumerates work items, fingerprints them, runs one, and finalizes on the
driver. It knows nothing about Dask or the ledger. ``run`` is idempotent, writes
only its own outputs and returns a small JSON-able record.

A new stage is one module: a ``Stage`` subclass registered with
``@STAGES.register``, declaring its ``name``, the stages it ``needs`` (run order
is derived from them), and its ``params`` model (the ``<name>:`` section of
pipeline.yaml, validated with the rest of the configuration).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from mirpipe.errors import ConfigurationError
from mirpipe.records import Record, RecordError, RecordView
from mirpipe.registry import Registry
from mirpipe.workdir import Workdir


@dataclass(frozen=True)
class WorkItem:
    """One unit of work. ``id`` is unique within the stage and path-safe (``/`` allowed)."""

    id: str
    payload: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)  # hashed into the fingerprint
    upstream: tuple[str, ...] = ()  # upstream fingerprints, hashed too


class Done:
    """An item that is complete: its fingerprint and the record its run returned (an instance
    of the stage's ``record_type``).

    Planning keeps a done item's record as the ledger's JSON and rebuilds the typed record
    each time ``record`` is read (100,000 typed records are most of a plan's memory);
    downstream code reads it a few times per item at most.
    """

    __slots__ = ("fingerprint", "_record", "raw", "_load")

    def __init__(
        self,
        fingerprint: str,
        record: Any = None,
        raw: Mapping[str, Any] | None = None,
        load: Callable[[Mapping[str, Any]], Any] | None = None,
    ):
        self.fingerprint, self._record, self.raw, self._load = fingerprint, record, raw, load

    @property
    def record(self) -> Any:
        if self._record is None and self.raw is not None and self._load is not None:
            return self._load(self.raw)
        return self._record

    def record_json(self) -> dict[str, Any]:
        """The record's JSON form (the ledger's, or dumped from the record)."""
        if self.raw is not None:
            return dict(self.raw)
        return self.record.to_json() if isinstance(self.record, Record) else dict(self.record)

    def __repr__(self) -> str:
        return f"Done({self.fingerprint!r})"


def record_rows(done: Iterable[Done]) -> list[Mapping[str, Any]]:
    """The records of done items in JSON form, as the ledger holds them (a row of its columns, or a
    dict): ``mirpipe.columns.gather`` turns them into the columns of the manifest or the index."""
    return [d.raw if d.raw is not None else d.record_json() for d in done]


@dataclass(frozen=True)
class StageContext:
    """What a stage may look at: the workdir and every stage's parameters."""

    workdir: Path
    # section name -> its model instance. Any: the models are per stage (config_model() builds them from the
    # registry), so the mapping cannot type each key; a stage annotates what it takes: p: FeaturesParams = ...
    params: Mapping[str, Any]
    plugins: tuple[str, ...] = ()  # modules a worker imports before running an item (they register things)
    shared: Path | None = None  # an experiment's: the workdir whose manifest and store it reads

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    @property
    def dirs(self) -> Workdir:
        """Every path of the workdir (``mirpipe.workdir.Workdir``): stages ask it, not each other."""
        return Workdir(self.workdir, self.shared)


class Stage(ABC):
    name: str
    needs: tuple[str, ...] = ()  # stages whose done items this one's items come from
    after: tuple[str, ...] = ()  # stages that must run first when present, without feeding items
    params: ClassVar[type[BaseModel] | None] = None  # its pipeline.yaml section
    sections: ClassVar[dict[str, type[BaseModel]]] = {}  # further sections it reads that no stage owns (augment)
    optional: ClassVar[bool] = False  # runs only when its section is given (the demo's synthesize)
    version: str = "1"  # bump when the code changes what the stage writes
    bounded_time: bool = True  # run.time_limit applies to each item (not to long training runs)
    reports_progress: bool = False  # its items draw their own progress (the runner then draws no bar)
    resources: dict[str, float] = {}  # worker resources its tasks ask for (e.g. {"GPU": 1}); cluster.yaml overrides
    record_type: ClassVar[type[Record] | None] = None  # what ``run`` returns (None: a JSON-able dict)

    def dump_record(self, record: Any) -> dict[str, Any]:
        """The JSON form of a record ``run`` returned (what the ledger keeps)."""
        return record.to_json() if isinstance(record, Record) else dict(record)

    def load_record(self, data: Mapping[str, Any]) -> Any:
        """The typed record back from its JSON form; raises ``RecordError`` when it does not fit."""
        return self.record_type.from_json(data) if self.record_type is not None else dict(data)

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        """The parameters that affect each item's outputs (hashed into its fingerprint)."""
        params = ctx.params.get(self.name)
        return params.model_dump(mode="json") if params is not None else {}

    @abstractmethod
    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        """Work items, from the done items of the stages this one needs."""

    @abstractmethod
    def run(self, item: WorkItem, ctx: StageContext) -> Any:
        """Compute one item's outputs; return a small record (a ``record_type`` instance)."""

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: Any) -> bool:
        """Whether the outputs of a done item are still in place (checked before skipping it, for every
        done item when planning: keep it to a ``stat`` or two, from what the record holds)."""
        return True

    def outputs_valid_many(self, items: list[WorkItem], ctx: StageContext, raws: list[Mapping[str, Any]]) -> list[bool]:
        """``outputs_valid`` of many done items at once: planning calls this one, with each record in
        its JSON form as the ledger keeps it (fields already checked against ``record_type``). This
        one hands ``outputs_valid`` a read-only ``RecordView`` of each (only the fields it reads are
        decoded); a stage with many items may override it to read the records by column
        (``mirpipe.columns.values``). A record whose fields do not load counts as invalid."""
        if self.record_type is None:
            return [bool(self.outputs_valid(item, ctx, dict(raw))) for item, raw in zip(items, raws)]
        out = []
        for item, raw in zip(items, raws):
            try:
                out.append(bool(self.outputs_valid(item, ctx, RecordView(self.record_type, raw))))
            except (RecordError, TypeError, AttributeError):
                out.append(False)
        return out

    def verify_outputs(self, item: WorkItem, ctx: StageContext, record: Any) -> str | bool | None:
        """The deep check of ``mirpipe verify``: open the outputs and check their contents. None when
        they are intact, else what is wrong, in one line that names the file (and, where it applies,
        the array and chunk): ``entry demo-0002.zarr.zip: array cqt chunk 0/0/0 ...: BadZipFile: Bad
        CRC-32 ...``, ``targets file demo-0002.targets.zarr.zip missing``. A bool (the contract before
        reasons) is still accepted: True intact, False damaged without a reason (``damage_reason``)."""
        return None if self.outputs_valid(item, ctx, record) else "outputs missing or changed since they were recorded"

    def writes_to(self, ctx: StageContext) -> list[Path]:
        """Where the stage's items write (the workdir; a stage that writes elsewhere, as features does
        at ``features.store_path``, names that place too): a full disk reported without a file name is
        blamed on the fullest of these."""
        return [ctx.workdir]

    def finalize(self, ctx: StageContext, done: Mapping[str, Done]) -> None:
        """Driver-side step after the stage: shared metadata (manifest, store index)."""

    def finalize_outputs(self, ctx: StageContext) -> list[Path] | None:
        """The files ``finalize`` writes. A stage that declares them lets a rerun skip ``finalize``
        when nothing it reads changed since it last ran: no item ran, the same done items and
        fingerprints, the same parameters, ledger and ``finalize_inputs``, the same mirpipe and
        stage module, and these files present. None (the default): it runs every time."""
        return None

    def finalize_inputs(self, ctx: StageContext) -> Any:
        """What ``finalize`` reads besides its done items, the parameters and the ledger (JSON-able;
        e.g. the stamp of a file it reads)."""
        return None

    def status_notes(self, ctx: StageContext) -> list[str]:
        """Lines ``mirpipe status`` prints under the stage (what it decided or left out); cheap to compute."""
        return []

    def status_details(self, ctx: StageContext) -> dict[str, Any] | None:
        """Figures ``mirpipe status --json`` shows under the stage (e.g. training's last epoch); cheap."""
        return None

    def start_notes(self, ctx: StageContext) -> list[str]:
        """Lines the runner prints once when the stage starts work (e.g. how to watch it)."""
        return []


NO_REASON = "damaged (the stage's check gives no reason)"


def damage_reason(verdict: str | bool | None) -> str | None:
    """What ``Stage.verify_outputs`` returned, as a reason (None: intact); a bare False gets ``NO_REASON``."""
    if verdict is None or verdict is True:
        return None
    if verdict is False or not str(verdict).strip():
        return NO_REASON
    return str(verdict)


STAGES: Registry[Stage] = Registry(
    "stage",
    builtin=(
        "mirpipe.stages.ingest",
        "mirpipe.stages.features",
        "mirpipe.stages.train",
        "mirpipe.stages.evaluate",
    ),
    entry_points="mirpipe.stages",
    instantiate=True,
)


def run_order(enabled: set[str] | None = None) -> list[str]:
    """Registered stages (those in ``enabled``, when given) in an order that respects
    ``needs`` and ``after``; ties keep registration order."""
    names = [n for n in STAGES.names() if enabled is None or n in enabled]
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ConfigurationError(f"stages depend on each other in a cycle through {name!r}")
        visiting.add(name)
        stage = STAGES.get(name)
        for dep in (*stage.needs, *stage.after):
            if dep in names:
                visit(dep)
            elif dep in stage.needs:
                raise ConfigurationError(f"stage {name!r} needs {dep!r}, which is not enabled")
        visiting.discard(name)
        order.append(name)

    for name in names:
        visit(name)
    return order
