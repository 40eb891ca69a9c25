"""Wall time of the features stage (one item per track) on the demo corpus by executor: synchronous, LocalCluster with 1
and 2 workers, and the local SLURM with 2 worker jobs (scripts/slurm-local.sh start).

Prints per executor: cluster start-up, the wall time of features, the summed task time,
the speed-up and parallel efficiency against the synchronous run (T_sync / (n * T_n)), and two
measures of scheduler overhead per task: a batch of no-op tasks through the same executor, and
(wall - summed task time / workers) / tasks on the real stages.

    python benchmarks/bench_cluster.py [--tracks 4] [--duration 20] [--shifts 13] [--noops 200]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import PipelineConfig, parse_cluster
from mirpipe.pipeline.ledger import Ledger
from mirpipe.pipeline.runner import Runner

REPO = Path(__file__).resolve().parent.parent
STAGES_TIMED = ("features",)


def _config(tracks: int, duration: float, shifts: int, mode: str) -> PipelineConfig:
    half = shifts // 2
    return PipelineConfig.model_validate(
        {
            "synthesize": {"tracks": tracks, "clips_per_family": 0, "min_duration": duration, "max_duration": duration + 4},
            "augment": {"shifts": list(range(-half, shifts - half)), "mode": mode},
        }
    )


def _executors(slurm: bool) -> list[tuple[str, int, dict]]:
    out = [
        ("sync", 1, {"type": "sync"}),
        ("local 1 worker", 1, {"type": "local", "n_workers": 1, "memory_limit": "4GiB"}),
        ("local 2 workers", 2, {"type": "local", "n_workers": 2, "memory_limit": "4GiB"}),
    ]
    if slurm:
        out.append(
            (
                "slurm 2 jobs",
                2,
                {
                    "type": "slurm",
                    "cores": 1,
                    "memory": "4GiB",
                    "jobs": 2,
                    "queue": "debug",
                    "walltime": "00:30:00",
                    "python": sys.executable,
                    "local_directory": "/tmp",
                },
            )
        )
    return out


def _warm(executor) -> None:
    """Start every worker and import the stages there (not what the stages cost)."""
    client = getattr(executor, "client", None)
    if client is not None:
        client.wait_for_workers(getattr(executor, "expected", 1), timeout=300)
        client.run(lambda: __import__("mirpipe.stages.features"))


def bench_one(name: str, n: int, cluster: dict, template: Path, cfg: PipelineConfig, noops: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mirpipe-benchc-")) / "work"
    shutil.copytree(template, work)
    try:
        t0 = time.perf_counter()
        with open_executor(parse_cluster(cluster), work) as ex:
            ex.expected = n
            _warm(ex)
            startup = time.perf_counter() - t0
            runner = Runner(work, cfg, progress=False)
            t1 = time.perf_counter()
            reports = [runner.run_stage(s, ex) for s in STAGES_TIMED]
            wall = time.perf_counter() - t1
            t2 = time.perf_counter()
            list(ex.run(abs, [(f"noop-{i}-{time.time_ns()}", (i,)) for i in range(noops)]))
            noop = (time.perf_counter() - t2) / noops
        assert all(r.failed == 0 for r in reports), [r.failures for r in reports]
        tasks = sum(r.done for r in reports)
        task_s = sum(m["seconds"] for s in STAGES_TIMED for m in Ledger(work).done(s).values())
        return {"name": name, "n": n, "startup": startup, "wall": wall, "tasks": tasks, "task_s": task_s, "noop": noop}
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per demo track (plus 0-4)")
    ap.add_argument("--shifts", type=int, default=13, help="pitch-shift variants per track")
    ap.add_argument("--noops", type=int, default=200)
    ap.add_argument("--mode", choices=["audio", "feature"], default="audio", help="augment.mode (audio: the heavy items)")
    args = ap.parse_args()
    cfg = _config(args.tracks, args.duration, args.shifts, args.mode)
    slurm = subprocess.run(["bash", str(REPO / "scripts/slurm-local.sh"), "status"], capture_output=True).returncode == 0
    template = Path(tempfile.mkdtemp(prefix="mirpipe-benchc-corpus-")) / "work"
    try:
        with open_executor(parse_cluster({"type": "sync"})) as ex:  # untimed: the corpus and its manifest
            Runner(template, cfg, progress=False).run(ex, only="synthesize")
            # the copies read the template's corpus, so their ingest markers stay valid
            ingest = cfg.ingest.model_copy(update={"corpus": template / "corpus"})
            cfg = cfg.model_copy(update={"synthesize": None, "ingest": ingest})
            Runner(template, cfg, progress=False).run(ex, only="ingest")
        print(
            f"demo corpus: {args.tracks} tracks of {args.duration:.0f}-{args.duration + 4:.0f} s, {args.shifts} shifts; "
            f"timed: {' + '.join(STAGES_TIMED)}"
        )
        rows = [bench_one(name, n, cl, template, cfg, args.noops) for name, n, cl in _executors(slurm)]
    finally:
        shutil.rmtree(template.parent, ignore_errors=True)
    base = rows[0]["wall"]
    print(
        f"{'executor':>16} {'workers':>7} {'startup s':>9} {'wall s':>7} {'tasks':>5} {'task s':>7} {'speed-up':>8} "
        f"{'efficiency':>10} {'noop ms/task':>12} {'overhead ms/task':>16}"
    )
    for r in rows:
        speedup = base / r["wall"]
        overhead = (r["wall"] - r["task_s"] / r["n"]) / r["tasks"]
        print(
            f"{r['name']:>16} {r['n']:>7} {r['startup']:>9.1f} {r['wall']:>7.1f} {r['tasks']:>5} {r['task_s']:>7.1f} "
            f"{speedup:>8.2f} {speedup / r['n']:>10.0%} {1000 * r['noop']:>12.2f} {1000 * overhead:>16.1f}"
        )
    if not slurm:
        print("slurm: skipped (scripts/slurm-local.sh status: no local SLURM; start it with make slurm-start)")
    print("efficiency = T_sync / (workers * T); noop = a batch of no-op tasks through the executor (submit + as_completed);")
    print("overhead = (wall - task seconds / workers) / tasks: scheduling, transfers, idle tail and the driver's own work.")


if __name__ == "__main__":
    main()
