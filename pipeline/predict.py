"""The driver of ``mirpipe predict`` and ``mirpipe export``: resolve the model (a bundle file or a
workdir), list the inputs, skip what is current, run one Dask task per file on the configured
cluster, and record each output in ``<out>/.mirpipe/predict.jsonl`` (resume reads it once).
``<out>/.mirpipe/`` also holds a workdir model's bundle and, on a batch system, the job logs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirpipe.models.bundle import SUFFIX, ModelBundle, load_bundle

ADMIN = ".mirpipe"  # under --out: what predict keeps besides the outputs
LEDGER = f"{ADMIN}/predict.jsonl"
MODEL_DIR = f"{ADMIN}/model"  # a workdir model's bundle, written under --out for the workers to read


@dataclass
class PredictReport:
    results: list[dict[str, Any]] = field(default_factory=list)  # one per input, in input order

    @property
    def failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.results)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


def bundle_of_workdir(workdir: Path, tasks: Sequence[str] | None = None) -> ModelBundle:
    from mirpipe.pipeline.inference import bundle_from_workdir
    from mirpipe.stage import StageContext

    from . import workdir as wd
    from .config import ConfigError

    if wd.recorded(workdir) is None:
        raise ConfigError(f"{workdir}: no {wd.RECORD} here; --model takes a {SUFFIX} file or a mirpipe workdir")
    pipeline, _ = wd.resolve(workdir, None, None)
    ctx = StageContext(Path(workdir), pipeline.stage_params(), tuple(pipeline.plugins))
    return bundle_from_workdir(ctx, tasks)


def resolve_model(model: Path, out: Path, tasks: Sequence[str] | None, warn: Callable[[str], None]) -> tuple[Path, ModelBundle]:
    """(bundle file, bundle): a file is checked and read; a workdir is bundled into ``<out>/.model/``
    (named by its identity, so an unchanged workdir is bundled once)."""
    model = Path(model)
    if model.is_file():
        return model, load_bundle(model, warn=warn)
    bundle = bundle_of_workdir(model, tasks)
    path = out / MODEL_DIR / f"{bundle.identity}{SUFFIX}"
    if not path.exists():
        bundle.save(path)
    return path, bundle


def list_inputs(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(audio file, output path relative to --out): a folder's audio files (recursively, by
    extension) keep their subfolders; a file named on the command line is taken whatever it is."""
    from mirpipe.audio.io import AUDIO_EXTENSIONS

    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS and not f.name.startswith("."):
                    out.append((f, f.relative_to(p).with_suffix(".jams")))
        else:
            out.append((p, Path(p.name).with_suffix(".jams")))
    return out


def read_ledger(out: Path) -> dict[str, str]:
    """output (relative) -> the key it was written for; the last line of an output wins."""
    done: dict[str, str] = {}
    path = out / LEDGER
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            done[row["output"]] = row["key"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a killed run: that output is redone
    return done


def _failure(audio: Path, rel: Path, exc: BaseException) -> dict[str, Any]:
    from mirpipe.errors import InputError

    return {
        "input": str(audio),
        "output": None,
        "status": "failed",
        "error_class": type(exc).__name__,
        "file": getattr(exc, "path", str(audio)) if isinstance(exc, InputError) else str(audio),
        "message": getattr(exc, "reason", None) or str(exc),
        "summary": "",
    }


def run_predict(
    inputs: Sequence[Path],
    bundle_path: Path,
    bundle: ModelBundle,
    out: Path,
    tasks: Sequence[str],
    executor,
    device: str = "auto",
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> PredictReport:
    """Predict each input not yet done for this model; failures are recorded, the rest go on."""
    from mirpipe.pipeline.inference import input_key, predict_file

    (out / ADMIN).mkdir(parents=True, exist_ok=True)
    listing = list_inputs(inputs)
    done = {} if force else read_ledger(out)
    results: dict[int, dict[str, Any]] = {}
    calls, where = [], {}
    seen: dict[Path, Path] = {}
    for i, (audio, rel) in enumerate(listing):
        if rel in seen:
            from mirpipe.errors import DuplicateTrackError

            results[i] = _failure(
                audio,
                rel,
                DuplicateTrackError(audio, f"writes {rel}, as {seen[rel]} does: rename one or predict them separately"),
            )
            continue
        seen[rel] = audio
        try:
            key = input_key(bundle.identity, tasks, audio)
        except OSError as exc:
            from mirpipe.errors import MissingAudioError, UnreadableFileError

            cls = MissingAudioError if isinstance(exc, FileNotFoundError) else UnreadableFileError
            results[i] = _failure(audio, rel, cls(audio, exc.strerror or str(exc)))
            continue
        if done.get(str(rel)) == key and (out / rel).exists():
            results[i] = {"input": str(audio), "output": str(out / rel), "status": "skipped", "summary": "up to date"}
            continue
        call_key = f"predict-{i}-{key[:8]}"
        calls.append((call_key, (str(audio), str(out / rel), str(bundle_path), list(tasks), device, key)))
        where[call_key] = (i, audio, rel, key)
    if progress is not None:
        for i in sorted(results):  # skipped, or failed before submission
            progress(results[i])
    with open(out / LEDGER, "a") as ledger:
        for call_key, result in executor.run(predict_file, calls):
            i, audio, rel, key = where[call_key]
            if isinstance(result, BaseException):
                results[i] = _failure(audio, rel, result)
            else:
                results[i] = {**result, "status": "done"}
                ledger.write(json.dumps({"output": str(rel), "key": key, "input": str(audio)}) + "\n")
                ledger.flush()
                os.fsync(ledger.fileno())
            if progress is not None:
                progress(results[i])
    return PredictReport([results[i] for i in sorted(results)])


def export(workdir: Path, out: Path, tasks: Sequence[str] | None = None) -> ModelBundle:
    """Bundle a workdir's trained models into ``out`` (``NAME.mirpipe``)."""
    bundle = bundle_of_workdir(workdir, tasks)
    bundle.name = Path(out).name.removesuffix(SUFFIX)
    bundle.identity = bundle.compute_identity()
    bundle.save(out)
    return bundle
