"""features: per track, load the audio once, compute each feature the tasks need and
encode every task's targets on its feature's frame grid; write one store entry.

Feature mode (default): each feature once, with margin bins for the largest shift
(pitch shifts become bin offsets when patches are cut). Audio mode: every shift's
waveform (pitch-shift backend) and annotations (muda, in memory), stored as the
variants of the same entry.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mirpipe import columns
from mirpipe.annotations.prepare import Preparation, prepared_jams
from mirpipe.audio.io import load_mono
from mirpipe.audio.pitch_shift import pitch_shift
from mirpipe.models.task import TASKS
from mirpipe.records import Record, RecordTable
from mirpipe.shifts import AugmentParams
from mirpipe.stage import STAGES, Done, Stage, StageContext, WorkItem, record_rows
from mirpipe.storage import STORE_BACKENDS, open_store
from mirpipe.storage.base import INDEX_NAME, ArraySpec, IndexRow
from mirpipe.storage.feature_kinds import FEATURE_KINDS

from .ingest import read_manifest


class FeaturesParams(BaseModel):
    """Where entries go, the sample rate, the tasks whose targets they hold, and each feature
    kind's settings (``<kind>:``, e.g. ``cqt:``, validated by the kind's own model)."""

    model_config = ConfigDict(extra="allow")
    store: str = Field("zarr", description="store backend (registered: zarr, hdf5, memory, plugins)")
    store_path: Path | None = Field(None, description="default <workdir>/features")
    sr: int = Field(22050, ge=8000, description="audio is loaded once at this rate")
    tasks: list[str] | None = Field(None, description="tasks whose targets each entry holds; default every registered task")

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return STORE_BACKENDS.check(v)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [TASKS.check(t) for t in v]

    @model_validator(mode="after")
    def _kinds(self):
        extra = self.__pydantic_extra__ or {}
        for name, raw in list(extra.items()):
            if name not in FEATURE_KINDS.names():
                raise ValueError(
                    f"unknown key {name!r}: not a features setting, nor a feature kind ({', '.join(FEATURE_KINDS.names())})"
                )
            kind = FEATURE_KINDS.get(name)
            extra[name] = raw if isinstance(raw, BaseModel) else kind.Params.model_validate(raw or {})
        for name in self.kinds():
            FEATURE_KINDS.check(name)  # a task reading a feature nobody registered fails here, not on a worker
        return self

    def target_tasks(self) -> list[str]:
        return list(self.tasks) if self.tasks is not None else TASKS.names()

    def kinds(self) -> list[str]:
        """The feature kinds the target tasks read, in a stable order."""
        return sorted({TASKS.get(t).feature for t in self.target_tasks()})

    def kind_params(self, name: str) -> BaseModel:
        value = (self.__pydantic_extra__ or {}).get(name)
        return value if value is not None else FEATURE_KINDS.get(name).Params()


@dataclass(frozen=True)
class FeaturesRecord(Record):
    track: str
    variants: list[int]  # the shift stored in each variant
    shifts: list[int]  # the shifts patches may be cut at
    frames: dict[str, int]  # frames per feature
    arrays: dict[str, ArraySpec]
    timings: dict[str, float]  # seconds per step, and the audio seconds processed
    stamp: list[int] | None = None  # the entry file's (size, mtime_ns) when written: planning's cheap check


def store_root(ctx: StageContext) -> Path:
    """The feature store of ``ctx`` (``Workdir.store_root`` with ``features.store_path``)."""
    p: FeaturesParams = ctx.params["features"]
    return ctx.dirs.store_root(p.store_path)


def compute_features(
    waveforms: list[np.ndarray], p: FeaturesParams, kinds: list[str], margin: int
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Each feature kind of ``kinds`` over each waveform (mono, at ``p.sr``), stored ``(V, T, bins)``
    with ``margin`` semitones of margin bins, and each kind's geometry. The one place features
    are computed: the features stage and ``predict`` (new recordings) both call it."""
    arrays: dict[str, np.ndarray] = {}
    geometry: dict[str, dict[str, Any]] = {}
    for name in kinds:
        kind, params = FEATURE_KINDS.get(name), p.kind_params(name)
        computed = [kind.compute(y_v, p.sr, params, margin) for y_v in waveforms]
        arrays[name] = np.stack([c[0] for c in computed])
        geometry[name] = computed[0][1]
    return arrays, geometry


