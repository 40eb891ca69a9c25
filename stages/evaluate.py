"""evaluate: per test track (unshifted variant), predict over the whole track, decode to
JAMS, score with mir_eval; the driver writes per-track CSV, duration-weighted
totals (``reports/<task>/scores.json``) and the figures."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mirpipe.storage import open_store
from mirpipe.storage.atomic import write_bytes, write_json

from .base import Done, Stage, StageContext, WorkItem
from .features import FeaturesParams, store_root
from .ingest import read_manifest
from .train import UNSHIFTED, build_model, train_dir


def _finite(x: float) -> float | None:
    """JSON has no NaN: a metric with nothing to score is null."""
    return None if x is None or not np.isfinite(x) else float(x)


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[Literal["chord"]] = Field(default_factory=lambda: ["chord"])
    checkpoint: Literal["best", "last"] = Field("best", description="which training checkpoint to score")
    viterbi: bool = Field(True, description="decode with the self-transition prior; false: frame argmax")
    figures: int = Field(3, ge=0, description="tracks to plot (CQT with reference and estimated labels)")
    device: str = Field("auto", description="auto, cpu, cuda")


def report_dir(ctx: StageContext, task: str) -> Path:
    return ctx.path("reports", task)


def load_model(ctx: StageContext, task: str, which: str, device):
    """The trained network (eval mode) and the checkpoint's metadata."""
    import torch

    from .train import TrainParams

    path = train_dir(ctx, task) / f"{which}.pt"
    ckpt = torch.load(path, map_location=device, weights_only=False)
    meta = ckpt["meta"]
    params = TrainParams.model_validate({"tasks": [task], **meta["model"]})
    model = build_model(task, params, meta["n_bins"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), meta


def plot_track(path: Path, cqt: np.ndarray, frame_rate: float, ref, est, title: str) -> None:
    """The CQT with reference and estimated chord segments over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = cqt.shape[0] / frame_rate
    fig, (ax, ax_ref, ax_est) = plt.subplots(3, 1, figsize=(14, 6), sharex=True, gridspec_kw={"height_ratios": [4, 1, 1]})
    ax.imshow(cqt.T.astype(np.float32), origin="lower", aspect="auto", extent=(0, duration, 0, cqt.shape[1]), cmap="magma")
    ax.set_ylabel("CQT bin")
    ax.set_title(title)
    for axis, ann, name in ((ax_ref, ref, "reference"), (ax_est, est, "estimate")):
        for i, obs in enumerate(ann.data):
            axis.axvspan(obs.time, obs.time + obs.duration, color=f"C{i % 10}", alpha=0.35)
            if obs.duration > 0.04 * duration / 4:
                axis.text(obs.time + obs.duration / 2, 0.5, obs.value, ha="center", va="center", fontsize=7, rotation=90)
        axis.set_yticks([])
        axis.set_ylabel(name, rotation=0, ha="right", va="center")
    ax_est.set_xlabel("time (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


class Evaluate(Stage):
    name = "evaluate"
    needs = ("train", "features")
    version = "1"

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        return ctx.params["evaluate"].model_dump(mode="json", exclude={"device"})

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        from mirpipe.models.tasks import get_task

        p: EvaluateParams = ctx.params["evaluate"]
        manifest = read_manifest(ctx)
        items = []
        for task_name in p.tasks:
            trained = upstream["train"].get(task_name)
            if trained is None:
                continue
            task = get_task(task_name)
            tracks = sorted(
                t for t, row in manifest.items()
                if row.get("split") == "test" and task.usable(row.get("namespaces", [])) and f"{t}/{UNSHIFTED}" in upstream["features"]
            )
            for i, track in enumerate(tracks):
                feat = upstream["features"][f"{track}/{UNSHIFTED}"]
                items.append(
                    WorkItem(
                        f"{task_name}/{track}",
                        payload={"task": task_name, "track": track, "jams": manifest[track]["jams"], "plot": i < p.figures},
                        identity={"trained_at": trained.record.get("trained_at")},
                        upstream=(trained.fingerprint, feat.fingerprint),
                    )
                )
        return items

    def run(self, item: WorkItem, ctx: StageContext) -> dict[str, Any]:
        import jams
        import librosa
        import torch

        from mirpipe.models import chord
        from mirpipe.models.trainer import resolve_device

        p: EvaluateParams = ctx.params["evaluate"]
        fp: FeaturesParams = ctx.params["features"]
        task, track = item.payload["task"], item.payload["track"]
        device = resolve_device(p.device)
        model, meta = load_model(ctx, task, p.checkpoint, device)
        entry = open_store(fp.store, store_root(ctx)).read_entry(track, UNSHIFTED, ["cqt"])
        cqt = entry.arrays["cqt"]
        with torch.no_grad():
            logits = model(torch.from_numpy(cqt.astype(np.float32))[None].to(device))["tag"][0]
            posteriors = logits.float().softmax(-1).cpu().numpy()
        ref_jam = jams.load(item.payload["jams"], validate=False)
        ref = next(a for a in ref_jam.annotations if a.namespace == "chord")
        duration = float(ref_jam.file_metadata.duration or cqt.shape[0] / entry.attrs["frame_rate"])
        frame_times = librosa.frames_to_time(np.arange(cqt.shape[0]), sr=entry.attrs["sr"], hop_length=entry.attrs["hop_length"])
        p_self = np.asarray(meta["self_transition"]) if p.viterbi and meta.get("self_transition") else None
        est = chord.decode(posteriors, frame_times, duration, p_self)
        est.annotation_metadata.annotator = {"name": "mirpipe", "model": json.dumps(meta["model"], sort_keys=True)}
        out = report_dir(ctx, task)
        est_jam = jams.JAMS(file_metadata=ref_jam.file_metadata)
        est_jam.annotations.append(est)
        (out / "estimates").mkdir(parents=True, exist_ok=True)
        est_path = out / "estimates" / f"{track}.jams"
        est_jam.save(str(est_path), strict=True)
        scores = chord.score(ref, est)
        record: dict[str, Any] = {"task": task, "track": track, "duration": duration, "scores": scores, "estimate": str(est_path.relative_to(ctx.workdir))}
        if item.payload.get("plot"):
            fig = out / "figures" / f"{track}.png"
            plot_track(fig, cqt, entry.attrs["frame_rate"], ref, est, f"{track}: root {scores['root']['score']:.2f}, majmin {scores['majmin']['score']:.2f}")
            record["figure"] = str(fig.relative_to(ctx.workdir))
        return record

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: Mapping[str, Any]) -> bool:
        return (ctx.workdir / record["estimate"]).exists()

    def finalize(self, ctx: StageContext, done: Mapping[str, Done]) -> None:
        from mirpipe.models.chord import METRICS

        by_task: dict[str, list[dict[str, Any]]] = {}
        for d in done.values():
            by_task.setdefault(d.record["task"], []).append(d.record)
        for task, records in by_task.items():
            records.sort(key=lambda r: r["track"])
            out = report_dir(ctx, task)
            table = io.StringIO()
            writer = csv.writer(table)
            writer.writerow(["track", "duration", *METRICS])
            for r in records:
                writer.writerow([r["track"], f"{r['duration']:.3f}", *(f"{r['scores'][m]['score']:.4f}" for m in METRICS)])
            write_bytes(out / "scores.csv", table.getvalue().encode())
            totals = {}
            for m in METRICS:
                valid = sum(r["scores"][m]["valid"] for r in records)
                totals[m] = sum(r["scores"][m]["correct"] for r in records) / valid if valid > 0 else None
            write_json(out / "scores.json", {
                **totals,
                "n_tracks": len(records),
                "seconds": sum(r["duration"] for r in records),
                "weighting": "duration (seconds mir_eval counts for each metric, summed over tracks)",
                "tracks": {r["track"]: {m: _finite(r["scores"][m]["score"]) for m in METRICS} for r in records},
            })
