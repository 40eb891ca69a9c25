"""Prediction on new recordings: a trained workdir as a model bundle, and one recording to one JAMS.

``predict_file`` is one Dask task: it decodes the audio (classified errors as ingest
raises them), computes each feature exactly as the features stage does
(``compute_features``, with the margin the network was trained with, then the kind's
view at shift 0: what evaluate reads back from the store), runs every task's
``predict`` and ``decode`` with the bundle's state and decoding options, and writes a
strictly valid JAMS atomically. Nothing here names a task.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mirpipe.audio.io import to_mono
from mirpipe.models.bundle import ModelBundle, TaskModel, build_network, current_versions, load_bundle
from mirpipe.models.task import TASKS
from mirpipe.records import CheckpointMeta
from mirpipe.stage import StageContext
from mirpipe.stages.features import FeaturesParams, compute_features
from mirpipe.stages.ingest import decode_checked, file_sha256
from mirpipe.storage import open_store
from mirpipe.storage.atomic import atomic_path
from mirpipe.storage.feature_kinds import FEATURE_KINDS


def bundle_from_workdir(ctx: StageContext, tasks: Sequence[str] | None = None, name: str = "") -> ModelBundle:
    """The trained tasks of a workdir (the checkpoint evaluate scores) as a bundle.

    ``tasks``: those to include (default: every task of ``train.tasks`` with a checkpoint).
    The feature geometry comes from a store entry, so predict can check it computes the
    features the network was trained on. A checkpoint whose training the ledger does not record
    as finished (a run still training or tuning it, or one stopped mid-way) is refused, naming it:
    it would carry weights of an unknown step and no tuned decoding state."""
    from mirpipe.errors import WorkdirFileError
    from mirpipe.models.checkpoint import load_checkpoint

    from .ledger import Ledger

    fp: FeaturesParams = ctx.params["features"]
    ev = ctx.params["evaluate"]
    wanted = list(tasks) if tasks else list(ctx.params["train"].tasks)
    finished = Ledger(ctx.workdir).state("train").done.fingerprints()  # task -> the run it finished
    models: dict[str, TaskModel] = {}
    for task_name in wanted:
        task = TASKS.get(task_name)
        path = ctx.dirs.checkpoint(task_name, ev.checkpoint)
        if not path.exists():
            if tasks:
                raise FileNotFoundError(f"{path}: task {task_name!r} has no trained checkpoint in {ctx.workdir}")
            continue
        ckpt = load_checkpoint(path)  # never unpickles code: CheckpointError (a ValueError) naming the file
        meta, st = CheckpointMeta.from_json(ckpt["meta"]), ckpt.get("state", {})
        if finished.get(task_name) != st.get("run_key"):
            raise WorkdirFileError(
                path,
                f"the training of {task_name!r} is not finished in {ctx.workdir} (a run is still training or tuning "
                "it, or stopped before the end): let `mirpipe run` finish it, or leave the task out with --tasks",
            )
        models[task_name] = TaskModel(
            name=task_name,
            task_version=str(task.version),
            feature=task.feature,
            params=meta.model,
            n_bins=int(meta.n_bins),
            state=json.loads(json.dumps(meta.state)),
            decoding=ev.decode_params(task_name).model_dump(mode="json"),
            training={
                "fingerprint": st.get("run_key", ""),
                "checkpoint": ev.checkpoint,
                "steps": st.get("global_step"),
                "best_metric": st.get("best_metric"),
                "metric": task.trained.network.metric_name,
                "train_entries": meta.train_entries,
                "val_entries": meta.val_entries,
            },
            vocabulary=meta.vocabulary,
            weights={k: v.detach().cpu() for k, v in ckpt["model"].items()},
        )
    if not models:
        raise FileNotFoundError(f"{ctx.workdir}: no trained model (train/<task>/{ev.checkpoint}.pt) to export")
    kinds = sorted({m.feature for m in models.values()})
    geometry = {}
    store = open_store(fp.store, ctx.dirs.store_root(fp.store_path))
    index = store.read_index() if store.root.exists() else None
    if index is not None and len(index):
        attrs = store.read_attrs(next(iter(index)))
        geometry = {k: attrs["features"][k] for k in kinds if k in attrs.get("features", {})}
    features = {
        "sr": fp.sr,
        "margin": ctx.params["augment"].margin(),
        "kinds": {
            k: {"version": str(FEATURE_KINDS.get(k).version), "params": fp.kind_params(k).model_dump(mode="json")} for k in kinds
        },
        "geometry": json.loads(json.dumps(geometry)),
    }
    bundle = ModelBundle(
        features=features,
        tasks=models,
        versions=current_versions(),
        source=str(Path(ctx.workdir).resolve()),
        name=name or Path(ctx.workdir).resolve().name,
    )
    bundle.identity = bundle.compute_identity()
    return bundle


def input_key(bundle_identity: str, tasks: Sequence[str], audio: Path) -> str:
    """What makes an existing output current: the model, the tasks, and the input file as it is
    now (path, size, modification time: one ``stat``, no read)."""
    st = os.stat(audio)
    text = json.dumps([bundle_identity, sorted(tasks), str(Path(audio).resolve()), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=2)
def _bundle(path: str, mtime_ns: int) -> ModelBundle:
    return load_bundle(path, warn=lambda message: None)  # the driver already said what differs


@functools.lru_cache(maxsize=8)
def _network(path: str, mtime_ns: int, task: str, device: str):
    return build_network(_bundle(path, mtime_ns).tasks[task], device)


def features_of(audio: str | Path, bundle: ModelBundle, kinds: Sequence[str]):
    """(arrays ``(1, T, bins)`` as the store holds them, geometry, duration in s) of one recording:
    decoded with ingest's checks and computed by the features stage's own function, with the
    margin and settings the network was trained with (checked against the training store's geometry)."""
    channels, file_sr, _ = decode_checked(Path(audio))
    duration = channels.shape[1] / file_sr
    fp = FeaturesParams.model_validate(
        {"sr": bundle.features["sr"], **{k: v["params"] for k, v in bundle.features["kinds"].items()}}
    )
    y, _ = to_mono(channels, file_sr, fp.sr)
    arrays, geometry = compute_features([y], fp, list(kinds), int(bundle.features["margin"]))
    for k in kinds:
        trained = bundle.features.get("geometry", {}).get(k)
        if trained is not None and json.loads(json.dumps(geometry[k])) != trained:
            raise ValueError(f"{k} features computed here differ from the training store's: {geometry[k]} vs {trained}")
    return arrays, geometry, duration


def predict_file(
    audio: str, output: str, bundle_path: str, tasks: Sequence[str], device: str = "auto", key: str = ""
) -> dict[str, Any]:
    """Predict every task of ``tasks`` on one recording and write ``output`` (a JAMS).

    Returns ``{"input", "output", "summary", "duration"}``; bad audio raises the classified
    ``InputError`` naming the file."""
    import jams
    import librosa

    from mirpipe import __version__
    from mirpipe.models.trainer import resolve_device

    mtime = os.stat(bundle_path).st_mtime_ns
    bundle = _bundle(bundle_path, mtime)
    dev = resolve_device(device)
    arrays, geometry, duration = features_of(audio, bundle, sorted({bundle.tasks[t].feature for t in tasks}))
    digest = file_sha256(audio)
    jam = jams.JAMS(
        file_metadata=jams.FileMetadata(
            title=Path(audio).stem, duration=duration, identifiers={"sha256": digest, "filename": Path(audio).name}
        )
    )
    summary = []
    for name in tasks:
        m = bundle.tasks[name]
        task = TASKS.get(name).bind(m.vocabulary)
        geo = geometry[m.feature]
        features = FEATURE_KINDS.get(m.feature).view(arrays[m.feature][0], geo, 0)
        prediction = task.trained.decoder.predict(_network(bundle_path, mtime, name, str(dev)), features, dev)
        n_frames = arrays[m.feature].shape[1]
        frame_times = librosa.frames_to_time(np.arange(n_frames), sr=geo["sr"], hop_length=geo["hop_length"])
        options = task.trained.decoder.DecodeParams.model_validate(m.decoding)
        est = task.trained.decoder.decode(prediction, frame_times, duration, m.state, options)
        meta = est.annotation_metadata
        meta.annotator = {
            "name": "mirpipe",
            "model": bundle.name,
            "model_identity": bundle.identity,
            "training_fingerprint": m.training.get("fingerprint", ""),
            "task": name,
            "checkpoint": m.training.get("checkpoint", ""),
            "network": json.dumps(m.params, sort_keys=True),
        }
        meta.version = __version__
        meta.annotation_tools = f"mirpipe {__version__} predict (model {bundle.name}, {bundle.identity})"
        meta.data_source = f"model trained on data with fingerprint {m.training.get('fingerprint', '')}"
        meta.corpus = bundle.name
        jam.annotations.append(est)
        summary.append(f"{name}: {task.trained.decoder.describe(est)}")
    jam.sandbox.mirpipe = {
        "model": bundle.name,
        "model_identity": bundle.identity,
        "input": str(audio),
        "key": key,
        "tasks": list(tasks),
    }
    with atomic_path(Path(output)) as tmp:
        jam.save(str(tmp), strict=True)
    return {"input": str(audio), "output": str(output), "summary": "; ".join(summary), "duration": duration}
