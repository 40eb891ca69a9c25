"""features: per track, load the audio once, compute each feature the tasks need and
encode every task's targets on its feature's frame grid; write one store entry.

Feature mode (default): each feature once, with margin bins for the largest shift
(pitch shifts become bin offsets when patches are cut). Audio mode: every shift's
waveform (pitch-shift backend) and annotations (muda, in memory), stored as the
variants of the same entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mirpipe import columns
from mirpipe.annotations.prepare import Preparation, prepared_jams
from mirpipe.audio.io import load_mono
from mirpipe.audio.pitch_shift import pitch_shift
from mirpipe.models.task import TASKS, Task
from mirpipe.records import Record, RecordTable
from mirpipe.shifts import AugmentParams
from mirpipe.stage import STAGES, Done, Stage, StageContext, WorkItem, record_rows
from mirpipe.storage import STORE_BACKENDS, open_store
from mirpipe.storage.base import FEATURES, INDEX_NAME, TARGETS, TARGETS_PREFIX, ArraySpec, FeatureStore, IndexRow, PartWriter
from mirpipe.storage.blockwise import DEFAULT_BLOCK_SECONDS, FeatureBlocks, feature_blocks
from mirpipe.storage.feature_kinds import FEATURE_KINDS

from .ingest import read_manifest


class FeaturesParams(BaseModel):
    """Where entries go, the sample rate, the tasks whose targets they hold, and each feature
    kind's settings (``<kind>:``, e.g. ``cqt:``, validated by the kind's own model)."""

    model_config = ConfigDict(extra="allow")
    store: str = Field("zarr", description="store backend (registered: zarr, hdf5, memory, plugins)")
    store_path: Path | None = Field(None, description="default <workdir>/features")
    sr: int = Field(22050, ge=8000, description="audio is loaded once at this rate")
    tasks: list[str] | None = Field(
        None,
        description="tasks whose targets each entry holds; default every registered task but the opt-in ones (instrument_embed)",
    )
    block_seconds: float = Field(
        DEFAULT_BLOCK_SECONDS,
        ge=10.0,
        description="audio seconds computed at once: a longer track is decoded and computed in blocks (with the "
        "context each kind needs), so memory stays bounded whatever its duration; a shorter one is computed whole",
    )

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
        return list(self.tasks) if self.tasks is not None else [t for t in TASKS.names() if not TASKS.get(t).opt_in]

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
    stamp: list[int] | None = None  # the entry files' (size, mtime_ns) when written: planning's cheap check
    # the fingerprint of each part of the entry: each feature kind ("cqt") and each task's targets ("targets/chord");
    # what training and evaluation of a task depend on (a part that did not change does not retrain anything)
    parts: dict[str, str] = field(default_factory=dict, kw_only=True)
    computed: list[str] = field(default_factory=list, kw_only=True)  # the parts this run computed; the rest were kept


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def kind_fingerprint(name: str, p: FeaturesParams, aug: AugmentParams, audio: Mapping[str, Any]) -> str:
    """What one feature kind of a track depends on: its settings and version, the sample rate, the
    stored variants and margins, and the track's audio (``audio``: its digest and the channel read)."""
    return _digest(
        {
            "kind": name,
            "version": FEATURE_KINDS.get(name).version,
            "params": p.kind_params(name).model_dump(mode="json"),
            "sr": p.sr,
            **aug.variants_identity(),
            "margin": aug.margin(),
            "audio": dict(audio),
        }
    )


def targets_fingerprint(task_name: str, aug: AugmentParams, annotations: Mapping[str, Any], grid: Mapping[str, Any]) -> str:
    """What one task's targets of a track depend on: the task's encoder version, the track's
    annotations (their digest and ingest's decisions about them), the stored variants and the
    frame grid of the feature they align to (``grid``: sample rate, hop, frames)."""
    return _digest(
        {
            "task": task_name,
            "version": TASKS.get(task_name).version,
            "variants": aug.stored_variants(),
            **aug.deformations_identity(),
            "annotations": dict(annotations),
            "grid": dict(grid),
        }
    )


def part_fingerprints(done: Done) -> dict[str, str]:
    """The per-part fingerprints a features item recorded (empty for a record from before parts)."""
    raw = done.raw
    parts = raw.get("parts") if raw is not None else getattr(done.record, "parts", None)
    return dict(parts or {})


