"""evaluate: per test track (unshifted), predict over the whole track, decode to
JAMS, score with the task's metrics (mir_eval); the driver writes per-track CSV, pooled
totals (``reports/<task>/scores.json``) and the figures. Every task-specific step is
the task's own (its parts: ``mirpipe.models.task``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mirpipe import errors
from mirpipe.annotations.prepare import Preparation, prepared_jams
from mirpipe.models.settings import fingerprinted
from mirpipe.models.task import TASKS, per_task_params
from mirpipe.records import CheckpointMeta, Record, TaskScores
from mirpipe.stage import STAGES, Done, Stage, StageContext, WorkItem
from mirpipe.storage import open_store
from mirpipe.storage.atomic import atomic_path, write_bytes, write_json
from mirpipe.storage.feature_kinds import FEATURE_KINDS
from mirpipe.storage.stream import resolve_shift

from .features import FeaturesParams, task_inputs
from .ingest import read_manifest
from .train import TrainParams, build_model, trainable_tasks


def _finite(x: float | None) -> float | None:
    """JSON has no NaN: a metric with nothing to score is null."""
    return None if x is None or not np.isfinite(x) else float(x)


@dataclass(frozen=True)
class EvaluateRecord(Record):
    """One scored test track: its per-metric ``{score, weight}`` (the task's pooling input)."""

    task: str
    track: str
    duration: float
    scores: dict[str, dict[str, float]]
    estimate: str  # the estimated JAMS, relative to the workdir
    figure: str | None = None
    baseline: dict[str, dict[str, float]] | None = None  # the task's baseline method, scored the same way
    shifted: dict[str, dict[str, dict[str, float]]] | None = None  # robustness: shift (str) -> scores at that shift
    evidence: dict[str, Any] | None = None  # what the task's pooled metrics need of this track (``Task.evidence``)


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = Field(default_factory=trainable_tasks, description="models to score (default: every trainable task)")
    checkpoint: Literal["best", "last"] = Field("best", description="which training checkpoint to score")
    decoding: dict[str, Any] = Field(default_factory=dict, description="per task, its decoding options")
    figures: int = Field(3, ge=0, description="tracks to plot per task")
    baselines: bool = Field(True, description="score each task's baseline method (if it has one) beside the model")
    robustness: bool = Field(
        False,
        description="also score the test tracks at every shift of augment.shifts "
        "(reference transposed with them): reports/<task>/robustness.csv, .json, .png",
    )
    device: str = Field("auto", description="auto, cpu, cuda")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        return [TASKS.check(t) for t in v]

    @field_validator("decoding", mode="before")
    @classmethod
    def _decoding(cls, v: Any) -> dict[str, BaseModel]:
        return per_task_params(v, "decoding", lambda t: t.trained.decoder.DecodeParams)

    def decode_params(self, task: str) -> BaseModel:
        return self.decoding.get(task) or TASKS.get(task).trained.decoder.DecodeParams()


def report_dir(ctx: StageContext, task: str) -> Path:
    """``Workdir.report_dir`` (kept for callers of the helper)."""
    return ctx.dirs.report_dir(task)


def load_model(ctx: StageContext, task_name: str, which: str, device):
    """The trained network (eval mode) and the checkpoint's metadata (read safely: ``CheckpointError`` if refused)."""
    from mirpipe.models.checkpoint import load_checkpoint

    path = ctx.dirs.checkpoint(task_name, which)
    ckpt = load_checkpoint(path, map_location=device)
    meta = CheckpointMeta.from_json(ckpt["meta"])
    task = TASKS.get(task_name).bind(meta.vocabulary)  # the classes it was trained on
    params = TrainParams.model_validate({"tasks": [task_name], "models": {task_name: meta.model}}).model_params(task_name)
    model = build_model(task, params, meta.n_bins)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), meta


