"""cluster.yaml: validation before anything is submitted, derived worker lifetime, `mirpipe cluster`
commands, the example files, and per-stage resources on real clusters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import FAULT_TRACKS, corpus_config

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
        # walltime in each scheduler's own syntax; the error names the field and the accepted forms
        ({"type": "lsf", "cores": 1, "memory": "2GiB", "walltime": "01:00:00"}, "cluster.lsf.walltime"),
        ({"type": "lsf", "cores": 1, "memory": "2GiB", "walltime": "1:75"}, "[hours:]minutes"),
        ({"type": "pbs", "cores": 1, "memory": "2GiB", "walltime": "90"}, "HH:MM:SS (PBS walltime=)"),
        ({"type": "sge", "cores": 1, "memory": "2GiB", "walltime": "1-00:00:00"}, "cluster.sge.walltime"),
        ({"type": "slurm", "cores": 1, "memory": "2GiB", "walltime": "00:61:00"}, "D-HH:MM:SS (SLURM -t)"),
        ({"type": "slurm", "cores": 1, "memory": "2GiB", "job-extra-directives": [], "job_extra_directives": []}, "given twice"),
        ({"type": "slurm", "cores": 1, "memory": "2GiB", "extra": {"walltime": "01:00:00"}}, "not under extra"),
        ({"type": "slurm", "cores": 1, "memory": "2GiB", "extra": {"security": None}}, "tls: true|false"),
    ],
)
def test_wrong_cluster_key_or_value_is_named(cluster, field):
    with pytest.raises(ConfigError) as err:
        parse_cluster(cluster, "my-cluster.yaml")
    assert "my-cluster.yaml" in str(err.value) and field in str(err.value)


def test_bad_cluster_file_fails_before_any_job_is_submitted(tmp_path, repo_root):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster:\n  type: slurm\n  cores: 1\n  memory: 2GiB\n  jobs: 2\n  queue: debug\n  extra: {bogus_option: 1}\n")
    res = subprocess.run(
        MIRPIPE + ["run", "--cluster", str(bad), "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=120,
    )
    assert res.returncode == 2 and "bogus_option" in res.stderr and str(bad) in res.stderr
    assert not (tmp_path / "w").exists()  # no workdir, no cluster, no job


def test_worker_lifetime_is_derived_from_walltime_and_overridable():
    cfg = parse_cluster({"type": "slurm", "cores": 1, "memory": "2GiB", "walltime": "02:00:00"})
    assert cfg.lifetime_seconds() == (6480.0, 300.0)  # walltime - 10%, stagger 5% capped at 5 min
    assert cfg.worker_args()[:4] == ["--lifetime", "6480s", "--lifetime-stagger", "300s"]
    short = parse_cluster({"type": "slurm", "cores": 1, "memory": "2GiB", "walltime": "00:05:00"})
    assert short.lifetime_seconds() == (240.0, 15.0)  # at least one minute before the walltime
    own = parse_cluster(
        {
            "type": "slurm",
            "cores": 1,
            "memory": "2GiB",
            "walltime": "1-00:00:00",
            "lifetime": "20h",
            "lifetime_stagger": "10m",
            "lifetime_restart": True,
            "worker_resources": {"GPU": 1},
        }
    )
    assert own.worker_args() == [
        "--lifetime",
        "72000s",
        "--lifetime-stagger",
        "600s",
        "--lifetime-restart",
        "--resources",
        "GPU=1",
    ]


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
    with open_executor(
        parse_cluster(
            {
                "type": "local",
                "n_workers": 1,
                "memory_limit": "2GiB",
                "worker_resources": {"GPU": 1},
                "resources": {"features": {"GPU": 1}},
                "tls": False,  # the `address` client below brings no credentials (it would take them from dask's config)
            }
        )
    ) as ex:
        assert ex.resources_for("features", {}) == {"GPU": 1}  # cluster.yaml's mapping
        assert ex.resources_for("train", {"GPU": 1}) == {"GPU": 1}  # the stage's own default
        assert ex.resources_for("train", {"TPU": 1}) is None  # nobody offers it: run anywhere
        assert ex.resources_for("ingest", {}) is None
        # the same scheduler seen as an existing one (no declaration): the live workers are asked
        address = ex.client.scheduler.address
        with open_executor(
            parse_cluster({"type": "address", "address": address, "resources": {"train": {"GPU": 2}, "features": {"GPU": 1}}})
        ) as seen:
            assert seen.resources_for("features", {}) == {"GPU": 1}
            assert seen.resources_for("train", {"GPU": 1}) is None  # the file overrides the stage: 2 GPUs, none has
    # a stage configured for a GPU on a cluster without one runs anyway instead of waiting forever
    with open_executor(
        parse_cluster({"type": "local", "n_workers": 1, "memory_limit": "2GiB", "resources": {"ingest": {"GPU": 1}}})
    ) as ex:
        assert ex.resources_for("ingest", {}) is None
        (report,) = Runner(tmp_path / "work", corpus_config(fault_corpus), progress=False).run(ex, only="ingest")
    assert report.done == report.total == FAULT_TRACKS


@pytest.mark.parametrize(
    "scheduler, given, seconds, passed",
    [
        ("slurm", "90", 5400, "01:30:00"),  # MM
        ("slurm", "10:30", 630, "00:10:30"),  # MM:SS
        ("slurm", "04:00:00", 14400, "04:00:00"),
        ("slurm", "2-12", 216000, "2-12:00:00"),  # D-HH
        ("slurm", "1-00:30", 88200, "1-00:30:00"),  # D-HH:MM
        ("slurm", "1-00:00:00", 86400, "1-00:00:00"),
        ("pbs", "48:00:00", 172800, "48:00:00"),
        ("sge", "4:00:00", 14400, "04:00:00"),
        ("lsf", "04:00", 14400, "04:00"),  # [hours:]minutes: four hours, not four minutes
        ("lsf", "90", 5400, "01:30"),
    ],
)
def test_walltime_is_read_and_written_in_each_schedulers_syntax(scheduler, given, seconds, passed):
    from mirpipe.pipeline.cluster import jobqueue_kwargs

    cfg = parse_cluster({"type": scheduler, "cores": 1, "memory": "2GiB", "walltime": given})
    assert cfg.walltime_seconds() == seconds
    assert cfg.lifetime_seconds() == (seconds - max(60.0, 0.1 * seconds), min(300.0, 0.05 * seconds))
    assert jobqueue_kwargs(cfg)["walltime"] == passed


WALLTIME_LINE = {
    "slurm": "#SBATCH -t 04:00:00",
    "pbs": "#PBS -l walltime=04:00:00",
    "sge": "#$ -l h_rt=04:00:00",
    "lsf": "#BSUB -W 04:00",
}


@pytest.mark.parametrize("scheduler", ["slurm", "pbs", "sge", "lsf"])
def test_job_script_of_each_scheduler(scheduler, tmp_path):
    """The batch script each scheduler would get (printed: pytest -s), without a scheduler: walltime in
    its syntax, mirpipe's worker lifetime, and a worker that connects over TLS with the run's credentials."""
    from mirpipe.pipeline.cluster import job_script

    walltime = "04:00" if scheduler == "lsf" else "04:00:00"
    cfg = parse_cluster(
        {
            "type": scheduler,
            "cores": 2,
            "memory": "4GiB",
            "processes": 1,
            "walltime": walltime,
            "queue": "q1",
            "job-extra-directives": ["-V"] if scheduler != "slurm" else ["--qos=low"],
            "job-script-prologue": ["echo start"],
            "local-directory": "/scratch",
        }
    )
    script = job_script(cfg, tmp_path)
    print(f"----- {scheduler} -----\n{script}")
    assert WALLTIME_LINE[scheduler] in script.splitlines()
    assert "echo start" in script and "--local-directory /scratch" in script and "q1" in script
    assert "--lifetime 12960s --lifetime-stagger 300s" in script
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert " tls://<scheduler>:8786 " in worker and "--protocol tls://" in worker
    tls_dir = tmp_path.resolve() / ".mirpipe-tls"
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert f"{flag} {tls_dir}/.dask-jobqueue.worker." in worker
    assert not tls_dir.exists()  # printing a script makes no credentials
    plain = job_script(cfg.model_copy(update={"tls": False}), tmp_path)
    assert " tcp://<scheduler>:8786 " in plain and "--tls" not in plain


def test_only_keys_set_in_cluster_yaml_are_passed_and_jobqueue_yaml_supplies_the_rest(tmp_path):
    """The site's jobqueue.yaml (dask config jobqueue.<type>.*) is not overridden by mirpipe defaults."""
    import dask

    from mirpipe.pipeline.cluster import job_script, jobqueue_kwargs

    site = {
        "jobqueue.slurm.walltime": "1-00",
        "jobqueue.slurm.processes": 2,
        "jobqueue.slurm.queue": "site-q",
        "jobqueue.slurm.cores": 4,
        "jobqueue.slurm.memory": "8GiB",
        "jobqueue.slurm.python": "/site/python",
        "jobqueue.slurm.worker-extra-args": ["--no-dashboard"],
        "jobqueue.slurm.log-directory": "/site/logs",
        "jobqueue.slurm.shared-temp-directory": "/site/tls",
    }
    with dask.config.set(site):
        cfg = parse_cluster({"type": "slurm"})  # cores and memory from jobqueue.yaml
        kwargs = jobqueue_kwargs(cfg, tmp_path)
        assert set(kwargs) == {"worker_extra_args", "protocol", "scheduler_options"}
        assert kwargs["worker_extra_args"] == ["--lifetime", "77760s", "--lifetime-stagger", "300s", "--no-dashboard"]
        assert cfg.lifetime_seconds() == (77760.0, 300.0)  # from the site's walltime, read as SLURM (1 day)
        script = job_script(cfg, tmp_path)
        for line in ("#SBATCH -t 1-00", "#SBATCH -p site-q", "#SBATCH --cpus-per-task=4", "#SBATCH -o /site/logs/"):
            assert line in script
        assert "/site/python -m distributed.cli.dask_worker" in script and "--nworkers 2" in script
        assert "--tls-key /site/tls/" in script
        own = parse_cluster({"type": "slurm", "walltime": "02:00:00", "processes": 1, "queue": "mine"})
        kwargs = jobqueue_kwargs(own, tmp_path)
        assert (kwargs["walltime"], kwargs["processes"], kwargs["queue"]) == ("02:00:00", 1, "mine")
        assert "cores" not in kwargs and "python" not in kwargs and "log_directory" not in kwargs
    with dask.config.set({"jobqueue.lsf.walltime": "01:00:00", "jobqueue.lsf.cores": 1, "jobqueue.lsf.memory": "1GiB"}):
        with pytest.raises(ConfigError, match=r"jobqueue.lsf.walltime.*\[hours:\]minutes"):
            parse_cluster({"type": "lsf"})  # a site value that LSF would not accept is caught too
    with dask.config.set({"jobqueue.pbs.cores": None, "jobqueue.pbs.memory": None}):
        with pytest.raises(ConfigError, match=r"cores: not set here and the dask config has no jobqueue.pbs.cores"):
            parse_cluster({"type": "pbs", "memory": "2GiB"})


