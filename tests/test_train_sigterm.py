"""SIGTERM during training (a SLURM walltime, a pre-emption, ``scancel``): sent to the whole process
group of ``mirpipe run`` (driver and LocalCluster worker), training saves ``last.pt`` after its current
step, the driver says how to resume and exits 1, and the resumed run ends with weights bitwise equal
to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import STOPPABLE_TRAIN, small_config

CLUSTER = {"cluster": {"type": "local", "n_workers": 1, "memory_limit": "3GiB", "dashboard_address": None}}


def _files(tmp_path):
    data = small_config(tracks=5, shifts=[0, 2]).model_dump(mode="json")
    data["synthesize"]["solo_fraction"] = 0.0
    data["train"] = {**data["train"], **STOPPABLE_TRAIN}
    data["evaluate"] = {**data["evaluate"], "tasks": ["chord"], "figures": 0}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    return tmp_path / "pipeline.yaml", tmp_path / "cluster.yaml"


def _mirpipe(args, repo_root, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "mirpipe", *args], cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def _weights(workdir):
    return torch.load(workdir / "train" / "chord" / "last.pt", weights_only=True, map_location="cpu")["model"]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path, repo_root):
    cfg, cl = _files(tmp_path)
    base = tmp_path / "base"
    prep = _mirpipe(["run", "--workdir", str(base), "--config", str(cfg), "--cluster", str(cl), "--until", "features"], repo_root)
    assert prep.wait(timeout=400) == 0, prep.stderr.read()[-3000:]
    plain, stopped = tmp_path / "plain", tmp_path / "stopped"
    shutil.copytree(base, plain)
    shutil.copytree(base, stopped)
    run = ["--config", str(cfg), "--cluster", str(cl), "--json"]

    whole = _mirpipe(["run", "--workdir", str(plain), *run], repo_root)
    out, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-3000:]

    proc = _mirpipe(["run", "--workdir", str(stopped), *run], repo_root, start_new_session=True)
    progress = stopped / "train" / "chord" / "progress.json"
    deadline = time.monotonic() + 400
    while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first epoch has ended: training is under way
    assert progress.exists(), proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM signals a job: every process of it
    t_signal = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    assert time.monotonic() - t_signal < 60
    assert "stopped; resume with mirpipe run" in err and "Traceback" not in err
    assert "SIGTERM" in json.loads(out)["stopped"]["reason"]
    ckpt = torch.load(stopped / "train" / "chord" / "last.pt", weights_only=True, map_location="cpu")
    steps = ckpt["state"]["global_step"]
    assert 25 <= steps < 75 and not ckpt["state"]["finished"]  # saved mid-run, not at a checkpoint_every boundary
    assert not (stopped / "reports" / "chord" / "scores.json").exists()  # evaluation did not start

    resumed = _mirpipe(["run", "--workdir", str(stopped), *run], repo_root)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    a, b = _weights(plain), _weights(stopped)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((plain / "reports" / "chord" / "scores.json").read_text()) == json.loads(
        (stopped / "reports" / "chord" / "scores.json").read_text()
    )
