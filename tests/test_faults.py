"""Faults injected for real (no mocks): killed workers, a SIGKILLed driver, crashes between an
entry and its marker, planted broken entries, raising and worker-killing items, concurrent runs,
changed parameters. Each checks the outcome against an uninterrupted run of the same corpus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import FAULT_TRACKS, assert_same_store, corpus_config, store_contents

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import PipelineConfig, dump, parse_cluster
from mirpipe.pipeline.ledger import Ledger
from mirpipe.pipeline.runner import Runner
from mirpipe.stages import STAGES
from mirpipe.storage import open_store

N_FEATURES = FAULT_TRACKS  # one features item per track
MIRPIPE = [sys.executable, "-m", "mirpipe"]


def _write_configs(tmp_path: Path, pipeline, cluster: dict) -> tuple[Path, Path]:
    cfg, cl = tmp_path / "pipeline.yaml", tmp_path / "cluster.yaml"
    cfg.write_text(yaml.safe_dump(dump(pipeline)))
    cl.write_text(yaml.safe_dump({"cluster": cluster}))
    return cfg, cl


def _done_markers(workdir: Path, stage: str = "features") -> int:
    return len(Ledger(workdir).done(stage))


def _wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    """Poll until predicate() holds (a guard against hanging, not a timed assertion)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_worker_killed_mid_features_stage_still_completes_identically(augmented, fault_corpus, reference_store):
    cfg = corpus_config(fault_corpus)
    cluster = parse_cluster({"type": "local", "n_workers": 2, "memory_limit": "3GiB"})
    with open_executor(cluster) as ex:
        client = ex.client
        runner = Runner(augmented, cfg, progress=False)
        out: dict = {}
        thread = threading.Thread(target=lambda: out.update(reports=runner.run(ex, only="features")))
        thread.start()
        _wait_for(lambda: _done_markers(augmented) >= 1, what="the first features item")
        busy = [addr for addr, keys in client.processing().items() if keys]
        assert busy, "no worker was processing an item: the kill would not be mid-stage"
        victim_pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        try:
            client.run(os._exit, 1, workers=[busy[0]])  # the worker process dies on the spot
        except Exception:  # noqa: BLE001 - it cannot answer: it is dead
            pass
        thread.join(timeout=300)
    with pytest.raises(ProcessLookupError):
        os.kill(victim_pid, 0)
    (report,) = out["reports"]
    assert report.done + report.skipped == N_FEATURES and report.failed == 0 and report.quarantined == 0
    assert_same_store(store_contents(augmented), reference_store)


@pytest.mark.slow
def test_driver_sigkilled_mid_features_next_run_recomputes_only_the_rest(
    augmented, fault_corpus, reference_store, tmp_path, repo_root
):
    # synchronous: the driver itself writes the entries, so the SIGKILL also lands mid-write
    cfg, cl = _write_configs(tmp_path, corpus_config(fault_corpus), {"type": "sync"})
    driver = subprocess.Popen(
        MIRPIPE + ["run", "--workdir", str(augmented), "--config", str(cfg), "--cluster", str(cl)],
        cwd=repo_root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _done_markers(augmented) >= 1 or driver.poll() is not None, what="the first features item")
        os.kill(driver.pid, signal.SIGKILL)  # the driver, mid-features
        driver.wait()
    finally:
        time.sleep(0.5)
        try:  # then its orphaned LocalCluster workers (the whole node went down)
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert driver.returncode == -signal.SIGKILL
    store = open_store("zarr", augmented / "features")
    # what a killed writer leaves behind, planted too so the check cannot pass vacuously
    leftover = augmented / "features" / ".tmp-0123456789ab-demo-0000.zarr.zip"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"PK\x03\x04 cut short")
    done_before = sum(1 for item in Ledger(augmented).done("features") if store.is_valid(item))
    assert 0 < done_before < N_FEATURES, "the kill did not land mid-features"
    res = subprocess.run(
        MIRPIPE + ["run", "--workdir", str(augmented), "--json"], cwd=repo_root, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    stages = json.loads(res.stdout)["stages"]
    assert stages["ingest"]["scheduled"] == 0
    assert stages["features"]["scheduled"] == N_FEATURES - done_before and stages["features"]["failed"] == 0
    assert not list((augmented / "features").rglob(".tmp-*"))
    assert_same_store(store_contents(augmented), reference_store)


_CRASH_AFTER_ENTRY = """
import os, sys, pathlib
from conftest import corpus_config
from mirpipe.pipeline.runner import Runner
from mirpipe.stages import STAGES
workdir, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
runner = Runner(workdir, corpus_config(corpus), progress=False)
item, fp = runner.plan("features").todo[0]
STAGES["features"].run(item, runner.ctx)   # the entry is written and renamed into place ...
print(item.id, flush=True)
os._exit(9)                                # ... and the process dies before the marker
"""


def test_crash_between_entry_and_marker_leaves_the_item_pending(augmented, fault_corpus, reference_store, repo_root):
    res = subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER_ENTRY, str(augmented), str(fault_corpus)],
        cwd=repo_root / "tests",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    assert res.returncode == 9, res.stderr[-2000:]
    crashed = res.stdout.split()[-1]
    assert open_store("zarr", augmented / "features").is_valid(crashed)  # the entry is there
    assert not Ledger(augmented).done("features")  # but no marker
    runner = Runner(augmented, corpus_config(fault_corpus), progress=False)
    status = {r["stage"]: r for r in runner.status()}
    assert status["features"]["done"] == 0 and status["features"]["pending"] == N_FEATURES
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        (report,) = runner.run(ex, only="features")
    assert report.scheduled == report.done == N_FEATURES
    assert_same_store(store_contents(augmented), reference_store)


