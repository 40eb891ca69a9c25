"""The pipeline end to end on a real LocalCluster: done, resumable, minimal reruns, CLI."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import SMALL_SHIFTS, small_config

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.runner import Runner
from mirpipe.storage import open_store


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One full run (3 tracks, 3 shifts in feature mode) on a 2-worker LocalCluster."""
    from mirpipe.pipeline.config import parse_cluster

    workdir = tmp_path_factory.mktemp("e2e")
    cfg = small_config(tracks=3)
    cluster = parse_cluster({"type": "local", "n_workers": 2, "memory_limit": "3GiB"})
    with open_executor(cluster) as ex:
        reports = Runner(workdir, cfg, progress=False).run(ex, until="features")
    return workdir, cfg, cluster, reports


def test_every_item_of_every_stage_is_done(finished):
    workdir, cfg, _, reports = finished
    counts = {r.stage: (r.scheduled, r.done, r.failed) for r in reports}
    assert counts == {"synthesize": (3, 3, 0), "ingest": (3, 3, 0), "features": (3, 3, 0)}
    status = Runner(workdir, cfg, progress=False).status()
    by_stage = {s["stage"]: s for s in status}
    assert all(
        by_stage[n]["pending"] == 0 and by_stage[n]["failed"] == 0 and by_stage[n]["done"] == by_stage[n]["total"] > 0
        for n in ("synthesize", "ingest", "features")
    )
    assert by_stage["train"]["total"] == by_stage["evaluate"]["total"] == 0  # no training asked for


def test_store_index_and_entries(finished):
    workdir, cfg, _, _ = finished
    store = open_store("zarr", workdir / "features")
    index = store.read_index()
    assert len(index) == 3
    columns = json.loads((workdir / "manifest.json").read_text())["columns"]
    manifest = dict(zip(columns["track"], columns["split"]))
    margin = max(abs(s) for s in SMALL_SHIFTS) * 3  # bins per side for the largest shift, 3 bins/semitone
    for row in index.values():
        assert row.split == manifest[row.track]
        assert store.is_valid(row.track)
        assert row.variants == [0] and row.shifts == SMALL_SHIFTS  # shifts are sampled, not stored
        assert row.arrays["cqt"].shape == [1, row.frames["cqt"], 216 + 2 * margin]
        assert row.arrays["hcqt"].shape[:2] == [1, row.frames["hcqt"]] and row.arrays["hcqt"].dtype == "uint8"
        assert row.arrays["targets/chord_tag"].shape == [1, row.frames["cqt"]]
        assert row.arrays["targets/f0_hz"].shape == [1, row.frames["hcqt"]]
    # an HPC file quota counts files: two per track (features, targets), and the index
    files = [p for p in (workdir / "features").rglob("*") if p.is_file()]
    assert len(files) == 2 * 3 + 1
    assert not (workdir / "augment").exists()  # feature mode writes nothing per shift


def test_unchanged_rerun_schedules_nothing(finished):
    workdir, cfg, cluster, _ = finished
    with open_executor(cluster) as ex:
        reports = Runner(workdir, cfg, progress=False).run(ex, until="features")
    assert [r.scheduled for r in reports] == [0, 0, 0]
    assert all(r.skipped == r.total for r in reports)


def test_changed_features_parameter_reruns_features_only(finished, sync_cluster):
    workdir, cfg, _, _ = finished
    changed = small_config(tracks=3, cqt={"amin": 1e-4})
    with open_executor(sync_cluster) as ex:
        reports = {r.stage: r for r in Runner(workdir, changed, progress=False).run(ex, until="features")}
    assert reports["synthesize"].scheduled == reports["ingest"].scheduled == 0
    assert reports["features"].scheduled == reports["features"].total == 3


def test_json_commands_keep_stdout_for_the_json_even_when_children_print(tmp_path):
    """A library or worker process printing to stdout must not corrupt what a --json command prints."""
    script = (
        "import subprocess, sys, json\n"
        "from mirpipe.pipeline.quiet_stdout import stdout_to_stderr\n"
        "with stdout_to_stderr(True):\n"
        "    print('noise from python')\n"
        "    subprocess.run([sys.executable, '-c', 'print(\"noise from a child\")'], check=True)\n"
        "print(json.dumps({'ok': 1}))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"ok": 1}
    assert "noise from python" in res.stderr and "noise from a child" in res.stderr


def test_cli_demo_then_run_json_resumes_with_zero_tasks(tmp_path, repo_root):
    workdir = tmp_path / "cli"
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text(yaml.safe_dump(small_config(tracks=2, shifts=[0, 1]).model_dump(mode="json")))
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text("cluster:\n  type: local\n  n_workers: 2\n")
    mirpipe = [sys.executable, "-m", "mirpipe"]
    first = subprocess.run(  # CI=1: some libraries (pyfluidsynth) print to stdout on CI machines
        mirpipe + ["demo", "--workdir", str(workdir), "--config", str(cfg_file), "--cluster", str(cluster_file), "--json"],
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=300,
        env={**os.environ, "CI": "1"},
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Dask dashboard http" in first.stderr
    out = json.loads(first.stdout)
    assert out["stages"]["features"]["done"] == 2
    second = subprocess.run(
        mirpipe + ["run", "--workdir", str(workdir), "--json"], capture_output=True, text=True, cwd=repo_root, timeout=300
    )
    assert second.returncode == 0, second.stderr[-3000:]
    stages = json.loads(second.stdout)["stages"]
    assert set(stages) == {"synthesize", "ingest", "features", "train", "evaluate"}
    assert all(s["scheduled"] == 0 and s["skipped"] == s["total"] for s in stages.values())
    status = subprocess.run(
        mirpipe + ["status", "--workdir", str(workdir), "--json"], capture_output=True, text=True, cwd=repo_root, timeout=120
    )
    rows = json.loads(status.stdout)["stages"]
    assert all(r["done"] == r["total"] and r["pending"] == 0 for r in rows.values())


def test_bad_configuration_fails_before_any_work(tmp_path, repo_root):
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("features:\n  store: parquet\naugment:\n  shfts: [0]\n")
    res = subprocess.run(
        [sys.executable, "-m", "mirpipe", "run", "--config", str(bad), "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=120,
    )
    assert res.returncode == 2
    assert "features.store" in res.stderr and "augment.shfts" in res.stderr and str(bad) in res.stderr
    assert not (tmp_path / "w").exists()