def compute_entry(
    audio_path: str, jams_path: str, p: FeaturesParams, aug: AugmentParams, prep: Preparation | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, float]]:
    """Arrays ``(V, T, ...)``, attributes and timings of one track's entry.

    ``prep`` is what ingest decided (reference annotations, channel, snapped boundaries);
    without it the files are read as they are.
    """
    import jams
    import librosa

    from mirpipe.audio.deform import deform
    from mirpipe.models.task import annotation_transposers

    t0 = time.perf_counter()
    jam = prepared_jams(jams_path, prep) if prep is not None else jams.load(str(jams_path), validate=False)
    y, _ = load_mono(audio_path, sr=p.sr, channel=prep.channel if prep is not None else None)
    timings = {"load": time.perf_counter() - t0, "pitch_shift": 0.0, "annotations": 0.0, "features": 0.0, "targets": 0.0}
    variants = aug.stored_variants()
    if variants == [0]:
        versions = [(y, jam)]
    else:  # audio mode: the waveform and the annotations of every shift, in memory
        t = time.perf_counter()
        deformed = list(deform(jam, variants, aug.backend, transposers=annotation_transposers()))
        timings["annotations"] = time.perf_counter() - t
        versions = []
        for n, jam_n, _ in deformed:
            t = time.perf_counter()
            versions.append((pitch_shift(y, p.sr, n, aug.backend), jam_n))
            timings["pitch_shift"] += time.perf_counter() - t
    t = time.perf_counter()
    arrays, geometry = compute_features([y_v for y_v, _ in versions], p, p.kinds(), aug.margin())
    timings["features"] += time.perf_counter() - t
    t = time.perf_counter()
    for task_name in p.target_tasks():
        task = TASKS.get(task_name)
        n_frames = arrays[task.feature].shape[1]
        times = librosa.frames_to_time(
            np.arange(n_frames), sr=p.sr, hop_length=FEATURE_KINDS.get(task.feature).hop_length(p.kind_params(task.feature))
        )
        encoded = [task.targets.encode(jam_v, times) for _, jam_v in versions]
        for key in encoded[0]:
            arrays[f"targets/{key}"] = np.stack([e[key] for e in encoded])
    timings["targets"] = time.perf_counter() - t
    timings["audio_seconds"] = len(y) / p.sr
    attrs = {
        "sr": p.sr,
        "mode": aug.mode,
        "variants": variants,
        "shifts": aug.active_shifts(),
        "features": geometry,
        "target_features": {t: TASKS.get(t).feature for t in p.target_tasks()},
        "pitch_shift_backend": aug.backend if variants != [0] else None,
        "versions": {
            "librosa": librosa.__version__,  # type: ignore[attr-defined]  # set at runtime, not in librosa's .pyi
            "jams": jams.__version__,
        },
    }
    return arrays, attrs, timings


@functools.lru_cache(maxsize=8)
def _planning_store(backend: str, root: str):
    """One store object for the per-item checks of a plan (it only looks at files)."""
    return open_store(backend, root)