@pytest.mark.parametrize("backend", ["hdf5", "zarr"])
def test_planted_broken_entries_are_detected_and_rewritten(backend, augmented, fault_corpus, reference_store):
    cfg = corpus_config(fault_corpus, store=backend)
    runner = Runner(augmented, cfg, progress=False)
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        runner.run(ex, only="features")
        store = open_store(backend, augmented / "features")
        ledger = Ledger(augmented)
        for track in ("demo-0000", "demo-0001"):
            path = store.entry_path(track)
            if backend == "hdf5":  # a truncated HDF5 file
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
            else:  # a partial Zarr entry: the zip lacks one chunk of an array
                with zipfile.ZipFile(path) as z:
                    members = {i.filename: z.read(i) for i in z.infolist()}
                del members[next(m for m in sorted(members) if m.startswith("cqt/c/"))]
                with zipfile.ZipFile(path, "w") as z:
                    for name, data in members.items():
                        z.writestr(name, data)
            assert not store.is_valid(track)
        ledger.forget("features", "demo-0000")  # a broken entry without a marker; b keeps its marker
        stray = store.entry_path("demo-0000").with_name(".tmp-0123456789ab-demo-0000" + store.suffix)
        stray.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))  # a killed writer's temp file
        (report,) = Runner(augmented, cfg, progress=False).run(ex, only="features")
        assert report.scheduled == 2 and report.done == 2 and report.failed == 0
        (again,) = Runner(augmented, cfg, progress=False).run(ex, only="features")
        assert again.scheduled == 0
    assert not list((augmented / "features").rglob(".tmp-*"))
    assert_same_store(store_contents(augmented, backend), reference_store)


def _flip_member(path: Path, member: str) -> None:
    """Flip bytes inside one zip member's data, keeping the file's size and modification time."""
    st = path.stat()
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # the local header, then the data
    data = bytearray(path.read_bytes())
    data[start + 8 : start + 24] = bytes(b ^ 0xFF for b in data[start + 8 : start + 24])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.slow
