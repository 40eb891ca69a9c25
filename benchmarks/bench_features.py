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

With ``--long SECONDS`` it measures block-wise features instead (issue 26): a long FLAC
is synthesized cheaply (a few seconds of tones + noise tiled with varying gains, written
in blocks), and ``mirpipe.storage.blockwise.feature_blocks`` computes every kind of the
default pipeline in a fresh subprocess per configuration, which reports its own peak RSS
(``ru_maxrss``) and wall/CPU seconds; frames go to a raw file per kind (``--sink file``,
page cache, not RSS) or are dropped. Printed beside it: the whole-track path (``load_mono``
+ ``compute``) on a track of at most ``--whole-cap`` seconds (``--whole-too``), frames per
kind and the chunks of <= 64 per array they imply; and, for an ordinary track
(``--ordinary`` seconds, 4 minutes), today's path against ``feature_blocks`` with the
default block size (the same code path) and with ``--small-block`` seconds (the overlap's cost).

    python benchmarks/bench_features.py --long 7200 [--whole-too] [--reps 3]
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

import json
import math
import subprocess
import sys

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
    ap.add_argument("--long", type=float, default=None, metavar="SECONDS", help="block-wise features of a track this long")
    ap.add_argument("--long-rate", type=int, default=22050, help="sample rate of the long FLAC (44100: stereo, resampled)")
    ap.add_argument("--block-seconds", type=float, default=None, help="feature_blocks' block size (default: its own)")
    ap.add_argument("--whole-too", action="store_true", help="also the whole-track path, on at most --whole-cap seconds")
    ap.add_argument("--whole-cap", type=float, default=1200.0, help="seconds of the whole-track comparison (RSS grows with it)")
    ap.add_argument("--ordinary", type=float, default=240.0, help="seconds of the ordinary track (0: skip)")
    ap.add_argument("--small-block", type=float, default=30.0, help="block seconds showing the overlap's cost on it")
    ap.add_argument("--sink", choices=("file", "drop"), default="file", help="frames to a raw file per kind, or dropped")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(json.loads(args.child))
    if args.long is not None:
        return long_main(args)

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


# -- block-wise features (--long) -----------------------------------------------------------


def synth_long(path: Path, seconds: float, sr: int, seed: int = 0) -> None:
    """A long FLAC written in 60 s blocks from a 7.3 s tile of tones + noise (mono at 22.05 kHz like
    the issue's track, stereo otherwise), each block at its own gain: the generator stays small."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    channels = 1 if sr <= 22050 else 2
    n_tile = int(7.3 * sr)
    t = np.arange(n_tile) / sr
    tile = np.zeros((n_tile, channels), np.float32)
    for f, a in ((55.0, 0.2), (220.0, 0.1), (660.0, 0.1), (3000.0, 0.05), (8000.0, 0.02)):
        for c in range(channels):
            tile[:, c] += a * np.sin(2 * np.pi * f * (1 + 0.01 * c) * t)
    tile += 0.01 * rng.standard_normal((n_tile, channels)).astype(np.float32)
    tile *= np.hanning(n_tile)[:, None].astype(np.float32) * 0.8 + 0.2
    reps = math.ceil(60 * sr / n_tile)
    block = np.tile(tile, (reps, 1))
    left = int(seconds * sr)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, format="FLAC", subtype="PCM_16") as f:
        while left > 0:
            part = block[: min(left, len(block))]
            f.write(part * np.float32(rng.uniform(0.3, 1.0)))
            left -= len(part)


def child(job: dict) -> None:
    """One configuration in this fresh process; prints one JSON line with its peak RSS."""
    import resource

    from mirpipe.storage.blockwise import feature_blocks

    cfg = PipelineConfig.model_validate({})
    p, margin = cfg.features, cfg.augment.margin()
    kinds = [(k, p.kind_params(k)) for k in p.kinds()]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c0, w0 = time.process_time(), time.perf_counter()
    frames: dict[str, int] = {}
    n_blocks, n_samples = 1, 0
    sinks = {k: open(Path(job["sink"]) / f"{k}.raw", "wb") for k, _ in kinds} if job.get("sink") else {}
    try:
        if job["mode"] == "whole":  # today's path: the whole waveform, each kind
            y, _ = load_mono(job["path"], sr=p.sr)
            n_samples = len(y)
            for k, params in kinds:
                arr = FEATURE_KINDS.get(k).compute(y, p.sr, params, margin)[0]
                frames[k] = arr.shape[0]
                if k in sinks:
                    sinks[k].write(arr.tobytes())
                del arr
        else:
            bs = job.get("block_seconds")
            fb = feature_blocks(job["path"], p.sr, None, kinds, margin, **({"block_seconds": bs} if bs else {}))
            n_blocks, n_samples = fb.n_blocks, fb.n_samples
            for k, _, start, arr in fb:
                frames[k] = start + arr.shape[0]
                if k in sinks:
                    sinks[k].write(arr.tobytes())
            assert frames == fb.n_frames, (frames, fb.n_frames)
    finally:
        for f in sinks.values():
            f.close()
    out = {
        "cpu": time.process_time() - c0,
        "wall": time.perf_counter() - w0,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "rss_imports_mb": rss0 / 1024,
        "frames": frames,
        "blocks": n_blocks,
        "seconds": n_samples / p.sr,
    }
    print(json.dumps(out))


def run_child(job: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"child {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def chunks_line(frames: dict[str, int], block_frames: dict[str, int]) -> str:
    parts = []
    for k, t in frames.items():
        per = math.ceil(t / 64)
        parts.append(
            f"{k}: {t} frames -> chunks of {per} frames = {math.ceil(t / per)} chunks (block {block_frames.get(k, t)} frames)"
        )
    return "; ".join(parts)


def long_main(args) -> None:
    from mirpipe.storage.blockwise import DEFAULT_BLOCK_SECONDS, block_length

    cfg = PipelineConfig.model_validate({})
    p = cfg.features
    hops = {k: FEATURE_KINDS.get(k).hop_length(p.kind_params(k)) for k in p.kinds()}
    bs = args.block_seconds or DEFAULT_BLOCK_SECONDS
    B = block_length(p.sr, list(hops.values()), bs)
    block_frames = {k: B // h for k, h in hops.items()}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mirpipe-bench-long-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sink = workdir / "sink"
    sink.mkdir(exist_ok=True)
    sink_arg = str(sink) if args.sink == "file" else None

    def row(label: str, r: dict) -> None:
        print(
            f"{label:<44} {r['seconds']:>8.0f} {r['blocks']:>6} {r['rss_mb']:>9.0f} {r['rss_imports_mb']:>8.0f} "
            f"{r['wall']:>8.1f} {r['cpu']:>8.1f} {r['seconds'] / r['cpu']:>8.1f}"
        )

    header = f"{'configuration':<44} {'audio s':>8} {'blocks':>6} {'peak MB':>9} {'import':>8} {'wall s':>8} {'cpu s':>8} {'x-rt cpu':>8}"
    try:
        t = time.perf_counter()
        long_path = workdir / "long.flac"
        synth_long(long_path, args.long, args.long_rate, args.seed)
        print(
            f"synthesized {args.long:.0f} s at {args.long_rate} Hz: {long_path.stat().st_size / 1e6:.1f} MB FLAC "
            f"in {time.perf_counter() - t:.1f} s; kinds {p.kinds()} at {p.sr} Hz, margin {cfg.augment.margin()} semitones; "
            f"sink: {args.sink}\n"
        )
        print(header)
        r = run_child({"mode": "blocks", "path": str(long_path), "block_seconds": bs, "sink": sink_arg})
        row(f"block-wise, blocks of {B / p.sr:.1f} s", r)
        long_frames = r["frames"]
        if args.whole_too:
            cap = min(args.whole_cap, args.long)
            short_path = workdir / "whole.flac"
            synth_long(short_path, cap, args.long_rate, args.seed)
            row(f"whole-track (today), {cap:.0f} s", run_child({"mode": "whole", "path": str(short_path), "sink": sink_arg}))
            row(
                f"block-wise, {cap:.0f} s",
                run_child({"mode": "blocks", "path": str(short_path), "block_seconds": bs, "sink": sink_arg}),
            )
        print(f"\nper array at {args.long:.0f} s (<= 64 chunks each): {chunks_line(long_frames, block_frames)}")

        if args.ordinary > 0:
            o_path = workdir / "ordinary.flac"
            synth_long(o_path, args.ordinary, 44100, args.seed + 1)
            jobs = {
                "today: load_mono + compute": {"mode": "whole"},
                f"feature_blocks, default ({bs:.0f} s)": {"mode": "blocks", "block_seconds": bs},
                f"feature_blocks, {args.small_block:.0f} s blocks": {"mode": "blocks", "block_seconds": args.small_block},
            }
            results: dict[str, list[dict]] = {k: [] for k in jobs}
            for rep in range(-1, args.reps):  # one warm-up (page cache, numba caches), then interleaved
                order = list(jobs) if rep % 2 == 0 else list(jobs)[::-1]
                for label in order:
                    r = run_child({**jobs[label], "path": str(o_path), "sink": sink_arg})
                    if rep >= 0:
                        results[label].append(r)
            print(
                f"\nordinary track: {args.ordinary:.0f} s, 44.1 kHz stereo FLAC; medians of {args.reps} interleaved runs, one process each"
            )
            print(header)
            for label, runs in results.items():
                med = {key: statistics.median(r[key] for r in runs) for key in ("cpu", "wall", "rss_mb", "rss_imports_mb")}
                row(label, {**runs[0], **med})
        print(
            "\npeak MB: the child's ru_maxrss (imports included; 'import' = its RSS after imports); x-rt cpu: audio "
            "seconds per CPU second of the child (decode, resample, every kind)."
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
