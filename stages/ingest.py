"""ingest: pair audio with JAMS, validate each track, and write the manifest with track splits.

Every track is either used, with what ingest decided about it recorded (its
``Preparation``: the reference annotation where several compete, the channel that
stands for it, snapped boundaries, the audio's duration; and a warning for each
decision), or reported as a classified failure naming the file and the reason.
Every file the corpus scan sees is counted; files that are not tracks are listed
with the reason they were left out (``manifest.json``'s ``scan``; ``mirpipe status``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mirpipe import columns, errors
from mirpipe.annotations.prepare import ChoiceRule, Preparation, apply, choose
from mirpipe.audio.io import AudioDecodeFailure, decode_errors, header_frames, load_channels, riff_declared_frames
from mirpipe.corpus import ScanSummary, scan_corpus
from mirpipe.errors import WorkdirFileError
from mirpipe.models.labels import Vocabulary, VocabularyParams, build_vocabulary
from mirpipe.models.labels import notes as vocabulary_notes
from mirpipe.models.task import TASKS, offered_namespaces
from mirpipe.records import Record, RecordError, RecordTable, record_fields
from mirpipe.stage import STAGES, Done, Stage, StageContext, WorkItem, record_rows
from mirpipe.storage.atomic import read_cached, read_file, write_bytes_if_changed
from mirpipe.workdir import Workdir

MANIFEST = Workdir.MANIFEST
SPLITS = ("train", "val", "test")


class IngestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: Path | None = Field(None, description="corpus folder; default <workdir>/corpus (the demo corpus)")
    split_seed: int = 0
    split_fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15})
    annotation_tolerance: float = Field(0.5, ge=0.0, description="seconds an annotation may run past the audio")
    length_tolerance: float = Field(0.01, ge=0.0, description="allowed relative gap between decoded and header length")
    change_detection: Literal["stat", "content"] = Field(
        "stat",
        description="stat: size, modification and inode change times (an edit is seen even when the "
        "modification time is restored); content: also hash every file when planning (slow)",
    )
    annotation_choice: ChoiceRule = Field(
        default_factory=ChoiceRule, description="which annotation is the reference when several of a task's namespace compete"
    )
    annotation_choice_by_namespace: dict[str, ChoiceRule] = Field(
        default_factory=dict, description="per namespace (chord, pitch_contour, ...), overriding annotation_choice"
    )
    silence_db: float = Field(-60.0, description="RMS level (dBFS) below which a track is silent (an input failure)")
    downmix_loss_db: float = Field(
        10.0,
        gt=0.0,
        description="when the channel mean loses this much of the channels' "
        "energy (phase cancellation), the loudest channel is used",
    )
    duration_tolerance: float = Field(0.5, ge=0.0, description="seconds file_metadata.duration may differ from the audio")
    duration_mismatch: Literal["fail", "correct"] = Field(
        "fail", description="beyond the tolerance: fail the track, or correct to the audio's duration with a warning"
    )
    timing_tolerance: float = Field(
        1e-3,
        ge=0.0,
        description="seconds of gap or overlap between consecutive chord/key/segment "
        "observations that are snapped (with a warning); larger overlaps fail",
    )
    declared_splits: bool = Field(True, description="honour a split the JAMS declares in sandbox.split (train/val/test)")
    vocabularies: dict[str, VocabularyParams] = Field(
        default_factory=dict,
        description="per task whose classes come from the corpus's labels: aliases and an "
        "optional fixed class list (the vocabulary is rebuilt without re-ingesting)",
    )

    @field_validator("vocabularies")
    @classmethod
    def _vocabularies(cls, v: dict[str, VocabularyParams]) -> dict[str, VocabularyParams]:
        for name in v:
            task = TASKS.get(TASKS.check(name))
            if task.vocabulary is None or task.labels_of is not None:
                raise ValueError(
                    f"vocabularies.{name}: task {name!r} "
                    + (f"uses task {task.labels_of!r}'s vocabulary; " if task.labels_of else "has a fixed vocabulary; ")
                    + "tasks with corpus labels: "
                    + ", ".join(t.name for t in TASKS.values() if t.vocabulary is not None and t.labels_of is None)
                )
        return v

    @model_validator(mode="after")
    def _fractions(self):
        if set(self.split_fractions) != set(SPLITS):
            raise ValueError(f"split_fractions needs exactly the keys {SPLITS}, got {sorted(self.split_fractions)}")
        if any(v < 0 for v in self.split_fractions.values()) or abs(sum(self.split_fractions.values()) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be non-negative and sum to 1, got {self.split_fractions}")
        return self


@dataclass(frozen=True)
class Notice(Record):
    """A decision ingest took about a track that a user should know of (kept in the manifest)."""

    code: str  # several_annotations, downmix, snapped, duration_corrected
    message: str


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
    prep: Preparation  # how the stages read the track (stages.annotations.prepared_jams, load_mono's channel)
    notices: list[Notice]
    declared_split: str | None  # the JAMS's own sandbox.split, when honoured
    content: str  # digest of the audio and JAMS bytes and of ``prep``: what later stages depend on
    # per task whose classes come from the corpus (``task.vocabulary.labels``): the labels the track carries, normalised
    labels: dict[str, list[str]] = field(default_factory=dict, kw_only=True)


@dataclass(frozen=True)
class ManifestRow(TrackRecord):
    """A row of ``manifest.json``: the track and the split ingest's finalize assigned it."""

    split: str
    fingerprint: str


