"""Throughput and size of the features stage: audio mode vs feature mode, zarr vs hdf5.

One process, no profiler. A few demo tracks are synthesized and ingested once
(untimed); then, in interleaved repetitions (so machine noise hits every
configuration alike), each (mode, store) runs the features stage through the
runner into a fresh store, and each mode's *library bound* is measured on the same
audio: load once, one ``librosa.effects.pitch_shift`` per variant (audio mode), and
``FEATURE_KINDS.get(k).compute`` for every kind the entry holds. Printed:

  - variant-seconds per CPU second (time.process_time) of the stage; feature mode
    counts every shift it makes available (len(shifts) x audio seconds);
  - the bound's variant-seconds per CPU second and achieved / bound;
  - bytes on disk and files per track, the hcqt array alone, against float32 audio.

    python benchmarks/bench_features.py [--tracks 3] [--duration 30] [--reps 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

warnings.filterwarnings("ignore")

from mirpipe.audio.io import load_mono
from mirpipe.pipeline.cluster import SyncExecutor
from mirpipe.pipeline.config import PipelineConfig
from mirpipe.pipeline.runner import Runner
from mirpipe.stages.ingest import read_manifest
from mirpipe.storage import open_store
from mirpipe.storage.feature_kinds import FEATURE_KINDS

MODES = ("audio", "feature")
STORES = ("zarr", "hdf5")


def config(args, mode: str | None = None, store: str = "zarr", store_path: Path | None = None) -> PipelineConfig:
    raw = {
        "synthesize": {
            "tracks": args.tracks,
            "clips_per_family": 0,
            "min_duration": args.duration,
            "max_duration": args.duration + 0.5,
            "solo_fraction": 0.0,
            "seed": args.seed,
        },
        "augment": {"mode": mode or "feature"},
        "features": {"store": store, **({"store_path": str(store_path)} if store_path else {})},
    }
    return PipelineConfig.model_validate(raw)


STEPS = ("load", "annotations", "pitch_shift", "features", "targets", "write")


def stage_run(workdir: Path, cfg: PipelineConfig) -> tuple[float, float, dict[str, float]]:
    """CPU and wall seconds of the features stage (planning, compute, writes, index) through the runner,
    and the wall seconds of each step the records time, summed over tracks."""
    runner = Runner(workdir, cfg, log=lambda m: None, progress=False)
    runner.done_items("ingest")  # ingest's (cached) plan is not the features stage's work
    c0, w0 = time.process_time(), time.perf_counter()
    report = runner.run_stage("features", SyncExecutor())
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    if report.failures or report.done != report.total:
        raise RuntimeError(f"features stage failed: {report.summary()}")
    records = [d.record for d in runner.done_items("features").values()]
    return cpu, wall, {k: sum(r.timings.get(k, 0.0) for r in records) for k in STEPS}


def library_bound(audio_paths: list[str], cfg: PipelineConfig) -> float:
    """CPU seconds of the bare library calls an entry needs, on the same audio."""
    import librosa

    p, aug = cfg.features, cfg.augment
    c0 = time.process_time()
    for path in audio_paths:
        y, _ = load_mono(path, sr=p.sr)
        for n in aug.stored_variants():
            y_v = librosa.effects.pitch_shift(y, sr=p.sr, n_steps=n, res_type="soxr_hq") if n else y
            for k in p.kinds():
                FEATURE_KINDS.get(k).compute(y_v, p.sr, p.kind_params(k), aug.margin())
    return time.process_time() - c0


def disk_usage(store: str, root: Path) -> dict[str, float]:
    """Per track: bytes of the entry file, files of the entry, bytes of the hcqt array (chunks as stored)."""
    s = open_store(store, root)
    rows = s.read_index().values()
    total = hcqt = files = 0
    for r in rows:
        path = s.root / r.path
        total += path.stat().st_size
        files += 1 if path.is_file() else sum(1 for f in path.rglob("*") if f.is_file())
        if store == "zarr":
            with zipfile.ZipFile(path) as z:
                hcqt += sum(i.compress_size for i in z.infolist() if i.filename.startswith("hcqt/"))
        else:
            import h5py

            with h5py.File(path, "r") as f:
                hcqt += f["hcqt"].id.get_storage_size()
    shared = sum(1 for f in s.root.iterdir() if f.is_file() and f.name not in {(s.root / r.path).name for r in rows})
    n = len(rows)
    return {"bytes": total / n, "hcqt_bytes": hcqt / n, "files": files / n, "shared_files": shared}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=3)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per track")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of every configuration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of every configuration first (imports, caches)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory, removed afterwards")
    args = ap.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mirpipe-bench-features-"))
    try:
        base = config(args)
        Runner(workdir, base, log=lambda m: None, progress=False).run(SyncExecutor(), until="ingest")
        manifest = read_manifest(Runner(workdir, base, progress=False).ctx)
        audio = [str(m.audio) for _, m in sorted(manifest.items())]
        audio_s = sum(len(load_mono(a, sr=base.features.sr)[0]) for a in audio) / base.features.sr
        n_shifts = {m: len(config(args, m).augment.active_shifts()) for m in MODES}
        print(
            f"{len(audio)} tracks, {audio_s:.1f} s of audio; tasks {base.features.target_tasks()} -> kinds "
            f"{base.features.kinds()}; {n_shifts['feature']} shifts; {args.reps} interleaved repetitions\n"
        )

        cpu: dict[tuple, list[float]] = {}
        wall: dict[tuple, list[float]] = {}
        bound: dict[str, list[float]] = {}
        roots: dict[tuple, Path] = {}
        steps: dict[tuple, list[dict[str, float]]] = {}
        for rep in range(-args.warmup, args.reps):
            order = [(m, s) for m in MODES for s in STORES]
            if rep % 2:
                order.reverse()  # neither configuration always runs first
            for mode, store in order:
                root = workdir / "stores" / f"{mode}-{store}-{rep}"
                c, w, st = stage_run(workdir, config(args, mode, store, root))
                if rep < 0:
                    continue
                steps.setdefault((mode, store), []).append(st)
                cpu.setdefault((mode, store), []).append(c)
                wall.setdefault((mode, store), []).append(w)
                roots.setdefault((mode, store), root)
            for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                if rep < 0:
                    library_bound(audio[:1], config(args, mode))
                    continue
                bound.setdefault(mode, []).append(library_bound(audio, config(args, mode)))

        print(
            f"{'mode':>8} {'store':>6} {'var-s/cpu-s':>12} {'bound':>8} {'vs bound':>9} {'x-rt wall':>10} "
            f"{'MB/track':>9} {'hcqt MB':>8} {'files':>6} {'vs f32':>7} {'hcqt/f32':>9}"
        )
        f32 = 4 * base.features.sr * audio_s / len(audio)  # float32 bytes of one track's audio
        for mode in MODES:
            variant_s = n_shifts[mode] * audio_s
            b = variant_s / statistics.median(bound[mode])
            for store in STORES:
                rate = variant_s / statistics.median(cpu[mode, store])
                xrt = variant_s / statistics.median(wall[mode, store])
                d = disk_usage(store, roots[mode, store])
                print(
                    f"{mode:>8} {store:>6} {rate:>12.1f} {b:>8.1f} {rate / b:>8.1%} {xrt:>10.1f} "
                    f"{d['bytes'] / 1e6:>9.2f} {d['hcqt_bytes'] / 1e6:>8.2f} {d['files']:>6.0f} "
                    f"{d['bytes'] / f32:>6.2f}x {d['hcqt_bytes'] / f32:>8.2f}x"
                )
        print(
            f"\nvar-s/cpu-s: variant-seconds of audio per CPU second of the features stage through the runner "
            f"(medians of {args.reps});\nfeature mode counts its {n_shifts['feature']} available shifts. bound: the "
            "same for the bare library calls (load, librosa pitch_shift per variant,\nFEATURE_KINDS compute per kind) on "
            "the same audio, interleaved with the stage runs. vs f32: on-disk bytes per track over\nthe float32 bytes "
            f"of the track's audio ({f32 / 1e6:.2f} MB at {base.features.sr} Hz); files: files per track entry "
            "(plus one shared index.json per store)."
        )
        print(
            "\nwhere the stage's time goes (wall s summed over tracks, medians; rest = stage wall - steps: runner,"
            " ledger, fingerprints, JAMS parse, index):"
        )
        print(f"{'mode':>8} {'store':>6} " + " ".join(f"{k:>12}" for k in STEPS) + f" {'rest':>8} {'stage wall':>11}")
        for (mode, store), runs in steps.items():
            med = {k: statistics.median(r[k] for r in runs) for k in STEPS}
            w = statistics.median(wall[mode, store])
            print(
                f"{mode:>8} {store:>6} "
                + " ".join(f"{med[k]:>12.2f}" for k in STEPS)
                + f" {w - sum(med.values()):>8.2f} {w:>11.2f}"
            )
        for mode in MODES:
            print(
                f"  {mode:>8}: stage cpu s per rep "
                + ", ".join(f"{s}=[{', '.join(f'{c:.2f}' for c in cpu[mode, s])}]" for s in STORES)
                + f"; bound [{', '.join(f'{c:.2f}' for c in bound[mode])}]"
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
