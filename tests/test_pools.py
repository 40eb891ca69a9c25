"""Named pools (cluster.yaml ``pools:`` + ``stages:``): validation, and on the local SLURM
(scripts/slurm-local.sh: partitions cpu and gpu, the latter with a fake GPU as a generic resource)
a demo whose features run in ``cpu`` jobs and whose training runs in a ``gpu`` job; then a
pre-emption: the GPU job is cancelled mid-training, a new job takes the item over from its
checkpoint, and the weights equal an uninterrupted run's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import STOPPABLE_TRAIN, small_config

from mirpipe.pipeline.cluster import PoolExecutor
from mirpipe.pipeline.config import ConfigError, JobqueueCluster, LocalClusterConfig, PooledCluster, parse_cluster


def _slurm_pool(queue: str, **over) -> dict:
    return {
        "type": "slurm",
        "queue": queue,
        "cores": 1,
        "memory": "2GiB",
        "processes": 1,
        "walltime": "00:20:00",
        "jobs": 1,
        "python": sys.executable,
        "local_directory": "/tmp",
        "dashboard_address": None,
        "job_script_prologue": [f'echo "mirpipe pool {queue}: job $SLURM_JOB_ID partition $SLURM_JOB_PARTITION"'],
        **over,
    }


POOLS = {
    "cluster": {"type": "local", "n_workers": 1, "memory_limit": "3GiB", "dashboard_address": None},
    "pools": {
        "cpu": _slurm_pool("cpu"),
        "gpu": _slurm_pool("gpu", memory="3GiB", job_extra_directives=["--gres=gpu:1"], worker_resources={"GPU": 1}),
    },
    "stages": {"features": "cpu", "train": "gpu"},
}


# -- validation (no cluster) ------------------------------------------------------------------------


def test_a_single_cluster_file_is_still_one_cluster():
    assert isinstance(parse_cluster({"cluster": {"type": "local"}}), LocalClusterConfig)
    assert isinstance(parse_cluster({"type": "sync"}).type, str)


def test_pools_validate_and_map_stages():
    cfg = parse_cluster(POOLS)
    assert isinstance(cfg, PooledCluster) and cfg.names() == ["default", "cpu", "gpu"]
    assert isinstance(cfg.pool("gpu"), JobqueueCluster) and cfg.pool("gpu").setting("queue") == "gpu"
    assert [cfg.pool_of(s) for s in ("ingest", "features", "train", "evaluate")] == ["default", "cpu", "gpu", "default"]
    assert isinstance(parse_cluster({"pools": {}, "stages": {}}), LocalClusterConfig)  # no pools: the default alone


@pytest.mark.parametrize(
    "stages, pools, message",
    [
        ({"train": "gpux"}, {"gpu": {"type": "local"}}, "unknown pool 'gpux'"),
        ({"trian": "gpu"}, {"gpu": {"type": "local"}}, "stages.trian: unknown stage"),
        ({}, {"default": {"type": "local"}}, "pool name 'default'"),
        ({}, {"gpu": {"type": "slurm", "cores": 1, "memory": "1GiB", "walltme": "1"}}, "walltme"),
    ],
)
def test_bad_pools_fail_before_anything_starts(stages, pools, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_cluster({"pools": pools, "stages": stages}, "cluster.yaml")


def test_a_pool_starts_with_its_first_stage_and_closes_after_its_last(tmp_path):
    """Sync pools (no processes): which pool each stage gets, and when each starts and closes."""
    cfg = parse_cluster({"cluster": {"type": "sync"}, "pools": {"a": {"type": "sync"}}, "stages": {"features": "a"}})
    assert isinstance(cfg, PooledCluster)
    lines: list[str] = []
    ex = PoolExecutor(cfg, tmp_path, log=lines.append)
    order = ["ingest", "augment", "features", "train", "evaluate"]
    for i, stage in enumerate(order):  # as Runner.run: stage_ended between stages
        if i > 0:
            ex.stage_ended(order[i - 1], order[i:])
        ex.for_stage(stage)
    assert ex.opened == ["default", "a"] and ex.closed == ["a"]  # "a" closed when features ended
    ex.close()
    assert ex.closed == ["a", "default"] and lines[-1] == "mirpipe: pool default closed"


def test_cluster_show_and_job_script_per_pool(tmp_path, repo_root):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(POOLS))
    run = [sys.executable, "-m", "mirpipe", "cluster"]
    shown = subprocess.run([*run, "show", "--cluster", str(path), "--json"], capture_output=True, text=True, cwd=repo_root)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert set(doc["pools"]) == {"cpu", "gpu"} and doc["stages"] == {"features": "cpu", "train": "gpu"}
    assert doc["pools"]["gpu"]["derived"]["jobqueue_kwargs"]["job_name"] == "dask-gpu"
    script = subprocess.run([*run, "job-script", "--cluster", str(path), "--pool", "gpu"], capture_output=True, text=True)
    assert script.returncode == 0, script.stderr
    assert "#SBATCH -p gpu" in script.stdout and "#SBATCH --gres=gpu:1" in script.stdout and "--resources GPU=1" in script.stdout
    bad = subprocess.run([*run, "job-script", "--cluster", str(path), "--pool", "tpu"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no such pool" in bad.stderr


# -- on the local SLURM -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(repo_root):
    """A running local SLURM with partitions cpu and gpu; skip (with the reason) only when the script cannot start one."""
    script = repo_root / "scripts" / "slurm-local.sh"
    ok = subprocess.run([str(script), "status"], capture_output=True).returncode == 0
    parts = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split() if ok else []
    if not ok or "gpu" not in parts:  # (re)start: an older configuration has no cpu/gpu partitions
        res = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            pytest.skip(f"scripts/slurm-local.sh start could not start SLURM here: {res.stderr.strip()[-500:]}")
    yield


def _files(tmp_path, **train):
    data = small_config(tracks=5, shifts=[0, 2]).model_dump(mode="json")
    data["synthesize"]["solo_fraction"] = 0.0
    data["train"] = {**data["train"], **STOPPABLE_TRAIN, **train}
    data["evaluate"] = {**data["evaluate"], "tasks": ["chord"], "figures": 0}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "pools.yaml").write_text(yaml.safe_dump(POOLS))
    (tmp_path / "local.yaml").write_text(yaml.safe_dump({"cluster": POOLS["cluster"]}))
    return tmp_path / "pipeline.yaml", tmp_path / "pools.yaml", tmp_path / "local.yaml"


def _mirpipe(args, repo_root):
    return subprocess.Popen(
        [sys.executable, "-m", "mirpipe", *args], cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _job_logs(workdir, pool: str) -> dict[str, str]:
    """Job id -> its log (stdout and stderr), from <workdir>/logs/jobs/<pool>/."""
    out: dict[str, str] = {}
    for path in sorted((workdir / "logs" / "jobs" / pool).glob("dask-*")):
        job = path.stem.rsplit("-", 1)[-1]
        out[job] = out.get(job, "") + path.read_text(errors="replace")
    return out


def _weights(workdir):
    return torch.load(workdir / "train" / "chord" / "last.pt", weights_only=True, map_location="cpu")["model"]


def _squeue(name: str) -> set[str]:
    res = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True)
    return set(res.stdout.split())


def _gone(name: str, timeout: float = 60) -> bool:
    end = time.monotonic() + timeout  # scancel is asynchronous
    while _squeue(name):
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.slow
def test_features_in_cpu_jobs_training_in_a_gpu_job(slurm, tmp_path, repo_root):
    cfg, pools, _ = _files(tmp_path)
    workdir = tmp_path / "work"
    proc = _mirpipe(["run", "--workdir", str(workdir), "--config", str(cfg), "--cluster", str(pools), "--json"], repo_root)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    stages = json.loads(out)["stages"]
    assert stages["features"]["done"] == stages["features"]["total"] > 0 and stages["features"]["failed"] == 0
    assert stages["train"]["done"] == 1 and stages["evaluate"]["failed"] == 0
    # each pool started when its first stage had work and closed after its last: no GPU job during features
    events = [m.group(0) for m in re.finditer(r"pool (cpu|gpu) (started|closed)", err)]
    assert events == ["pool cpu started", "pool cpu closed", "pool gpu started", "pool gpu closed"], err[-4000:]
    cpu, gpu = _job_logs(workdir, "cpu"), _job_logs(workdir, "gpu")
    assert cpu and all("partition cpu" in log for log in cpu.values())
    assert len(gpu) == 1 and all("partition gpu" in log for log in gpu.values())
    assert any("train[chord]" in log and "finished at step 75/75" in log for log in gpu.values())  # training ran there
    assert not any("train[chord]" in log for log in cpu.values())
    assert _gone("dask-cpu") and _gone("dask-gpu")


@pytest.mark.slow
def test_a_preempted_gpu_job_is_replaced_and_training_resumes_to_identical_weights(slurm, tmp_path, repo_root):
    # ~500 steps (about 12 s on one core): the cancel lands mid-training; no early stop before the end
    cfg, pools, local = _files(tmp_path, steps_per_epoch=50, max_epochs=10, patience=100)
    base = tmp_path / "base"
    prep = _mirpipe(
        ["run", "--workdir", str(base), "--config", str(cfg), "--cluster", str(local), "--until", "features"], repo_root
    )
    assert prep.wait(timeout=600) == 0, prep.stderr.read()[-3000:]
    plain, preempted = tmp_path / "plain", tmp_path / "preempted"
    shutil.copytree(base, plain)
    shutil.copytree(base, preempted)

    whole = _mirpipe(
        ["run", "--workdir", str(plain), "--config", str(cfg), "--cluster", str(local), "--until", "train"], repo_root
    )
    _, err = whole.communicate(timeout=900)
    assert whole.returncode == 0, err[-3000:]

    args = ["run", "--workdir", str(preempted), "--config", str(cfg), "--cluster", str(pools), "--until", "train", "--json"]
    proc = _mirpipe(args, repo_root)
    progress = preempted / "train" / "chord" / "progress.json"
    deadline = time.monotonic() + 600
    while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first epoch has ended: training is under way in the GPU job
    assert progress.exists(), proc.communicate()[1][-3000:]
    (victim,) = _squeue("dask-gpu")
    subprocess.run(["scancel", victim], check=True)  # as a pre-emption: SIGTERM to the job, SIGKILL after KillWait
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    stages = json.loads(out)["stages"]
    assert stages["train"]["done"] == 1 and stages["train"]["failed"] == 0 and stages["train"]["interrupted"] == 0
    logs = _job_logs(preempted, "gpu")
    assert victim in logs and len(logs) >= 2, sorted(logs)  # a new job replaced the cancelled one
    resumed = [int(m) for log in logs.values() for m in re.findall(r"train: resuming at step (\d+)", log)]
    # from the checkpoint the cancelled job saved on SIGTERM (checkpoint_every is 1000: no other mid-run save)
    assert resumed and 0 < resumed[-1] < 500, {k: v[-2000:] for k, v in logs.items()}
    assert f"stopped at step {resumed[-1]}/500" in logs[victim], logs[victim][-2000:]
    assert any("finished at step 500/500" in log for job, log in logs.items() if job != victim)
    a, b = _weights(plain), _weights(preempted)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert _gone("dask-gpu")


# -- a stopped worker is not a stopped run ----------------------------------------------------------


class _PreemptOnce:
    """A sync executor whose first attempt of every item comes back "stopped", as from a worker whose
    batch job was pre-empted (its SIGTERM set the flag in the worker process, not in this driver)."""

    allowed_failures = 0
    description = "preempt-once"
    dashboard_link = None

    def __init__(self):
        from mirpipe.pipeline.cluster import SyncExecutor

        self.inner = SyncExecutor()
        self.seen: set[str] = set()

    def resources_for(self, stage, default):
        return None

    def run(self, fn, calls, resources=None, stop=None):
        from mirpipe.records import ItemResult

        for key, args in calls:
            item = args[1]
            if item.id not in self.seen:
                self.seen.add(item.id)
                yield key, ItemResult("stopped", item.id)
                continue
            yield from self.inner.run(fn, [(key, args)], resources, stop)


def test_an_item_stopped_on_its_worker_is_resubmitted_a_stop_of_the_driver_ends_it(augmented, fault_corpus):
    from conftest import FAULT_TRACKS, corpus_config

    from mirpipe import stop
    from mirpipe.pipeline.runner import Runner

    runner = Runner(augmented, corpus_config(fault_corpus), log=lambda m: None, progress=False)
    report = runner.run_stage("features", _PreemptOnce())
    assert report.done == FAULT_TRACKS and report.interrupted == 0 and report.failed == 0

    other = Runner(augmented, corpus_config(fault_corpus), log=lambda m: None, progress=False)
    stop.request()  # the driver's own stop (SIGTERM to mirpipe run): "stopped" items end the stage
    try:
        report = other.run_stage("features", _PreemptOnce(), force=True)
    finally:
        stop.clear()
    assert report.interrupted + report.unscheduled == FAULT_TRACKS and report.done == 0
