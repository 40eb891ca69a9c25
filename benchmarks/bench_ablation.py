"""What pitch-shift augmentation buys, and whether feature mode matches audio mode.

Trains the demo chord model three ways on the same synthesized corpus, with the same
seed and the same number of steps, and prints their mir_eval scores side by side
(the evaluate stage's ``reports/chord/scores.json``, test split):

  - none:    augment.enabled false (no shifts at all)
  - audio:   augment.mode audio (every shift's waveform pitch-shifted, labels by muda)
  - feature: augment.mode feature (shifts as CQT bin offsets, labels moved by the task)

    python benchmarks/bench_ablation.py [--tracks 24] [--steps-per-epoch 100] [--epochs 8] [--workdir DIR]

The corpus is synthesized and ingested once, then copied for each variant (each gets its
own features, training and evaluation). Features hold the chord task only (``--tasks``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from mirpipe.pipeline.cluster import SyncExecutor
from mirpipe.pipeline.config import PipelineConfig
from mirpipe.pipeline.runner import Runner

VARIANTS = {
    "none": {"enabled": False},
    "audio": {"mode": "audio"},
    "feature": {"mode": "feature"},
}
COLUMNS = ("root", "majmin", "mirex", "thirds", "triads", "sevenths", "tetrads", "seg")


def config(args, augment: dict | None = None) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "synthesize": {"tracks": args.tracks, "seed": args.corpus_seed, "clips_per_family": 0},
            "augment": {"shifts": list(range(-args.max_shift, args.max_shift + 1)), **(augment or {})},
            "features": {"tasks": args.tasks},
            "train": {
                "tasks": ["chord"],
                "seed": args.seed,
                "steps_per_epoch": args.steps_per_epoch,
                "max_epochs": args.epochs,
                "patience": args.patience,
                "progress": "off",
                **({"threads": args.threads} if args.threads else {}),
            },
            "evaluate": {"tasks": ["chord"], "figures": 0},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=24, help="demo tracks (the demo's default)")
    ap.add_argument("--corpus-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="training seed (the same for every variant)")
    ap.add_argument("--steps-per-epoch", type=int, default=100, help="the demo's train settings by default")
    ap.add_argument("--epochs", type=int, default=8, help="max_epochs")
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--max-shift", type=int, default=6, help="shifts -N..N")
    ap.add_argument("--tasks", nargs="+", default=["chord"], help="tasks whose targets the features hold")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory, removed afterwards")
    args = ap.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mirpipe-bench-ablation-"))
    quiet = dict(log=lambda m: None, progress=False)
    try:
        base = workdir / "corpus-base"
        t0 = time.perf_counter()
        Runner(base, config(args), **quiet).run(SyncExecutor(), until="ingest")
        print(
            f"corpus: {args.tracks} tracks (seed {args.corpus_seed}) in {time.perf_counter() - t0:.0f} s; train seed {args.seed}, "
            f"{args.steps_per_epoch} steps/epoch, at most {args.epochs} epochs (patience {args.patience}), "
            f"shifts -{args.max_shift}..{args.max_shift}"
        )
        scores, seconds = {}, {}
        for name in args.variants:
            wd = workdir / name
            if not wd.exists():
                shutil.copytree(base, wd)
            cfg = config(args, VARIANTS[name])
            times = {}
            for stage in ("features", "train", "evaluate"):
                t = time.perf_counter()
                (report,) = (
                    Runner(wd, cfg, **quiet).run(SyncExecutor(), only=stage)
                    if stage != "features"
                    else Runner(wd, cfg, **quiet).run(SyncExecutor(), until="features")[-1:]
                )
                if report.failures:
                    raise RuntimeError(f"{name}: {stage} failed: {report.failures[0]}")
                times[stage] = time.perf_counter() - t
            scores[name] = json.loads((wd / "reports" / "chord" / "scores.json").read_text())
            seconds[name] = times
            print(
                f"  {name:>8}: "
                + ", ".join(f"{s} {v:.0f} s" for s, v in times.items())
                + f"; majmin {scores[name].get('majmin')}",
                flush=True,
            )

        n = {s["n_tracks"] for s in scores.values()}
        print(f"\nchord scores on the test split ({'/'.join(map(str, n))} tracks), mir_eval, weighted by duration")
        print(f"{'variant':>8} " + " ".join(f"{c:>9}" for c in COLUMNS))
        for name, s in scores.items():
            print(f"{name:>8} " + " ".join(f"{s[c]:>9.4f}" if s.get(c) is not None else f"{'-':>9}" for c in COLUMNS))
        if "audio" in scores and "feature" in scores:
            d = scores["feature"]["majmin"] - scores["audio"]["majmin"]
            print(f"\nfeature - audio majmin: {d:+.4f} ({'within' if abs(d) <= 0.02 else 'NOT within'} 0.02)")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
