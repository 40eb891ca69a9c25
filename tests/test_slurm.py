"""The pipeline on a real single-node SLURM (scripts/slurm-local.sh) through dask-jobqueue:
two worker jobs, a cancelled worker job, planned worker retirements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from conftest import FAULT_TRACKS, assert_same_store, corpus_config, store_contents

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import parse_cluster
from mirpipe.pipeline.ledger import Ledger
from mirpipe.pipeline.runner import Runner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(repo_root):
    """A running local SLURM; skip (with the script's reason) only when the script cannot start one."""
    script = repo_root / "scripts" / "slurm-local.sh"
    if subprocess.run([str(script), "status"], capture_output=True).returncode != 0:
        res = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            pytest.skip(f"scripts/slurm-local.sh start could not start SLURM here: {res.stderr.strip()[-500:]}")
    yield


def _slurm_cluster(tmp_path, name: str, **over) -> dict:
    return {
        "type": "slurm",
        "cores": 1,
        "memory": "2GiB",
        "processes": 1,
        "walltime": "00:10:00",
        "queue": "debug",
        "jobs": 2,
        "python": sys.executable,
        "local_directory": str(tmp_path / "scratch"),
        "log_directory": str(tmp_path / "joblogs"),
        "extra": {"job_name": name},
        **over,
    }


def _squeue_ids(name: str) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _gone(ids: set[str], name: str) -> bool:
    """True once none of the jobs is listed any more (scancel is asynchronous: wait up to 60 s)."""
    import time

    end = time.monotonic() + 60
    while ids & _squeue_ids(name):
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


def _worker_job_ids(client) -> dict[str, str]:
    return client.run(lambda: os.environ.get("SLURM_JOB_ID", ""))


def test_slurm_two_worker_jobs_store_matches_local_cluster(slurm, tmp_path, fault_corpus, reference_store, repo_root):
    """`mirpipe run --cluster examples/cluster-slurm-local.yaml`: ingest -> features in 2 SLURM jobs."""
    import json
    import time

    import yaml

    from mirpipe.pipeline.config import dump

    workdir = tmp_path / "work"
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(dump(corpus_config(fault_corpus))))
    before = _squeue_ids("dask-worker")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mirpipe",
            "run",
            "--workdir",
            str(workdir),
            "--config",
            str(cfg),
            "--cluster",
            "examples/cluster-slurm-local.yaml",
            "--json",
        ],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[str] = set()
    while run.poll() is None:  # the worker jobs, as SLURM lists them while the run goes on
        seen |= _squeue_ids("dask-worker") - before
        time.sleep(0.2)
    out, err = run.communicate()
    assert run.returncode == 0, err[-3000:]
    stages = json.loads(out)["stages"]
    assert [(s, stages[s]["done"], stages[s]["failed"]) for s in ("ingest", "features")] == [
        ("ingest", FAULT_TRACKS, 0),
        ("features", FAULT_TRACKS, 0),
    ]
    assert "SLURM through dask-jobqueue, 2 jobs" in err and ", TLS" in err  # TLS is on by default
    assert not list((workdir / ".mirpipe-tls").iterdir())  # the run's worker credentials left with it
    logged = {p.stem.rsplit("-", 1)[-1] for p in (workdir / "logs" / "jobs").glob("dask-worker-*.err")}
    assert len(seen) == 2 and seen == logged  # two SLURM jobs ran the workers (job logs named by job id)
    assert _gone(seen, "dask-worker")  # and were cancelled on the way out
    assert_same_store(store_contents(workdir), reference_store)


def _features_under_way(ex, augmented, fault_corpus):
    """Start the features stage in a thread on two workers; return once its first item is done,
    with the workers still processing items."""
    import time

    ex.client.wait_for_workers(2, timeout=180)
    runner = Runner(augmented, corpus_config(fault_corpus), progress=False)
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(reports=runner.run(ex, only="features")))
    thread.start()
    ledger = Ledger(augmented)
    end = time.monotonic() + 180
    while not ledger.done("features") and time.monotonic() < end:
        time.sleep(0.05)
    busy = [addr for addr, keys in ex.client.processing().items() if keys]
    return thread, out, busy


def test_scancel_of_a_worker_job_mid_features_still_completes_identically(
    slurm, tmp_path, augmented, fault_corpus, reference_store
):
    name = "mirpipe-t-scancel"
    with open_executor(parse_cluster(_slurm_cluster(tmp_path, name)), augmented) as ex:
        client = ex.client
        thread, out, busy = _features_under_way(ex, augmented, fault_corpus)
        assert busy, "no worker was processing an item: the cancel would not be mid-stage"
        job_ids = _worker_job_ids(client)
        assert all(job_ids.values()) and set(job_ids.values()) <= _squeue_ids(name)  # workers in our SLURM jobs
        assert client.scheduler.address.startswith("tls://") and all(w.startswith("tls://") for w in job_ids)
        victim = job_ids[busy[0]]
        subprocess.run(["scancel", victim], check=True)
        thread.join(timeout=300)
        assert _gone({victim}, name)
    (report,) = out["reports"]
    assert report.done + report.skipped == FAULT_TRACKS and report.failed == 0
    assert_same_store(store_contents(augmented), reference_store)


def test_planned_worker_retirement_mid_features_is_not_a_failure(slurm, tmp_path, augmented, fault_corpus, reference_store):
    """A graceful retirement (what --lifetime does before the walltime) of a busy worker: its items
    move elsewhere and nothing is recorded as failed or quarantined; adapt keeps two jobs alive."""
    name = "mirpipe-t-retire"
    with open_executor(parse_cluster(_slurm_cluster(tmp_path, name)), augmented) as ex:
        client = ex.client
        thread, out, busy = _features_under_way(ex, augmented, fault_corpus)
        assert busy, "no worker was processing an item: the retirement would not be mid-stage"
        client.retire_workers(workers=[busy[0]], close_workers=True)
        thread.join(timeout=300)
        assert busy[0] not in client.scheduler_info(n_workers=-1)["workers"]
    (report,) = out["reports"]
    assert report.done == FAULT_TRACKS and report.failed == 0 and report.quarantined == 0
    assert _gone(_squeue_ids(name), name)  # no job, replacement or not, outlives the run
    assert_same_store(store_contents(augmented), reference_store)


@pytest.mark.slow
def test_run_on_the_local_slurm_from_a_directory_with_decoy_packages(slurm, tmp_path):
    """Worker jobs start in the submitting directory: its decoy models/, storage/, ... must not matter."""
    from test_package import decoy_run

    cluster = _slurm_cluster(tmp_path, "decoy", jobs=1)
    res = decoy_run(tmp_path, cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["stages"]["features"]["done"] == 2