def task_inputs(done: Done, task: Task) -> str:
    """What training or evaluating ``task`` reads of a track's entry, as one string: the fingerprints
    of its feature and of its targets (the whole item's fingerprint for a record from before parts)."""
    parts = part_fingerprints(done)
    feature, targets = parts.get(task.feature), parts.get(f"{TARGETS_PREFIX}{task.name}")
    return f"{feature} {targets}" if feature and targets else done.fingerprint


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


def _empty_timings() -> dict[str, float]:
    return {"load": 0.0, "pitch_shift": 0.0, "annotations": 0.0, "features": 0.0, "targets": 0.0, "write": 0.0}


def load_annotations(
    jams_path: str, prep: Preparation | None, aug: AugmentParams, timings: dict[str, float], track: str, sr: int
) -> list[Any]:
    """The track's JAMS as the stages read it, once per stored variant (audio mode: muda moves the
    annotations of every shift, in memory; then muda moves them for each deformation of ``track``,
    its state drawn from the track's seed as the audio's is)."""
    import jams

    from mirpipe.audio.deform import deform
    from mirpipe.models.task import annotation_transposers

    t = time.perf_counter()
    jam = prepared_jams(jams_path, prep) if prep is not None else jams.load(str(jams_path), validate=False)
    timings["load"] += time.perf_counter() - t
    shifted = aug.shifted_variants()
    deformations = track_deformations(aug, track, sr)
    if shifted == [0] and not deformations:
        return [jam]
    t = time.perf_counter()
    if shifted == [0]:
        versions = [jam]
    else:
        versions = [jam_n for _, jam_n, _ in deform(jam, shifted, aug.backend, transposers=annotation_transposers())]
    versions += [d.annotations(jam) for d in deformations]
    timings["annotations"] += time.perf_counter() - t
    return versions


def track_deformations(aug: AugmentParams, track: str, sr: int) -> list[Any]:
    """The deformations of one track (``augment.deformations``), each with its state from the track's seed."""
    if not aug.active_deformations():
        return []
    from mirpipe.audio.deformations import TrackDeformation

    return [TrackDeformation(params, track, sr) for params in aug.active_deformations()]


