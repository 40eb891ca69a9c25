"""Score an exported model on a folder of real recordings (audio + same-stem JAMS): chord, melody
(with pYIN beside the model) and instrument, in one table.

Every step is the project's own code, so the figures are those of what ``mirpipe predict`` writes:
ingest's checks of each pair (``stages.ingest.validate_track``: a bad file is a classified error
naming it, and the reference is the prepared JAMS evaluate reads), ``mirpipe predict``'s task body
(``pipeline.inference.predict_file``, which writes the estimate JAMS scored here), and each task's
scorer (mir_eval per file, pooled by duration as ``mirpipe run``'s evaluate pools; pYIN is the
pitch task's baseline, scored the same way). A task is scored on a file when its JAMS holds the
task's reference namespace (after jams.nsconvert) and the model has the task; folder names mean
nothing. An instrument the model has no class for (after its aliases and ``--alias``) is counted
"not in vocabulary" and left out of the accuracy. A file that cannot be read or scored is named
with the reason and the rest go on (exit status 1 then).

    .venv/bin/mirpipe export --workdir work/demo --out /tmp/demo.mirpipe
    .venv/bin/python benchmarks/bench_real.py --model /tmp/demo.mirpipe --folder ../shared/realval \\
        --json /tmp/realval.json [--out /tmp/realval-estimates] [--alias vocals=voice] [--no-pyin] \\
        [--gain-db=-12,12]

``--gain-db`` scores the folder again with every recording that many dB louder or quieter (a float
WAV copy, so nothing clips) and prints one row per level: real recordings lie 10-30 dB apart, and a
model that calls a quiet recording "no chord" or "unvoiced" shows it there.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TASK_ORDER = ("chord", "pitch", "instrument", "instrument_embed")  # the tasks this table scores, in its row order
SHOWN = {"chord": "chord", "pitch": "melody", "instrument": "instrument", "instrument_embed": "instrument (musicnn embedding)"}
INSTRUMENT = ("instrument", "instrument_embed")  # scored as solo clips / mixtures by the instrument scorer
COLUMNS = {"chord": ("root", "majmin", "sevenths"), "pitch": ("OA", "RPA", "RCA", "VR", "VFA")}
NOT_IN_VOCABULARY = "not in vocabulary"


# -- the folder ------------------------------------------------------------------------------------


def find_pairs(folder: Path, skip: Path | None = None) -> list[tuple[str, Path | None, Path | None, str | None]]:
    """(name relative to ``folder``, audio, JAMS, why the pair cannot be scored or None) of every
    audio file and every JAMS under ``folder`` (recursively; nothing under ``skip``, where the
    estimates go). A missing half or a stem shared by two audio files is reported, never skipped."""
    from mirpipe.pipeline.predict import list_inputs

    def kept(path: Path) -> bool:
        return skip is None or not path.resolve().is_relative_to(skip.resolve())

    audio: dict[Path, list[Path]] = {}
    for a, _ in list_inputs([folder]):
        if kept(a):
            audio.setdefault(a.with_suffix(""), []).append(a)
    annotated = {j.with_suffix(""): j for j in folder.rglob("*.jams") if not j.name.startswith(".") and kept(j)}
    out = []
    for stem in sorted(set(audio) | set(annotated)):
        found, jams_path = audio.get(stem, []), annotated.get(stem)
        problem = None
        if not found:
            problem = "a JAMS without an audio file of the same stem"
        elif jams_path is None:
            problem = "no .jams of the same stem"
        elif len(found) > 1:
            problem = f"{len(found)} audio files share the stem ({', '.join(a.name for a in found)}): which one is annotated?"
        shown = found[0] if found else jams_path
        assert shown is not None  # a stem comes from an audio file or a JAMS
        out.append((shown.relative_to(folder).as_posix(), found[0] if found else None, jams_path, problem))
    return out


def parse_aliases(pairs: Sequence[str]) -> dict[str, str]:
    """``REF=CLASS`` options as a normalised alias table (a reference label -> a model class)."""
    from mirpipe.models.labels import normalise

    out = {}
    for pair in pairs:
        ref, sep, cls = pair.partition("=")
        if not sep or not ref.strip() or not cls.strip():
            raise SystemExit(f"--alias {pair!r}: expected REF=CLASS (e.g. vocals=voice)")
        out[normalise(ref)] = normalise(cls)
    return out


# -- one file --------------------------------------------------------------------------------------


def tasks_for(offers: Sequence[str], model_tasks: Sequence[str]) -> list[str]:
    """The tasks of this table that the model has and whose reference namespace the JAMS offers."""
    from mirpipe.models.task import TASKS

    return [t for t in TASK_ORDER if t in model_tasks and TASKS.get(t).targets.usable(offers)]


def estimates_by_task(est_jam) -> dict[str, Any]:
    """The annotations of a ``predict_file`` JAMS by the task that wrote them (its annotator record)."""
    return {ann.annotation_metadata.annotator["task"]: ann for ann in est_jam.annotations}


def score_scored_task(task, ref_jam, est, audio: Path, prep, baselines: bool) -> dict[str, Any]:
    """mir_eval scores of one file for a task scored frame by frame (chord, melody), and of the
    task's baseline (pYIN for melody) on the same audio, both with the task's scorer."""
    ref = task.targets.reference(ref_jam)
    out: dict[str, Any] = {"scores": task.trained.scorer.score(ref, est)}
    if baselines and task.baseline is not None:
        base = task.baseline.run(str(audio), prep, prep.duration)
        if base is not None:
            out["baseline"] = {"name": task.baseline.name, "scores": task.trained.scorer.score(ref, base)}
    return out


def score_instrument(task, ref_jam, est, aliases: Mapping[str, str]) -> dict[str, Any]:
    """A clip's reference instrument(s) mapped onto the model's classes (its aliases, then
    ``aliases``) against the clip label the model predicted. One known label: scored (right or
    wrong); one unknown label: not in vocabulary (not scored); several: the task's mixture mAP."""
    from mirpipe.models.labels import Vocabulary

    activity, clip = est.sandbox.activity, est.sandbox.clip
    vocab = Vocabulary(list(activity["classes"]), {**activity.get("aliases", {}), **aliases})
    labels = task.vocabulary.labels(ref_jam)
    mapped = sorted({vocab.canonical(x) for x in labels})
    unknown = [x for x in mapped if x not in vocab.classes]
    out: dict[str, Any] = {"reference": labels, "mapped": mapped, "estimate": clip["label"]}
    out["probability"] = clip.get("probabilities", {}).get(clip["label"])
    if len(mapped) == 1:
        out["status"] = NOT_IN_VOCABULARY if unknown else "scored"
        out["correct"] = None if unknown else mapped[0] == clip["label"]
    else:
        out["status"] = "mixture"
        out["not_in_vocabulary"] = unknown
        out["scores"] = task.trained.scorer.score(task.targets.reference(ref_jam), est)
    return out