def test_planning_checks_stamps_and_verify_opens_every_entry(augmented, fault_corpus, reference_store):
    """Damage that keeps an entry's size and modification time passes planning's stat check;
    ``mirpipe verify`` opens the entries, finds it and says what is wrong (the file, the array, the
    chunk); a removed targets file and a truncated entry are named too; ``--repair`` makes the items
    pending and the next run makes the store what an uninterrupted run makes."""
    from click.testing import CliRunner

    from mirpipe.pipeline import workdir as wd
    from mirpipe.pipeline.cli import main

    cfg = corpus_config(fault_corpus)
    wd.record(augmented, cfg, parse_cluster({"type": "sync"}))
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        Runner(augmented, cfg, progress=False).run(ex, until="features")
        store = open_store("zarr", augmented / "features")
        _flip_member(store.entry_path("demo-0002"), "cqt/c/0/0/0")
        store.entry_path("demo-0001", "targets").unlink()
        cut = store.entry_path("demo-0003")
        cut.write_bytes(cut.read_bytes()[:4096])
        plan = Runner(augmented, cfg, progress=False).plan("features")
        assert plan.total == FAULT_TRACKS and "demo-0002" in plan.done  # stat check passes
        assert {"demo-0001", "demo-0003"} <= {item.id for item, _ in plan.todo}  # stat check fails: pending
        res = CliRunner().invoke(main, ["verify", "--workdir", str(augmented), "--json"], catch_exceptions=False)
        assert res.exit_code == 1
        reasons = {d["item"]: d["reason"] for d in json.loads(res.stdout)["damaged"] if d.pop("stage") == "features"}
        assert sorted(reasons) == ["demo-0001", "demo-0002", "demo-0003"]
        assert reasons["demo-0002"].startswith("entry demo-0002.zarr.zip: array cqt chunk 0/0/0 (variant 0, frames 0-")
        assert "bad crc-32" in reasons["demo-0002"].lower() and "cqt/c/0/0/0" in reasons["demo-0002"]
        assert reasons["demo-0001"] == "targets file demo-0001.targets.zarr.zip missing"
        assert reasons["demo-0003"].startswith("entry demo-0003.zarr.zip: truncated or rewritten (size 4096 bytes differs")
        res = CliRunner().invoke(main, ["verify", "--workdir", str(augmented), "--repair"], catch_exceptions=False)
        assert res.exit_code == 0
        assert f"DAMAGED features demo-0002 (now pending): {reasons['demo-0002']}" in res.stdout
        assert "DAMAGED features demo-0001 (now pending): targets file demo-0001.targets.zarr.zip missing" in res.stdout
        (report,) = Runner(augmented, cfg, progress=False).run(ex, only="features")
        assert report.scheduled == 3 and report.done == 3
    res = CliRunner().invoke(main, ["verify", "--workdir", str(augmented)], catch_exceptions=False)
    assert res.exit_code == 0 and "0 damaged" in res.stdout
    assert_same_store(store_contents(augmented), reference_store)