def file_sha256(path: Path | str) -> str:
    """The file's sha256, read in blocks (audio files can be large)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stat(path: str, content: bool) -> list:
    """What tells a file changed: size, modification time, and the inode change time, which
    no user tool can restore (``cp -p`` and ``rsync -t`` restore the modification time)."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    out = [path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    if content:
        try:
            out.append(file_sha256(Path(path)))
        except OSError:
            pass
    return out


def corpus_dir(ctx: StageContext) -> Path:
    p: IngestParams = ctx.params["ingest"]
    return ctx.dirs.corpus(p.corpus)


def validate_track(track: str, audio: list[str], jams_paths: list[str], p: IngestParams) -> TrackRecord:
    """Check one track end to end; raise a classified ``InputError`` naming the file and the reason."""
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
    notices: list[Notice] = []
    channel, duration, sr, n_channels = _check_audio(audio_path, p, notices)
    jam = _load_jams(jams_path)
    duration_declared = jam.file_metadata.duration
    if duration_declared is not None and abs(duration_declared - duration) > p.duration_tolerance:
        what = f"file_metadata.duration is {duration_declared:.3f} s, the audio ({audio_path.name}) lasts {duration:.3f} s"
        if p.duration_mismatch == "fail":
            raise errors.DurationMismatchError(
                jams_path, f"{what}: more than the tolerance of {p.duration_tolerance:g} s (another version of the recording?)"
            )
        notices.append(Notice("duration_corrected", f"{what}; the audio's duration is used"))
    choices = {}
    for namespace in sorted(reference_namespaces()):
        choice = choose(jam, namespace, p.annotation_choice_by_namespace.get(namespace, p.annotation_choice), str(jams_path))
        if choice is not None:
            choices[namespace] = choice
            notices.append(
                Notice(
                    "several_annotations",
                    f"{len(choice.candidates)} {namespace} annotations; the reference is #{choice.index} "
                    f"(annotator {choice.annotator or 'unnamed'}) by rule {choice.rule}",
                )
            )
    prep = Preparation(channel=channel, choices=choices, timing_tolerance=p.timing_tolerance, duration=duration)
    namespaces = sorted({a.namespace for a in jam.annotations})
    snapped = apply(jam, prep, str(jams_path))  # the prepared JAMS, as the later stages will read it
    for namespace, n in sorted(snapped.items()):
        notices.append(Notice("snapped", f"{n} {namespace} boundaries snapped (gaps or overlaps up to {p.timing_tolerance:g} s)"))
    for ann in jam.annotations:
        end = max((obs.time + obs.duration for obs in ann.data), default=0.0)
        if end > duration + p.annotation_tolerance:
            raise errors.AnnotationRangeError(
                jams_path, f"{ann.namespace} annotation ends at {end:.2f}s, audio lasts {duration:.2f}s"
            )
    declared = _declared_split(jam, jams_path) if p.declared_splits else None
    labels = {
        task.name: found
        for task in TASKS.values()
        if task.vocabulary is not None and task.labels_of is None and (found := task.vocabulary.labels(jam))
    }
    audio_sha, jams_sha = file_sha256(audio_path), file_sha256(jams_path)
    content = hashlib.sha256(
        json.dumps(
            {"audio": audio_sha, "jams": jams_sha, "prep": prep.to_json(), "version": Ingest.version},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    return TrackRecord(
        track=track,
        audio=str(audio_path),
        jams=str(jams_path),
        sr=int(sr),
        duration=float(duration),
        channels=n_channels,
        audio_sha256=audio_sha,
        jams_sha256=jams_sha,
        namespaces=namespaces,
        offers=offered_namespaces(namespaces),
        prep=prep,
        notices=notices,
        declared_split=declared,
        content=content,
        labels=labels,
    )


def reference_namespaces() -> set[str]:
    """The namespaces a task takes one reference from (where ingest picks among competitors)."""
    return {task.namespace for task in TASKS.values() if not task.targets.merges_annotations}


def decode_checked(audio_path: Path) -> tuple[np.ndarray, int, tuple[int, int, int] | None]:
    """Decode an audio file to ``(C, n)`` channels, or raise the classified error naming it (unreadable,
    undecodable, unsupported, empty, NaN/inf samples). Returns (channels, sr, header frames or None).
    Ingest and ``predict`` both read audio through it. Only the decoders' own errors are blamed on the
    file (``decode_errors``); a MemoryError or a bug propagates, so the runner retries it."""
    audio_path = Path(audio_path)
    header = header_frames(audio_path)
    try:
        channels, sr = load_channels(audio_path)
    except PermissionError as exc:
        raise errors.UnreadableFileError(audio_path, str(exc)) from None
    except decode_errors() as exc:
        cls = (
            errors.AudioDecodeError
            if header is not None or audio_path.suffix.lower() in (".wav", ".flac", ".ogg")
            else errors.UnsupportedFormatError
        )
        said = str(exc) if isinstance(exc, AudioDecodeFailure) else f"{type(exc).__name__}: {exc}"
        if header is not None:  # libsndfile read the header, then failed in the stream: truncated or damaged
            said += f" (its header declares {header[0]} frames at {header[1]} Hz: truncated or damaged?)"
        raise cls(audio_path, f"cannot decode: {said}") from None
    except OSError as exc:  # an I/O error reading it (a folder, a vanished file, a failing disk)
        raise errors.UnreadableFileError(audio_path, f"cannot be read: {type(exc).__name__}: {exc}") from None
    if channels.size == 0:
        raise errors.EmptyAudioError(audio_path, "no samples")
    if not np.all(np.isfinite(channels)):
        raise errors.NonFiniteAudioError(audio_path, f"{int(np.sum(~np.isfinite(channels)))} NaN/inf samples")
    return channels, sr, header


def _check_audio(audio_path: Path, p: IngestParams, notices: list[Notice]) -> tuple[int | None, float, int, int]:
    """Decode and check the audio; pick what stands for it. Returns (channel, duration, sr, channels)."""
    channels, sr, header = decode_checked(audio_path)
    n = channels.shape[1]
    declared = riff_declared_frames(audio_path)
    if declared is None and header is not None:
        declared = header[0]
    if declared is not None and abs(n - declared) > max(1, p.length_tolerance * declared):
        raise errors.LengthMismatchError(audio_path, f"header says {declared} frames, decoded {n} (truncated?)")
    energy = np.mean(np.square(channels, dtype=np.float64), axis=1)
    mean = channels.mean(axis=0)
    mixed = float(np.mean(np.square(mean, dtype=np.float64)))
    channel = None
    if len(energy) > 1 and energy.mean() > 0 and mixed < energy.mean() * 10 ** (-p.downmix_loss_db / 10):
        channel = int(np.argmax(energy))
        kept = 10 * np.log10(max(mixed, 1e-30) / energy.mean())
        notices.append(
            Notice(
                "downmix",
                f"the mean of the {len(energy)} channels keeps {kept:.1f} dB of their energy "
                f"(phase cancellation?); channel {channel}, the loudest, is used",
            )
        )
        mixed = float(energy[channel])
    if mixed == 0.0:
        raise errors.SilentAudioError(audio_path, "digital silence (every sample is 0)")
    level = 10 * np.log10(mixed)
    if level < p.silence_db:
        raise errors.SilentAudioError(
            audio_path, f"RMS level {level:.1f} dBFS is below the silence threshold {p.silence_db:g} dBFS"
        )
    return channel, n / sr, sr, int(channels.shape[0])


def _load_jams(jams_path: Path):
    import jams

    _check_namespaces(jams_path)
    try:
        jam = jams.load(str(jams_path), validate=True, strict=True)
    # jams builds its objects straight from the JSON mapping before it validates, so a malformed document
    # raises TypeError/KeyError/AttributeError/IndexError from inside jams: the document's fault, like a
    # schema error or bad JSON (ValueError). A MemoryError or an error in mirpipe's own code is not caught.
    except (jams.JamsError, ValueError, TypeError, LookupError, AttributeError, OSError) as exc:
        raise errors.AnnotationSchemaError(jams_path, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]) from None
    _check_finite(jam, jams_path)
    return jam


def _non_finite(value: Any) -> str | None:
    """Where a number in an observation's value is NaN or infinite ("", "frequency", "[2]"), else None."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, (int, float)):
        return "" if not math.isfinite(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if (where := _non_finite(item)) is not None:
                return f".{key}{where}"
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if (where := _non_finite(item)) is not None:
                return f"[{i}]{where}"
    return None


def _check_finite(jam, jams_path: Path) -> None:
    """Every observation's time, duration, confidence and numeric value is finite: Python's JSON reads
    ``NaN`` and ``Infinity``, the JAMS schema's "number" lets them through, and a NaN time would label
    frames silently wrong (every comparison with it is false)."""
    for index, ann in enumerate(jam.annotations):
        for j, obs in enumerate(ann.data):
            fields = {"time": obs.time, "duration": obs.duration, "confidence": obs.confidence}
            bad = [name for name, v in fields.items() if isinstance(v, float) and not math.isfinite(v)]
            where = _non_finite(obs.value)
            if where is not None:
                bad.append(f"value{where}")
            if bad:
                raise errors.AnnotationSchemaError(
                    jams_path,
                    f"annotation {index} ({ann.namespace}), observation {j} (time {obs.time!r}, value {obs.value!r}): "
                    f"{', '.join(bad)} not a finite number",
                )


SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "eval": "test",
}


def _declared_split(jam, jams_path: Path) -> str | None:
    """A split the JAMS declares itself (``sandbox.split``), as datasets with official splits do."""
    value = getattr(jam.sandbox, "split", None) if jam.sandbox is not None else None
    if value is None:
        return None
    split = SPLIT_NAMES.get(str(value).strip().lower())
    if split is None:
        raise errors.SplitError(jams_path, f"sandbox.split is {value!r}; expected one of train, val, test")
    return split


def _check_namespaces(jams_path: Path) -> None:
    """An unknown namespace gets its own class (jams would report it as a generic schema error)."""
    import jams

    try:
        raw = json.loads(jams_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.AnnotationSchemaError(jams_path, f"not JSON: {exc}") from None
    annotations = raw.get("annotations", []) if isinstance(raw, dict) else []
    used = {ns for a in annotations if isinstance(a, dict) and isinstance(ns := a.get("namespace"), str)}
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
    version = "4"  # 3: path-based ids, the Preparation (reference choice, channel, snapping, duration), notices; 4: labels
    record_type = TrackRecord

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        # Splits are assigned by finalize (driver): changing them re-ingests nothing.
        return ctx.params["ingest"].model_dump(
            mode="json", exclude={"corpus", "split_seed", "split_fractions", "change_detection", "vocabularies"}
        )

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        p: IngestParams = ctx.params["ingest"]
        corpus = corpus_dir(ctx)
        if not corpus.is_dir():
            raise FileNotFoundError(f"corpus folder {corpus} does not exist")
        scan = scan_corpus(corpus)
        self._scanned = (corpus, scan.summary())  # for finalize's manifest: one walk of the corpus per run
        items = []
        for track, files in sorted(scan.groups.items()):
            identity = {"files": [_stat(f, p.change_detection == "content") for f in files["audio"] + files["jams"]]}
            items.append(WorkItem(track, payload={"track": track, **files}, identity=identity))
        return items

    def run(self, item: WorkItem, ctx: StageContext) -> TrackRecord:
        return validate_track(item.id, item.payload["audio"], item.payload["jams"], ctx.params["ingest"])

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: TrackRecord) -> bool:
        """The record names the files the scan just found (and stat'ed into the fingerprint): no file
        operation when they are the same strings."""
        return all(
            path in item.payload[kind] or os.path.exists(path) for kind, path in (("audio", record.audio), ("jams", record.jams))
        )

    def outputs_valid_many(self, items: list[WorkItem], ctx: StageContext, raws: list[Mapping[str, Any]]) -> list[bool]:
        """``outputs_valid`` by column."""
        exists = os.path.exists
        return [
            (a in item.payload["audio"] or exists(a)) and (j in item.payload["jams"] or exists(j))
            for item, a, j in zip(items, columns.values(raws, "audio"), columns.values(raws, "jams"))
        ]

    def finalize_outputs(self, ctx: StageContext) -> list[Path]:
        return [ctx.dirs.manifest]

    def finalize_inputs(self, ctx: StageContext) -> Any:
        """The corpus scan's summary (files left out change the manifest without changing a track)."""
        return self._scan_summary(ctx).to_json()

    def _scan_summary(self, ctx: StageContext) -> ScanSummary:
        """The summary of this run's corpus scan (``items`` walked it), or of a fresh one."""
        corpus = corpus_dir(ctx)
        scanned = getattr(self, "_scanned", None)
        return scanned[1] if scanned is not None and scanned[0] == corpus else scan_corpus(corpus).summary()

    def finalize(self, ctx: StageContext, done: Mapping[str, Done]) -> None:
        """The manifest: the records by column, with the split and fingerprint of each track. When every
        record is a row of the ledger's columns in order (a rerun that changes nothing), their columns
        are copied as text: the file is rebuilt without decoding them."""
        p: IngestParams = ctx.params["ingest"]
        tracks = sorted(done)
        rows = record_rows(done[t] for t in tracks)
        declared = columns.values(rows, "declared_split")
        free = {t: ns for t, ns, d in zip(tracks, columns.values(rows, "namespaces"), declared) if d is None}
        splits = assign_splits(free, p.split_fractions, p.split_seed)
        summary = self._scan_summary(ctx)
        split_of = [d if d is not None else splits[t] for t, d in zip(tracks, declared)]
        vocabularies = build_vocabularies(split_of, columns.values(rows, "labels", {}), p)
        table = RecordTable.from_columns(
            ManifestRow,
            "track",
            {
                **columns.gather(rows, list(record_fields(TrackRecord))),
                "split": split_of,
                "fingerprint": [done[t].fingerprint for t in tracks],
            },
            rows=len(tracks),
            extra={"scan": summary.to_json(), "vocabularies": vocabularies},
        )
        write_bytes_if_changed(ctx.dirs.manifest, table.to_bytes())

    def status_notes(self, ctx: StageContext) -> list[str]:
        """The corpus scan and the decisions ingest took, from the manifest."""
        path = ctx.dirs.manifest
        if not path.exists():
            return []
        try:
            manifest = read_manifest(ctx)
            scan = ScanSummary.from_json(manifest.extra["scan"])
        except (KeyError, TypeError, ValueError, WorkdirFileError):
            return [f"{path} is not a manifest of this mirpipe; rerun ingest"]
        notes = [
            f"corpus: {scan.files} files seen, {scan.tracks} tracks"
            + "".join(f"; {n} {reason}" for reason, n in scan.ignored.items())
        ]
        for reason, paths in scan.examples.items():
            notes += [f"  left out ({reason}): {path}" for path in paths[:NOTES_LISTED]]
            if scan.ignored[reason] > NOTES_LISTED:
                notes.append(f"  ... {scan.ignored[reason] - NOTES_LISTED} more ({path})")
        for task_name, vocab in manifest.extra.get("vocabularies", {}).items():
            notes += vocabulary_notes(task_name, Vocabulary.from_json(vocab))
        declared = sum(split is not None for split in manifest.column("declared_split"))
        if declared:
            notes.append(f"splits: {declared} of {len(manifest)} tracks use the split their JAMS declares")
        noticed = [(track, Notice.from_json(n)) for track, notices in zip(manifest, manifest.column("notices")) for n in notices]
        by_code: dict[str, int] = {}
        for _, n in noticed:
            by_code[n.code] = by_code.get(n.code, 0) + 1
        if noticed:
            notes.append("warnings: " + ", ".join(f"{code} {k}" for code, k in sorted(by_code.items())))
            notes += [f"  WARNING {track}: {n.code}: {n.message}" for track, n in noticed[:NOTES_LISTED]]
            if len(noticed) > NOTES_LISTED:
                notes.append(f"  ... {len(noticed) - NOTES_LISTED} more warnings ({path})")
        return notes


def build_vocabularies(
    splits: Sequence[str], labels: Sequence[Mapping[str, list[str]] | None], p: IngestParams
) -> dict[str, Any]:
    """Per task with corpus labels, its vocabulary (classes, aliases, tracks per class and split,
    labels outside the classes) from what ``validate_track`` recorded (each track's split and labels)."""
    out = {}
    for task in TASKS.values():
        if task.vocabulary is not None and task.labels_of is None:  # a task with labels_of uses that task's
            tracks = ((split, (lab or {}).get(task.name, [])) for split, lab in zip(splits, labels))
            out[task.name] = build_vocabulary(tracks, p.vocabularies.get(task.name)).to_json()
    return out


NOTES_LISTED = 20  # lines per kind that status prints (the manifest keeps them all)


def read_manifest(ctx: StageContext) -> RecordTable[ManifestRow]:
    """The manifest's rows by track id (empty before ingest ran); read once per version of the
    file in a process. A malformed file is a ``WorkdirFileError``."""
    path = ctx.dirs.manifest
    if not path.exists():
        return RecordTable.from_rows(ManifestRow, "track", [])
    return read_cached(path, _load_manifest)


def _load_manifest(path: Path) -> RecordTable[ManifestRow]:
    try:
        return RecordTable.from_bytes(ManifestRow, "track", read_file(path), rows_key="tracks")
    except (KeyError, TypeError, RecordError) as exc:
        raise WorkdirFileError(path, f"not a manifest written by this mirpipe ({exc}); rerun ingest") from None