def score_file(
    name: str,
    audio: Path | None,
    jams_path: Path | None,
    problem: str | None,
    bundle_path: Path,
    bundle,
    out: Path,
    options: argparse.Namespace,
) -> dict[str, Any]:
    """Check, predict and score one pair; failures come back as ``error`` (the reason, one line)
    for the whole file or per task, never raised."""
    from mirpipe import errors

    result: dict[str, Any] = {"file": name, "tasks": {}, "error": None, "warnings": []}
    if problem is not None or audio is None or jams_path is None:
        result["error"] = problem
        return result
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", DeprecationWarning)  # libraries' API notices say nothing of the data
        try:
            _predict_and_score(result, name, audio, jams_path, bundle_path, bundle, out, options)
        except errors.InputError as exc:
            result["error"] = f"{type(exc).__name__}: {exc.reason}"
        except Exception as exc:  # noqa: BLE001 - one file's surprise must not stop the table; it is named
            result["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    result["warnings"] = sorted({str(w.message).splitlines()[0] for w in caught})
    return result


def _predict_and_score(
    result: dict[str, Any],
    name: str,
    audio: Path,
    jams_path: Path,
    bundle_path: Path,
    bundle,
    out: Path,
    options: argparse.Namespace,
) -> None:
    import jams

    from mirpipe.annotations.prepare import prepared_jams
    from mirpipe.models.task import TASKS
    from mirpipe.pipeline.inference import predict_file
    from mirpipe.stages.ingest import IngestParams, validate_track

    record = validate_track(audio.stem, [str(audio)], [str(jams_path)], IngestParams())
    result["duration"] = record.duration
    tasks = tasks_for(record.offers, list(bundle.tasks))
    if not tasks:
        result["error"] = (
            f"no reference for a task of the model ({', '.join(sorted(bundle.tasks))}); "
            f"the JAMS offers {', '.join(record.offers) or 'no annotation'}"
        )
        return
    estimate = out / Path(name).with_suffix(".jams")
    predict_file(str(audio), str(estimate), str(bundle_path), tasks, options.device)
    est = estimates_by_task(jams.load(str(estimate), validate=False))
    ref_jam = prepared_jams(str(jams_path), record.prep)
    for t in tasks:
        task = TASKS.get(t).bind(bundle.tasks[t].vocabulary)
        try:
            if t in INSTRUMENT:
                result["tasks"][t] = score_instrument(task, ref_jam, est[t], options.aliases)
            else:
                result["tasks"][t] = score_scored_task(task, ref_jam, est[t], audio, record.prep, not options.no_pyin)
        except ValueError as exc:  # mir_eval rejects this reference: this task of this file only
            result["tasks"][t] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}


