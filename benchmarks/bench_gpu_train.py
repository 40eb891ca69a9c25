"""The pitch model on a GPU, fed by the streamer: steps/s, patches/s, how busy the GPU is, and
where it waits.

Two steps, because a GPU machine rarely holds the corpus that made the store:

    # where the pipeline ran: copy the pitch task's train/val entries (up to --max-mb) and their keys
    python benchmarks/bench_gpu_train.py pack --workdir work/demo --out gpu-pack --max-mb 40
    # on the GPU machine (mirpipe installed, the pack copied over)
    python benchmarks/bench_gpu_train.py run --pack gpu-pack [--model paper] [--batch 32]
        [--workers 0 4 8] [--seconds 40] [--train-seconds 0] [--out DIR]

``run`` measures, in one process and one after the other:

1. **data alone**: batches/s of the patch stream in the trainer's process, and where that time
   goes: slab reads (store chunks, target transpose), cutting each patch (its HCQT codes: the
   view and the salience targets are made on the device, by the trainer's ``Feed``), the
   loader-side ``prepare_batch`` (nothing for pitch), and the rest (pescador's mux, stacking);
   then **loader alone**: batches/s out of ``epoch_loader`` with each worker count and the bytes
   of one batch as it crosses the worker boundary, as stored codes + f0 (now) and as the float32
   view + salience target (before);
2. **GPU alone**: the trainer's own ``train_step`` (the ``Feed``: HCQT view and salience on the
   device; AMP, grad scaler, clipping) on one batch kept on the device: the ceiling the data must feed;
3. **fed**: the same steps fed by ``epoch_loader`` with 0 and N DataLoader workers, with the
   GPU's utilization sampled every 50 ms through NVML (what ``nvidia-smi`` shows) and the
   share of wall time the loop waited on the next batch;
4. optionally (``--train-seconds``) a real ``Trainer.fit`` of that size with validation and the
   voicing threshold tuned; ``best.pt`` lands in ``--out`` for ``mirpipe evaluate`` elsewhere.

Figures are printed, and with ``--out`` written to ``gpu_train.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import numpy as np

PAPER = {"channels": [128, 64, 64, 64], "tall_channels": 8, "tall_bins": 70}
TASK = "pitch"


# -- pack (where the pipeline ran) -------------------------------------------------------------
def pack(workdir: Path, out: Path, max_mb: float) -> None:
    from mirpipe.models.task import TASKS
    from mirpipe.pipeline.workdir import resolve
    from mirpipe.stage import StageContext
    from mirpipe.stages.train import split_keys
    from mirpipe.storage import open_store
    from mirpipe.storage.base import FEATURES, TARGETS

    cfg, _ = resolve(workdir, None, None)
    ctx = StageContext(workdir, cfg.stage_params())
    fp = ctx.params["features"]
    task = TASKS.get(TASK)
    train, val = split_keys(ctx, task)
    src = open_store(fp.store, workdir / "features")
    dst = open_store(fp.store, out / "features")
    (out / "features").mkdir(parents=True, exist_ok=True)
    budget, used = max_mb * 2**20, 0
    rng = np.random.default_rng(0)
    picked: dict[str, list] = {"train": [], "val": []}
    # every val entry would be too many: a fifth of the budget for validation, the rest for training
    for split, keys, share in (("val", val, 0.2), ("train", train, 1.0)):
        limit = used + (budget - used) * share
        for i in rng.permutation(len(keys)):
            k = keys[int(i)]
            files = [(src.entry_path(k.track, part), dst.entry_path(k.track, part)) for part in (FEATURES, TARGETS)]
            files = [(a, b) for a, b in files if a.exists()]  # an entry's features file and its targets file
            size = sum(a.stat().st_size for a, _ in files)
            if used + size > limit:
                continue
            for a, b in files:
                shutil.copy2(a, b)
            used += size
            picked[split].append([k.track, k.n_frames])
    train_params = ctx.params["train"].for_task(TASK)
    (out / "pack.json").write_text(
        json.dumps(
            {
                "backend": fp.store,
                "keys": picked,
                "train": train_params.model_dump(mode="json"),
                "shifts": list(ctx.params["augment"].active_shifts()),
                "source": str(workdir),
                "of": {"train": len(train), "val": len(val)},
            },
            indent=1,
        )
    )
    print(
        f"packed {len(picked['train'])}/{len(train)} train and {len(picked['val'])}/{len(val)} val entries "
        f"({used / 2**20:.1f} MiB) into {out}"
    )


# -- run (on the GPU machine) ------------------------------------------------------------------
class Timed:
    """Wraps a callable and sums its wall time (in-process phases only)."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *a, **kw):
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def __get__(self, obj, objtype=None):  # as a class attribute (a method): bind like a function
        return self if obj is None else functools.partial(self, obj)


