"""ingest: pair audio with JAMS, validate each track, and write the manifest with track splits."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mirpipe.errors import WorkdirFileError
from mirpipe.models.task import offered_namespaces
from mirpipe.records import Record, RecordError
from mirpipe.storage.atomic import read_json, write_json

from . import errors
from .audio_io import AUDIO_EXTENSIONS, header_frames, load_mono, riff_declared_frames
from .base import STAGES, Done, Stage, StageContext, WorkItem

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


class IngestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: Path | None = Field(None, description="corpus folder; default <workdir>/corpus (the demo corpus)")
    split_seed: int = 0
    split_fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15})
    annotation_tolerance: float = Field(0.5, ge=0.0, description="seconds an annotation may run past the audio")
    length_tolerance: float = Field(0.01, ge=0.0, description="allowed relative gap between decoded and header length")

    @model_validator(mode="after")
    def _fractions(self):
        if set(self.split_fractions) != set(SPLITS):
            raise ValueError(f"split_fractions needs exactly the keys {SPLITS}, got {sorted(self.split_fractions)}")
        if any(v < 0 for v in self.split_fractions.values()) or abs(sum(self.split_fractions.values()) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be non-negative and sum to 1, got {self.split_fractions}")
        return self


@dataclass(frozen=True)
class TrackRecord(Record):
    """One validated track: what ingest's ``run`` returns."""

    track: str
    audio: str
    jams: str
    sr: int
    duration: float
    channels: int | None
    audio_sha256: str
    jams_sha256: str
    namespaces: list[str]  # as annotated (the split strata)
    offers: list[str]  # what the tasks can read after jams.nsconvert (chord_harte -> chord, ...)


@dataclass(frozen=True)
class ManifestRow(TrackRecord):
    """A row of ``manifest.json``: the track and the split ingest's finalize assigned it."""

    split: str
    fingerprint: str


def safe_track_id(stem: str) -> str:
    """A path- and key-safe track id from a file stem."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "track"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat(path: str) -> list:
    try:
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]
    except OSError:
        return [path, None, None]


def corpus_dir(ctx: StageContext) -> Path:
    p: IngestParams = ctx.params["ingest"]
    return Path(p.corpus) if p.corpus is not None else ctx.path("corpus")


def discover(corpus: Path) -> dict[str, dict[str, list[str]]]:
    """Group the corpus files by track id: {id: {"audio": [...], "jams": [...]}}."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"audio": [], "jams": []})
    for path in sorted(corpus.rglob("*")):
        # special files (a FIFO, a device) are kept: reading them is what the time limit is for
        if path.is_dir() or path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if suffix == ".jams":
            groups[safe_track_id(path.stem)]["jams"].append(str(path))
        elif suffix in AUDIO_EXTENSIONS:
            groups[safe_track_id(path.stem)]["audio"].append(str(path))
    return dict(groups)


def validate_track(track: str, audio: list[str], jams_paths: list[str], p: IngestParams) -> TrackRecord:
    """Check one track end to end; raise a classified ``InputError`` naming the file and the reason."""
    import jams

    if not audio:
        raise errors.MissingAudioError(jams_paths[0], "JAMS without an audio file of the same name")
    if not jams_paths:
        raise errors.MissingAnnotationError(audio[0], "audio without a .jams file of the same name")
    if len(audio) > 1 or len(jams_paths) > 1:
        raise errors.DuplicateTrackError(audio[0], f"track id {track!r} is shared by {sorted(audio + jams_paths)}")
    audio_path, jams_path = Path(audio[0]), Path(jams_paths[0])
    for path in (audio_path, jams_path):
        if not os.path.exists(path):
            raise errors.UnreadableFileError(path, "missing (a broken link?)")
        if not os.access(path, os.R_OK):
            raise errors.UnreadableFileError(path, "permission denied")
    header = header_frames(audio_path)
    try:
        y, sr = load_mono(audio_path)
    except PermissionError as exc:
        raise errors.UnreadableFileError(audio_path, str(exc)) from None
    except Exception as exc:
        cls = errors.AudioDecodeError if header is not None or audio_path.suffix.lower() in (".wav", ".flac", ".ogg") else errors.UnsupportedFormatError
        raise cls(audio_path, f"cannot decode: {type(exc).__name__}: {exc}") from None
    if y.size == 0:
        raise errors.EmptyAudioError(audio_path, "no samples")
    if not np.all(np.isfinite(y)):
        raise errors.NonFiniteAudioError(audio_path, f"{int(np.sum(~np.isfinite(y)))} NaN/inf samples")
    declared = riff_declared_frames(audio_path)
    if declared is None and header is not None:
        declared = header[0]
    if declared is not None:
        frames = declared
        if abs(len(y) - frames) > max(1, p.length_tolerance * frames):
            raise errors.LengthMismatchError(audio_path, f"header says {frames} frames, decoded {len(y)} (truncated?)")
    duration = len(y) / sr
    _check_namespaces(jams_path)
    try:
        jam = jams.load(str(jams_path), validate=True, strict=True)
    except Exception as exc:
        raise errors.AnnotationSchemaError(jams_path, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]) from None
    for ann in jam.annotations:
        end = max((obs.time + obs.duration for obs in ann.data), default=0.0)
        if end > duration + p.annotation_tolerance:
            raise errors.AnnotationRangeError(
                jams_path, f"{ann.namespace} annotation ends at {end:.2f}s, audio lasts {duration:.2f}s"
            )
    return TrackRecord(
        track=track,
        audio=str(audio_path),
        jams=str(jams_path),
        sr=int(sr),
        duration=float(duration),
        channels=header[2] if header else None,
        audio_sha256=_sha256(audio_path),
        jams_sha256=_sha256(jams_path),
        namespaces=sorted({a.namespace for a in jam.annotations}),
        offers=offered_namespaces([a.namespace for a in jam.annotations]),
    )


