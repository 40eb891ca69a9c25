"""Throughput of the augment + features path, per store backend and pitch-shift backend.

Prints, for each (store, pitch-shift) pair on a few demo tracks, in one process:
  - variant-seconds of audio processed per core-second (augment + features, 13 shifts)
  - the share of that time spent outside the libraries' own calls (pitch shift,
    CQT, decoding, JAMS (de)serialization, store writes): our overhead
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

from pipeline.config import PipelineConfig  # noqa: E402
from stages import STAGES, StageContext, WorkItem  # noqa: E402
from stages.deform import variant_name  # noqa: E402

LIBRARY_MODULES = ("librosa", "soxr", "scipy", "numpy", "jams", "jsonschema", "json", "gzip", "zlib", "zarr", "numcodecs", "h5py", "soundfile", "pyrubberband", "subprocess", "copy", "muda")


def _library_seconds(stats: pstats.Stats) -> float:
    """Time inside library calls reached from our code (outermost library frames only)."""
    total = 0.0
    for (filename, _, _), (_, _, _, cumtime, callers) in stats.stats.items():
        if not any(f"/{m}/" in filename or filename.endswith(f"/{m}.py") or f"{{method" in filename for m in LIBRARY_MODULES):
            continue
        ours = sum(v[3] for (cf, _, _), v in callers.items() if "/stages/" in cf or "/models/" in cf or "/storage/" in cf)
        total += ours
    return total


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the rubberband CLI runs as one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench(store: str, backend: str, tracks: int, duration: float, workdir: Path) -> dict:
    cfg = PipelineConfig.model_validate(
        {"synthesize": {"tracks": tracks, "min_duration": duration, "max_duration": duration + 4, "solo_fraction": 0},
         "augment": {"backend": backend}, "features": {"store": store}}
    )
    ctx = StageContext(workdir, cfg.stage_params())
    for i in range(tracks):
        STAGES["synthesize"].run(WorkItem(f"demo-{i:04d}", payload={"index": i, "solo": False}), ctx)
    manifest_rows = []
    for i in range(tracks):
        t = f"demo-{i:04d}"
        rec = STAGES["ingest"].run(WorkItem(t, payload={"track": t, "audio": [str(workdir / "corpus" / f"{t}.flac")], "jams": [str(workdir / "corpus" / f"{t}.jams")]}), ctx)
        manifest_rows.append(rec)
    prof = cProfile.Profile()
    cpu0, wall0 = _cpu(), time.perf_counter()
    prof.enable()
    audio_seconds = 0.0
    for rec in manifest_rows:
        t = rec["track"]
        aug = STAGES["augment"].run(WorkItem(t, payload={"track": t, "audio": rec["audio"], "jams": rec["jams"]}), ctx)
        for v in aug["variants"]:
            out = STAGES["features"].run(WorkItem(f"{t}/{v['variant']}", payload={"track": t, "variant": v["variant"], "audio": rec["audio"]}), ctx)
            audio_seconds += out["timings"]["audio_seconds"]
    prof.disable()
    cpu = _cpu() - cpu0
    wall = time.perf_counter() - wall0
    stats = pstats.Stats(prof)
    lib = min(_library_seconds(stats), stats.total_tt)
    store_bytes = sum(p.stat().st_size for p in (workdir / "features").rglob("*") if p.is_file())
    recipe_bytes = sum(p.stat().st_size for p in (workdir / "augment").rglob("*") if p.is_file())
    return {
        "store": store,
        "pitch_shift": backend,
        "variant_audio_s_per_core_s": audio_seconds / cpu,
        "x_realtime_wall": audio_seconds / wall,
        "overhead_share": max(0.0, 1 - lib / stats.total_tt),
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
    print("overhead: share of profiled time outside library calls; store B/s vs f32 audio: feature bytes per")
    print("second of audio over the float32 audio bytes at 22050 Hz.")


if __name__ == "__main__":
    main()