def test_hyphenated_keys_are_the_jobqueue_yaml_spelling_of_the_same_fields():
    hyphens = parse_cluster(
        {
            "type": "slurm",
            "cores": 1,
            "memory": "2GiB",
            "job-extra-directives": ["--qos=x"],
            "job-script-prologue": ["module load x"],
            "worker-extra-args": ["--no-nanny"],
            "local-directory": "/tmp",
            "log-directory": "/logs",
            "lifetime-stagger": "1m",
            "shared-temp-directory": "/shared",
            "allowed-failures": 3,
            "extra": {"job-name": "j"},
        }
    )
    underscores = parse_cluster(
        {
            "type": "slurm",
            "cores": 1,
            "memory": "2GiB",
            "job_extra_directives": ["--qos=x"],
            "job_script_prologue": ["module load x"],
            "worker_extra_args": ["--no-nanny"],
            "local_directory": "/tmp",
            "log_directory": "/logs",
            "lifetime_stagger": "1m",
            "shared_temp_directory": "/shared",
            "allowed_failures": 3,
            "extra": {"job_name": "j"},
        }
    )
    assert hyphens == underscores and hyphens.model_fields_set == underscores.model_fields_set
    local = parse_cluster({"type": "local", "n-workers": 1, "threads-per-worker": 2, "dashboard-address": None})
    assert (local.n_workers, local.threads_per_worker, local.dashboard_address) == (1, 2, None)


def test_secure_defaults_and_what_a_recorded_workdir_round_trip_keeps():
    from mirpipe.pipeline.cluster import jobqueue_kwargs
    from mirpipe.pipeline.config import dump

    local = parse_cluster({"type": "local"})
    assert (local.host, local.dashboard_address, local.tls) == ("127.0.0.1", "127.0.0.1:0", True)
    jq = parse_cluster({"type": "slurm", "cores": 1, "memory": "2GiB"})
    assert jq.tls and jq.dashboard_address == "127.0.0.1:8787"
    assert jobqueue_kwargs(jq)["scheduler_options"] == {"dashboard_address": "127.0.0.1:8787"}
    # a workdir records the full dump; unset keys come back as null and are still not passed
    again = parse_cluster(dump(jq))
    assert jobqueue_kwargs(again) == jobqueue_kwargs(jq)