# -- pooling ---------------------------------------------------------------------------------------


def pool_scores(task_name: str, rows: Sequence[dict[str, Any]], key: str | None) -> dict[str, Any]:
    """A task's per-file scores (``key`` None: the model's; else its baseline's) pooled as
    evaluate pools them: each metric weighted by the seconds it counts."""
    from mirpipe.models.task import TASKS

    scorer = TASKS.get(task_name).trained.scorer
    per_file = [r["scores"] if key is None else r["baseline"]["scores"] for r in rows if key is None or "baseline" in r]
    return {"metrics": scorer.pool(per_file), "files": len(per_file)}


def pool_instrument(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Clip accuracy over the clips whose instrument the model knows (with a Wilson 95% interval),
    the clips it does not know (by label), and the mixtures' mean mAP where there are any."""
    from mirpipe.models.instrument import wilson_interval

    clips = [r for r in rows if r["status"] == "scored"]
    right = sum(bool(r["correct"]) for r in clips)
    unknown = Counter(r["mapped"][0] for r in rows if r["status"] == NOT_IN_VOCABULARY)
    unknown.update(x for r in rows if r["status"] == "mixture" for x in r["not_in_vocabulary"])
    mixes = [r["scores"]["mAP"]["score"] for r in rows if r["status"] == "mixture" and "mAP" in r["scores"]]
    return {
        "accuracy": right / len(clips) if clips else None,
        "correct": right,
        "files": len(clips),
        "accuracy_ci95": list(wilson_interval(right, len(clips))) if clips else None,
        "not_in_vocabulary": sum(r["status"] == NOT_IN_VOCABULARY for r in rows),
        "not_in_vocabulary_labels": dict(sorted(unknown.items())),
        "mixtures": len(mixes),
        "mixture_mAP": sum(mixes) / len(mixes) if mixes else None,
    }


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per task: the model's pooled figures, its baseline's (melody: pYIN), files and audio seconds."""
    out: dict[str, Any] = {}
    for t in TASK_ORDER:
        ok = [r for r in results if t in r["tasks"] and "error" not in r["tasks"][t]]
        if not ok:
            continue
        rows = [r["tasks"][t] for r in ok]
        counted = [r for r in ok if r["tasks"][t].get("status") != NOT_IN_VOCABULARY]
        entry: dict[str, Any] = {"seconds": sum(r.get("duration", 0.0) for r in counted)}  # of the files scored
        if t in INSTRUMENT:
            entry["model"] = pool_instrument(rows)
        else:
            entry["model"] = pool_scores(t, rows, None)
            based = [r for r in rows if "baseline" in r]
            if based:
                entry["baseline"] = {"name": based[0]["baseline"]["name"], **pool_scores(t, based, "baseline")}
        out[t] = entry
    return out


# -- the tables ------------------------------------------------------------------------------------


def _figures(task: str, metrics: Mapping[str, Any]) -> str:
    return ", ".join(f"{m} {metrics[m]:.3f}" if metrics.get(m) is not None else f"{m} -" for m in COLUMNS[task] if m in metrics)


def _instrument_figures(pooled: Mapping[str, Any]) -> str:
    if pooled["accuracy"] is None:
        text = "accuracy - (no clip of a known instrument)"
    else:
        lo, hi = pooled["accuracy_ci95"]
        text = f"accuracy {pooled['accuracy']:.3f} ({pooled['correct']} of {pooled['files']}; 95% {lo:.2f}-{hi:.2f})"
    if pooled["not_in_vocabulary"]:
        labels = ", ".join(f"{k} x{v}" for k, v in pooled["not_in_vocabulary_labels"].items())
        text += f"; {pooled['not_in_vocabulary']} not in vocabulary ({labels})"
    if pooled["mixtures"]:
        text += f"; {pooled['mixtures']} mixtures, mAP {pooled['mixture_mAP']:.3f}"
    return text


def summary_table(totals: Mapping[str, Any], model_name: str) -> str:
    """The aggregate rows, one per task and system (Markdown)."""
    lines = ["| task | system | files | audio s | scores |", "|---|---|---|---|---|"]
    for t, entry in totals.items():
        model = entry["model"]
        figures = _instrument_figures(model) if t in INSTRUMENT else _figures(t, model["metrics"])
        lines.append(f"| {SHOWN[t]} | {model_name} | {model['files']} | {entry['seconds']:.1f} | {figures} |")
        base = entry.get("baseline")
        if base is not None:
            lines.append(
                f"| {SHOWN[t]} | {base['name']} | {base['files']} | {entry['seconds']:.1f} | {_figures(t, base['metrics'])} |"
            )
    return "\n".join(lines)


def _file_cell(task: str, row: Mapping[str, Any]) -> str:
    if "error" in row:
        return f"not scored: {row['error']}"
    if task not in INSTRUMENT:
        return _figures(task, {m: v["score"] for m, v in row["scores"].items()})
    ref = " + ".join(row["reference"])
    if row["status"] == "mixture":
        return f"{ref} (mixture): mAP {row['scores'].get('mAP', {}).get('score', float('nan')):.3f}"
    said = f"{ref} -> {row['estimate']}"
    if row["status"] == NOT_IN_VOCABULARY:
        return f"{said}: {NOT_IN_VOCABULARY}, not scored"
    return f"{said} ({'right' if row['correct'] else 'wrong'})"


def files_table(results: Sequence[dict[str, Any]], model_name: str) -> str:
    """One row per file, task and system (Markdown); the instrument rows say reference -> estimate."""
    lines = ["| file | task | system | audio s | result |", "|---|---|---|---|---|"]
    for r in results:
        if r["error"] is not None:
            continue
        seconds = f"{r.get('duration', 0.0):.1f}"
        for t, row in r["tasks"].items():
            lines.append(f"| {r['file']} | {SHOWN[t]} | {model_name} | {seconds} | {_file_cell(t, row)} |")
            if "baseline" in row:
                base = row["baseline"]
                figures = _figures(t, {m: v["score"] for m, v in base["scores"].items()})
                lines.append(f"| {r['file']} | {SHOWN[t]} | {base['name']} | {seconds} | {figures} |")
    return "\n".join(lines)


LEVEL_COLUMNS = (("chord", "root"), ("chord", "majmin"), ("pitch", "OA"), ("pitch", "VR"), ("pitch", "VFA"))


def levels_table(levels: Sequence[Mapping[str, Any]]) -> str:
    """One row per level (``--gain-db``): the headline figures of each task the folder scores, and
    their mean over the levels (Markdown)."""
    shown = [(t, m) for t, m in LEVEL_COLUMNS if any(t in lv["aggregate"] for lv in levels)]
    instruments = [t for t in INSTRUMENT if any(t in lv["aggregate"] for lv in levels)]
    head = [f"{SHOWN[t]} {m}" for t, m in shown] + [f"{SHOWN[t]} right" for t in instruments]
    lines = ["| gain dB | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    sums: list[list[float]] = [[] for _ in head]
    for lv in levels:
        cells = []
        for i, (t, m) in enumerate(shown):
            v = lv["aggregate"].get(t, {}).get("model", {}).get("metrics", {}).get(m)
            cells.append("-" if v is None else f"{v:.3f}")
            if v is not None:
                sums[i].append(v)
        for j, t in enumerate(instruments):
            pooled = lv["aggregate"].get(t, {}).get("model")
            cells.append("-" if not pooled else f"{pooled['correct']} of {pooled['files']}")
            if pooled:
                sums[len(shown) + j].append(pooled["correct"])
        lines.append(f"| {lv['gain_db']:+g} | " + " | ".join(cells) + " |")
    means = [
        f"{sum(v) / len(v):.3f}" if v and i < len(shown) else (f"{sum(v) / len(v):.1f}" if v else "-") for i, v in enumerate(sums)
    ]
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines)


def failures(results: Sequence[dict[str, Any]]) -> list[str]:
    """``file: reason`` of every file not scored, ``file (task): reason`` of every task not scored."""
    out = []
    for r in results:
        if r["error"] is not None:
            out.append(f"{r['file']}: {r['error']}")
        out += [f"{r['file']} ({SHOWN[t]}): {row['error']}" for t, row in r["tasks"].items() if "error" in row]
    return out


# -- the command -----------------------------------------------------------------------------------


def commit_of(path: Path) -> str | None:
    """The short commit of the checkout this script runs from (None outside git)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a model file (mirpipe export) or a trained workdir")
    ap.add_argument("--folder", type=Path, required=True, help="audio files with a .jams of the same stem (any depth)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here (JSON)")
    ap.add_argument("--out", type=Path, default=None, help="keep the estimate JAMS here (default: a temporary folder)")
    ap.add_argument(
        "--alias", action="append", default=[], metavar="REF=CLASS", help="count reference instrument REF as class CLASS"
    )
    ap.add_argument("--no-pyin", action="store_true", help="do not run pYIN beside the melody model")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda: as mirpipe predict --device")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument(
        "--gain-db",
        type=parse_gains,
        default=[],
        metavar="G1,G2",
        help="also score every recording this many dB louder / quieter (e.g. -12,12; write --gain-db=-12,12)",
    )
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.aliases = parse_aliases(args.alias)
    return args


