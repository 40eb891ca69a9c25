"""What planning, status and scheduling cost at 1,000 / 10,000 / 100,000 tracks.

For each size it builds a synthetic workdir through the real code, with no audio: a corpus
of empty audio + JAMS files (100 per folder), then, stage by stage, the real ``Runner.plan``
lists the items and their fingerprints, a fabricated record of each is written through the
real ``Ledger`` (the way a worker writes it, without fsync), tiny store entries (copies of
one real entry) and the files train and evaluate leave, and each stage's real ``finalize``
writes the manifest, the store index and the reports. Then, each in a fresh process:

- **plan**: ``Runner.run`` of a fully done rerun (every stage planned, nothing scheduled,
  finalize rewriting manifest, index and reports), as ``mirpipe run`` does it;
- **status**: ``Runner.status`` (what ``mirpipe status`` computes);
- the driver's peak memory (max RSS of that process) and the files per track in the workdir.

Wall and CPU seconds are both printed: on a shared machine the wall time grows with the
load, the CPU seconds much less.

Then a stage of no-op items on a 2-worker LocalCluster through the real ``DaskExecutor``
(bounded submission window): seconds per task and the scheduler's memory as it goes.

    python benchmarks/bench_scale.py [--sizes 1000 10000 100000] [--noop 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest_scan import build

from mirpipe.annotations.prepare import Preparation
from mirpipe.pipeline.config import PipelineConfig
from mirpipe.pipeline.ledger import Ledger
from mirpipe.pipeline.runner import Runner
from mirpipe.stages import STAGES
from mirpipe.stages.evaluate import EvaluateRecord
from mirpipe.stages.features import FeaturesRecord, store_root
from mirpipe.stages.ingest import TrackRecord
from mirpipe.stages.train import TrainRecord
from mirpipe.storage import open_store
from mirpipe.storage.base import ArraySpec

FRAMES = {"cqt": 320, "hcqt": 2580}


def config(corpus: Path) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "ingest": {"corpus": str(corpus)},
            "train": {"tasks": ["chord"]},
            "evaluate": {"tasks": ["chord"], "figures": 0, "baselines": False},
        }
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Fabricator:
    """A done record per item, and the outputs its stage's ``outputs_valid`` looks for."""

    def __init__(self, runner: Runner):
        self.runner, self.ctx = runner, runner.ctx
        p = self.ctx.params["features"]
        self.store = open_store(p.store, store_root(self.ctx))
        arrays = {"cqt": np.zeros((1, 4, 8), np.uint8)}
        self.store.write_entry("template", arrays, {"variants": [0]})
        self.template = self.store.entry_path("template")

    def ingest(self, item):
        audio, jams = item.payload["audio"][0], item.payload["jams"][0]
        return TrackRecord(
            track=item.id,
            audio=audio,
            jams=jams,
            sr=44100,
            duration=30.0,
            channels=2,
            audio_sha256=_digest(audio),
            jams_sha256=_digest(jams),
            namespaces=["chord"],
            offers=["chord"],
            prep=Preparation(channel=None, choices={}, timing_tolerance=1e-3, duration=30.0),
            notices=[],
            declared_split=None,
            content=_digest(item.id),
        )

    def features(self, item):
        path = self.store.entry_path(item.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.template, path)
        shutil.copyfile(self.template, self.store.entry_path(item.id, "targets"))  # an entry is two files
        return FeaturesRecord(
            track=item.id,
            variants=[0],
            shifts=list(range(-6, 7)),
            frames=dict(FRAMES),
            arrays={"cqt": ArraySpec([1, 320, 252], "uint8"), "hcqt": ArraySpec([1, 2580, 556], "uint8")},
            timings={"load": 0.5, "cqt": 1.0, "write": 0.1},
            stamp=self.store.entry_stamp(item.id),
            parts={part: _digest(f"{item.id} {part}") for part in ("cqt", "hcqt", "targets/chord", "targets/pitch")},
            computed=["cqt", "hcqt", "targets/chord", "targets/pitch"],
        )

    def train(self, item):
        ckpt = self.ctx.path("train", item.id, "best.pt")
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(b"checkpoint")
        return TrainRecord(
            task=item.id,
            trained_at=1.0,
            checkpoint=str(ckpt.relative_to(self.ctx.workdir)),
            train_entries=0,
            val_entries=0,
            loader_workers=0,
            tensorboard=None,
            steps=1,
            epochs=1,
            finished=True,
            best_metric=0.5,
            best_step=1,
            metric="accuracy",
            seconds=1.0,
            device="cpu",
            amp=False,
            history=[],
        )

    def evaluate(self, item):
        task, track = item.payload["task"], item.payload["track"]
        est = self.ctx.path("reports", task, "estimates", f"{track}.jams")
        est.parent.mkdir(parents=True, exist_ok=True)
        est.write_text("{}")
        return EvaluateRecord(
            task=task,
            track=track,
            duration=30.0,
            scores={"root": {"score": 0.8, "weight": 30.0}},
            estimate=str(est.relative_to(self.ctx.workdir)),
        )


def fabricate(workdir: Path, corpus: Path) -> None:
    runner = Runner(workdir, config(corpus), progress=False)
    fab, ledger = Fabricator(runner), Ledger(workdir, durable=False)
    for name in ("ingest", "features", "train", "evaluate"):
        stage = STAGES.get(name)
        for item, fp in runner.plan(name).todo:
            record = getattr(fab, name)(item)
            ledger.mark_done(name, item.id, fp, stage.dump_record(record), 1, 0.1)
        ledger.compact(name)
        runner._done_cache.pop(name, None)
        plan = runner.plan(name)
        assert not plan.todo, f"{name}: {len(plan.todo)} items not done after fabrication"
        stage.finalize(runner.ctx, plan.done)
        runner._done_cache[name] = plan.done
    fab.store.entry_path("template").unlink()


