"""Patches per second out of the feature store, against the same mux fed from memory,
and the chord trainer's steps/s on this machine's device.

Prints patches/s for the mux fed from in-memory arrays (the upper bound), from the
Zarr store and from the HDF5 store, each in one process and through a DataLoader
with 2 workers (same seed, same settings, same entries); then trainer steps/s and
patches/s (CR2, structured) fed from the Zarr store.

    python benchmarks/bench_streaming.py [--workdir work/demo] [--batches 60] [--steps 30]

The training split of ``--workdir``'s store is used (run ``make demo`` first); without
one, a small corpus is built there first (4 tracks, 3 shifts).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import torch  # noqa: E402

from mirpipe.models.task import TASKS  # noqa: E402
from mirpipe.models.trainer import Trainer, TrainerSettings  # noqa: E402
from mirpipe.stages.train import TrainParams, build_model  # noqa: E402
from mirpipe.storage import open_store  # noqa: E402
from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec, preload_memory  # noqa: E402
from mirpipe.storage.torch_data import epoch_loader  # noqa: E402


def ensure_store(workdir: Path) -> Path:
    root = workdir / "features"
    if (root / "index.json").exists():
        return root
    from mirpipe.pipeline.cluster import SyncExecutor
    from mirpipe.pipeline.config import PipelineConfig
    from mirpipe.pipeline.runner import Runner

    print(f"no store in {workdir}: building a small one (4 tracks x 3 shifts)")
    cfg = PipelineConfig.model_validate({"synthesize": {"tracks": 4, "solo_fraction": 0.0}, "augment": {"shifts": [-2, 0, 2]}})
    Runner(workdir, cfg, progress=False).run(SyncExecutor(), until="features")
    return root


def copy_store(src, backend: str, root: Path, keys, names):
    dst = open_store(backend, root)
    for k in keys:
        e = src.read_entry(k.track, k.variant, names)
        dst.write_entry(k.track, k.variant, e.arrays, e.attrs)
    return dst


def patches_per_s(stream: PatchStream, workers: int, batches: int, warmup: int) -> float:
    """Steady state: after ``warmup`` batches (workers started, entries opened once)."""
    it = iter(epoch_loader(stream, epoch=0, n_workers=workers))
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = sum(int(next(it)[stream.spec.feature].shape[0]) for _ in range(batches))
    return n / (time.perf_counter() - t0)


def trainer_rate(stream: PatchStream, steps: int) -> tuple[float, float, str]:
    task = TASKS.get("chord")
    model = build_model(task, TrainParams().model_params("chord"), n_bins=216)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, task, lambda e, s: epoch_loader(stream, e, s), lambda: iter(()),
                          TrainerSettings(device="auto"), Path(tmp), "bench", log=lambda m: None, tensorboard=False)
        it = iter(epoch_loader(stream, 0))
        for _ in range(3):
            trainer.train_step(next(it))
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = 0
        for _ in range(steps):
            batch = next(it)
            trainer.train_step(batch)
            n += int(batch["cqt"].shape[0])
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        return steps / dt, n / dt, f"{trainer.device}{' (AMP)' if trainer.amp else ''}, {torch.get_num_threads()} threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("work/demo"))
    ap.add_argument("--batches", type=int, default=100, help="batches timed per configuration")
    ap.add_argument("--steps", type=int, default=30, help="trainer steps timed")
    args = ap.parse_args()

    root = ensure_store(args.workdir)
    zarr_store = open_store("zarr", root)
    rows = zarr_store.read_index()
    keys = [EntryKey(r.track, r.variant, r.n_frames) for r in rows if r.split == "train"]
    p = TrainParams()
    task = TASKS.get("chord")
    names = [task.feature, *task.targets]
    mux = MuxSettings(p.batch_size, p.n_active, p.rate, p.mux_mode, p.n_shards)
    print(f"{len(keys)} training entries from {root}; patch {p.patch_frames} frames, batch {p.batch_size}, "
          f"n_active {p.n_active}, rate {p.rate}, slab {p.slab_frames} frames, {p.n_shards} shards")

    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        copy_store(zarr_store, "hdf5", tmp / "h5", keys, names)
        preload_memory("bench", zarr_store, keys, names)
        specs = {
            "memory": StreamSpec("memory", "bench", task.feature, task.targets, p.patch_frames, p.slab_frames),
            "zarr": StreamSpec("zarr", str(root), task.feature, task.targets, p.patch_frames, p.slab_frames),
            "hdf5": StreamSpec("hdf5", str(tmp / "h5"), task.feature, task.targets, p.patch_frames, p.slab_frames),
        }
        # every entry activated about once before timing: opening an entry (metadata reads) is a
        # once-per-process cost, a slab read per activation the steady one
        warmup = max(4, int(len(keys) * p.rate / p.batch_size))
        print(f"warm-up {warmup} batches per configuration, then {args.batches} timed")
        results = {}
        print(f"\n{'source':>8} {'loader':>12} {'patches/s':>10} {'vs memory':>10}")
        for workers in (0, 2):
            for name, spec in specs.items():
                rate = patches_per_s(PatchStream(spec, keys, mux, seed=0), workers, args.batches, warmup)
                results[name, workers] = rate
                loader = "in-process" if workers == 0 else f"{workers} workers"
                print(f"{name:>8} {loader:>12} {rate:>10.0f} {rate / results['memory', workers]:>9.0%}")
        steps_s, patches_s, device = trainer_rate(PatchStream(specs["zarr"], keys, mux, seed=0), args.steps)
        print(f"\ntrainer (CR2 structured, zarr stream, in-process loader) on {device}: "
              f"{steps_s:.2f} steps/s, {patches_s:.0f} patches/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