def parse_gains(text: str) -> list[float]:
    """``--gain-db``'s comma-separated dB values (0, the recordings as they are, is always scored)."""
    try:
        gains = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gain-db takes comma-separated dB values, e.g. -12,12; got {text!r}") from None
    if any(abs(g) > 60 for g in gains):
        raise argparse.ArgumentTypeError(f"--gain-db values must lie within +-60 dB, got {text!r}")
    return sorted(set(gains) - {0.0})


def scaled_copy(audio: Path, gain_db: float, folder: Path) -> Path:
    """``audio`` ``gain_db`` dB louder or quieter, as a float WAV in ``folder`` (same rate and
    channels; float, so a louder copy does not clip)."""
    import numpy as np
    import soundfile as sf

    data, sr = sf.read(str(audio), dtype="float32", always_2d=True)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / (audio.stem + ".wav")
    sf.write(str(out), data * np.float32(10 ** (gain_db / 20)), sr, subtype="FLOAT")
    return out


def score_folder(
    args: argparse.Namespace, out: Path, bundle_path: Path, bundle, gain_db: float = 0.0, skip: Path | None = None
) -> list[dict[str, Any]]:
    """Every pair of ``args.folder`` (but those under ``skip``, default ``out``) scored, its estimates
    written in ``out``, its audio ``gain_db`` dB louder or quieter (each copy in a temporary folder,
    removed once scored)."""
    results = []
    for name, audio, jams_path, problem in find_pairs(args.folder, skip=skip or out):
        with tempfile.TemporaryDirectory(prefix="bench-real-gain-") as tmp:
            if gain_db and audio is not None and problem is None:
                audio = scaled_copy(audio, gain_db, Path(tmp))
            results.append(score_file(name, audio, jams_path, problem, bundle_path, bundle, out, args))
        level = f" at {gain_db:+g} dB" if gain_db else ""
        print(f"  {name}{level}: {results[-1]['error'] or ', '.join(SHOWN[t] for t in results[-1]['tasks'])}", file=sys.stderr)
    return results


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Score every pair of ``args.folder``; the report (what ``--json`` writes)."""
    from mirpipe.pipeline.predict import resolve_model

    said: list[str] = []
    bundle_path, bundle = resolve_model(args.model, out, None, warn=said.append)
    t0 = time.perf_counter()
    results = score_folder(args, out, bundle_path, bundle)
    levels = [{"gain_db": 0.0, "aggregate": aggregate(results)}]
    level_failures: list[str] = []
    for gain in args.gain_db:
        scored = score_folder(args, out / f"gain{gain:+g}", bundle_path, bundle, gain, skip=out)
        levels.append({"gain_db": gain, "aggregate": aggregate(scored)})
        level_failures.extend(f"at {gain:+g} dB, {line}" for line in failures(scored))
    return {
        "model": {"path": str(args.model), "name": bundle.name, "identity": bundle.identity, "warnings": said},
        "folder": str(args.folder),
        "commit": commit_of(Path(__file__).resolve().parent),
        "command": shlex.join(["benchmarks/bench_real.py", *args.argv]),
        "seconds": round(time.perf_counter() - t0, 1),
        "aggregate": aggregate(results),
        "files": results,
        "failures": failures(results) + level_failures,
        **({"levels": sorted(levels, key=lambda x: x["gain_db"])} if args.gain_db else {}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not args.folder.is_dir():
        raise SystemExit(f"{args.folder}: not a folder")
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        report = run(args, args.out or Path(tmp))
    name = report["model"]["name"] or args.model.name
    print(f"\n{args.folder}: model {name} ({report['model']['identity']}), {report['seconds']:.0f} s\n")
    print(summary_table(report["aggregate"], name))
    print("\nper file:\n")
    print(files_table(report["files"], name))
    if "levels" in report:
        print("\nthe same recordings louder and quieter (--gain-db):\n")
        print(levels_table(report["levels"]))
    if report["failures"]:
        print("\nnot scored:\n" + "\n".join(f"- {line}" for line in report["failures"]))
    noted = sorted({w for r in report["files"] for w in r["warnings"]})
    if noted:
        print("\nwarnings while predicting (per file in --json):\n" + "\n".join(f"- {w}" for w in noted))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
