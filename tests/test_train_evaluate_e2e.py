"""Train and evaluate the chord model end to end on CPU, on a real LocalCluster."""

import csv
import json

import jams
import mir_eval
import numpy as np
import pytest
from conftest import TINY_CHORD_TRAIN, small_config

from mirpipe.models.chord import METRICS
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import parse_cluster
from mirpipe.pipeline.ledger import Ledger
from mirpipe.pipeline.runner import Runner

TINY_TRAIN = {
    **TINY_CHORD_TRAIN,
    "steps_per_epoch": 5,
    "max_epochs": 2,
    "checkpoint_every": 3,
    "loader_workers": 2,
}


def tiny_config(**chord_model):
    cfg = small_config(tracks=6, shifts=[0, 2])
    data = cfg.model_dump(mode="json")
    data["synthesize"]["solo_fraction"] = 0.0
    data["train"] = {**data["train"], **TINY_TRAIN, "models": {"chord": {**TINY_TRAIN["models"]["chord"], **chord_model}}}
    data["evaluate"] = {**data["evaluate"], "tasks": ["chord"], "figures": 1}
    return type(cfg).model_validate(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("train")
    cluster = parse_cluster({"type": "local", "n_workers": 2, "memory_limit": "4GiB"})
    with open_executor(cluster) as ex:
        reports = {r.stage: r for r in Runner(workdir, tiny_config(), progress=False).run(ex)}
    return workdir, cluster, reports


def test_train_runs_as_a_task_and_keeps_its_checkpoints(trained):
    workdir, _, reports = trained
    assert (reports["train"].done, reports["train"].failed) == (1, 0), reports["train"].failures
    record = Ledger(workdir).done("train")["chord"]["record"]
    assert record["steps"] == 10 and record["epochs"] == 2 and record["finished"]
    assert record["loader_workers"] == 0  # a Dask worker process cannot fork DataLoader workers
    assert record["train_entries"] == 4 and record["val_entries"] == 1  # 4 train tracks (shifts drawn when sampling); 1 val track
    for name in ("best.pt", "last.pt"):
        assert (workdir / "train" / "chord" / name).stat().st_size > 0
    runs = list((workdir / "train" / "chord" / "tb").iterdir())
    assert len(runs) == 1 and list(runs[0].glob("events.out.tfevents.*"))  # one TensorBoard folder per training run
    assert record["tensorboard"] == str(runs[0].relative_to(workdir))


def test_evaluate_writes_estimates_scores_and_figures(trained):
    workdir, _, reports = trained
    ev = reports["evaluate"]
    assert ev.failed == 0 and ev.done == ev.total == 1  # the one test track (unshifted variant only)
    reports_dir = workdir / "reports" / "chord"
    scores = json.loads((reports_dir / "scores.json").read_text())
    for name in ("root", "majmin", "mirex", "thirds", "triads", "sevenths", "tetrads", "seg"):
        assert 0.0 <= scores[name] <= 1.0, name
    rows = list(csv.DictReader(open(reports_dir / "scores.csv")))
    assert len(rows) == 1 and set(METRICS) <= set(rows[0])
    track = rows[0]["track"]
    assert abs(float(rows[0]["root"]) - scores["root"]) < 1e-4  # one track: the total is its score
    est = jams.load(str(reports_dir / "estimates" / f"{track}.jams"), validate=True, strict=True)
    labels = [obs.value for obs in est.annotations[0].data]
    assert labels and all(mir_eval.chord.encode(label) is not None for label in labels)
    assert (reports_dir / "figures" / f"{track}.png").read_bytes()[:4] == b"\x89PNG"


def test_unchanged_rerun_does_not_retrain_and_force_does(trained):
    workdir, cluster, _ = trained
    cfg = tiny_config()
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        again = {r.stage: r for r in Runner(workdir, cfg, progress=False).run(ex)}
        assert all(r.scheduled == 0 for r in again.values())
        forced = {r.stage: r for r in Runner(workdir, cfg, progress=False).run(ex, force=("train",))}
    assert forced["train"].scheduled == forced["train"].done == 1
    assert forced["evaluate"].scheduled == 1  # a new model is scored again
    assert forced["features"].scheduled == 0


def test_tag_only_model_retrains_and_rescores_only(trained):
    workdir, _, _ = trained
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        reports = {r.stage: r for r in Runner(workdir, tiny_config(structured=False, architecture="cr1"), progress=False).run(ex)}
    assert [reports[s].scheduled for s in ("synthesize", "ingest", "features")] == [0, 0, 0]
    assert reports["train"].done == 1 and reports["evaluate"].done == 1
    scores = json.loads((workdir / "reports" / "chord" / "scores.json").read_text())
    assert 0.0 <= scores["majmin"] <= 1.0


def test_cli_run_ends_with_the_score_table(trained, tmp_path, repo_root):
    import subprocess
    import sys

    import yaml

    workdir, _, _ = trained
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
    (tmp_path / "cluster.yaml").write_text("cluster:\n  type: sync\n")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mirpipe",
            "run",
            "--workdir",
            str(workdir),
            "--config",
            str(cfg_file),
            "--cluster",
            str(tmp_path / "cluster.yaml"),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    saved = json.loads((workdir / "reports" / "chord" / "scores.json").read_text())
    assert out["scores"]["chord"]["root"] == saved["root"]
    assert "chord scores (mir_eval" in res.stderr and "majmin" in res.stderr


def test_a_new_task_computes_only_its_targets_and_retrains_nothing(trained, tmp_path):
    """Registering a task on an existing store (the beat task of docs/extending/task.md): every
    features item runs, but computes only the new task's targets; no feature file is rewritten (bytes
    unchanged); the chord model is neither retrained nor scored again."""
    import hashlib
    import re
    import shutil
    from pathlib import Path

    from mirpipe.models.task import TASKS

    workdir = tmp_path / "work"
    shutil.copytree(trained[0], workdir)
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        Runner(workdir, tiny_config(), progress=False).run(ex)  # current with tiny_config(), whatever ran before

    def digests(part: str) -> dict[str, str]:
        files = sorted(p for p in (workdir / "features").glob("*.zarr.zip") if (".targets." in p.name) == (part == "targets"))
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    features_before, targets_before = digests("features"), digests("targets")
    page = Path(__file__).resolve().parent.parent / "docs" / "extending" / "task.md"
    exec(compile(re.search(r"```python\n(.*?)```", page.read_text(), re.S).group(1), str(page), "exec"), {"__name__": "beat"})
    try:
        cfg = tiny_config()
        assert "beat" in cfg.features.target_tasks() and cfg.train.tasks == ["chord"]
        with open_executor(parse_cluster({"type": "sync"})) as ex:
            reports = {r.stage: r for r in Runner(workdir, cfg, progress=False).run(ex)}
    finally:
        TASKS.unregister("beat")
    records = {item: done["record"] for item, done in Ledger(workdir).done("features").items()}
    assert reports["features"].done == reports["features"].scheduled == len(records) == 6
    assert all(r["computed"] == ["targets/beat"] for r in records.values()), records
    assert digests("features") == features_before  # no feature kind recomputed, not a byte rewritten
    targets_after = digests("targets")
    assert sorted(targets_after) == sorted(targets_before) and all(targets_after[n] != targets_before[n] for n in targets_after)
    from mirpipe.storage import open_store

    store = open_store("zarr", workdir / "features")
    entry = store.read_entry(next(iter(records)), ["targets/beat", "targets/chord_tag"])
    assert entry.arrays["targets/beat"].shape[1] == entry.arrays["targets/chord_tag"].shape[1]  # on the chord CQT's frame grid
    assert reports["train"].scheduled == 0 and reports["evaluate"].scheduled == 0


def _damage_member(path, member: str) -> None:
    """Flip 64 bytes inside one zip member's data, keeping the file's size and modification time."""
    import os
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    st, data = path.stat(), bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 8 : start + 72] = bytes(b ^ 0xFF for b in data[start + 8 : start + 72])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_damaged_entry_met_in_training_is_recomputed_in_the_same_run(trained, tmp_path):
    """A CQT chunk the chord task reads, damaged with size and mtime kept (planning cannot see it):
    training fails on it naming the entry file and the array, the runner makes that track's features
    item pending, recomputes it (bytes equal to the first computation) and trains again, all in one
    run. A damaged HCQT chunk, which the chord task does not read, stops nothing."""
    import shutil

    from conftest import manifest_rows, store_contents

    from mirpipe.storage import open_store

    workdir = tmp_path / "work"
    shutil.copytree(trained[0], workdir)
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        Runner(workdir, tiny_config(), progress=False).run(ex)  # current with tiny_config(), whatever ran before
    before = store_contents(workdir)
    rows = manifest_rows(workdir)
    train_tracks = sorted(t for t, r in rows.items() if r["split"] == "train")
    store = open_store("zarr", workdir / "features")
    _damage_member(store.entry_path(train_tracks[0]), "cqt/c/0/0/0")
    _damage_member(store.entry_path(train_tracks[1]), "hcqt/c/0/0/0")
    logs: list[str] = []
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        reports = {r.stage: r for r in Runner(workdir, tiny_config(), progress=False, log=logs.append).run(ex, force=("train",))}
    assert reports["train"].done == 1 and reports["train"].failed == 0, reports["train"].failures
    assert reports["features"].done == 1  # the damaged CQT's track alone
    assert any(train_tracks[0] in line and "recomputing their features" in line for line in logs), logs
    failure = Ledger(workdir).failure("train", "chord")
    assert failure is None  # healed: nothing left recorded
    records = Ledger(workdir).done("features")
    assert sorted(records[train_tracks[0]]["record"]["computed"]) == ["cqt", "hcqt"]  # its features file was not trusted
    after = store.read_entry(train_tracks[0]).arrays
    for name, array in before[train_tracks[0]][0].items():
        assert np.array_equal(after[name], array), name  # recomputed as first computed
    damaged = Runner(workdir, tiny_config(), progress=False).verify()
    assert damaged == [{"stage": "features", "item": train_tracks[1]}] or [d["item"] for d in damaged] == [train_tracks[1]]