def test_raising_item_is_retried_then_recorded_and_retry_failed_reruns_exactly_it(augmented, fault_corpus, tmp_path, repo_root):
    cfg, cl = _write_configs(tmp_path, corpus_config(fault_corpus, retries=2), {"type": "sync"})
    blocker = augmented / "features" / "demo-0001.zarr.zip"
    blocker.mkdir(parents=True)  # a directory where the entry goes: the rename fails, not the input's fault, so retried
    (blocker / "x").write_text("in the way")
    run = MIRPIPE + ["run", "--workdir", str(augmented), "--json"]
    first = subprocess.run(
        run + ["--config", str(cfg), "--cluster", str(cl)], cwd=repo_root, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 1, first.stderr[-3000:]  # an item failed: exit code 1
    feats = json.loads(first.stdout)["stages"]["features"]
    assert feats["done"] == N_FEATURES - 1 and feats["failed"] == 1
    (f,) = feats["failures"]
    assert f["item"] == "demo-0001" and f["attempts"] == 3 and f["kind"] == "error"
    record = Ledger(augmented).failure("features", "demo-0001")
    assert "Traceback" in record["traceback"] and record["error_class"] == f["error_class"]
    log = (augmented / "logs" / "failures.log").read_text().splitlines()
    assert len(log) == 1 and "demo-0001" in log[0]
    with open_executor(parse_cluster({"type": "sync"})) as ex:  # recorded failures stay put on a plain rerun
        assert (
            Runner(augmented, corpus_config(fault_corpus, retries=2), progress=False).run(ex, until="features")[-1].scheduled == 0
        )
    shutil.rmtree(blocker)
    retried = subprocess.run(run + ["--retry-failed"], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert retried.returncode == 0, retried.stderr[-3000:]  # nothing failed any more
    stages = json.loads(retried.stdout)["stages"]
    assert stages["features"]["scheduled"] == 1 and stages["features"]["done"] == 1 and stages["features"]["failed"] == 0
    assert all(s["scheduled"] == 0 for name, s in stages.items() if name != "features")


def _memory_hog(corpus: Path, template_jams: Path) -> None:
    """A valid, small file (100 Hz, 5.5 hours, 4 MB) whose resampling to 22050 Hz needs > 2 GB: it kills its worker every time."""
    t = np.arange(2_000_000) / 100.0
    sf.write(corpus / "hog.wav", (0.3 * np.sin(2 * np.pi * 7 * t)).astype(np.float32), 100, subtype="PCM_16")
    data = json.loads(template_jams.read_text())
    data["file_metadata"]["duration"] = len(t) / 100.0  # the hog's own duration (ingest checks it)
    (corpus / "hog.jams").write_text(json.dumps(data))


@pytest.mark.slow
def test_item_that_kills_its_worker_is_quarantined_and_status_names_it(tmp_path, fault_corpus, repo_root):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in fault_corpus.glob("demo-0000.*"):
        shutil.copy(f, corpus / f.name)
    _memory_hog(corpus, corpus / "demo-0000.jams")
    workdir = tmp_path / "work"
    config = corpus_config(corpus, shifts=[0]).model_dump(mode="json")
    # one block for the whole 5.5 hours: computed in blocks the hog fits (tests/test_blockwise.py); whole, it does not
    config["features"]["block_seconds"] = 100_000.0
    cfg, cl = _write_configs(
        tmp_path,
        PipelineConfig.model_validate(config),
        {"type": "local", "n_workers": 2, "memory_limit": "1500MiB", "allowed_failures": 1},
    )
    res = subprocess.run(
        MIRPIPE + ["run", "--workdir", str(workdir), "--config", str(cfg), "--cluster", str(cl), "--json"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 1, res.stderr[-3000:]  # an item was quarantined: exit code 1
    out = json.loads(res.stdout)
    feats = out["stages"]["features"]
    assert feats["done"] == 1 and feats["quarantined"] == 1 and feats["failed"] == 0  # demo-0000 complete, hog quarantined
    record = Ledger(workdir).failure("features", "hog")
    assert record["kind"] == "quarantined" and record["attempts"] == 2 and record["file"].endswith("hog.wav")
    from click.testing import CliRunner

    from mirpipe.pipeline.cli import main

    status = CliRunner().invoke(main, ["status", "--workdir", str(workdir)], catch_exceptions=False)  # in-process
    assert "QUARANTINED features hog: QuarantinedError:" in status.stdout and "hog.wav" in status.stdout
    row = next(line.split() for line in status.stdout.splitlines() if line.split()[:1] == ["features"])
    assert row[1:] == ["2", "1", "0", "0", "0", "1"]  # total done running pending failed quarantined
    assert out["status"]["features"]["quarantined"] == 1


@pytest.mark.slow
def test_hung_read_on_a_dask_worker_hits_the_time_limit(tmp_path, fault_corpus):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in fault_corpus.glob("demo-0000.*"):
        shutil.copy(f, corpus / f.name)
    os.mkfifo(corpus / "stuck.wav")  # nobody ever writes: opening it blocks for good
    shutil.copy(corpus / "demo-0000.jams", corpus / "stuck.jams")
    cfg = corpus_config(corpus, time_limit=3)
    with open_executor(parse_cluster({"type": "local", "n_workers": 1, "memory_limit": "2GiB"})) as ex:
        (report,) = Runner(tmp_path / "work", cfg, progress=False).run(ex, only="ingest")
    assert report.done == 1 and report.failed == 1
    (f,) = report.failures
    assert f["item"] == "stuck" and f["error_class"] == "TimeLimitError" and f["file"].endswith("stuck.wav")


_SECOND_RUN = """
import sys
from mirpipe.pipeline.cli import main
sys.stdin.readline()          # imported and waiting: starts the moment the test says so
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_second_concurrent_run_is_refused_and_nothing_is_corrupted(augmented, fault_corpus, reference_store, tmp_path, repo_root):
    cfg, cl = _write_configs(tmp_path, corpus_config(fault_corpus), {"type": "sync"})
    args = ["run", "--workdir", str(augmented), "--config", str(cfg), "--cluster", str(cl)]
    second = subprocess.Popen(
        [sys.executable, "-c", _SECOND_RUN, *args],
        cwd=repo_root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = subprocess.Popen(MIRPIPE + args, cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = augmented / ".mirpipe.lock"
    _wait_for(lambda: lock.exists() and f'"pid": {first.pid},' in lock.read_text(), what="the first run to hold the lock")
    out, err = second.communicate("\n", timeout=120)
    first_running = first.poll() is None
    _, first_err = first.communicate(timeout=300)
    assert first_running, "the first run ended before the second tried: nothing was concurrent"
    assert second.returncode == 2 and f"in use by another mirpipe run (pid {first.pid} on " in err
    assert first.returncode == 0, first_err[-3000:]
    assert_same_store(store_contents(augmented), reference_store)


def test_changed_shifts_rerun_what_they_change(augmented, fault_corpus):
    """Audio mode stores every shift: new shifts recompute the entries. Feature mode stores margins
    for the largest shift: a new list within the same margin recomputes nothing, only training."""
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        Runner(augmented, corpus_config(fault_corpus), progress=False).run(ex)
        changed = corpus_config(fault_corpus, shifts=[-1, 0, 3])
        reports = {r.stage: r for r in Runner(augmented, changed, progress=False).run(ex)}
        assert reports["ingest"].scheduled == 0
        assert reports["features"].scheduled == reports["features"].total == FAULT_TRACKS
        again = Runner(augmented, changed, progress=False).run(ex)
        assert [r.scheduled for r in again] == [0, 0, 0, 0]  # ingest .. evaluate
        feature_mode = corpus_config(fault_corpus, shifts=[-2, 0, 2], mode="feature")
        assert Runner(augmented, feature_mode, progress=False).run(ex)[1].scheduled == FAULT_TRACKS
        same_margin = corpus_config(fault_corpus, shifts=[-2, -1, 0, 1], mode="feature")
        assert Runner(augmented, same_margin, progress=False).run(ex)[1].scheduled == 0


def test_a_rerun_that_changes_nothing_skips_finalize_and_any_change_it_reads_brings_it_back(augmented, fault_corpus, monkeypatch):
    """Manifest and store index are rewritten only when what they are built from changed: the done
    items, the parameters, the ledger, the corpus scan (ingest), the manifest (features), or the
    file itself is gone."""
    calls: list[str] = []
    for name in ("ingest", "features"):
        cls = type(STAGES.get(name))
        original = cls.finalize
        monkeypatch.setattr(
            cls, "finalize", lambda self, ctx, done, _f=original, _n=name: (calls.append(_n), _f(self, ctx, done))
        )
    cfg = corpus_config(fault_corpus)
    index = augmented / "features" / "index.json"
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        Runner(augmented, cfg, progress=False).run(ex, until="features")
        assert calls == ["features"]  # the template's ingest ran and finalized already
        built = index.read_bytes()

        calls.clear()
        assert [r.scheduled for r in Runner(augmented, cfg, progress=False).run(ex, until="features")] == [0, 0]
        assert calls == []

        (fault_corpus / "liner-notes.txt").write_text("not a track")  # the scan changes, no track does
        try:
            Runner(augmented, cfg, progress=False).run(ex, until="features")
        finally:
            (fault_corpus / "liner-notes.txt").unlink()
        assert calls == ["ingest", "features"]  # a new manifest: features rebuilds its index from it
        scan = json.loads((augmented / "manifest.json").read_text())["scan"]
        assert scan["ignored"].get("not audio or JAMS") == 1, scan

        calls.clear()
        Runner(augmented, cfg, progress=False).run(ex, until="features")
        assert calls == ["ingest", "features"]  # the file is gone again
        calls.clear()
        index.unlink()
        Runner(augmented, cfg, progress=False).run(ex, until="features")
        assert calls == ["features"] and index.read_bytes() == built