def compute_kinds(
    audio_path: str,
    channel: int | None,
    p: FeaturesParams,
    aug: AugmentParams,
    kinds: list[str],
    timings: dict[str, float],
    track: str,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]], float]:
    """The stored arrays ``(V, T, bins)`` and geometry of ``kinds`` for one track, and its duration in seconds."""
    t0 = time.perf_counter()
    y, _ = load_mono(audio_path, sr=p.sr, channel=channel)
    timings["load"] += time.perf_counter() - t0
    waveforms = []
    for n in aug.shifted_variants():
        t = time.perf_counter()
        waveforms.append(y if n == 0 and aug.shifted_variants() == [0] else pitch_shift(y, p.sr, n, aug.backend))
        timings["pitch_shift"] += time.perf_counter() - t
    for deformation in track_deformations(aug, track, p.sr):
        t = time.perf_counter()
        waveforms.append(deformation.audio(y))
        timings["deform"] = timings.get("deform", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    arrays, geometry = compute_features(waveforms, p, kinds, aug.margin())
    timings["features"] += time.perf_counter() - t
    return arrays, geometry, len(y) / p.sr


def frame_grid(geometry: Mapping[str, Any], n_frames: int) -> dict[str, Any]:
    """The frame grid targets align to: sample rate, hop and frame count of a feature."""
    return {"sr": int(geometry["sr"]), "hop_length": int(geometry["hop_length"]), "frames": int(n_frames)}


def encode_targets(
    task_name: str, jams_versions: list[Any], grid: Mapping[str, Any], timings: dict[str, float]
) -> dict[str, np.ndarray]:
    """One task's target arrays ``(V, T, ...)`` on its feature's frame grid, one variant per JAMS version."""
    import librosa

    t = time.perf_counter()
    times = librosa.frames_to_time(np.arange(grid["frames"]), sr=grid["sr"], hop_length=grid["hop_length"])
    encoded = [TASKS.get(task_name).targets.encode(jam_v, times) for jam_v in jams_versions]
    arrays = {f"{TARGETS_PREFIX}{key}": np.stack([e[key] for e in encoded]) for key in encoded[0]}
    timings["targets"] += time.perf_counter() - t
    return arrays


def _feature_attrs(p: FeaturesParams, aug: AugmentParams, track: str | None, geometry: Mapping[str, Any], fps: Mapping[str, str]):
    import jams
    import librosa

    return {
        "track": track,
        "sr": p.sr,
        "mode": aug.mode,
        **_variant_attrs(aug),
        "features": dict(geometry),
        "fingerprints": dict(fps),  # each kind's: a later run keeps the kinds whose fingerprint did not change
        "pitch_shift_backend": aug.backend if aug.shifted_variants() != [0] else None,
        "versions": {
            "librosa": librosa.__version__,  # type: ignore[attr-defined]  # set at runtime, not in librosa's .pyi
            "jams": jams.__version__,
        },
    }


def _variant_attrs(aug: AugmentParams) -> dict[str, Any]:
    """What each stored variant is: its shift (``variants``) and, with deformations, its deformation's
    label or None (``deformations``; an entry without it holds original audio only)."""
    deformations = aug.variant_deformations()
    return {"variants": aug.stored_variants(), **({"deformations": deformations} if any(deformations) else {})}


def compute_entry(
    audio_path: str, jams_path: str, p: FeaturesParams, aug: AugmentParams, prep: Preparation | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, float]]:
    """Arrays ``(V, T, ...)``, attributes and timings of one track's whole entry, in memory (tests,
    benchmarks; the stage itself writes only the parts that changed, see ``update_entry``).

    ``prep`` is what ingest decided (reference annotations, channel, snapped boundaries);
    without it the files are read as they are.
    """
    timings = _empty_timings()
    track = Path(audio_path).stem  # the deformations' seed
    jams_versions = load_annotations(jams_path, prep, aug, timings, track, p.sr)
    channel = prep.channel if prep is not None else None
    arrays, geometry, seconds = compute_kinds(audio_path, channel, p, aug, p.kinds(), timings, track)
    targets = {}
    for task_name in p.target_tasks():
        feature = TASKS.get(task_name).feature
        targets[task_name] = encode_targets(
            task_name, jams_versions, frame_grid(geometry[feature], arrays[feature].shape[1]), timings
        )
        arrays.update(targets[task_name])
    timings["audio_seconds"] = seconds
    attrs = {
        **_feature_attrs(p, aug, None, geometry, {}),
        "shifts": aug.active_shifts(),
        "target_features": {t: TASKS.get(t).feature for t in p.target_tasks()},
    }
    return arrays, attrs, timings


@dataclass
class EntryUpdate:
    """What ``update_entry`` did to one track's entry."""

    frames: dict[str, int]
    arrays: dict[str, ArraySpec]
    parts: dict[str, str]
    computed: list[str]
    variants: list[int]
    timings: dict[str, float]


def _kept(store: FeatureStore, track: str, part: str, wanted: Mapping[str, str], recorded: Mapping[str, str]) -> set[str]:
    """The parts of ``wanted`` (name -> fingerprint) that the entry's ``part`` file holds with the same
    fingerprint, when every chunk of it reads back (a damaged file keeps nothing: an item runs again
    after ``verify --repair`` found its entry damaged, with the same fingerprints)."""
    same = {name for name, fp in wanted.items() if recorded.get(name) == fp}
    return same if same and store.part_readable(track, part) else set()


def _stamp_problem(store: FeatureStore, track: str, stamp: list[int]) -> str:
    """How an entry's files differ from the (size, mtime_ns) pairs its completion record holds."""
    expected = {FEATURES: stamp[0:2], TARGETS: stamp[2:4] or None}
    for part, want in expected.items():
        label = store.part_label(track, part)
        try:
            st = os.stat(store.entry_path(track, part))
        except OSError:
            if want is not None:
                return f"{label} missing"
            continue
        if want is None:
            return f"{label} is not the one the record holds (written after it)"
        if st.st_size != want[0]:
            return f"{label}: truncated or rewritten (size {st.st_size} bytes differs from the record's {want[0]})"
        if st.st_mtime_ns != want[1]:
            return f"{label}: modified since it was written (modification time differs from the record)"
    return "entry differs from its completion record"


