"""Patches per second out of the feature store, against the same mux fed from memory.

The chord task's stream (feature ``cqt``, the task's targets, feature-mode shifts
-6..6 drawn per activation, the train stage's mux settings, patches as the train stage
streams them: the cqt window as stored, float16, made float32 by the trainer's ``Feed`` on
its device) is fed from memory (the upper bound: the same entries preloaded), from the Zarr
store (``zarr``: slab reads straight from the zip members, recently decoded chunks kept per open
array as HDF5 keeps them; ``zarr-nocache``: every chunk decoded on every read; ``zarr-python``: the same files
read through zarr-python; ``zarr-raw``: a copy written without compression; ``zarr-view``:
the float32 model input made in the loader, as before batches crossed as stored codes), and
from the HDF5 store, in one process and through a DataLoader with 2 workers. The bytes of one
batch as it crosses a worker boundary are printed for both. Beside them, in one process, the
lecture's plain loop (``plain-h5``): one h5py file per track holding the cqt and the chord
targets, a pescador Streamer per track that opens its file, reads one slab and yields random
patches (a random shift's bin window, targets as stored), a StochasticMux with the same
settings, ``buffer_stream`` into batches; ``plain-h5-f32`` also converts each patch to float32, as
mirpipe's feature view does. Configurations alternate in repeated rounds so
machine noise hits them alike; medians are printed with the ratios to memory and to the
plain loop. A diagnosis follows: what one streamer activation costs per source (open an
entry, read a slab with open handles, per array), against the patches it feeds.

    python benchmarks/bench_streaming.py [--workdir DIR] [--tracks 16] [--batches 100] [--rounds 3]

``--workdir`` with a feature-mode zarr store (``features/index.json``, cqt with margins for
6 semitones) is used as it is; otherwise a corpus is synthesized there (default: a
temporary directory).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import h5py
import numpy as np
import pescador

from mirpipe.models.task import TASKS
from mirpipe.stages.train import TrainParams
from mirpipe.storage import open_store
from mirpipe.storage.base import STORE_BACKENDS
from mirpipe.storage.stream import _HANDLES, EntryKey, MuxSettings, PatchStream, StreamSpec, preload_memory, read_slab
from mirpipe.storage.torch_data import batch_bytes, epoch_loader
from mirpipe.storage.zarr_store import DirectArray, ZarrStore

SHIFTS = tuple(range(-6, 7))
# the plain loop's variants: patches as stored (float16), or converted to float32 per patch as mirpipe's view does
PLAIN = {"plain-h5": None, "plain-h5-f32": np.float32}


@STORE_BACKENDS.register(name="zarr-python")
class ZarrPythonStore(ZarrStore):
    """The same zarr files, every read through zarr-python (the reads before direct slab reads)."""

    backend = "zarr-python"
    direct_reads = False


@STORE_BACKENDS.register(name="zarr-raw")
class ZarrRawStore(ZarrStore):
    """Chunks stored without compression, read straight from the zip members."""

    backend = "zarr-raw"
    compressors = None


@STORE_BACKENDS.register(name="zarr-nocache")
class ZarrNoCacheStore(ZarrStore):
    """The same files read straight from the zip members, every chunk decoded on every read (no
    decoded-chunk cache: what each activation costs when an entry's chunks were not read lately)."""

    backend = "zarr-nocache"

    def open_arrays(self, track, names):
        arrays, attrs, owner = super().open_arrays(track, names)
        for a in arrays.values():
            if isinstance(a, DirectArray):
                a.cache_bytes = 0
        return arrays, attrs, owner


def ensure_store(workdir: Path, tracks: int) -> Path:
    root = workdir / "features"
    if (root / "index.json").exists():
        return root
    from mirpipe.pipeline.cluster import SyncExecutor
    from mirpipe.pipeline.config import PipelineConfig
    from mirpipe.pipeline.runner import Runner

    print(f"building a feature-mode zarr store in {workdir}: {tracks} tracks, chord targets, shifts -6..6")
    cfg = PipelineConfig.model_validate(
        {
            "synthesize": {"tracks": tracks, "solo_fraction": 0.0, "clips_per_family": 0},
            "augment": {"mode": "feature", "shifts": list(SHIFTS)},
            "features": {"store": "zarr", "tasks": ["chord"]},
        }
    )
    Runner(workdir, cfg, log=lambda m: None, progress=False).run(SyncExecutor(), until="features")
    return root


def copy_store(src, backend: str, root: Path, tracks, names):
    dst = open_store(backend, root)
    for t in tracks:
        e = src.read_entry(t, names)
        dst.write_entry(t, e.arrays, e.attrs)
    return dst


def write_plain_h5(src, root: Path, tracks, names) -> None:
    """The lecture's layout: one h5py file per track, each array of the unshifted variant as a plain dataset."""
    root.mkdir(parents=True, exist_ok=True)
    for t in tracks:
        e = src.read_entry(t, names)
        with h5py.File(root / f"{t}.h5", "w") as f:
            for n in names:
                f.create_dataset(n, data=e.arrays[n][0])


def plain_patches(path: str, feature: str, targets, patch_frames: int, slab_frames: int, offsets, n_bins: int, dtype):
    """One activation of the plain loop: open the track's file, read a slab, yield random patches
    (the feature as stored, float16, or converted per patch to ``dtype`` as mirpipe's view does)."""
    rng = np.random.default_rng()
    with h5py.File(path, "r") as f:
        n = f[feature].shape[0]
        length = min(n, slab_frames)
        start = int(rng.integers(0, n - length + 1))
        frames = f[feature][start : start + length]
        slab = {k: f[k][start : start + length] for k in targets}
    off = int(offsets[int(rng.integers(len(offsets)))])
    while True:
        at = int(rng.integers(0, length - patch_frames + 1))
        patch = frames[at : at + patch_frames, off : off + n_bins]
        yield {
            feature: patch if dtype is None else patch.astype(dtype),
            **{k: a[at : at + patch_frames] for k, a in slab.items()},
        }


def plain_batches(root: Path, keys, feature: str, targets, p: TrainParams, geometry: dict, dtype=None, seed: int = 0):
    bins_per_semitone = geometry["bins_per_octave"] // 12
    offsets = [geometry["margin_bins"] - n * bins_per_semitone for n in SHIFTS]
    streamers = [
        pescador.Streamer(
            plain_patches,
            str(root / f"{k.track}.h5"),
            feature,
            targets,
            p.patch_frames,
            p.slab_frames,
            offsets,
            geometry["n_bins"],
            dtype,
        )
        for k in keys
    ]
    mux = pescador.StochasticMux(streamers, n_active=p.n_active, rate=p.rate, mode=p.mux_mode, random_state=seed)
    return pescador.buffer_stream(mux.iterate(), p.batch_size)


def plain_per_s(it, feature: str, batches: int, warmup: int) -> float:
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = sum(int(next(it)[feature].shape[0]) for _ in range(batches))
    return n / (time.perf_counter() - t0)


def patches_per_s(stream: PatchStream, workers: int, batches: int, warmup: int) -> float:
    """Steady state: after ``warmup`` batches (workers started, entries opened once)."""
    it = iter(epoch_loader(stream, epoch=0, n_workers=workers))
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = sum(int(next(it)[stream.spec.feature].shape[0]) for _ in range(batches))
    return n / (time.perf_counter() - t0)


def activation_costs(spec: StreamSpec, keys, slab_frames: int, n: int, seed: int = 0) -> dict[str, float]:
    """Seconds per activation: a fresh open of the entry, then a slab read through open handles
    (as ``read_slab`` does, shift and target transpose included), and per array."""
    rng = np.random.default_rng(seed)
    store = open_store(spec.backend, spec.root)
    _HANDLES.clear()
    t0 = time.perf_counter()
    for k in keys:
        _, _, owner = store.open_arrays(k.track, spec.names)
        if owner is not None:
            owner.close()
    open_s = (time.perf_counter() - t0) / len(keys)
    for k in keys:  # handles cached, as in a steady stream
        _HANDLES.arrays(spec, k)
    draws = []
    for _ in range(n):
        k = keys[int(rng.integers(len(keys)))]
        length = min(k.n_frames, slab_frames)
        start = int(rng.integers(0, k.n_frames - length + 1))
        draws.append((k, start, start + length, int(rng.choice(SHIFTS))))
    t0 = time.perf_counter()
    for k, a, b, s in draws:
        read_slab(spec, k, a, b, s)
    slab_s = (time.perf_counter() - t0) / n
    per_array = {}
    for name in spec.names:
        t0 = time.perf_counter()
        for k, a, b, _ in draws:
            arrays, _ = _HANDLES.arrays(spec, k)
            np.asarray(arrays[name][0, a:b])
        per_array[name] = (time.perf_counter() - t0) / n
    _HANDLES.clear()
    return {"open": open_s, "slab": slab_s, **{f"array {k}": v for k, v in per_array.items()}}


def activations_per_patch(spec: StreamSpec, keys, mux: MuxSettings, batches: int, warmup: int) -> float:
    """Slab reads (streamer activations) per patch in a steady in-process stream, counted after the
    same warm-up as the timed runs."""
    import mirpipe.storage.stream as stream_mod

    calls = [0]
    original = stream_mod.read_slab

    def counted(*a, **kw):
        calls[0] += 1
        return original(*a, **kw)

    stream_mod.read_slab = counted
    try:
        it = PatchStream(spec, keys, mux, seed=0).batches(0)
        for _ in range(warmup):
            next(it)
        calls[0] = 0
        n = sum(int(next(it)[spec.feature].shape[0]) for _ in range(batches))
    finally:
        stream_mod.read_slab = original
    return calls[0] / n


def slab_draws(keys, slab_frames: int, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """``n`` random slabs (entry index, start, stop) of at most ``slab_frames`` frames, drawn before timing."""
    draws = []
    for _ in range(n):
        i = int(rng.integers(len(keys)))
        length = min(keys[i].n_frames, slab_frames)
        start = int(rng.integers(0, keys[i].n_frames - length + 1))
        draws.append((i, start, start + length))
    return draws


def zarr_gathered_slab(spec: StreamSpec, keys, slab_frames: int, n: int, seed: int = 0) -> float:
    """Seconds per slab read when the arrays of an activation are read concurrently (zarr's async
    API, one event-loop round trip) instead of one blocking read per array."""
    import asyncio

    from zarr.core.sync import sync

    rng = np.random.default_rng(seed)
    handles = [_HANDLES.arrays(spec, k)[0] for k in keys]

    async def read(arrays, a, b):
        return await asyncio.gather(*(arrays[name]._async_array.getitem((0, slice(a, b))) for name in spec.names))

    draws = slab_draws(keys, slab_frames, n, rng)
    t0 = time.perf_counter()
    for i, a, b in draws:
        sync(read(handles[i], a, b))
    out = (time.perf_counter() - t0) / n
    _HANDLES.clear()
    return out


def tensorstore_slab(spec: StreamSpec, keys, slab_frames: int, n: int, seed: int = 0) -> tuple[float, float] | None:
    """Seconds per slab read through tensorstore (zarr3 driver over its zip kvstore): the arrays one
    after another, and all issued before waiting; None when tensorstore is not installed."""
    try:
        import tensorstore as ts
    except ImportError:
        return None
    store = open_store(spec.backend, spec.root)
    handles = []
    for k in keys:
        base = "file://" + str(store.entry_path(k.track))
        kv = {"driver": "zip", "base": base}
        handles.append(
            {m: ts.open({"driver": "zarr3", "kvstore": {**kv, "path": m + "/"}}, read=True).result() for m in spec.names}
        )
    rng = np.random.default_rng(seed)
    draws = slab_draws(keys, slab_frames, n, rng)
    t0 = time.perf_counter()
    for i, a, b in draws:
        for m in spec.names:
            handles[i][m][0, a:b].read().result()
    one_by_one = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i, a, b in draws:
        futures = [handles[i][m][0, a:b].read() for m in spec.names]
        for f in futures:
            f.result()
    return one_by_one, (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory, removed afterwards")
    ap.add_argument("--tracks", type=int, default=16, help="tracks synthesized when the workdir has no store")
    ap.add_argument("--batches", type=int, default=100, help="batches timed per configuration and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every configuration")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (0: in-process)")
    ap.add_argument("--reads", type=int, default=200, help="slab reads timed per source in the diagnosis")
    args = ap.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mirpipe-bench-stream-"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-h5-"))
    try:
        root = ensure_store(workdir, args.tracks)
        zarr_store = open_store("zarr", root)
        task = TASKS.get("chord")
        names = [task.feature, *task.targets.arrays]
        rows = list(zarr_store.read_index().values())
        keys = [EntryKey(r.track, r.frames[task.feature]) for r in rows if r.split == "train"] or [
            EntryKey(r.track, r.frames[task.feature]) for r in rows
        ]
        p = TrainParams()
        mux = MuxSettings(p.batch_size, p.n_active, p.rate, p.mux_mode, p.n_shards)
        frames = sum(k.n_frames for k in keys)
        print(
            f"{len(keys)} entries ({frames} cqt frames) from {root}; patch {p.patch_frames} frames, batch {p.batch_size}, "
            f"n_active {p.n_active}, rate {p.rate}, slab {p.slab_frames} frames, {p.n_shards} shards, shifts -6..6"
        )

        copy_store(zarr_store, "hdf5", tmp / "h5", [k.track for k in keys], names)
        copy_store(zarr_store, "zarr-raw", tmp / "zarr-raw", [k.track for k in keys], names)
        write_plain_h5(zarr_store, tmp / "plain", [k.track for k in keys], names)
        geometry = zarr_store.read_attrs(keys[0].track)["features"][task.feature]
        preload_memory("bench", zarr_store, keys, names)
        # patches as the train stage streams them: the feature's stored codes (``geometry``: the cqt
        # window as stored, float16), the trainer's Feed makes float32 on its device
        common = dict(
            feature=task.feature,
            targets=task.targets.arrays,
            patch_frames=p.patch_frames,
            slab_frames=p.slab_frames,
            shifts=SHIFTS,
            task=task,
            geometry=geometry,
        )
        specs = {
            "memory": StreamSpec("memory", "bench", **common),
            "zarr": StreamSpec("zarr", str(root), **common),
            "zarr-nocache": StreamSpec("zarr-nocache", str(root), **common),
            "zarr-python": StreamSpec("zarr-python", str(root), **common),
            "zarr-raw": StreamSpec("zarr-raw", str(tmp / "zarr-raw"), **common),
            "hdf5": StreamSpec("hdf5", str(tmp / "h5"), **common),
            # the float32 model input made in the loader (before batches crossed as stored codes)
            "zarr-view": StreamSpec("zarr", str(root), **{**common, "geometry": None}),
            # one mux over every entry, as the plain loop has (the train stage's shards activate fewer slabs per patch)
            "zarr-1shard": StreamSpec("zarr", str(root), **common),
        }
        muxes = {name: dataclasses.replace(mux, n_shards=1) if name.endswith("-1shard") else mux for name in specs}
        packed_batch = next(PatchStream(specs["memory"], keys, mux, seed=0).batches(0))
        view_batch = next(PatchStream(specs["zarr-view"], keys, mux, seed=0).batches(0))
        print(
            f"bytes per batch across a worker boundary: {batch_bytes(packed_batch) / 1e6:.3f} MB as stored codes "
            f"({', '.join(f'{k} {a.dtype}' for k, a in packed_batch.items())}), {batch_bytes(view_batch) / 1e6:.3f} MB "
            f"with the float32 view made in the loader: {batch_bytes(view_batch) / batch_bytes(packed_batch):.2f}x smaller"
        )
        targets = list(task.targets.arrays)
        # every entry activated about once before timing: opening an entry (metadata reads) is a
        # once-per-process cost, a slab read per activation the steady one
        warmup = max(4, int(len(keys) * p.rate / p.batch_size))
        print(f"warm-up {warmup} batches per measurement, then {args.batches} timed; {args.rounds} interleaved rounds")
        results: dict[tuple[str, int], list[float]] = {}
        for r in range(args.rounds):
            order = list(specs) if r % 2 == 0 else list(specs)[::-1]
            for workers in args.workers:
                for name in order:
                    rate = patches_per_s(PatchStream(specs[name], keys, muxes[name], seed=0), workers, args.batches, warmup)
                    results.setdefault((name, workers), []).append(rate)
                if workers == 0:
                    for plain_name, dtype in PLAIN.items():
                        plain = plain_per_s(
                            plain_batches(tmp / "plain", keys, task.feature, targets, p, geometry, dtype),
                            task.feature,
                            args.batches,
                            warmup,
                        )
                        results.setdefault((plain_name, 0), []).append(plain)
        plain_rate = statistics.median(results["plain-h5", 0]) if 0 in args.workers else float("nan")
        print(f"\n{'source':>12} {'loader':>12} {'patches/s':>10} {'vs memory':>10} {'vs plain-h5':>12}   per round")
        for workers in args.workers:
            mem = statistics.median(results["memory", workers])
            for name in [*specs, *PLAIN]:
                if (name, workers) not in results:
                    continue
                rates = results[name, workers]
                loader = "in-process" if workers == 0 else f"{workers} workers"
                rate = statistics.median(rates)
                print(
                    f"{name:>12} {loader:>12} {rate:>10.0f} {rate / mem:>9.0%} {rate / plain_rate:>11.0%}   "
                    + " ".join(f"{x:.0f}" for x in rates)
                )

        print(
            f"\ndiagnosis: one activation = one slab read of {p.slab_frames} frames feeding ~{p.rate:.0f} patches "
            f"(ms, means over {args.reads} reads through open handles)"
        )
        costs = {
            name: activation_costs(spec, keys, p.slab_frames, args.reads)
            for name, spec in specs.items()
            if name not in ("zarr-view", "zarr-1shard")
        }
        cols = list(costs["zarr"])
        print(f"{'source':>12} " + " ".join(f"{c:>26}" for c in cols))
        for name, c in costs.items():
            print(f"{name:>12} " + " ".join(f"{1e3 * c[k]:>26.3f}" for k in cols))
        mem_patch = 1.0 / statistics.median(results["memory", args.workers[0]])
        per_patch = activations_per_patch(specs["memory"], keys, mux, args.batches, warmup)
        one_mux = activations_per_patch(specs["memory"], keys, muxes["zarr-1shard"], args.batches, warmup)
        print(
            f"activations per patch (counted, in-process): {per_patch:.4f} (1 per {1 / per_patch:.0f} patches) with "
            f"{mux.n_shards} shards; {one_mux:.4f} (1 per {1 / one_mux:.0f}) with one mux, as the plain loop "
            f"(~1 per rate = {p.rate:.0f} patches)"
        )
        gathered = zarr_gathered_slab(specs["zarr-python"], keys, p.slab_frames, args.reads)
        print(
            f"zarr-python slab read with the {len(names)} arrays read concurrently (async gather): {1e3 * gathered:.3f} ms "
            f"(blocking, one array after another: {1e3 * costs['zarr-python']['slab']:.3f} ms)"
        )
        through_ts = tensorstore_slab(specs["zarr"], keys, p.slab_frames, args.reads)
        if through_ts is None:
            print("tensorstore: not installed (pip install tensorstore to measure it)")
        else:
            print(
                f"tensorstore slab read (the {len(names)} arrays, zarr3 over its zip kvstore): {1e3 * through_ts[0]:.3f} ms "
                f"one after another, {1e3 * through_ts[1]:.3f} ms issued together (arrays only, no shift or transpose)"
            )
        for name in ("zarr", "zarr-nocache", "zarr-python", "zarr-raw", "hdf5"):
            extra = (costs[name]["slab"] - costs["memory"]["slab"]) * per_patch
            print(
                f"{name}: slab read beyond memory {1e3 * (costs[name]['slab'] - costs['memory']['slab']):.2f} ms per "
                f"activation = {1e6 * extra:.1f} us per patch, against {1e6 * mem_patch:.0f} us per patch from memory "
                f"-> predicted ratio {mem_patch / (mem_patch + extra):.0%}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
