"""train: one item per task; streams patches of the training split out of the store
(each activation at a shift drawn from ``augment.shifts``) into the generic trainer,
validates on the unshifted validation tracks, and keeps the best checkpoint for
evaluation."""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirpipe.errors import ConfigurationError
from mirpipe.models.labels import training_identity
from mirpipe.models.settings import NOT_FINGERPRINTED, TrainingSettings, fingerprinted, since
from mirpipe.models.task import TASKS, Task, per_task_params
from mirpipe.records import CheckpointMeta, Record
from mirpipe.shifts import AugmentParams
from mirpipe.stage import STAGES, Done, Stage, StageContext, WorkItem
from mirpipe.storage import open_store
from mirpipe.storage.feature_kinds import FEATURE_KINDS
from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec, resolve_shift, track_patches

from .features import FeaturesParams, task_inputs
from .ingest import read_manifest


def trainable_tasks() -> list[str]:
    return [t.name for t in TASKS.values() if t.trainable]


@dataclass(frozen=True)
class TrainRecord(Record):
    """A finished training run: where its checkpoint is, what it read, and the trainer's summary."""

    task: str
    trained_at: float  # a forced retrain changes it, so evaluation reruns
    checkpoint: str  # relative to the workdir
    train_entries: int
    val_entries: int
    loader_workers: int
    tensorboard: str | None
    steps: int
    epochs: int
    finished: bool
    best_metric: float | None
    best_step: int | None
    metric: str
    seconds: float
    device: str
    amp: bool
    history: list[dict[str, Any]]


