"""The pipeline end to end on a real LocalCluster: done, resumable, minimal reruns, CLI."""

import json
import subprocess
import sys

import jams
import mir_eval
import numpy as np
import pytest
import yaml

from conftest import SMALL_SHIFTS, small_config
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.runner import Runner
from mirpipe.stages.augment import variant_jams_path
from mirpipe.stages.deform import variant_name
from mirpipe.storage import open_store


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One full run (3 tracks x 3 shifts) on a 2-worker LocalCluster."""
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
    n = len(SMALL_SHIFTS)
    assert counts == {"synthesize": (3, 3, 0), "ingest": (3, 3, 0), "augment": (3, 3, 0), "features": (3 * n, 3 * n, 0)}
    status = Runner(workdir, cfg, progress=False).status()
    by_stage = {s["stage"]: s for s in status}
    assert all(by_stage[n]["pending"] == 0 and by_stage[n]["failed"] == 0 and by_stage[n]["done"] == by_stage[n]["total"] > 0
               for n in ("synthesize", "ingest", "augment", "features"))
    assert by_stage["train"]["total"] == by_stage["evaluate"]["total"] == 0  # no training asked for


def test_store_index_and_entries(finished):
    workdir, cfg, _, _ = finished
    store = open_store("zarr", workdir / "features")
    index = store.read_index()
    assert len(index) == 3 * len(SMALL_SHIFTS)
    manifest = {r["track"]: r["split"] for r in json.loads((workdir / "manifest.json").read_text())["tracks"]}
    for row in index:
        assert row.split == manifest[row.track]  # every variant of a track in the track's split
        assert store.is_valid(row.track, row.variant)
        assert row.arrays["cqt"].shape == [row.n_frames, 216]
        jam = jams.load(str(variant_jams_path(workdir, row.track, row.variant)), validate=True, strict=True)
        for ann in jam.search(namespace="chord"):  # solo tracks have none
            for obs in ann.data:
                mir_eval.chord.encode(obs.value)
    # variants of one track share a frame grid; the shifted CQT is the unshifted one moved by 3 bins/semitone
    e0 = store.read_entry("demo-0000", variant_name(0))
    e3 = store.read_entry("demo-0000", variant_name(3))
    assert e0.arrays["cqt"].shape == e3.arrays["cqt"].shape
    roots0, roots3 = e0.arrays["targets/chord_root"], e3.arrays["targets/chord_root"]
    voiced = roots0 < 12
    assert np.array_equal((roots0[voiced] + 3) % 12, roots3[voiced])
    prof0 = e0.arrays["cqt"].astype(np.float32).mean(0)
    prof3 = e3.arrays["cqt"].astype(np.float32).mean(0)
    lags = range(-12, 13)
    best = max(lags, key=lambda k: np.corrcoef(prof0[30:180], prof3[30 + k : 180 + k])[0, 1])
    assert best == 9


def test_unchanged_rerun_schedules_nothing(finished):
    workdir, cfg, cluster, _ = finished
    with open_executor(cluster) as ex:
        reports = Runner(workdir, cfg, progress=False).run(ex, until="features")
    assert [r.scheduled for r in reports] == [0, 0, 0, 0]
    assert all(r.skipped == r.total for r in reports)


def test_changed_features_parameter_reruns_features_only(finished, sync_cluster):
    workdir, cfg, _, _ = finished
    changed = cfg.model_copy(update={"features": cfg.features.model_copy(update={"amin": 1e-4})})
    with open_executor(sync_cluster) as ex:
        reports = {r.stage: r for r in Runner(workdir, changed, progress=False).run(ex, until="features")}
    assert reports["synthesize"].scheduled == reports["ingest"].scheduled == reports["augment"].scheduled == 0
    assert reports["features"].scheduled == reports["features"].total == 3 * len(SMALL_SHIFTS)


def test_cli_demo_then_run_json_resumes_with_zero_tasks(tmp_path, repo_root):
    workdir = tmp_path / "cli"
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text(yaml.safe_dump(small_config(tracks=2, shifts=[0, 1]).model_dump(mode="json")))
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text("cluster:\n  type: local\n  n_workers: 2\n")
    mirpipe = [sys.executable, "-m", "mirpipe"]
    first = subprocess.run(
        mirpipe + ["demo", "--workdir", str(workdir), "--config", str(cfg_file), "--cluster", str(cluster_file), "--json"],
        capture_output=True, text=True, cwd=repo_root, timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Dask dashboard http" in first.stderr
    out = json.loads(first.stdout)
    assert out["stages"]["features"]["done"] == 4
    second = subprocess.run(mirpipe + ["run", "--workdir", str(workdir), "--json"], capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    stages = json.loads(second.stdout)["stages"]
    assert set(stages) == {"synthesize", "ingest", "augment", "features", "train", "evaluate"}
    assert all(s["scheduled"] == 0 and s["skipped"] == s["total"] for s in stages.values())
    status = subprocess.run(mirpipe + ["status", "--workdir", str(workdir), "--json"], capture_output=True, text=True, cwd=repo_root, timeout=120)
    rows = json.loads(status.stdout)["stages"]
    assert all(r["done"] == r["total"] and r["pending"] == 0 for r in rows.values())


def test_bad_configuration_fails_before_any_work(tmp_path, repo_root):
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("features:\n  store: parquet\n  hop_lenght: 512\n")
    res = subprocess.run([sys.executable, "-m", "mirpipe", "run", "--config", str(bad), "--workdir", str(tmp_path / "w")],
                         capture_output=True, text=True, cwd=repo_root, timeout=120)
    assert res.returncode == 2
    assert "features.store" in res.stderr and "features.hop_lenght" in res.stderr and str(bad) in res.stderr
    assert not (tmp_path / "w").exists()
