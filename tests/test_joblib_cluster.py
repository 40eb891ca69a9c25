"""``mirpipe.cluster``: joblib scripts run unchanged on the cluster of a cluster.yaml (a real
LocalCluster here; the local SLURM by hand, see the README), and ``import mirpipe`` stays cheap."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import dataset_layouts as layouts
import numpy as np
import pytest
import yaml
from joblib import Parallel, delayed

LOCAL = {"type": "local", "n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"}


def test_import_mirpipe_stays_cheap_and_exports_cluster():
    code = (
        "import sys, mirpipe; heavy = [m for m in ('dask', 'distributed', 'joblib', 'torch', 'librosa') if m in sys.modules]; "
        "assert not heavy, heavy; assert callable(mirpipe.cluster) and 'cluster' in mirpipe.__all__"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.slow
def test_parallel_runs_on_the_cluster_inside_the_block_only():
    import mirpipe

    with mirpipe.cluster(LOCAL, quiet=True) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
        pids = Parallel(n_jobs=4)(delayed(os.getpid)() for _ in range(8))
        assert os.getpid() not in pids  # every call ran in a worker process
        assert set(pids) <= set(client.run(os.getpid).values())
    assert Parallel(n_jobs=1)(delayed(os.getpid)() for _ in range(2)) == [os.getpid()] * 2
    assert client.status == "closed"


def test_sync_runs_joblib_in_this_process():
    import mirpipe

    with mirpipe.cluster({"type": "sync"}, quiet=True) as client:
        assert client is None
        assert Parallel(n_jobs=4)(delayed(os.getpid)() for _ in range(3)) == [os.getpid()] * 3


@pytest.mark.slow
def test_the_example_script_computes_its_feature_on_a_local_cluster(tmp_path, repo_root):
    """examples/joblib_centroid.py, as a user runs it: a function defined in the script reaches the workers."""
    import librosa

    corpus = tmp_path / "corpus"
    freqs = [220.0, 440.0, 880.0, 1760.0]
    for i, f in enumerate(freqs):
        layouts.tone(corpus / ("sub" if i % 2 else "") / f"{i}.wav", seconds=2.0, freqs=(f,))
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"cluster": LOCAL}))
    out = tmp_path / "centroids.csv"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(repo_root / "examples" / "joblib_centroid.py"),
            "--corpus",
            str(corpus),
            "--cluster",
            str(tmp_path / "cluster.yaml"),
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "mirpipe.cluster: LocalCluster, 2 workers" in stderr and "4 files" in stdout
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 4
    pids = {int(r["where"].rsplit(" pid ", 1)[1]) for r in rows}
    assert proc.pid not in pids and 1 <= len(pids) <= 2  # computed in the two workers, not in the script
    means = [float(r["centroid_mean_hz"]) for r in sorted(rows, key=lambda r: Path(r["path"]).stem)]
    assert np.all(np.diff(means) > 0)  # higher tones, higher centroids
    y, sr = librosa.load(str(corpus / "0.wav"), sr=22050)
    assert means[0] == pytest.approx(float(np.mean(librosa.feature.spectral_centroid(y=y, sr=sr))), rel=1e-6)
