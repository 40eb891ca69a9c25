"""cluster.yaml: validation before anything is submitted, derived worker lifetime, `mirpipe cluster`
commands, the example files, and per-stage resources on real clusters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import corpus_config
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import ConfigError, load_cluster, parse_cluster
from mirpipe.pipeline.runner import Runner

MIRPIPE = [sys.executable, "-m", "mirpipe"]


@pytest.mark.parametrize(
    "cluster, field",
    [
        ({"type": "slurm", "cores": 0, "memory": "2GiB"}, "cluster.slurm.cores"),
        ({"type": "slurm", "cores": 1, "memory": "lots"}, "cluster.slurm.memory"),
        ({"type": "slurm", "cores": 1, "memory": "2GiB", "walltme": "01:00:00"}, "cluster.slurm.walltme"),
        ({"type": "slurm", "cores": 1, "memory": "2GiB", "walltime": "1h"}, "cluster.slurm.walltime"),
        ({"type": "pbs", "cores": 1, "memory": "2GiB", "extra": {"job_extra_directivs": []}}, "job_extra_directivs"),
        ({"type": "slurm", "cores": 1, "memory": "2GiB", "walltime": "00:10:00", "lifetime": "12m"}, "walltime"),
        ({"type": "slurm", "cores": 1, "memory": "2GiB", "minimum": 5, "maximum": 2}, "minimum 5 > maximum 2"),
        ({"type": "local", "resources": {"train": {"GPU": -1}}}, "resources.train.GPU"),
        ({"type": "kubernetes"}, "cluster"),
    ],
)
def test_wrong_cluster_key_or_value_is_named(cluster, field):
    with pytest.raises(ConfigError) as err:
        parse_cluster(cluster, "my-cluster.yaml")
    assert "my-cluster.yaml" in str(err.value) and field in str(err.value)


def test_bad_cluster_file_fails_before_any_job_is_submitted(tmp_path, repo_root):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster:\n  type: slurm\n  cores: 1\n  memory: 2GiB\n  jobs: 2\n  queue: debug\n  extra: {bogus_option: 1}\n")
    res = subprocess.run(MIRPIPE + ["run", "--cluster", str(bad), "--workdir", str(tmp_path / "w")],
                         capture_output=True, text=True, cwd=repo_root, timeout=120)
    assert res.returncode == 2 and "bogus_option" in res.stderr and str(bad) in res.stderr
    assert not (tmp_path / "w").exists()  # no workdir, no cluster, no job


def test_worker_lifetime_is_derived_from_walltime_and_overridable():
    cfg = parse_cluster({"type": "slurm", "cores": 1, "memory": "2GiB", "walltime": "02:00:00"})
    assert cfg.lifetime_seconds() == (6480.0, 300.0)  # walltime - 10%, stagger 5% capped at 5 min
    assert cfg.worker_args()[:4] == ["--lifetime", "6480s", "--lifetime-stagger", "300s"]
    short = parse_cluster({"type": "slurm", "cores": 1, "memory": "2GiB", "walltime": "00:05:00"})
    assert short.lifetime_seconds() == (240.0, 15.0)  # at least one minute before the walltime
    own = parse_cluster({"type": "slurm", "cores": 1, "memory": "2GiB", "walltime": "1-00:00:00",
                         "lifetime": "20h", "lifetime_stagger": "10m", "lifetime_restart": True,
                         "worker_resources": {"GPU": 1}})
    assert own.worker_args() == ["--lifetime", "72000s", "--lifetime-stagger", "600s", "--lifetime-restart", "--resources", "GPU=1"]


def _cli(*args: str):
    """The real click command, in-process (CliRunner): no interpreter start per call."""
    from click.testing import CliRunner

    from mirpipe.pipeline.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cluster_show_and_job_script_commands(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    show = _cli("cluster", "show", "--cluster", "examples/cluster-slurm.yaml", "--json")
    assert show.exit_code == 0, show.output
    shown = json.loads(show.stdout)
    assert shown["type"] == "slurm" and shown["derived"]["lifetime_s"] == 12960.0
    assert shown["derived"]["jobqueue_kwargs"]["python"] == sys.executable
    script = _cli("cluster", "job-script", "--cluster", "examples/cluster-slurm.yaml")
    assert script.exit_code == 0, script.output
    assert "#SBATCH -p normal" in script.stdout and "#SBATCH -A my-project" in script.stdout
    assert "--lifetime 12960s --lifetime-stagger 300s" in script.stdout and "#SBATCH --qos=normal" in script.stdout
    pbs = _cli("cluster", "job-script", "--cluster", "examples/cluster-pbs.yaml")
    assert pbs.exit_code == 0 and "#PBS -q workq" in pbs.stdout and "walltime=04:00:00" in pbs.stdout
    local = _cli("cluster", "job-script", "--cluster", "cluster.yaml")
    assert local.exit_code == 2 and "submits no batch jobs" in local.stderr
    for cmd in (["cluster", "--help"], ["cluster", "show", "--help"], ["cluster", "job-script", "--help"]):
        assert _cli(*cmd).exit_code == 0


def test_example_cluster_files_validate(repo_root):
    files = sorted((repo_root / "examples").glob("cluster-*.yaml"))
    assert {f.name for f in files} >= {"cluster-slurm.yaml", "cluster-pbs.yaml", "cluster-slurm-local.yaml"}
    for f in files:
        load_cluster(f)


@pytest.mark.slow
def test_stage_resources_are_asked_only_where_a_worker_offers_them(tmp_path, fault_corpus):
    with open_executor(parse_cluster({"type": "local", "n_workers": 1, "memory_limit": "2GiB",
                                      "worker_resources": {"GPU": 1}, "resources": {"features": {"GPU": 1}}})) as ex:
        assert ex.resources_for("features", {}) == {"GPU": 1}  # cluster.yaml's mapping
        assert ex.resources_for("train", {"GPU": 1}) == {"GPU": 1}  # the stage's own default
        assert ex.resources_for("train", {"TPU": 1}) is None  # nobody offers it: run anywhere
        assert ex.resources_for("ingest", {}) is None
        # the same scheduler seen as an existing one (no declaration): the live workers are asked
        address = ex.client.scheduler.address
        with open_executor(parse_cluster({"type": "address", "address": address,
                                          "resources": {"train": {"GPU": 2}, "augment": {"GPU": 1}}})) as seen:
            assert seen.resources_for("augment", {}) == {"GPU": 1}
            assert seen.resources_for("train", {"GPU": 1}) is None  # the file overrides the stage: 2 GPUs, none has
    # a stage configured for a GPU on a cluster without one runs anyway instead of waiting forever
    with open_executor(parse_cluster({"type": "local", "n_workers": 1, "memory_limit": "2GiB",
                                      "resources": {"ingest": {"GPU": 1}}})) as ex:
        assert ex.resources_for("ingest", {}) is None
        (report,) = Runner(tmp_path / "work", corpus_config(fault_corpus), progress=False).run(ex, only="ingest")
    assert report.done == report.total == 2