def measure(workdir: Path, corpus: Path, what: str) -> dict:
    """One measurement in this (fresh) process."""
    runner = Runner(workdir, config(corpus), progress=False, log=lambda m: None)
    t0, c0 = time.perf_counter(), time.process_time()
    if what == "plan":
        reports = runner.run(executor=None)
        assert all(r.scheduled == 0 for r in reports), [(r.stage, r.scheduled) for r in reports]
    else:
        rows = runner.status()
        assert all(r["pending"] == 0 for r in rows), rows
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak resident memory since it started. Linux's VmHWM, not ``ru_maxrss``: that one
    survives ``exec``, so a child forked from a large parent would report the parent's size."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_fresh_process(workdir: Path, corpus: Path, what: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", what, str(workdir), str(corpus)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def files_per_track(workdir: Path, n: int) -> tuple[float, dict[str, int]]:
    by_top: dict[str, int] = {}
    for root, _, files in os.walk(workdir):
        top = Path(root).relative_to(workdir).parts[:1]
        key = top[0] if top else "."
        by_top[key] = by_top.get(key, 0) + len(files)
    return sum(by_top.values()) / n, by_top


def bench_size(n: int, tmp: Path, keep: bool = False) -> None:
    corpus, workdir = tmp / f"corpus{n}", tmp / f"work{n}"
    t = time.perf_counter()
    if not (keep and (workdir / "ledger").is_dir()):  # --keep: a workdir built by an earlier run is measured again
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(corpus, ignore_errors=True)
        build(corpus, n)
        fabricate(workdir, corpus)
    built = time.perf_counter() - t
    plan = _in_fresh_process(workdir, corpus, "plan")
    status = _in_fresh_process(workdir, corpus, "status")
    per_track, by_top = files_per_track(workdir, n)
    print(
        f"{n:>7} tracks: plan a done rerun {plan['seconds']:6.2f} s wall, {plan['cpu_seconds']:6.2f} s CPU "
        f"(peak RSS {plan['peak_rss_mb']:5.0f} MB); status {status['seconds']:6.2f} s wall, {status['cpu_seconds']:6.2f} s CPU "
        f"(peak RSS {status['peak_rss_mb']:5.0f} MB); "
        f"{per_track:.2f} files per track in the workdir {by_top}  [built in {built:.0f} s]",
        flush=True,
    )
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(corpus, ignore_errors=True)


def _noop(i: int) -> int:
    return i


def bench_noop(n: int, every: float = 30.0, trim: bool = True) -> None:
    """``n`` no-op tasks through the runner's executor (bounded window), scheduler memory sampled;
    a line every ``every`` seconds shows tasks done, the rate and the memory as it goes (flat or not).
    ``trim=False`` turns off the executor's periodic scheduler trim, to see what it saves."""
    import threading

    import psutil

    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.config import parse_cluster

    with open_executor(parse_cluster({"type": "local", "n_workers": 2, "threads_per_worker": 1})) as ex:
        ex.client.wait_for_workers(2)
        if not trim:
            ex.TRIM_EVERY = 10**12
        scheduler = psutil.Process(os.getpid())  # LocalCluster's scheduler runs in this process
        samples: list[float] = []
        stop = threading.Event()
        done = 0
        t0 = time.perf_counter()

        def sample() -> None:
            last = time.perf_counter()
            while not stop.wait(0.5):
                samples.append(scheduler.memory_info().rss / 2**20)
                if time.perf_counter() - last >= every:
                    last = time.perf_counter()
                    elapsed = last - t0
                    print(
                        f"  {elapsed:6.0f} s: {done:7d} tasks done ({1e3 * elapsed / max(done, 1):.2f} ms per task), "
                        f"driver+scheduler RSS {samples[-1]:.0f} MB",
                        flush=True,
                    )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for _ in ex.run(_noop, [(f"noop-{i}", (i,)) for i in range(n)]):
            done += 1
        seconds = time.perf_counter() - t0
        stop.set()
        sampler.join()
    q = np.percentile(samples, [10, 50, 100]) if samples else [float("nan")] * 3
    print(
        f"{done} no-op tasks on a 2-worker LocalCluster{'' if trim else ' (no scheduler trim)'}: {seconds:.1f} s = {1e3 * seconds / n:.2f} ms per task; "
        f"driver+scheduler RSS p10 {q[0]:.0f} MB, median {q[1]:.0f} MB, max {q[2]:.0f} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000])
    ap.add_argument("--noop", type=int, default=100_000, help="no-op items on the LocalCluster (0: skip)")
    ap.add_argument("--no-trim", action="store_true", help="the no-op stage without the executor's scheduler trim")
    ap.add_argument(
        "--keep",
        type=Path,
        help="build the workdirs here and keep them (a later run with the same --keep measures them again, without building)",
    )
    ap.add_argument("--measure", nargs=3, metavar=("WHAT", "WORKDIR", "CORPUS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        what, workdir, corpus = args.measure
        print(json.dumps(measure(Path(workdir), Path(corpus), what)))
        return
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for n in args.sizes:
            bench_size(n, args.keep, keep=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.sizes:
                bench_size(n, Path(tmp))
    if args.noop:
        bench_noop(args.noop, trim=not args.no_trim)


if __name__ == "__main__":
    main()