class TrainParams(TrainingSettings):
    """Streaming and optimisation settings shared by every task, and each task's network
    (``models.<task>``, validated by the task's own parameter model).

    The optimisation settings are the inherited fields of ``models.settings.TrainingSettings``. Each
    field declares whether it is fingerprinted (the task list and the per-task networks go into each
    task's own item instead)."""

    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = Field(
        default_factory=trainable_tasks,
        description="models to train (default: every trainable task)",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    models: dict[str, Any] = Field(
        default_factory=dict, description="per task, its network's parameters", json_schema_extra=NOT_FINGERPRINTED
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per task, streaming/optimisation settings of this section that differ for it "
        "(e.g. {my_task: {batch_size: 16, steps_per_epoch: 60}})",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    # streaming
    patch_frames: int = Field(64, ge=8, description="frames per patch (~5.9 s at 10.8 frames/s)")
    slab_frames: int = Field(1024, ge=8, description="frames read per streamer activation")
    batch_size: int = Field(32, ge=1)
    n_active: int = Field(32, ge=1, description="streamers active at once in each mux")
    rate: float = Field(32.0, gt=1.0, description="expected patches per activation (one slab read each)")
    mux_mode: Literal["with_replacement", "single_active", "exhaustive"] = "with_replacement"
    n_shards: int = Field(4, ge=1, description="stream shards; DataLoader workers must divide it")
    sampling: Literal["track", "frames"] = Field(
        "track",
        description="how often the mux draws a track: track (each alike) or frames (in proportion to its "
        "length: every frame of training audio about equally likely); times the task's own stream weights",
        json_schema_extra=since("track"),
    )
    deform_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="the share of activations read from a deformed variant (augment.deformations); null: "
        "augment.deform_share; per task through overrides, e.g. {my_task: {deform_share: 0}}",
        json_schema_extra=NOT_FINGERPRINTED,  # the task's item carries the share it trains with
    )
    loader_workers: int | Literal["auto"] = Field(
        "auto",
        description="DataLoader worker processes (0: read in the trainer; auto: on a GPU as many as divide n_shards "
        "and leave a core to the trainer, on a CPU none); batches are the same with any count",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    progress: Literal["auto", "bar", "lines", "off"] = Field(
        "auto",
        description="training progress on stderr: a bar on a terminal, else periodic plain lines",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    progress_interval: float = Field(
        30.0, gt=0, description="seconds between progress lines when stderr is no terminal", json_schema_extra=NOT_FINGERPRINTED
    )

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        for name in v:
            if not TASKS.get(name).trainable:
                raise ValueError(f"task {name!r} has no network to train yet; trainable tasks: {', '.join(trainable_tasks())}")
        return v

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v: Any) -> dict[str, BaseModel]:
        return per_task_params(v, "models", lambda t: t.trained.network.Params)

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, changes in v.items():
            TASKS.check(name)
            bad = sorted(set(changes or {}) & {"tasks", "models", "overrides"})
            if bad:
                raise ValueError(f"overrides.{name}: {', '.join(bad)} cannot be set per task")
            cls.model_validate(changes or {})  # unknown keys and bad values fail here
        return {name: dict(changes or {}) for name, changes in v.items()}

    def for_task(self, task: str) -> TrainParams:
        """These settings with ``overrides.<task>`` applied."""
        changes = self.overrides.get(task)
        if not changes:
            return self
        return type(self).model_validate({**self.model_dump(exclude={"models"}), **changes, "models": self.models})

    def deformed(self, aug: AugmentParams) -> tuple[tuple[str, ...], float]:
        """The deformed variants this training reads and the share of activations that read one."""
        share = aug.deform_share if self.deform_share is None else self.deform_share
        labels = tuple(aug.deformation_labels()) if share > 0 else ()
        return labels, share if labels else 0.0

    def model_params(self, task: str) -> BaseModel:
        """The network parameters of ``task`` (its defaults where none are given)."""
        return self.models.get(task) or TASKS.get(task).trained.network.Params()


def train_dir(ctx: StageContext, task: str) -> Path:
    """``Workdir.train_dir`` (kept for callers of the helper)."""
    return ctx.dirs.train_dir(task)


def seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def vocabulary(ctx: StageContext, task: Task) -> dict[str, Any] | None:
    """The class vocabulary ingest built for ``task`` from the corpus's labels (None: the task's own)."""
    return read_manifest(ctx).extra.get("vocabularies", {}).get(task.labels_name) if task.vocabulary is not None else None


def split_entries(ctx: StageContext, feature: str, splits: Sequence[str], task: Task | None = None) -> dict[str, list[EntryKey]]:
    """The store entries of each split in ``splits`` (split -> entries streamed as ``feature``), of the
    tracks annotated for ``task`` when one is given (every track of the manifest with the feature otherwise)."""
    p: FeaturesParams = ctx.params["features"]
    manifest = read_manifest(ctx)
    index = open_store(p.store, ctx.dirs.store_root(p.store_path)).read_index()
    out: dict[str, list[EntryKey]] = {s: [] for s in splits}
    for track, split, frames in zip(index, index.column("split"), index.column("frames")):
        if split not in out or track not in manifest:
            continue
        if task is not None and not task.targets.usable(manifest.value(track, "offers")):
            continue
        if task is None and feature not in frames:
            continue
        out[split].append(EntryKey(track, frames[feature]))
    return out


def split_keys(ctx: StageContext, task: Task) -> tuple[list[EntryKey], list[EntryKey]]:
    """Training and validation entries of the tracks annotated for the task."""
    keys = split_entries(ctx, task.feature, ("train", "val"), task)
    return keys["train"], keys["val"]


def _unshifted_targets(store, track: str, names) -> dict[str, np.ndarray]:
    entry = store.read_entry(track, names)
    variant, _ = resolve_shift(entry.attrs, 0)
    return {n: a[variant] for n, a in entry.arrays.items()}


def sampling_weights(task: Task, sampling: str, keys: list[EntryKey], labels: list[list[str]]) -> list[float] | None:
    """A mux weight per training entry (``labels``: each one's, as ingest recorded them): the task's
    own (``task.vocabulary.stream_weights``, e.g. class balance) times the entry's length in frames under
    ``sampling: frames``; None: uniform."""
    weights = task.vocabulary.stream_weights(labels) if task.vocabulary is not None else None
    if sampling == "frames":
        lengths = [float(k.n_frames) for k in keys]
        weights = lengths if weights is None else [w * n for w, n in zip(weights, lengths)]
    return weights


def entry_weights(ctx: StageContext, task: Task, sampling: str, keys: list[EntryKey]) -> dict[str, float] | None:
    """``sampling_weights`` of ``keys`` with each entry's labels from the manifest, by track (None: uniform)."""
    manifest = read_manifest(ctx)
    labels = [manifest.value(k.track, "labels").get(task.labels_name, []) for k in keys]
    weights = sampling_weights(task, sampling, keys, labels)
    return None if weights is None else {k.track: w for k, w in zip(keys, weights)}


@dataclass(frozen=True)
class TaskStream:
    """What the trainer streams for a task: the spec, the seeded stream of training batches (compact
    stored codes), the ``storage.torch_data.Feed`` that makes them model input on the device, and the
    feature's geometry."""

    spec: StreamSpec
    stream: PatchStream
    feed: Any
    geometry: dict[str, Any]


def task_stream(
    ctx: StageContext,
    task: Task,
    p: TrainParams,
    keys: list[EntryKey],
    shifts: Sequence[int],
    seed: int,
    weights: Mapping[str, float] | None,
) -> TaskStream:
    """The patch stream ``Train.run`` trains ``task`` (bound to its vocabulary) on, over ``keys``, with
    the streaming settings of ``p`` (``TrainParams.for_task``); ``mirpipe.open(...).loader`` builds the same."""
    from mirpipe.storage.torch_data import Feed

    fp: FeaturesParams = ctx.params["features"]
    root = ctx.dirs.store_root(fp.store_path)
    geometry = open_store(fp.store, root).read_attrs(keys[0].track)["features"][task.feature]
    aug = ctx.params["augment"]
    deformations, deform_share = p.deformed(aug)
    timbre = aug.timbre()  # None when off
    if timbre is not None and FEATURE_KINDS.get(geometry["kind"]).octaves(geometry) is None:
        raise ConfigurationError(
            f"augment.eq_tilt_db / noise_snr_db / gain_db: the {task.name} task's feature {task.feature!r} "
            f"(kind {geometry['kind']}) does not say where its bins lie (FeatureKind.octaves); set them to 0 / null / 0"
        )
    # patches carry the feature's stored codes; the trainer's feed makes the model input on its device
    spec = StreamSpec(
        fp.store,
        str(root),
        task.feature,
        task.targets.arrays,
        p.patch_frames,
        p.slab_frames,
        shifts=tuple(shifts),
        task=task,
        geometry=geometry,
        timbre=timbre,
        deformations=deformations,
        deform_share=deform_share,
    )
    stream = PatchStream(spec, keys, MuxSettings(p.batch_size, p.n_active, p.rate, p.mux_mode, p.n_shards), seed, weights=weights)
    return TaskStream(spec, stream, Feed(task, geometry), geometry)


def build_model(task: Task, params: BaseModel, n_bins: int):
    return task.trained.network.build(n_bins=n_bins, params=params)


@STAGES.register
class Train(Stage):
    name = "train"
    params = TrainParams
    needs = ("features",)
    sections = {"augment": AugmentParams}  # the shifts patches are cut at
    version = "2"  # 2: entries per track, shifts drawn per activation
    resources = {"GPU": 1}  # asked for only where the cluster offers it
    bounded_time = False  # training takes as long as it takes; it checkpoints and resumes instead
    reports_progress = True  # the trainer draws its own per-step progress
    record_type = TrainRecord

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        p: TrainParams = ctx.params["train"]
        return fingerprinted(p)

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        """One item per task. Its fingerprint covers what training reads: the task's feature and
        targets in the training and validation entries of the tracks that teach the task (their part
        fingerprints: another task's targets or another feature kind changing retrains nothing), their
        splits, the shifts it samples, and the task's network; test tracks are not in it."""
        p: TrainParams = ctx.params["train"]
        feats = upstream["features"]
        if not feats:
            return []
        manifest = read_manifest(ctx)
        aug: AugmentParams = ctx.params["augment"]
        items = []
        for name in p.tasks:
            task = TASKS.get(name)
            labels, share = p.for_task(name).deformed(aug)
            deformed = {"deformations": list(labels), "deform_share": share} if labels else {}
            read = {}
            for item_id, done in feats.items():
                if item_id not in manifest or not task.targets.usable(manifest.value(item_id, "offers")):
                    continue
                split = manifest.value(item_id, "split")
                if split in ("train", "val"):
                    read[item_id] = f"{split} {task_inputs(done, task)}"
            digest = hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(read.items())).encode()).hexdigest()
            items.append(
                WorkItem(
                    name,
                    payload={"task": name},
                    identity={
                        "model": p.model_params(name).model_dump(mode="json"),
                        "shifts": aug.active_shifts(),
                        **({"timbre": timbre.to_json()} if (timbre := aug.timbre()) else {}),
                        **deformed,
                        **({"vocabulary": training_identity(vocabulary(ctx, task))} if task.vocabulary is not None else {}),
                        **({"overrides": fingerprinted(p.for_task(name))} if p.overrides.get(name) else {}),
                    },
                    upstream=(digest,),
                )
            )
        return items

    def run(self, item: WorkItem, ctx: StageContext) -> TrainRecord:
        from mirpipe.models.trainer import Trainer, resolve_device
        from mirpipe.storage.torch_data import epoch_loader, loader_plan, to_tensors

        fp: FeaturesParams = ctx.params["features"]
        task = TASKS.get(item.payload["task"])
        vocab = vocabulary(ctx, task)
        task = task.bind(vocab)
        p: TrainParams = ctx.params["train"].for_task(task.name)
        train_keys, val_keys = split_keys(ctx, task)
        if not train_keys:
            raise ValueError(f"train[{task.name}]: no training entries annotated for {task.name} in the store")
        shifts = tuple(ctx.params["augment"].active_shifts())
        store = open_store(fp.store, ctx.dirs.store_root(fp.store_path))
        made = task_stream(ctx, task, p, train_keys, shifts, p.seed, entry_weights(ctx, task, p.sampling, train_keys))
        spec, stream, feed, geometry = made.spec, made.stream, made.feed, made.geometry
        state = task.trained.network.fit_state(_unshifted_targets(store, k.track, task.targets.arrays) for k in train_keys)
        if p.loader_workers != "auto":
            stream.check_workers(p.loader_workers)
        seed_everything(p.seed)
        model_params = p.model_params(task.name)
        n_bins = FEATURE_KINDS.get(task.feature).input_bins(geometry)
        model = build_model(task, model_params, n_bins)
        settings = p.trainer_settings()
        meta = CheckpointMeta(
            task=task.name,
            model=model_params.model_dump(mode="json"),
            n_bins=n_bins,
            state=state,
            vocabulary=vocab,
            train_entries=len(train_keys),
            val_entries=len(val_keys),
        )
        plan = loader_plan(
            p.loader_workers, resolve_device(settings.device), stream.n_shards, len(os.sched_getaffinity(0)), not _daemonic()
        )
        loader_workers = plan.workers
        _log(f"train[{task.name}]: {plan.describe()}")

        def train_batches(epoch: int, skip: int):
            return epoch_loader(stream, epoch, skip=skip, plan=plan)

        def val_batches():
            return (to_tensors(b) for b in track_patches(spec, val_keys, p.batch_size))

        trainer = Trainer(
            model,
            task,
            train_batches,
            val_batches,
            settings,
            ctx.dirs.train_dir(task.name),
            run_key=item.payload.get("fingerprint", ""),
            meta=meta,
            log=_log,
            progress=p.progress,
            progress_interval=p.progress_interval,
            feed=feed,
        )
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
        if not trainer.best_path.exists():
            raise RuntimeError(f"train[{task.name}]: no validation pass produced a checkpoint")
        if val_keys:
            tune_checkpoints(task, trainer.model, (trainer.best_path, trainer.last_path), val_batches, trainer.device, feed)
        return TrainRecord(
            task=task.name,
            trained_at=time.time(),
            checkpoint=str(trainer.best_path.relative_to(ctx.workdir)),
            train_entries=len(train_keys),
            val_entries=len(val_keys),
            loader_workers=loader_workers,
            tensorboard=str(trainer.tb_dir.relative_to(ctx.workdir)) if trainer.tb_dir else None,
            **summary,
        )

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: TrainRecord) -> bool:
        return (ctx.workdir / record.checkpoint).exists()

    def verify_outputs(self, item: WorkItem, ctx: StageContext, record: TrainRecord) -> str | None:
        """The checkpoint is there and the safe loader accepts it (an older mirpipe's or a tampered one is damaged:
        ``mirpipe verify --repair`` has it trained again); else what is wrong."""
        from mirpipe.models.checkpoint import checkpoint_is_safe

        path = ctx.workdir / record.checkpoint
        if not path.exists():
            return f"checkpoint {record.checkpoint} missing"
        if not checkpoint_is_safe(path):
            return f"checkpoint {record.checkpoint}: not one the safe loader accepts (cut short, written by an older mirpipe, or tampered with)"
        return None

    def start_notes(self, ctx: StageContext) -> list[str]:
        return [
            f"train: watch it with `tensorboard --logdir {ctx.dirs.train_root.resolve()}` "
            f"(or `mirpipe status --workdir {ctx.workdir}`)"
        ]

    def status_details(self, ctx: StageContext) -> dict[str, Any] | None:
        return training_progress(ctx) or None

    def status_notes(self, ctx: StageContext) -> list[str]:
        lines = []
        for name, p in training_progress(ctx).items():

            def f(x, fmt=".3f"):
                return "-" if x is None else format(x, fmt)

            lines.append(
                f"{name}: epoch {p['epoch']}/{p['max_epochs']} step {p['step']}/{p['total_steps']} "
                f"loss {f(p['train_loss'])} val_loss {f(p['val_loss'])} {p['metric']} {f(p['value'])} "
                f"(best {f(p['best'])}) {f(p['patches_per_s'], '.0f')} patches/s; "
                f"{'finished' if p['finished'] else 'last epoch'} {p['updated']}"
            )
        return lines


