"""What TLS (the LocalCluster default) costs against plain TCP, side by side in one run.

For each configuration, alternating over ``--rounds`` so machine noise hits both alike: the time
to start a LocalCluster of ``--workers`` processes through ``mirpipe.pipeline.cluster.open_executor``
(credentials made, scheduler and workers up, client connected), the per-task overhead of
``--tasks`` no-op tasks submitted at once (``client.map`` + ``gather``) and of 100 one-at-a-time
round trips (``submit(...).result()``), and the time to close. Medians, and TLS / TCP ratios.

    python benchmarks/bench_tls.py [--workers 2] [--tasks 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

warnings.filterwarnings("ignore")

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import parse_cluster


def _noop(x: int) -> int:
    return x


def one(tls: bool, workers: int, tasks: int) -> dict[str, float]:
    cfg = parse_cluster({"type": "local", "n_workers": workers, "memory_limit": "1GiB", "tls": tls, "dashboard_address": None})
    t0 = time.perf_counter()
    with open_executor(cfg) as ex:
        start = time.perf_counter() - t0
        client = ex.client
        client.gather(client.map(_noop, range(50), pure=False))  # warm-up: functions pickled, connections open
        t = time.perf_counter()
        client.gather(client.map(_noop, range(tasks), pure=False))
        batch = (time.perf_counter() - t) / tasks
        t = time.perf_counter()
        for i in range(100):
            client.submit(_noop, i, pure=False).result()
        round_trip = (time.perf_counter() - t) / 100
        t_close = time.perf_counter()
    return {
        "start_s": start,
        "batch_ms": 1e3 * batch,
        "round_trip_ms": 1e3 * round_trip,
        "close_s": time.perf_counter() - t_close,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for r in range(args.rounds):
        for tls in (True, False) if r % 2 == 0 else (False, True):
            runs[tls].append(one(tls, args.workers, args.tasks))
    keys = ("start_s", "batch_ms", "round_trip_ms", "close_s")
    med = {tls: {k: statistics.median(x[k] for x in rs) for k in keys} for tls, rs in runs.items()}
    print(f"LocalCluster, {args.workers} workers, medians of {args.rounds} alternating rounds")
    print(f"{'':<8} {'start s':>9} {'ms/task (batch)':>16} {'ms/round trip':>14} {'close s':>9}")
    for tls, label in ((False, "tcp"), (True, "tls")):
        m = med[tls]
        print(f"{label:<8} {m['start_s']:>9.2f} {m['batch_ms']:>16.3f} {m['round_trip_ms']:>14.2f} {m['close_s']:>9.2f}")
    print(f"{'tls/tcp':<8} " + " ".join(f"{med[True][k] / med[False][k]:>{w}.2f}" for k, w in zip(keys, (9, 16, 14, 9))))


if __name__ == "__main__":
    main()