def _check_namespaces(jams_path: Path) -> None:
    """An unknown namespace gets its own class (jams would report it as a generic schema error)."""
    import jams

    try:
        raw = json.loads(jams_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.AnnotationSchemaError(jams_path, f"not JSON: {exc}") from None
    annotations = raw.get("annotations", []) if isinstance(raw, dict) else []
    used = {a.get("namespace") for a in annotations if isinstance(a, dict) and isinstance(a.get("namespace"), str)}
    unknown = sorted(used - set(jams.schema.__NAMESPACE__))
    if unknown:
        raise errors.UnknownNamespaceError(jams_path, f"unknown annotation namespace(s) {unknown}")


def assign_splits(namespaces: Mapping[str, Sequence[str]], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """Split by track, stratified by which namespaces a track is annotated with.

    Within a stratum, tracks are ranked by a seeded hash of their id (independent of
    file order; a new track moves few others) and cut by the fractions.
    """
    strata: dict[tuple, list[str]] = defaultdict(list)
    for track, annotated in namespaces.items():
        strata[tuple(annotated)].append(track)
    splits: dict[str, str] = {}
    for tracks in strata.values():
        ranked = sorted(tracks, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest())
        n = len(ranked)
        n_test = int(round(fractions["test"] * n))
        n_val = int(round(fractions["val"] * n))
        if n >= 3:  # every split gets a track when the stratum can afford it
            n_test = max(n_test, 1 if fractions["test"] > 0 else 0)
            n_val = max(n_val, 1 if fractions["val"] > 0 else 0)
        for i, t in enumerate(ranked):
            splits[t] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return splits


@STAGES.register
class Ingest(Stage):
    name = "ingest"
    params = IngestParams
    after = ("synthesize",)  # reads the corpus synthesize writes, when it runs
    needs = ()
    version = "2"  # 2: records the namespaces each track offers after conversion ("offers")
    record_type = TrackRecord

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        # Splits are assigned by finalize (driver): changing them re-ingests nothing.
        return ctx.params["ingest"].model_dump(mode="json", include={"annotation_tolerance", "length_tolerance"})

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        corpus = corpus_dir(ctx)
        if not corpus.is_dir():
            raise FileNotFoundError(f"corpus folder {corpus} does not exist")
        items = []
        for track, files in sorted(discover(corpus).items()):
            identity = {"files": [_stat(f) for f in files["audio"] + files["jams"]]}
            items.append(WorkItem(track, payload={"track": track, **files}, identity=identity))
        return items

    def run(self, item: WorkItem, ctx: StageContext) -> TrackRecord:
        return validate_track(item.id, item.payload["audio"], item.payload["jams"], ctx.params["ingest"])

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: TrackRecord) -> bool:
        return Path(record.audio).exists() and Path(record.jams).exists()

    def finalize(self, ctx: StageContext, done: Mapping[str, Done]) -> None:
        p: IngestParams = ctx.params["ingest"]
        records = {t: d.record for t, d in done.items()}
        splits = assign_splits({t: r.namespaces for t, r in records.items()}, p.split_fractions, p.split_seed)
        rows = [ManifestRow(**vars(records[t]), split=splits[t], fingerprint=done[t].fingerprint) for t in sorted(records)]
        write_json(ctx.path(MANIFEST), {"tracks": [row.to_json() for row in rows]})


def read_manifest(ctx: StageContext) -> dict[str, ManifestRow]:
    """The manifest's rows by track id ({} before ingest ran); a malformed file is a ``WorkdirFileError``."""
    path = ctx.path(MANIFEST)
    if not path.exists():
        return {}
    try:
        rows = [ManifestRow.from_json(row) for row in read_json(path)["tracks"]]
    except (KeyError, TypeError, RecordError) as exc:
        raise WorkdirFileError(path, f"not a manifest written by this mirpipe ({exc}); rerun ingest") from None
    return {row.track: row for row in rows}