def update_entry(
    store: FeatureStore,
    track: str,
    payload: Mapping[str, Any],
    p: FeaturesParams,
    aug: AugmentParams,
    prep: Preparation,
) -> EntryUpdate:
    """Bring one track's entry up to date, part by part: feature kinds whose fingerprint changed
    are computed and the others copied chunk by chunk from the entry as stored (bytes unchanged);
    the features file is not touched at all when every kind is current. The same for each task's
    targets in the targets file. A stored part that does not read back is computed again."""
    timings = _empty_timings()
    audio_id = {"sha256": payload.get("audio_sha256"), "channel": prep.channel}
    annotations_id = {"sha256": payload.get("jams_sha256"), "prep": prep.to_json()}
    kinds = p.kinds()
    kind_fps = {k: kind_fingerprint(k, p, aug, audio_id) for k in kinds}
    try:
        computed = _update_features(store, track, payload["audio"], prep.channel, p, aug, kind_fps, timings, reuse=True)
    except _UnreadablePart:  # a kept kind failed to copy (a damaged chunk): compute every kind
        computed = _update_features(store, track, payload["audio"], prep.channel, p, aug, kind_fps, timings, reuse=False)
    frames, specs, geometry = _described(store, track, kinds)

    task_names = p.target_tasks()
    grids = {t: frame_grid(geometry[TASKS.get(t).feature], frames[TASKS.get(t).feature]) for t in task_names}
    target_fps = {t: targets_fingerprint(t, aug, annotations_id, grids[t]) for t in task_names}
    args = (store, track, payload["jams"], prep, aug, grids, target_fps, timings)
    try:
        computed += _update_targets(*args, reuse=True)
    except _UnreadablePart:  # kept targets failed to copy: encode every task again
        computed += _update_targets(*args, reuse=False)
    described = (store.part_attrs(track, TARGETS) or {}).get("targets", {}) if task_names else {}
    _, t_specs, _ = _described(store, track, [n for t in task_names for n in described.get(t, {}).get("arrays", [])])
    return EntryUpdate(
        frames=frames,
        arrays={**specs, **t_specs},
        parts={**kind_fps, **{f"{TARGETS_PREFIX}{t}": fp for t, fp in target_fps.items()}},
        computed=computed,
        variants=aug.stored_variants(),
        timings=timings,
    )


def _update_features(
    store: FeatureStore,
    track: str,
    audio: str,
    channel: int | None,
    p: FeaturesParams,
    aug: AugmentParams,
    kind_fps: dict[str, str],
    timings: dict[str, float],
    reuse: bool,
) -> list[str]:
    """The features file with every kind of ``kind_fps`` current; the kinds computed."""
    kinds = list(kind_fps)
    old = store.part_attrs(track, FEATURES) or {}
    keep = _kept(store, track, FEATURES, kind_fps, old.get("fingerprints", {})) if reuse else set()
    if keep == set(kinds) and set(old.get("features", {})) == set(kinds):
        return []
    todo = [k for k in kinds if k not in keep]
    geometry = {k: old["features"][k] for k in keep}
    in_blocks = [k for k in todo if FEATURE_KINDS.get(k).blockwise]
    whole = [k for k in todo if k not in in_blocks]  # a kind without block support: its compute on the whole waveform
    arrays, whole_geometry, seconds = compute_kinds(audio, channel, p, aug, whole, timings, track) if whole else ({}, {}, 0.0)
    geometry.update(whole_geometry)
    if whole:
        timings["audio_seconds"] = seconds
    blocks = None
    if in_blocks:
        t0 = time.perf_counter()
        blocks = feature_blocks(
            audio,
            p.sr,
            channel,
            [(k, p.kind_params(k)) for k in in_blocks],
            aug.margin(),
            variants=aug.shifted_variants(),
            backend=aug.backend,
            block_seconds=p.block_seconds,
            deformations=[d.audio for d in track_deformations(aug, track, p.sr)],
        )
        timings["load"] += time.perf_counter() - t0
        geometry.update(blocks.geometry)
        timings["audio_seconds"] = blocks.n_samples / p.sr
    with _opened(store, track, sorted(keep)) as (old_arrays, _):
        with store.part_writer(track, FEATURES, _feature_attrs(p, aug, track, geometry, kind_fps)) as w:
            t0 = time.perf_counter()
            for name in sorted(keep):
                _copy(w, name, old_arrays[name])  # bytes as stored: the kind is not recomputed
            for name, data in arrays.items():
                w.write_array(name, data)
            timings["write"] += time.perf_counter() - t0
            if blocks is not None:
                _write_blocks(w, blocks, timings)
    return todo