def training_progress(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """Each configured task's last epoch figures (``train/<task>/progress.json``), where training began."""
    from mirpipe.storage.atomic import read_json

    out = {}
    for name in ctx.params["train"].tasks:
        path = ctx.dirs.progress(name)
        if path.exists():
            try:
                out[name] = read_json(path)
            except Exception:  # noqa: BLE001 - a status view never fails on a figure
                continue
    return out


def tune_checkpoints(task: Task, model, paths, batches, device, feed=None) -> None:
    """``task.trained.decoder.tune`` each checkpoint's model on the validation batches (made on ``device``
    by ``feed``, ``storage.torch_data.Feed``, as the trainer makes them; default ``Feed(task)``); what it
    returns joins the checkpoint's ``meta.state`` (evaluation decodes with it). A decoder without ``tune``
    costs nothing."""
    from mirpipe.models.checkpoint import load_checkpoint, plain
    from mirpipe.models.trainer import atomic_save
    from mirpipe.storage.torch_data import Feed

    if task.decoder is None or task.trained.decoder.tune is None:
        return
    for path in paths:
        ckpt = load_checkpoint(path, map_location=device)
        model.load_state_dict(ckpt["model"])
        fed = ((feed or Feed(task))({k: v.to(device) for k, v in b.items()}) for b in batches())
        tuned = task.trained.decoder.tune(model.eval(), fed, device)
        meta = CheckpointMeta.from_json(ckpt["meta"])
        ckpt["meta"] = plain(meta.replace(state={**meta.state, **tuned}).to_json())  # numpy floats as Python's
        atomic_save(ckpt, path)
        _log(f"train[{task.name}]: tuned on the validation split for {path.name}: {tuned}")


def _log(message: str) -> None:
    """Progress lines go to stderr: stdout stays clean for ``--json`` (on Dask, into the worker log)."""
    print(message, file=sys.stderr, flush=True)


def _daemonic() -> bool:
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)
