"""A full disk, for real: a small tmpfs under the store or the workdir (mounting needs root; the tests
skip elsewhere). Features fill it: a classified ``DiskFullError`` naming the path and the free space,
no retries, no new items started, no later stage started, no driver traceback (exit 2); once space
is freed a plain ``mirpipe run`` finishes the store as a clean run makes it."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import FAULT_TRACKS, assert_same_store, corpus_config

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import PipelineConfig, dump, parse_cluster
from mirpipe.pipeline.ledger import Ledger
from mirpipe.pipeline.runner import Runner
from mirpipe.stages import STAGES
from mirpipe.storage import open_store

MIRPIPE = [sys.executable, "-m", "mirpipe"]
DISK_FULL = re.compile(r"^disk full at (\S+) \((\d+) bytes free\): free space and run `mirpipe run` again$")


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block; skips the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("the disk-full tests mount a small tmpfs, which needs root (mount -t tmpfs)")
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command here: the disk-full tests mount a small tmpfs")
    if res.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({res.stderr.strip()})")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach it now, freed when let go


def fill(mount: Path) -> Path:
    """Fill the filesystem of ``mount`` to 0 bytes free with one file (deleting it frees the space)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for block in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    os.write(fd, b"\0" * block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert shutil.disk_usage(mount).free == 0
    return filler


def contents(root: Path) -> dict:
    """Every entry's arrays and attributes of the store at ``root`` (as conftest's ``store_contents``)."""
    store = open_store("zarr", root)
    out = {}
    for row in store.read_index().values():
        entry = store.read_entry(row.track)
        out[row.track] = (entry.arrays, {k: v for k, v in entry.attrs.items() if k != "fingerprint"})
    return out


def records(workdir: Path) -> dict:
    """The features records less what differs between two runs of the same item (timings, file stamps)."""
    return {
        item: {k: v for k, v in marker["record"].items() if k not in ("timings", "stamp")}
        for item, marker in ((i, Ledger(workdir).done("features")[i]) for i in Ledger(workdir).done("features"))
    }


def _config(fault_corpus: Path, store: Path | None = None, **sections) -> PipelineConfig:
    data = corpus_config(fault_corpus).model_dump(mode="json")
    if store is not None:
        data["features"]["store_path"] = str(store)
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return PipelineConfig.model_validate(data)


@pytest.fixture
def clean(tmp_path, augmented_template, fault_corpus) -> Path:
    """A workdir whose features ran on a roomy disk, undisturbed (the synchronous executor)."""
    work = tmp_path / "clean"
    shutil.copytree(augmented_template, work)
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        (report,) = Runner(work, corpus_config(fault_corpus), progress=False).run(ex, only="features")
    assert report.done == FAULT_TRACKS
    return work


def test_disk_full_during_features_stops_the_run_and_a_plain_rerun_completes_identically(
    augmented, fault_corpus, clean, tmp_path, repo_root
):
    with tmpfs(tmp_path / "mnt", "2M") as mnt:  # two of the four entries (~1 MB each) fit
        store = mnt / "store"
        cfg, cl = tmp_path / "pipeline.yaml", tmp_path / "cluster.yaml"
        cfg.write_text(yaml.safe_dump(dump(_config(fault_corpus, store))))
        cl.write_text(yaml.safe_dump({"cluster": {"type": "sync"}}))
        run = MIRPIPE + ["run", "--workdir", str(augmented), "--json"]
        first = subprocess.run(
            run + ["--config", str(cfg), "--cluster", str(cl)], cwd=repo_root, capture_output=True, text=True, timeout=300
        )
        assert first.returncode == 2, first.stderr[-3000:]  # stopped for a full disk: exit 2, no traceback
        assert "Traceback" not in first.stderr and "unexpected error" not in first.stderr
        out = json.loads(first.stdout)
        assert list(out["stages"]) == ["ingest", "features"]  # nothing after features started
        assert out["stopped"]["stage"] == "features"
        reason = out["stopped"]["reason"]
        match = DISK_FULL.match(reason)
        assert match and match.group(1) == str(store) and int(match.group(2)) < 1_000_000, reason
        assert f"mirpipe: stopped at features: {reason}" in first.stderr
        feats = out["stages"]["features"]
        (failure,) = feats["failures"]
        assert failure["error_class"] == "DiskFullError" and failure["kind"] == "disk_full"
        assert failure["file"] == str(store) and failure["message"] == reason
        assert failure["attempts"] == 1  # a full disk is not retried (run.retries is 1)
        assert (feats["done"], feats["failed"], feats["unscheduled"]) == (2, 1, 1)  # the fourth item never started
        recorded = Ledger(augmented).failure("features", failure["item"])
        assert recorded["error_class"] == "DiskFullError" and recorded["file"] == str(store)
        assert DISK_FULL.match(recorded["message"])
        assert "DiskFullError" in (augmented / "logs" / "failures.log").read_text()
        assert not list(store.glob(".tmp-*"))  # the failed writer's temporary file is gone
        status = subprocess.run(
            MIRPIPE + ["status", "--workdir", str(augmented), "--json"], cwd=repo_root, capture_output=True, text=True
        )
        row = json.loads(status.stdout)["stages"]["features"]
        assert status.returncode == 1 and (row["done"], row["failed"], row["pending"]) == (2, 1, 1)

        subprocess.run(["mount", "-o", "remount,size=16M", "tmpfs", str(mnt)], check=True)  # space freed
        second = subprocess.run(run, cwd=repo_root, capture_output=True, text=True, timeout=300)  # plain: no --retry-failed
        assert second.returncode == 0, second.stderr[-3000:]
        again = json.loads(second.stdout)
        assert again["stopped"] is None
        assert (again["stages"]["features"]["scheduled"], again["stages"]["features"]["done"]) == (2, 2)
        assert again["status"]["features"]["done"] == FAULT_TRACKS and again["status"]["features"]["failed"] == 0
        assert_same_store(contents(store), contents(clean / "features"))
        assert records(augmented) == records(clean)


def test_stages_that_need_an_incomplete_stage_do_not_start(augmented, fault_corpus, tmp_path, monkeypatch):
    """Training is configured; features fill the disk: training neither starts in that run nor alone
    (``--only train``) while features has items that failed for a full disk."""
    started = []
    monkeypatch.setattr(type(STAGES.get("train")), "run", lambda self, item, ctx: started.append(item.id))
    with tmpfs(tmp_path / "mnt", "2M") as mnt:
        cfg = _config(fault_corpus, mnt / "store", train={"tasks": ["chord"]})
        with open_executor(parse_cluster({"type": "sync"})) as ex:
            reports = Runner(augmented, cfg, progress=False).run(ex)
            assert [r.stage for r in reports] == ["ingest", "features"] and DISK_FULL.match(reports[-1].stopped or "")
            (alone,) = Runner(augmented, cfg, progress=False).run(ex, only="train")
    assert alone.stage == "train" and alone.scheduled == 0 and alone.stopped is not None
    assert alone.stopped.startswith("not started: features has 1 item(s) that failed for a full disk (disk full at ")
    assert started == [] and not (augmented / "train").exists()


def test_a_full_workdir_under_the_driver_never_crashes_it(augmented, fault_corpus, reference_store, tmp_path, repo_root, capfd):
    """The workdir (ledger, logs, manifest) on a filesystem with 0 bytes free, the store elsewhere:
    ``mirpipe run`` exits 2 with one line; a runner that gets going records nothing it cannot write,
    says so on stderr, leaves every item pending; once space is freed the run completes identically."""
    store = tmp_path / "store"
    cfg = _config(fault_corpus, store)
    with tmpfs(tmp_path / "mnt", "1M") as mnt:
        work = mnt / "work"
        shutil.copytree(augmented, work)
        conf = tmp_path / "pipeline.yaml"
        conf.write_text(yaml.safe_dump(dump(cfg)))
        filler = fill(mnt)
        res = subprocess.run(
            MIRPIPE + ["run", "--workdir", str(work), "--config", str(conf)], cwd=repo_root, capture_output=True, text=True
        )
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert re.search(
            r"^mirpipe: error: disk full at \S+ \(0 bytes free\): free space and run `mirpipe run` again$", res.stderr, re.M
        )

        with open_executor(parse_cluster({"type": "sync"})) as ex:  # past the lock: the ledger, logs and index fail
            (report,) = Runner(work, cfg, progress=False).run(ex, only="features")
        assert report.stopped == f"disk full at {work} (0 bytes free): free space and run `mirpipe run` again"
        assert report.done == 0 and report.failed == 1 and report.unscheduled == FAULT_TRACKS - 1
        err = capfd.readouterr().err
        assert "cannot write" in err and "failures.log" in err and "Traceback" not in err
        assert not Ledger(work).done("features") and not Ledger(work).failures("features")  # nothing recorded, all pending

        filler.unlink()
        with open_executor(parse_cluster({"type": "sync"})) as ex:
            (report,) = Runner(work, cfg, progress=False).run(ex, only="features")
        assert report.stopped is None and report.done == FAULT_TRACKS
    assert_same_store(contents(store), reference_store)


def test_a_ledger_append_cut_short_by_a_full_disk_leaves_no_torn_line(tmp_path):
    with tmpfs(tmp_path / "mnt", "64K") as mnt:
        ledger = Ledger(mnt / "work")
        ledger.mark_done("s", "a", "fp-a", {"n": 1}, 1, 0.1)
        (log,) = (mnt / "work" / "ledger" / "s" / "log").glob("*.jsonl")
        size = log.stat().st_size
        filler = fill(mnt)  # the log's last page still has room: the next append is a short write, then ENOSPC
        with pytest.raises(OSError) as err:
            ledger.mark_done("s", "b", "fp-b", {"blob": "x" * 20_000}, 1, 0.1)
        assert err.value.errno == errno.ENOSPC and log.stat().st_size == size  # taken back whole
        filler.unlink()
        ledger.mark_done("s", "c", "fp-c", {"n": 3}, 1, 0.1)
        assert sorted(ledger.done("s")) == ["a", "c"]  # "c" did not join a torn "b" line
        assert all(json.loads(line) for line in log.read_text().splitlines())
