"""features: replay a track-variant's deformation on its audio in memory, compute the
log-magnitude CQT, encode every registered task's targets on its frame grid, write
one store entry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirpipe.models.task import TASKS
from mirpipe.records import Record
from mirpipe.storage import STORE_BACKENDS, open_store
from mirpipe.storage.base import ArraySpec, IndexRow

from .audio_io import load_mono
from .augment import variant_jams_path
from .base import STAGES, Done, Stage, StageContext, WorkItem
from .deform import replay_shift
from .ingest import read_manifest
from .pitch_shift import pitch_shift

class FeaturesParams(BaseModel):
    """The chord CQT of McFee & Bello (2017): 6 octaves from C1, 36 bins/octave, ~10.8 frames/s."""

    model_config = ConfigDict(extra="forbid")
    store: str = Field("zarr", description="store backend (registered: zarr, hdf5, memory, plugins)")
    store_path: Path | None = Field(None, description="default <workdir>/features")
    sr: int = Field(22050, ge=8000)
    hop_length: int = Field(2048, ge=32)
    fmin: float = Field(32.703195662574764, gt=0, description="Hz; C1")
    n_bins: int = Field(216, ge=12)
    bins_per_octave: int = Field(36, ge=12)
    amin: float = Field(1e-5, gt=0, description="floor of the magnitude before the log")
    tasks: list[str] | None = Field(None, description="tasks whose targets each entry holds; default every registered task")

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return STORE_BACKENDS.check(v)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [TASKS.check(t) for t in v]

    def target_tasks(self) -> list[str]:
        return list(self.tasks) if self.tasks is not None else TASKS.names()


@dataclass(frozen=True)
class FeaturesRecord(Record):
    track: str
    variant: str
    semitones: int
    n_frames: int
    arrays: dict[str, ArraySpec]
    timings: dict[str, float]  # seconds per step, and the audio seconds processed


def store_root(ctx: StageContext) -> Path:
    p: FeaturesParams = ctx.params["features"]
    return Path(p.store_path) if p.store_path is not None else ctx.path("features")


def log_cqt(y: np.ndarray, p: FeaturesParams) -> np.ndarray:
    """(T, F) log-magnitude CQT in dB (absolute reference, so levels compare across tracks)."""
    import librosa

    C = np.abs(librosa.cqt(y, sr=p.sr, hop_length=p.hop_length, fmin=p.fmin, n_bins=p.n_bins, bins_per_octave=p.bins_per_octave))
    return librosa.amplitude_to_db(C, ref=1.0, amin=p.amin, top_db=None).T.astype(np.float16)


def compute_entry(audio_path: str, jams_path: Path, p: FeaturesParams) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, float]]:
    """Arrays, attributes and timings of one store entry."""
    import jams
    import librosa

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    jam = jams.load(str(jams_path), validate=False)
    semitones, backend = replay_shift(jam)
    y, _ = load_mono(audio_path, sr=p.sr)
    t1 = time.perf_counter()
    y = pitch_shift(y, p.sr, semitones, backend)
    t2 = time.perf_counter()
    cqt = log_cqt(y, p)
    t3 = time.perf_counter()
    frame_times = librosa.frames_to_time(np.arange(cqt.shape[0]), sr=p.sr, hop_length=p.hop_length)
    arrays: dict[str, np.ndarray] = {"cqt": cqt}
    for name in p.target_tasks():
        arrays.update({f"targets/{k}": v for k, v in TASKS.get(name).encode(jam, frame_times).items()})
    t4 = time.perf_counter()
    timings.update(load=t1 - t0, pitch_shift=t2 - t1, cqt=t3 - t2, targets=t4 - t3, audio_seconds=len(y) / p.sr)
    attrs = {
        "sr": p.sr,
        "hop_length": p.hop_length,
        "fmin": p.fmin,
        "bins_per_octave": p.bins_per_octave,
        "n_bins": p.n_bins,
        "frame_rate": p.sr / p.hop_length,
        "semitones": semitones,
        "pitch_shift_backend": backend,
        "versions": {"librosa": librosa.__version__, "jams": jams.__version__},
    }
    return arrays, attrs, timings


@STAGES.register
class Features(Stage):
    name = "features"
    params = FeaturesParams
    needs = ("augment",)
    version = "1"
    record_type = FeaturesRecord

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        p: FeaturesParams = ctx.params["features"]
        # the targets an entry holds: each task's encoder version
        targets = {name: TASKS.get(name).version for name in p.target_tasks()}
        return {**p.model_dump(mode="json", exclude={"tasks"}), "targets": targets}

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        manifest = read_manifest(ctx)
        items = []
        for track, done in sorted(upstream["augment"].items()):
            if track not in manifest:
                continue
            for v in done.record.variants:
                items.append(
                    WorkItem(
                        f"{track}/{v.variant}",
                        payload={"track": track, "variant": v.variant, "audio": manifest[track].audio},
                        upstream=(done.fingerprint,),
                    )
                )
        return items

    def run(self, item: WorkItem, ctx: StageContext) -> FeaturesRecord:
        p: FeaturesParams = ctx.params["features"]
        track, variant = item.payload["track"], item.payload["variant"]
        arrays, attrs, timings = compute_entry(item.payload["audio"], variant_jams_path(ctx.workdir, track, variant), p)
        attrs.update(track=track, variant=variant, fingerprint=item.payload.get("fingerprint"))
        t0 = time.perf_counter()
        open_store(p.store, store_root(ctx)).write_entry(track, variant, arrays, attrs)
        timings["write"] = time.perf_counter() - t0
        return FeaturesRecord(
            track=track,
            variant=variant,
            semitones=int(attrs["semitones"]),
            n_frames=int(arrays["cqt"].shape[0]),
            arrays={k: ArraySpec.of(v) for k, v in arrays.items()},
            timings=timings,
        )

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: FeaturesRecord) -> bool:
        p: FeaturesParams = ctx.params["features"]
        # opened and checked, not just present: a truncated or partial entry makes the item pending again
        return open_store(p.store, store_root(ctx)).is_valid(item.payload["track"], item.payload["variant"])

    def finalize(self, ctx: StageContext, done: Mapping[str, Done]) -> None:
        p: FeaturesParams = ctx.params["features"]
        store = open_store(p.store, store_root(ctx))
        manifest = read_manifest(ctx)
        rows = []
        for item_id, d in sorted(done.items()):
            r: FeaturesRecord = d.record
            if r.track not in manifest:
                continue
            rows.append(IndexRow(
                track=r.track, variant=r.variant, semitones=r.semitones, split=manifest[r.track].split,
                n_frames=r.n_frames, arrays=r.arrays,
                path=str(store.entry_path(r.track, r.variant).relative_to(store.root)),
            ))
        store.write_index(rows)
        store.remove_leftovers()
