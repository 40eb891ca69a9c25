"""Throughput of the augment + features path, per store backend and pitch-shift backend.

Prints, for each (store, pitch-shift) pair on a few demo tracks, in one process:
  - variant-seconds of audio processed per core-second (augment + features, 13 shifts)
  - the share of that time spent in our own code itself (runner, ledger, stages,
    store: the profiled self time of their functions): our overhead
  - bytes on disk per second of audio, against float32 audio at the same rate

    python benchmarks/bench_features.py [--tracks 3] [--duration 30]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from mirpipe.pipeline.cluster import SyncExecutor  # noqa: E402
from mirpipe.pipeline.config import PipelineConfig  # noqa: E402
from mirpipe.pipeline.ledger import Ledger  # noqa: E402
from mirpipe.pipeline.runner import Runner  # noqa: E402

OUR_PACKAGES = ("/pipeline/", "/stages/", "/models/", "/storage/")


def _ours(filename: str) -> bool:
    return any(p in filename for p in OUR_PACKAGES)


def _own_seconds(stats: pstats.Stats) -> float:
    """Self time of the functions in our packages (tottime: nothing nested is counted twice)."""
    return sum(tt for (filename, _, _), (_, _, tt, _, _) in stats.stats.items() if _ours(filename))


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the rubberband CLI runs as one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench(store: str, backend: str, tracks: int, duration: float, workdir: Path) -> dict:
    """Synthesize and ingest untimed, then time augment + features through the runner, in-process."""
    cfg = PipelineConfig.model_validate(
        {"synthesize": {"tracks": tracks, "min_duration": duration, "max_duration": duration + 4, "solo_fraction": 0},
         "augment": {"backend": backend}, "features": {"store": store}}
    )
    runner = Runner(workdir, cfg, progress=False)
    executor = SyncExecutor()
    runner.run(executor, until="ingest")
    prof = cProfile.Profile()
    cpu0, wall0 = _cpu(), time.perf_counter()
    prof.enable()
    for stage in ("augment", "features"):
        runner.run_stage(stage, executor)
    prof.disable()
    cpu = _cpu() - cpu0
    wall = time.perf_counter() - wall0
    audio_seconds = sum(m["record"]["timings"]["audio_seconds"] for m in Ledger(workdir).done("features").values())
    stats = pstats.Stats(prof)
    store_bytes = sum(p.stat().st_size for p in (workdir / "features").rglob("*") if p.is_file())
    recipe_bytes = sum(p.stat().st_size for p in (workdir / "augment").rglob("*") if p.is_file())
    return {
        "store": store,
        "pitch_shift": backend,
        "variant_audio_s_per_core_s": audio_seconds / cpu,
        "x_realtime_wall": audio_seconds / wall,
        "overhead_share": _own_seconds(stats) / stats.total_tt,
        "store_bytes_per_audio_s": store_bytes / audio_seconds,
        "recipe_bytes_per_audio_s": recipe_bytes / audio_seconds,
        "float32_audio_bytes_per_s": 4 * 22050,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=2)
    ap.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args()
    print(f"{'store':>6} {'shift':>10} {'var-s/core-s':>13} {'x-rt wall':>10} {'overhead':>9} {'store B/s':>10} {'recipe B/s':>11} {'vs f32 audio':>13}")
    for store in ("zarr", "hdf5"):
        for backend in ("librosa", "rubberband"):
            d = Path(tempfile.mkdtemp(prefix="mirpipe-bench-"))
            try:
                r = bench(store, backend, args.tracks, args.duration, d)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            ratio = r["store_bytes_per_audio_s"] / r["float32_audio_bytes_per_s"]
            print(f"{store:>6} {backend:>10} {r['variant_audio_s_per_core_s']:>13.1f} {r['x_realtime_wall']:>10.1f} "
                  f"{r['overhead_share']:>8.1%} {r['store_bytes_per_audio_s']:>10.0f} {r['recipe_bytes_per_audio_s']:>11.0f} {ratio:>12.2%}")
    print("var-s/core-s: seconds of (track, variant) audio through augment+features per CPU second, one process;")
    print("overhead: self time of our own functions over all profiled time; store B/s vs f32 audio: feature bytes per")
    print("second of audio over the float32 audio bytes at 22050 Hz.")


if __name__ == "__main__":
    main()