class GpuSampler:
    """GPU utilization (% of time a kernel ran) and memory, sampled through NVML."""

    def __init__(self, index: int = 0, period: float = 0.05):
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle, self.period = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), period
        self.samples: list[int] = []
        self.mem: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        self.samples, self.mem = [], []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self.period):
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            self.mem.append(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = np.array(self.samples or [0])
        return {
            "util_mean": float(s.mean()),
            "util_median": float(np.median(s)),
            "util_p10": float(np.percentile(s, 10)),
            "mem_used_gib": max(self.mem or [0]) / 2**30,
        }


class NoSampler:
    """``--device cpu`` (checking the script): nothing to sample."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def summary(self) -> dict[str, float]:
        return {}


class BeforeNetwork:
    """The pitch network's loader side as it was before batches crossed as stored codes: the
    salience target built from f0 in numpy where the batch is cut (and the float32 HCQT view made
    there too: a stream without ``geometry``)."""

    def __init__(self, network):
        self.network = network

    def prepare_batch(self, batch):
        from mirpipe.models import salience as sal

        f0 = batch["targets/f0_hz"]
        return {**batch, "targets/salience": sal.salience_target(f0, self.network.grid, self.network.sigma_bins)}


class BeforeTask:
    """The pitch task as the loader saw it before (``BeforeNetwork``)."""

    def __init__(self, task):
        self.name, self.feature, self.targets, self.network = task.name, task.feature, task.targets, BeforeNetwork(task.network)


def make_stream(packed: dict, root: Path, batch: int, n_shards: int, task, before: bool = False):
    """The train stage's stream (patches as stored codes, ``geometry`` set), or with ``before`` the
    stream as it was (the float32 view and the salience target made in the loader)."""
    from mirpipe.storage import open_store
    from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec

    p = packed["train"]
    keys = [EntryKey(t, n) for t, n in packed["keys"]["train"]]
    val = [EntryKey(t, n) for t, n in packed["keys"]["val"]]
    geometry = open_store(packed["backend"], root).read_attrs(keys[0].track)["features"][task.feature]
    spec = StreamSpec(
        packed["backend"],
        str(root),
        task.feature,
        task.targets.arrays,
        p["patch_frames"],
        p["slab_frames"],
        shifts=tuple(packed["shifts"]),
        task=BeforeTask(task) if before else task,
        geometry=None if before else geometry,
    )
    stream = PatchStream(spec, keys, MuxSettings(batch, p["n_active"], p["rate"], p["mux_mode"], n_shards), p["seed"])
    return spec, stream, keys, val


def loader_alone(stream, workers: int, n_batches: int) -> dict[str, float]:
    """Batches/s out of ``epoch_loader`` (no training) and the bytes of a batch as it crosses the
    worker boundary (the tensors the loader yields)."""
    from mirpipe.storage.torch_data import batch_bytes, epoch_loader

    it = iter(epoch_loader(stream, epoch=50 + workers, n_workers=workers))
    first = next(it)
    for _ in range(max(2, 2 * workers)):  # workers started, handles open
        next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    dt = time.perf_counter() - t0
    del it
    return {
        "workers": workers,
        "batches_per_s": n_batches / dt,
        "mb_per_batch": batch_bytes(first) / 1e6,
        "arrays": {k: f"{tuple(v.shape)} {v.dtype}" for k, v in first.items()},
    }


def data_alone(spec, stream, n_batches: int) -> dict[str, float]:
    import mirpipe.storage.stream as sm

    task = spec.task
    reads, view, targets = Timed(sm.read_slab), Timed(sm.Slab.patch), Timed(task.network.prepare_batch)
    sm.read_slab, sm.Slab.patch, task.network.prepare_batch = reads, view, targets
    try:
        it = stream.batches(epoch=99)
        for _ in range(8):  # open the entries' handles first
            next(it)
        reads.seconds = view.seconds = targets.seconds = 0.0
        reads.calls = view.calls = targets.calls = 0
        t0 = time.perf_counter()
        n = sum(int(next(it)[spec.feature].shape[0]) for _ in range(n_batches))
        total = time.perf_counter() - t0
    finally:
        sm.read_slab, sm.Slab.patch = reads.fn, view.fn
        del task.network.prepare_batch
    per = lambda s: s / n_batches * 1e3  # noqa: E731 - ms per batch
    return {
        "batches_per_s": n_batches / total,
        "patches_per_s": n / total,
        "ms_per_batch": per(total),
        "ms_slab_reads": per(reads.seconds),
        "slab_reads_per_batch": reads.calls / n_batches,
        "ms_patch_hcqt_view": per(view.seconds),
        "ms_targets": per(targets.seconds),
        "ms_rest": per(total - reads.seconds - view.seconds - targets.seconds),
    }


def make_trainer(task, model, settings, out: Path, geometry):
    from mirpipe.models.trainer import Trainer
    from mirpipe.storage.torch_data import Feed

    return Trainer(
        model,
        task,
        lambda e, s: iter(()),
        lambda: iter(()),
        settings,
        out,
        run_key="bench",
        log=lambda m: None,
        tensorboard=False,
        progress="off",
        feed=Feed(task, geometry),
    )


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps(trainer, batches, n: int | None = None, seconds: float | None = None, read_every: int = 50) -> tuple[int, int, float]:
    """Training steps as ``Trainer.fit`` takes them (``n`` of them, or as many as fit in ``seconds``):
    losses kept on the device and read at a logging point every ``read_every`` steps (one wait for
    the device), synchronized at the end. (steps, patches, seconds spent waiting for the next batch)."""
    done = patches = 0
    wait = 0.0
    it = iter(batches)
    t0 = time.perf_counter()
    while (n is None or done < n) and (seconds is None or time.perf_counter() - t0 < seconds):
        a = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - a
        trainer._losses.add(done, trainer.train_step(batch))
        done += 1
        patches += int(batch[trainer.task.feature].shape[0])
        if done % read_every == 0:
            trainer._losses.read()
    trainer._losses.read()
    synchronize(trainer.device)
    return done, patches, wait


def gpu_alone(trainer, batch, n_steps: int, warmup: int = 10) -> dict[str, float]:
    from itertools import repeat

    steps(trainer, repeat(batch), warmup)  # warm up (a compiled model compiles here)
    t0 = time.perf_counter()
    done, patches, _ = steps(trainer, repeat(batch), n_steps)
    dt = time.perf_counter() - t0
    return {"steps_per_s": done / dt, "patches_per_s": patches / dt, "ms_per_step": dt / done * 1e3}


def fed(trainer, stream, workers: int | str, seconds: float, sampler, cores: int, warmup: int = 4) -> dict[str, float]:
    """The trainer fed by ``epoch_loader`` as the train stage plans it (pinned memory on a GPU):
    steps/s, the share of wall time the loop waited for a batch, and the GPU's utilization."""
    from mirpipe.storage.torch_data import epoch_loader, loader_plan

    plan = loader_plan(workers, trainer.device, stream.n_shards, cores)
    it = iter(epoch_loader(stream, epoch=1 + plan.workers, plan=plan))
    steps(trainer, it, max(warmup, 2 * plan.workers))  # workers started, handles open
    with sampler:
        t0 = time.perf_counter()
        done, patches, wait = steps(trainer, it, seconds=seconds)
        total = time.perf_counter() - t0
    del it
    return {
        "workers": plan.workers,
        "asked": workers,
        "prefetch": plan.prefetch,
        "pinned": plan.pin_memory,
        "steps_per_s": done / total,
        "patches_per_s": patches / total,
        "wait_share": wait / total,
        **sampler.summary(),
    }


def run(args) -> None:
    import torch

    from mirpipe.models.task import TASKS
    from mirpipe.models.trainer import TrainerSettings
    from mirpipe.stages.train import TrainParams
    from mirpipe.storage import open_store
    from mirpipe.storage.feature_kinds import FEATURE_KINDS
    from mirpipe.storage.torch_data import to_tensors

    packed = json.loads((args.pack / "pack.json").read_text())
    root = args.pack / "features"
    task = TASKS.get(TASK)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("bench_gpu_train run: no CUDA device visible to torch (--device cpu checks the script)")
    results: dict = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "batch": args.batch,
        "model": args.model,
    }
    n_shards = math.lcm(4, *[w for w in args.workers if w])  # every worker count divides it
    spec, stream, keys, val = make_stream(packed, root, args.batch, n_shards, task)
    store = open_store(packed["backend"], root)
    n_bins = FEATURE_KINDS.get(task.feature).input_bins(store.read_attrs(keys[0].track)["features"][task.feature])
    model_params = {**PAPER} if args.model == "paper" else dict(packed["train"].get("models", {}).get(TASK, {}))
    params = TrainParams.model_validate({"tasks": [TASK], "models": {TASK: model_params}}).model_params(TASK)
    p = packed["train"]
    results.update(
        entries=len(keys),
        val_entries=len(val),
        patch_frames=p["patch_frames"],
        rate=p["rate"],
        n_active=p["n_active"],
        slab_frames=p["slab_frames"],
        network=params.model_dump(mode="json"),
    )
    print(
        json.dumps(
            {
                k: results[k]
                for k in ("device", "torch", "cpus", "entries", "val_entries", "batch", "patch_frames", "rate", "network")
            }
        ),
        flush=True,
    )

    results["data_alone"] = data_alone(spec, stream, args.data_batches)
    print("data alone (trainer process):", json.dumps(results["data_alone"]), flush=True)

    # what crosses the loader's worker boundary: stored codes and f0 now, the float32 view and the
    # salience target before; loader batches/s (no training) with each worker count
    _, before_stream, _, _ = make_stream(packed, root, args.batch, n_shards, task, before=True)
    results["loader"] = []
    for label, s in (("codes", stream), ("before", before_stream)):
        for w in args.workers:
            row = {"batch": label, **loader_alone(s, w, args.loader_batches)}
            results["loader"].append(row)
            print(f"loader alone, {label}, {w} workers:", json.dumps(row), flush=True)
    mb = {r["batch"]: r["mb_per_batch"] for r in results["loader"]}
    results["bytes_ratio"] = mb["before"] / mb["codes"]
    print(
        f"bytes per batch across the worker boundary: {mb['codes']:.3f} MB (codes + f0) vs {mb['before']:.3f} MB "
        f"(float32 view + salience): {results['bytes_ratio']:.1f}x fewer",
        flush=True,
    )

    torch.manual_seed(0)
    model = task.network.build(n_bins=n_bins, params=params)
    results["parameters"] = sum(x.numel() for x in model.parameters())
    settings = TrainerSettings(
        steps_per_epoch=10**9, max_epochs=1, lr=p["lr"], device=args.device, amp=not args.no_amp, seed=0, threads=args.threads
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    batch = to_tensors(next(stream.batches(epoch=0)))
    results["gpu_alone"] = {}
    for variant in args.variants:  # eager, compile, channels-last, compile+channels-last
        torch.manual_seed(0)
        changes = {"compile": "compile" in variant, "channels_last": "channels-last" in variant}
        trainer = make_trainer(
            task, task.network.build(n_bins=n_bins, params=params), settings.model_copy(update=changes), tmp, spec.geometry
        )
        on_device = {k: v.to(trainer.device) for k, v in batch.items()}
        results["gpu_alone"][variant] = row = gpu_alone(trainer, on_device, args.gpu_steps, args.warmup)
        print(f"GPU alone (one batch on the device), {variant}:", json.dumps(row), flush=True)
    best = max(results["gpu_alone"], key=lambda v: results["gpu_alone"][v]["steps_per_s"])
    results["fed_variant"] = best
    changes = {"compile": "compile" in best, "channels_last": "channels-last" in best}
    torch.manual_seed(0)
    trainer = make_trainer(task, model, settings.model_copy(update=changes), tmp, spec.geometry)
    gpu_alone(trainer, {k: v.to(trainer.device) for k, v in batch.items()}, 1, args.warmup)  # compiled, warm

    sampler = GpuSampler() if cuda else NoSampler()
    with sampler:
        time.sleep(1.0)
    results["idle"] = sampler.summary()
    results["fed"] = []
    for w in [*args.workers, "auto"]:
        row = fed(trainer, stream, w, args.seconds, sampler, results["cpus"], args.warmup)
        row["of_gpu_alone"] = row["steps_per_s"] / results["gpu_alone"][best]["steps_per_s"]
        results["fed"].append(row)
        print(f"fed by the streamer ({best}), {w} loader workers:", json.dumps(row), flush=True)
    print_table(results)

    if args.train_seconds > 0:
        results["train"] = train_for(args, task, params, n_bins, spec, stream, val, p, results)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_train.json").write_text(json.dumps(results, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


def print_table(results: dict) -> None:
    """The side-by-side table: GPU alone per variant, then fed per loader worker count."""
    print(f"\n| {results['device']} | workers | steps/s | patches/s | x GPU alone | GPU busy (mean) | loop waits |")
    print("|---|---|---|---|---|---|---|")
    for variant, row in results["gpu_alone"].items():
        print(f"| GPU alone, {variant} | - | {row['steps_per_s']:.3g} | {row['patches_per_s']:.3g} | | | |")
    for row in results["fed"]:
        busy = f"{row['util_mean']:.0f} %" if "util_mean" in row else "n/a (cpu)"
        print(
            f"| fed ({results['fed_variant']}), asked {row['asked']} | {row['workers']} | {row['steps_per_s']:.3g} | "
            f"{row['patches_per_s']:.3g} | {row['of_gpu_alone']:.2f} | {busy} | {row['wait_share']:.0%} |"
        )


def train_for(args, task, params, n_bins, spec, stream, val, p, results) -> dict:
    """A real ``Trainer.fit`` sized to ``--train-seconds`` from the fed rate, then the threshold tuned."""
    import torch

    from mirpipe.models.trainer import Trainer, TrainerSettings
    from mirpipe.stages.train import tune_checkpoints
    from mirpipe.storage.stream import track_patches
    from mirpipe.storage.torch_data import Feed, epoch_loader, to_tensors

    best = max(results["fed"], key=lambda r: r["steps_per_s"])
    workers = best["workers"]
    variant = results["fed_variant"]
    epochs = args.train_epochs
    steps = max(10, int(best["steps_per_s"] * args.train_seconds * 0.8 / epochs))
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-gpu-train-"))
    torch.manual_seed(0)
    model = task.network.build(n_bins=n_bins, params=params)
    settings = TrainerSettings(
        steps_per_epoch=steps,
        max_epochs=epochs,
        patience=epochs,
        lr=args.train_lr or p["lr"],
        device=args.device,
        amp=not args.no_amp,
        seed=0,
        checkpoint_every=10**9,
        threads=args.threads,
        compile="compile" in variant,
        channels_last="channels-last" in variant,
    )

    def val_batches():
        return (to_tensors(b) for b in track_patches(spec, val, args.batch))

    meta = {
        "task": task.name,
        "model": params.model_dump(mode="json"),
        "n_bins": n_bins,
        "state": {},
        "vocabulary": None,
        "train_entries": len(stream.keys),
        "val_entries": len(val),
    }
    trainer = Trainer(
        model,
        task,
        lambda e, s: epoch_loader(stream, e, skip=s, n_workers=workers),
        val_batches,
        settings,
        out / "train",
        run_key="bench-gpu",
        meta=meta,
        log=print,
        tensorboard=False,
        progress="lines",
        progress_interval=30.0,
        feed=Feed(task, spec.geometry),
    )
    summary = trainer.fit()
    tune_checkpoints(task, trainer.model, (trainer.best_path,), val_batches, trainer.device, trainer.feed)
    row = {k: summary[k] for k in ("steps", "epochs", "best_metric", "best_step", "metric", "seconds")}
    row.update(
        workers=workers,
        steps_per_epoch=steps,
        history=[{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in summary["history"]],
        threshold=torch.load(trainer.best_path, weights_only=True)["meta"]["state"].get("threshold"),
    )
    print("trained:", json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="copy the pitch task's train/val entries and their keys out of a workdir")
    a.add_argument("--workdir", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--max-mb", type=float, default=40.0)
    b = sub.add_parser("run", help="measure on the GPU")
    b.add_argument("--pack", type=Path, required=True)
    b.add_argument(
        "--model",
        choices=["paper", "config"],
        default="paper",
        help="paper: channels [128, 64, 64, 64]; config: the workdir's train.models.pitch",
    )
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8])
    b.add_argument("--seconds", type=float, default=40.0, help="fed run per worker count")
    b.add_argument("--data-batches", type=int, default=40)
    b.add_argument("--loader-batches", type=int, default=40, help="batches timed per loader-alone run")
    b.add_argument("--gpu-steps", type=int, default=100)
    b.add_argument("--warmup", type=int, default=10, help="steps before each timed run (compiling, workers starting)")
    b.add_argument("--threads", type=int, default=4, help="torch CPU threads in the trainer process")
    b.add_argument("--no-amp", action="store_true")
    b.add_argument(
        "--variants",
        nargs="+",
        default=["eager", "channels-last"],
        choices=["eager", "compile", "channels-last", "compile+channels-last"],
        help="GPU-alone runs (train.compile / train.channels_last); the fastest feeds the fed runs",
    )
    b.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: check the script without a GPU")
    b.add_argument("--train-seconds", type=float, default=0.0)
    b.add_argument("--train-epochs", type=int, default=6)
    b.add_argument("--train-lr", type=float, default=None)
    b.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.workdir, args.out, args.max_mb)
    else:
        run(args)


if __name__ == "__main__":
    main()
