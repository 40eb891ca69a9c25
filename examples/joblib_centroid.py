"""A per-track feature written the way the big-data lecture's scripts are, run on mirpipe's cluster.

``spectral_centroid`` and the ``Parallel(n_jobs)(delayed(fn)(path) for path in paths)`` line are
plain joblib; the one mirpipe line is ``with mirpipe.cluster(FILE):``, which opens the cluster of
a cluster.yaml (a LocalCluster, or SLURM jobs through dask-jobqueue) and makes it joblib's backend.

    python examples/joblib_centroid.py --corpus work/demo/corpus --cluster cluster.yaml --out centroids.csv
    bash scripts/slurm-local.sh start      # a single-node SLURM on this machine, then:
    python examples/joblib_centroid.py --corpus work/demo/corpus --cluster examples/cluster-slurm-local.yaml

Each row of the CSV: the file, the mean and standard deviation of its spectral centroid (Hz),
and where it was computed (the SLURM job id on SLURM, else the worker's process id).
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import sys
import time
from pathlib import Path

from joblib import Parallel, delayed

import mirpipe

AUDIO = (".wav", ".flac", ".ogg", ".mp3")


def spectral_centroid(path: str) -> tuple[str, float, float, str]:
    """Mean and standard deviation of librosa's spectral centroid (Hz) over one file."""
    import librosa
    import numpy as np

    y, sr = librosa.load(path, sr=22050, mono=True)
    centroid = librosa.feature.spectral_centroid(y=y, sr=sr)[0]
    where = os.environ.get("SLURM_JOB_ID")  # only to show where it ran
    where = f"slurm job {where}" if where else f"{socket.gethostname()} pid {os.getpid()}"
    return path, float(np.mean(centroid)), float(np.std(centroid)), where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=Path("work/demo/corpus"), help="folder of audio files (searched recursively)"
    )
    parser.add_argument("--cluster", default=None, help="cluster.yaml (default: ./cluster.yaml, else a LocalCluster)")
    parser.add_argument("--out", type=Path, default=Path("centroids.csv"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    args = parser.parse_args(argv)

    paths = sorted(str(p) for p in args.corpus.rglob("*") if p.suffix.lower() in AUDIO)[: args.limit]
    if not paths:
        print(f"no audio under {args.corpus} (run `mirpipe demo` first, or pass --corpus)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with mirpipe.cluster(args.cluster):
        rows = Parallel(n_jobs=-1)(delayed(spectral_centroid)(p) for p in paths)
    seconds = time.perf_counter() - t0
    with open(args.out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "centroid_mean_hz", "centroid_std_hz", "where"])
        writer.writerows(rows)
    places = sorted({r[3] for r in rows})
    print(f"{len(rows)} files in {seconds:.1f}s on {len(places)} workers ({', '.join(places)}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