@STAGES.register
class Evaluate(Stage):
    name = "evaluate"
    params = EvaluateParams
    needs = ("train", "features")
    version = "2"  # 2: the prepared reference and the audio's duration
    record_type = EvaluateRecord

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        # tasks and decoding go into each item (changing one task's decoding rescores that task only)
        return ctx.params["evaluate"].model_dump(mode="json", exclude={"device", "tasks", "decoding", "robustness"})

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        p: EvaluateParams = ctx.params["evaluate"]
        manifest = read_manifest(ctx)
        shifts = [n for n in ctx.params["augment"].active_shifts() if n != 0] if p.robustness else []
        items = []
        for task_name in p.tasks:
            trained = upstream["train"].get(task_name)
            if trained is None:
                continue
            task = TASKS.get(task_name)
            tracks = sorted(
                t
                for t, split, offers in zip(manifest, manifest.column("split"), manifest.column("offers"))
                if split == "test" and task.targets.usable(offers) and t in upstream["features"]
            )
            value = manifest.value  # raw fields: no record is built per track
            trained_at = trained.record.trained_at
            for i, track in enumerate(tracks):
                feat = upstream["features"][track]
                items.append(
                    WorkItem(
                        f"{task_name}/{track}",
                        payload={
                            "task": task_name,
                            "track": track,
                            "jams": value(track, "jams"),
                            "audio": value(track, "audio"),
                            "prep": value(track, "prep"),
                            "plot": i < p.figures,
                            "shifts": shifts,
                        },
                        identity={
                            "trained_at": trained_at,
                            **({"robustness": shifts} if shifts else {}),
                            "decoding": fingerprinted(p.decode_params(task_name)),
                            **({"baseline": task.baseline.name} if task.baseline is not None and p.baselines else {}),
                        },
                        upstream=(trained.fingerprint, task_inputs(feat, task)),
                    )
                )
        return items

    def run(self, item: WorkItem, ctx: StageContext) -> EvaluateRecord:
        import jams
        import librosa

        from mirpipe.models.trainer import resolve_device

        p: EvaluateParams = ctx.params["evaluate"]
        fp: FeaturesParams = ctx.params["features"]
        task = TASKS.get(item.payload["task"])
        track = item.payload["track"]
        device = resolve_device(p.device)
        model, meta = load_model(ctx, task.name, p.checkpoint, device)
        task = task.bind(meta.vocabulary)
        shifts = [int(n) for n in item.payload.get("shifts") or ()]
        store = open_store(fp.store, ctx.dirs.store_root(fp.store_path))
        with store.reading(track, [task.feature]), store.opened(track, [task.feature]) as (arrays, attrs):
            # the variant of each shift scored (audio mode stores every shift; feature mode one, read once)
            where = {n: resolve_shift(attrs, n) for n in [0, *shifts]}
            read = {v: np.asarray(arrays[task.feature][v]) for v in sorted({v for v, _ in where.values()})}
        geometry = attrs["features"][task.feature]
        kind = FEATURE_KINDS.get(task.feature)
        stored = read[where[0][0]]
        features = kind.view(stored, geometry, 0)
        frame_rate = geometry["sr"] / geometry["hop_length"]
        prediction = task.trained.decoder.predict(model, features, device)
        jams_path = item.payload["jams"]
        prep = Preparation.from_json(item.payload["prep"])
        ref_jam = prepared_jams(jams_path, prep)  # the reference ingest chose, snapped as ingest validated it
        ref = task.targets.reference(ref_jam)
        if ref is None:
            raise errors.AnnotationSchemaError(jams_path, f"no {task.namespace} annotation to score against")
        n_frames = stored.shape[0]
        duration = prep.duration  # the audio's, never the JAMS's own claim
        frame_times = librosa.frames_to_time(np.arange(n_frames), sr=geometry["sr"], hop_length=geometry["hop_length"])
        est = task.trained.decoder.decode(prediction, frame_times, duration, meta.state, p.decode_params(task.name))
        est.annotation_metadata.annotator = {"name": "mirpipe", "model": json.dumps(meta.model, sort_keys=True)}
        out = ctx.dirs.report_dir(task.name)
        est_jam = jams.JAMS(file_metadata=ref_jam.file_metadata)
        est_jam.annotations.append(est)
        est_path = out / "estimates" / f"{track}.jams"
        with atomic_path(est_path) as tmp:
            est_jam.save(str(tmp), strict=True)
        try:
            scores = task.trained.scorer.score(ref, est)
        except ValueError as exc:  # mir_eval rejects the reference: the same every time, so not retried
            raise errors.ScoringError(jams_path, f"{task.name} scoring failed: {exc}") from None
        baseline = None
        if task.baseline is not None and p.baselines:
            base = task.baseline.run(item.payload["audio"], prep, duration)
            if base is not None:
                try:
                    baseline = task.trained.scorer.score(ref, base)
                except ValueError as exc:
                    raise errors.ScoringError(jams_path, f"{task.name} baseline scoring failed: {exc}") from None
        shifted = None
        if shifts:
            shifted = self._score_shifts(
                task,
                model,
                device,
                read,
                where,
                geometry,
                frame_times,
                duration,
                ref_jam,
                meta.state,
                p.decode_params(task.name),
                jams_path,
            )
        figure = None
        if item.payload.get("plot"):
            fig = out / "figures" / f"{track}.png"
            task.trained.scorer.plot(
                fig, features, frame_rate, ref, est, f"{track}: {task.trained.scorer.summary(scores)}", prediction
            )
            figure = str(fig.relative_to(ctx.workdir))
        evidence = task.trained.scorer.evidence(ref, est) if task.trained.scorer.evidence is not None else None
        return EvaluateRecord(
            task.name, track, duration, scores, str(est_path.relative_to(ctx.workdir)), figure, baseline, shifted, evidence
        )

    @staticmethod
    def _score_shifts(
        task, model, device, read, where, geometry, frame_times, duration, ref_jam, state, options, jams_path
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Scores of the track transposed by each shift: the features at that shift (a bin offset in
        feature mode, the stored variant in audio mode) against the reference transposed the same way
        (``Targets.transpose_annotation``, as audio-mode augmentation moves it)."""
        kind = FEATURE_KINDS.get(task.feature)
        out = {}
        shifts = [n for n in where if n != 0]
        ref0 = task.targets.reference(ref_jam)
        for n in shifts:
            variant, residual = where[n]
            prediction = task.trained.decoder.predict(model, kind.view(read[variant], geometry, residual), device)
            est = task.trained.decoder.decode(prediction, frame_times, duration, state, options)
            ref = task.targets.transpose_annotation(ref0, n)
            try:
                out[str(n)] = task.trained.scorer.score(ref, est)
            except ValueError as exc:
                raise errors.ScoringError(jams_path, f"{task.name} scoring at a shift of {n} failed: {exc}") from None
        return out

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: EvaluateRecord) -> bool:
        return (ctx.workdir / record.estimate).exists()

    def verify_outputs(self, item: WorkItem, ctx: StageContext, record: EvaluateRecord) -> str | None:
        """The estimate JAMS is there and parses as JSON; else what is wrong."""
        path = ctx.workdir / record.estimate
        try:
            json.loads(path.read_bytes())
        except FileNotFoundError:
            return f"estimate {record.estimate} missing"
        except (OSError, ValueError) as exc:
            return f"estimate {record.estimate}: does not read back as JSON ({type(exc).__name__}: {exc})"
        return None

    def finalize_outputs(self, ctx: StageContext) -> list[Path]:
        return [path for t in ctx.params["evaluate"].tasks for path in (ctx.dirs.scores(t), ctx.dirs.scores_csv(t))]

    def finalize(self, ctx: StageContext, done: Mapping[str, Done]) -> None:
        by_task: dict[str, list[EvaluateRecord]] = {}
        for d in done.values():
            record = d.record
            by_task.setdefault(record.task, []).append(record)
        for task_name, records in by_task.items():
            task = TASKS.get(task_name)
            records.sort(key=lambda r: r.track)
            out = ctx.dirs.report_dir(task_name)
            table = io.StringIO()
            writer = csv.writer(table)
            base_name = task.baseline.name if task.baseline is not None else "baseline"
            base_cols = [f"{base_name}:{m}" for m in task.trained.scorer.metrics] if any(r.baseline for r in records) else []
            writer.writerow(["track", "duration", *task.trained.scorer.metrics, *base_cols])
            for r in records:
                writer.writerow(
                    [
                        r.track,
                        f"{r.duration:.3f}",
                        *(f"{r.scores[m]['score']:.4f}" if m in r.scores else "" for m in task.trained.scorer.metrics),
                        *(
                            (
                                f"{r.baseline[m]['score']:.4f}" if r.baseline and m in r.baseline else ""
                                for m in task.trained.scorer.metrics
                            )
                            if base_cols
                            else ()
                        ),
                    ]
                )
            write_bytes(out / "scores.csv", table.getvalue().encode())
            totals = task.trained.scorer.pool([r.scores for r in records])
            evidence = [r.evidence for r in records if r.evidence is not None]
            pool_evidence = task.trained.scorer.pool_evidence
            # e.g. macro-F1, a confusion matrix
            pooled = pool_evidence(evidence, out / "figures") if evidence and pool_evidence else {}
            based = [r for r in records if r.baseline is not None]
            baseline = {}
            if based:
                baseline = {
                    "baseline": {
                        "name": base_name,
                        **{
                            m: _finite(v)
                            for m, v in task.trained.scorer.pool([r.baseline for r in based if r.baseline is not None]).items()
                        },
                        "n_tracks": len(based),
                        "tracks": {
                            r.track: {m: _finite(r.baseline[m]["score"]) for m in task.trained.scorer.metrics if m in r.baseline}
                            for r in based
                            if r.baseline is not None
                        },
                    }
                }
            pooled_metrics = {k: v for k, v in pooled.items() if k != "notes" and (v is None or isinstance(v, (int, float)))}
            write_json(
                ctx.dirs.scores(task_name),
                TaskScores(
                    metrics={**{m: _finite(v) for m, v in totals.items()}, **pooled_metrics},  # pooled figures as they came
                    columns=list(task.trained.scorer.score_columns),
                    scored_by=task.trained.scorer.scored_by,
                    n_tracks=len(records),
                    seconds=sum(r.duration for r in records),
                    weighting="each metric's per-track weight (e.g. the seconds mir_eval counts), summed over tracks",
                    tracks={
                        r.track: {m: _finite(r.scores[m]["score"]) for m in task.trained.scorer.metrics if m in r.scores}
                        for r in records
                    },
                    baseline=baseline.get("baseline"),
                    notes=list(pooled.get("notes", [])),
                    extra={k: v for k, v in pooled.items() if k != "notes" and k not in pooled_metrics},
                ).to_json(),
            )
            if any(r.shifted for r in records):
                write_robustness(out, task, records)


def robustness_table(task, records) -> tuple[list[int], dict[str, list[float | None]], list[int]]:
    """(shifts, {metric: pooled score at each shift}, tracks scored at each shift); shift 0 pools the
    same per-track scores as scores.json."""
    shifts = sorted({0, *(int(n) for r in records if r.shifted for n in r.shifted)})
    per_shift = {
        n: [r.scores if n == 0 else r.shifted[str(n)] for r in records if n == 0 or (r.shifted and str(n) in r.shifted)]
        for n in shifts
    }
    pooled = {n: task.trained.scorer.pool(per_shift[n]) for n in shifts}
    table = {m: [_finite(pooled[n].get(m)) for n in shifts] for m in task.trained.scorer.metrics}
    return shifts, table, [len(per_shift[n]) for n in shifts]


def write_robustness(out: Path, task, records) -> None:
    """reports/<task>/robustness.csv (metric x shift), .json and .png (the summary columns)."""
    from mirpipe.models.figures import plot_robustness

    shifts, table, counts = robustness_table(task, records)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["metric", *(f"{n:+d}" if n else "0" for n in shifts)])
    for m, values in table.items():
        writer.writerow([m, *("" if v is None else f"{v:.4f}" for v in values)])
    write_bytes(out / "robustness.csv", text.getvalue().encode())
    write_json(
        out / "robustness.json",
        {"shifts": shifts, "metrics": table, "n_tracks": counts, "columns": list(task.trained.scorer.score_columns)},
    )
    shown = {m: table[m] for m in task.trained.scorer.score_columns if m in table} or table
    plot_robustness(
        out / "robustness.png", shifts, shown, f"{task.name}: test tracks transposed (pooled over {max(counts)} tracks)"
    )