@STAGES.register
class Features(Stage):
    name = "features"
    params = FeaturesParams
    sections = {"augment": AugmentParams}
    needs = ("ingest",)
    version = "2"  # 2: one entry per track, (V, T, ...) arrays, margins for feature-mode shifts
    record_type = FeaturesRecord

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        p: FeaturesParams = ctx.params["features"]
        aug: AugmentParams = ctx.params["augment"]
        # what an entry holds: each kind's settings and version, each task's encoder version, the stored
        # variants and margins (not the shift list itself: feature mode samples it when training)
        return {
            "store": p.store,
            "store_path": str(p.store_path) if p.store_path else None,
            "sr": p.sr,
            "kinds": {k: [FEATURE_KINDS.get(k).version, p.kind_params(k).model_dump(mode="json")] for k in p.kinds()},
            "targets": {name: TASKS.get(name).version for name in p.target_tasks()},
            "variants": aug.stored_variants(),
            "margin": aug.margin(),
            "backend": aug.backend if aug.stored_variants() != [0] else None,
        }

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        manifest = read_manifest(ctx)
        # identity is the track's content (audio and JAMS bytes and ingest's decisions), not ingest's
        # fingerprint: a file touched, moved or re-hashed without changing is not recomputed
        pos = manifest.position  # raw fields by row: no record is built per track
        audio, jams, prep, content = (manifest.column(n) for n in ("audio", "jams", "prep", "content"))
        return [
            WorkItem(
                track,
                payload={"track": track, "audio": audio[i], "jams": jams[i], "prep": prep[i]},
                identity={"content": content[i]},
            )
            for track in sorted(upstream["ingest"])
            if (i := pos(track)) is not None
        ]

    def run(self, item: WorkItem, ctx: StageContext) -> FeaturesRecord:
        p: FeaturesParams = ctx.params["features"]
        track = item.payload["track"]
        prep = Preparation.from_json(item.payload["prep"])
        arrays, attrs, timings = compute_entry(item.payload["audio"], item.payload["jams"], p, ctx.params["augment"], prep)
        attrs.update(track=track, fingerprint=item.payload.get("fingerprint"))
        t0 = time.perf_counter()
        store = open_store(p.store, store_root(ctx))
        store.write_entry(track, arrays, attrs)
        timings["write"] = time.perf_counter() - t0
        return FeaturesRecord(
            track=track,
            variants=list(attrs["variants"]),
            shifts=list(attrs["shifts"]),
            frames={k: int(arrays[k].shape[1]) for k in attrs["features"]},
            arrays={k: ArraySpec.of(v) for k, v in arrays.items()},
            timings=timings,
            stamp=store.entry_stamp(track),
        )

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: FeaturesRecord) -> bool:
        """Planning's check, one ``stat``: the entry is the file this item wrote (same size and
        modification time); a truncated, cut or rewritten entry makes the item pending again.
        ``mirpipe verify`` opens every entry instead (``verify_outputs``)."""
        return self.outputs_valid_many([item], ctx, [{"stamp": record.stamp}])[0]

    def outputs_valid_many(self, items: list[WorkItem], ctx: StageContext, raws: list[Mapping[str, Any]]) -> list[bool]:
        """``outputs_valid`` by column: the recorded stamps against one ``stat`` per entry."""
        p: FeaturesParams = ctx.params["features"]
        store = _planning_store(p.store, str(store_root(ctx)))
        stamp_of = store.entry_stamp
        return [
            store.is_valid(item.payload["track"])
            if stamp is None  # a record from before stamps: the deep check
            else stamp_of(item.payload["track"]) == stamp
            for item, stamp in zip(items, columns.values(raws, "stamp", None))
        ]

    def verify_outputs(self, item: WorkItem, ctx: StageContext, record: FeaturesRecord) -> bool:
        """Every chunk present, and every array read and decoded (zip CRCs, codec errors)."""
        p: FeaturesParams = ctx.params["features"]
        store = open_store(p.store, store_root(ctx))
        if not (self.outputs_valid(item, ctx, record) and store.is_valid(item.payload["track"])):
            return False
        try:
            store.read_entry(item.payload["track"])
        except Exception:  # noqa: BLE001 - any failure to read back is damage
            return False
        return True

    def finalize_outputs(self, ctx: StageContext) -> list[Path]:
        return [Path(store_root(ctx)) / INDEX_NAME]

    def finalize_inputs(self, ctx: StageContext) -> Any:
        """The manifest it takes splits and vocabularies from (rewritten only when it changes)."""
        try:
            st = os.stat(ctx.dirs.manifest)
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def finalize(self, ctx: StageContext, done: Mapping[str, Done]) -> None:
        """The store index by column (the record columns copied as text when every record is a row of
        the ledger's columns in order, as in ingest's manifest)."""
        p: FeaturesParams = ctx.params["features"]
        store = open_store(p.store, store_root(ctx))
        manifest = read_manifest(ctx)
        tracks = [t for t in sorted(done) if t in manifest]
        split = manifest.value
        store.write_index_table(
            RecordTable.from_columns(
                IndexRow,
                "track",
                {
                    "track": tracks,
                    "split": [split(t, "split") for t in tracks],
                    **columns.gather(record_rows(done[t] for t in tracks), ["variants", "shifts", "frames", "arrays"]),
                    "path": [store.entry_relpath(t) for t in tracks],
                },
                rows=len(tracks),
                # the class vocabularies ingest built travel with the index (the store alone says what its labels mean)
                extra={"vocabularies": manifest.extra.get("vocabularies", {})},
            )
        )
        store.remove_leftovers()
