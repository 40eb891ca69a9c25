"""The append-log ledger: O(1) files per stage, torn lines ignored, compaction, old layouts read."""

import json
import multiprocessing as mp

from mirpipe.pipeline.ledger import LOG_DIR, STATE, Ledger


def _files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()]


def _worker_marks(workdir, start: int, n: int) -> None:
    ledger = Ledger(workdir)
    for i in range(start, start + n):
        ledger.note_start("features", f"t{i:04d}", f"tok{i}")
        ledger.mark_done("features", f"t{i:04d}", "fp", {"track": f"t{i:04d}"}, 1, 0.1)


def test_many_items_from_several_processes_cost_one_log_each_and_fold_into_one_file(tmp_path):
    procs = [mp.get_context("spawn").Process(target=_worker_marks, args=(tmp_path, k * 300, 300)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ledger = Ledger(tmp_path)
    assert len(_files(tmp_path / "ledger")) == 2  # one log per process, not one file per item
    assert len(ledger.done("features")) == 600 and not ledger.started("features")
    ledger.compact("features")
    assert [p.name for p in _files(tmp_path / "ledger")] == [STATE]
    assert sorted(ledger.done("features")) == [f"t{i:04d}" for i in range(600)]


def test_a_torn_last_line_is_ignored_and_the_item_stays_pending(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.mark_done("features", "a", "fp", {}, 1, 0.1)
    (log,) = (tmp_path / "ledger" / "features" / LOG_DIR).iterdir()
    with open(log, "ab") as fh:  # a crash in the middle of writing b's line
        fh.write(b'{"op":"done","item":"b","fingerp')
    assert set(ledger.done("features")) == {"a"}


def test_events_fold_in_time_order_across_logs_and_compaction(tmp_path):
    ledger = Ledger(tmp_path)
    err = RuntimeError("disk full")
    ledger.mark_failed("features", "a", "fp", err, 3)
    assert ledger.failure("features", "a")["message"] == "disk full"
    ledger.compact("features")
    ledger.mark_done("features", "a", "fp", {"x": 1}, 1, 0.1)  # --retry-failed: done after the failure
    state = ledger.state("features")
    assert "a" in state.done and "a" not in state.failed
    ledger.compact("features")  # this process's log was folded away: the next event starts a new one
    ledger.forget("features", "a")
    assert not ledger.done("features")
    ledger.compact("features")
    assert not Ledger(tmp_path).done("features") and len(_files(tmp_path / "ledger")) == 1


def test_a_watchdog_failure_is_found_by_its_token_alone(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.mark_failed("features", "albumA/01", "fp", TimeoutError("hung"), 1, token="features-albumA/01-x", timed_out=True)
    ledger.mark_failed("features", "albumA/02", "fp", ValueError("bad"), 1, token="features-albumA/02-y")
    assert ledger.timed_out("features", "features-albumA/01-x")["item"] == "albumA/01"
    assert ledger.timed_out("features", "features-albumA/02-y") is None  # an ordinary failure reruns
    ledger.compact("features")
    assert ledger.timed_out("features", "features-albumA/01-x") is None  # only meaningful within a run
    assert set(ledger.failures("features")) == {"albumA/01", "albumA/02"}


def test_markers_of_the_one_file_per_item_layout_are_read_and_folded_in(tmp_path):
    base = tmp_path / "ledger" / "features"
    (base / "albumA").mkdir(parents=True)
    marker = {"item": "albumA/01", "fingerprint": "fp", "record": {}, "attempts": 1, "seconds": 0.1, "at": 1.0}
    (base / "albumA" / "01.done.json").write_text(json.dumps(marker))
    (base / "b.failed.json").write_text(json.dumps({"item": "b", "fingerprint": "fp", "message": "m", "at": 2.0}))
    (base / "b.started").write_text("tok\n")
    ledger = Ledger(tmp_path)
    assert set(ledger.done("features")) == {"albumA/01"} and set(ledger.failures("features")) == {"b"}
    ledger.compact("features")
    assert [p.name for p in _files(base)] == [STATE]
    assert set(ledger.done("features")) == {"albumA/01"} and set(ledger.failures("features")) == {"b"}


def test_state_of_the_one_object_layout_is_read_and_rewritten_as_columns(tmp_path):
    """``state.json`` as one object (the layout before columns) is read, and the next compaction
    rewrites it as a column document holding the same markers and failures."""
    base = tmp_path / "ledger" / "features"
    base.mkdir(parents=True)
    marker = {
        "item": "a",
        "fingerprint": "fp",
        "record": {"track": "a", "stamp": [1, 2]},
        "attempts": 1,
        "seconds": 0.1,
        "at": 1.0,
    }
    failure = {"item": "b", "fingerprint": "fp", "message": "m", "at": 2.0}
    (base / STATE).write_text(json.dumps({"done": {"a": marker}, "failed": {"b": failure}}))
    ledger = Ledger(tmp_path)
    assert ledger.done("features")["a"] == marker and ledger.failure("features", "b") == failure
    ledger.compact("features")  # nothing to fold but the old layout: rewritten
    assert (base / STATE).read_bytes().split(b"\n")[0].endswith(b'"columns":{')
    state = ledger.state("features")
    assert dict(state.done) == {"a": marker} and state.failed == {"b": failure}
    assert state.done.fingerprint("a") == "fp" and dict(state.done.record("a")) == marker["record"]
    assert json.loads((base / STATE).read_text())["columns"]["record.stamp"] == [[1, 2]]  # still plain JSON


def test_compacted_rows_are_read_by_column_and_overlaid_by_later_events(tmp_path):
    ledger = Ledger(tmp_path)
    for i in range(3):
        ledger.mark_done("features", f"t{i}", f"fp{i}", {"track": f"t{i}", "n": i}, 1, 0.1)
    ledger.compact("features")
    ledger.mark_done("features", "t1", "new", {"track": "t1", "n": 10}, 2, 0.1)
    ledger.forget("features", "t2")
    done = ledger.done("features")
    assert done.base is not None and not done.base._decoded  # nothing decoded until asked
    assert done.fingerprints() == {"t0": "fp0", "t1": "new"} and sorted(done) == ["t0", "t1"]
    assert done.record("t0")["n"] == 0 and "record.track" not in done.base._decoded  # one column decoded
    assert done["t1"]["record"] == {"track": "t1", "n": 10} and "t2" not in done
    ledger.compact("features")
    assert {k: m["record"]["n"] for k, m in ledger.done("features").items()} == {"t0": 0, "t1": 10}