class _UnreadablePart(Exception):
    """A part kept from the stored entry did not read back while being copied: compute it instead."""


def _copy(w: PartWriter, name: str, source: Any) -> None:
    """``w.copy``, with a read failure of the stored array as ``_UnreadablePart`` (a failure to write is not)."""
    w.copy(name, _Guarded(source, name))


class _Guarded:
    """A stored array whose read failures are ``_UnreadablePart``."""

    def __init__(self, source: Any, name: str):
        self.source, self.name = source, name
        self.shape, self.dtype = source.shape, source.dtype

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.source[key]
        except Exception as exc:  # noqa: BLE001 - any failure to read the stored array
            raise _UnreadablePart(self.name) from exc


def _write_blocks(w: PartWriter, blocks: FeatureBlocks, timings: dict[str, float]) -> None:
    """Each block's frames into the entry as they come (a track of hours is never whole in memory)."""
    created: set[str] = set()
    t_start, t_write = time.perf_counter(), 0.0
    for name, v, start, frames in blocks:
        t0 = time.perf_counter()
        if name not in created:
            w.create(name, (len(blocks.variants), blocks.n_frames[name], *frames.shape[1:]), frames.dtype)
            created.add(name)
        w.write(name, v, start, frames)
        t_write += time.perf_counter() - t0
    missing = sorted(set(blocks.n_frames) - created)
    if missing:
        raise ValueError(f"{w.describe}: no frames computed for {', '.join(missing)} ({blocks.n_samples} samples of audio)")
    timings["write"] += t_write
    timings["features"] += time.perf_counter() - t_start - t_write  # decoding, resampling, shifting, computing


def _update_targets(
    store: FeatureStore,
    track: str,
    jams_path: str,
    prep: Preparation,
    aug: AugmentParams,
    grids: dict[str, dict[str, Any]],
    target_fps: dict[str, str],
    timings: dict[str, float],
    reuse: bool,
) -> list[str]:
    """The targets file with every task of ``target_fps`` current; the parts computed (``targets/<task>``)."""
    task_names = list(target_fps)
    if not task_names:
        store.remove_part(track, TARGETS)
        return []
    old = (store.part_attrs(track, TARGETS) or {}).get("targets", {})
    recorded = {t: v.get("fingerprint") for t, v in old.items()}
    keep = _kept(store, track, TARGETS, target_fps, recorded) if reuse else set()
    if keep == set(task_names) and set(recorded) == set(task_names):
        return []
    todo = [t for t in task_names if t not in keep]
    jams_versions = load_annotations(jams_path, prep, aug, timings, track, int(next(iter(grids.values()))["sr"])) if todo else []
    encoded = {t: encode_targets(t, jams_versions, grids[t], timings) for t in todo}
    described = {
        t: {
            "fingerprint": target_fps[t],
            "feature": TASKS.get(t).feature,
            "arrays": list(old[t]["arrays"]) if t in keep else sorted(encoded[t]),
        }
        for t in task_names
    }
    t0 = time.perf_counter()
    with _opened(store, track, [n for t in keep for n in described[t]["arrays"]]) as (old_arrays, _):
        attrs = {"track": track, **_variant_attrs(aug), "targets": described}
        with store.part_writer(track, TARGETS, attrs) as w:
            for t in task_names:
                for name in described[t]["arrays"]:
                    if t in keep:
                        _copy(w, name, old_arrays[name])
                    else:
                        w.write_array(name, encoded[t][name])
    timings["write"] += time.perf_counter() - t0
    return [f"{TARGETS_PREFIX}{t}" for t in todo]


def _opened(store: FeatureStore, track: str, names: list[str]) -> AbstractContextManager[tuple[dict[str, Any], dict[str, Any]]]:
    """The named arrays of an entry as stored (nothing opened when there are none)."""
    return store.opened(track, names) if names else nullcontext(({}, {}))


def _described(store: FeatureStore, track: str, names: list[str]) -> tuple[dict[str, int], dict[str, ArraySpec], dict[str, Any]]:
    """Frames and shape/dtype of the named arrays of an entry as stored, and its feature geometry (metadata only)."""
    with store.opened(track, names) as (handles, attrs):
        frames = {n: int(h.shape[1]) for n, h in handles.items()}
        specs = {n: ArraySpec([int(k) for k in h.shape], str(np.dtype(h.dtype))) for n, h in handles.items()}
        return frames, specs, attrs.get("features", {})


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
    version = "3"  # 3: features and targets files, each part fingerprinted; 2: (V, T, ...) arrays, margins
    record_type = FeaturesRecord

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        p: FeaturesParams = ctx.params["features"]
        aug: AugmentParams = ctx.params["augment"]
        # what an entry holds: each kind's settings and version, each task's encoder version, the stored
        # variants and margins (not the shift list itself: feature mode samples it when training). A change
        # makes every item pending; its run then recomputes only the parts whose own fingerprint changed.
        return {
            "store": p.store,
            "store_path": str(p.store_path) if p.store_path else None,
            "sr": p.sr,
            "kinds": {k: [FEATURE_KINDS.get(k).version, p.kind_params(k).model_dump(mode="json")] for k in p.kinds()},
            "targets": {name: TASKS.get(name).version for name in p.target_tasks()},
            **aug.variants_identity(),
            "margin": aug.margin(),
        }

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        manifest = read_manifest(ctx)
        # identity is the track's content (audio and JAMS bytes and ingest's decisions), not ingest's
        # fingerprint: a file touched, moved or re-hashed without changing is not recomputed
        pos = manifest.position  # raw fields by row: no record is built per track
        audio, jams, prep, content, audio_sha, jams_sha = (
            manifest.column(n) for n in ("audio", "jams", "prep", "content", "audio_sha256", "jams_sha256")
        )
        return [
            WorkItem(
                track,
                payload={
                    "track": track,
                    "audio": audio[i],
                    "jams": jams[i],
                    "prep": prep[i],
                    "audio_sha256": audio_sha[i],
                    "jams_sha256": jams_sha[i],
                },
                identity={"content": content[i]},
            )
            for track in sorted(upstream["ingest"])
            if (i := pos(track)) is not None
        ]

    def run(self, item: WorkItem, ctx: StageContext) -> FeaturesRecord:
        p: FeaturesParams = ctx.params["features"]
        aug: AugmentParams = ctx.params["augment"]
        track = item.payload["track"]
        store = open_store(p.store, store_root(ctx))
        update = update_entry(store, track, item.payload, p, aug, Preparation.from_json(item.payload["prep"]))
        return FeaturesRecord(
            track=track,
            variants=update.variants,
            shifts=list(aug.active_shifts()),
            frames=update.frames,
            arrays=update.arrays,
            timings=update.timings,
            stamp=store.entry_stamp(track),
            parts=update.parts,
            computed=update.computed,
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

    def verify_outputs(self, item: WorkItem, ctx: StageContext, record: FeaturesRecord) -> str | None:
        """What is wrong with the entry, or None: each file where the record says (size and modification
        time), opening, with every chunk present, and every chunk of every array read and decoded (zip
        CRCs, codec errors), one chunk at a time. The reason names the file, the array and the chunk."""
        p: FeaturesParams = ctx.params["features"]
        store = open_store(p.store, store_root(ctx))
        track = item.payload["track"]
        stamp = record.stamp
        if stamp is not None and store.entry_stamp(track) != stamp:
            return _stamp_problem(store, track, stamp)
        parts = [FEATURES, TARGETS] if (stamp is not None and len(stamp) > 2) or store.has_part(track, TARGETS) else [FEATURES]
        return next((why for part in parts if (why := store.part_problem(track, part)) is not None), None)

    def writes_to(self, ctx: StageContext) -> list[Path]:
        return [Path(store_root(ctx)), ctx.workdir]

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
