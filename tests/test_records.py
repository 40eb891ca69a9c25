"""Typed records: what crosses stages round-trips through JSON and refuses what does not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirpipe.annotations.prepare import Choice, Preparation
from mirpipe.errors import WorkdirFileError
from mirpipe.records import RecordError
from mirpipe.stages import StageContext
from mirpipe.stages.features import FeaturesRecord
from mirpipe.stages.ingest import MANIFEST, ManifestRow, Notice, read_manifest
from mirpipe.storage import ArraySpec, IndexRow, open_store


def _row(**over) -> ManifestRow:
    base = dict(
        track="t",
        audio="/c/t.flac",
        jams="/c/t.jams",
        sr=22050,
        duration=3.5,
        channels=1,
        audio_sha256="a",
        jams_sha256="j",
        namespaces=["chord_harte"],
        offers=["chord", "chord_harte"],
        prep=Preparation(
            channel=None, choices={"chord": Choice(1, [0, 1], "last", "human")}, timing_tolerance=1e-3, duration=3.5
        ),
        notices=[Notice("several_annotations", "2 chord annotations")],
        declared_split=None,
        content="c",
        split="train",
        fingerprint="f",
    )
    return ManifestRow(**{**base, **over})


def test_nested_records_round_trip_through_json():
    rec = FeaturesRecord("t", [0], [-1, 0, 2], {"cqt": 10}, {"cqt": ArraySpec([1, 10, 216], "float16")}, {"cqt": 0.1})
    back = FeaturesRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert back == rec and isinstance(back.arrays["cqt"], ArraySpec)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("offers"), "missing ['offers']"),
        (lambda d: d.update(ofers=["chord"]), "unknown ['ofers']"),
    ],
)
def test_a_row_with_missing_or_unknown_keys_is_refused_by_name(change, message):
    data = _row().to_json()
    change(data)
    with pytest.raises(RecordError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ManifestRow.from_json(data)


def test_a_malformed_manifest_or_index_names_the_file(tmp_path):
    ctx = StageContext(tmp_path, {})
    (tmp_path / MANIFEST).write_text(json.dumps({"tracks": [_row().to_json()]}))
    row = read_manifest(ctx)["t"]
    assert row == _row() and row.prep.choices["chord"].annotator == "human" and row.notices[0].code == "several_annotations"
    bad = _row().to_json()
    del bad["split"]
    (tmp_path / MANIFEST).write_text(json.dumps({"tracks": [bad]}))
    with pytest.raises(WorkdirFileError, match="manifest.json.*missing \\['split'\\]"):
        read_manifest(ctx)

    store = open_store("zarr", tmp_path / "features")
    row = IndexRow("t", "train", [0], [0, 1], {"cqt": 5}, {"cqt": ArraySpec([1, 5, 216], "float16")}, "t.zarr.zip")
    store.write_index([row])
    assert list(store.read_index().values()) == [row]
    (tmp_path / "features" / "index.json").write_text(
        json.dumps({"format": "columns", "key": "track", "columns": {"track": ["t"]}})
    )
    with pytest.raises(WorkdirFileError, match="index.json"):
        store.read_index()


def test_record_table_round_trips_reads_fields_without_building_rows_and_reads_the_old_layout():
    from mirpipe.records import RecordTable

    rows = [
        IndexRow(
            f"t{i}",
            "train" if i % 2 else "test",
            [0],
            [-1, 0, 1],
            {"cqt": 5 + i},
            {"cqt": ArraySpec([1, 5 + i, 216], "uint8")},
            f"t{i}.zarr.zip",
        )
        for i in range(4)
    ]
    table = RecordTable.from_rows(IndexRow, "track", rows, extra={"backend": "zarr"})
    back = RecordTable.from_json(IndexRow, "track", json.loads(json.dumps(table.to_json())))
    assert list(back) == ["t0", "t1", "t2", "t3"] and back.extra == {"backend": "zarr"}
    assert back.value("t2", "frames") == {"cqt": 7} and back.column("split") == ["test", "train"] * 2
    assert not back._rows  # nothing built yet
    assert list(back.values()) == rows and back["t3"] is back["t3"]
    old = RecordTable.from_json(IndexRow, "track", {"entries": [r.to_json() for r in rows]}, rows_key="entries")
    assert list(old.values()) == rows
    with pytest.raises(RecordError, match="missing columns"):
        RecordTable.from_json(IndexRow, "track", {"format": "columns", "key": "track", "columns": {"track": ["a"]}})
    columns = {**table.to_json()["columns"], "split": ["train"]}
    with pytest.raises(RecordError, match="different lengths"):
        RecordTable(IndexRow, "track", columns)


def test_planning_fingerprints_are_the_plain_json_digest():
    """The fingerprint is assembled from parts (parameters serialized once per plan); it must stay
    the digest of the whole document, or every workdir would recompute everything."""
    import hashlib

    from mirpipe.pipeline.config import PipelineConfig
    from mirpipe.pipeline.runner import fingerprint
    from mirpipe.stages import STAGES, StageContext, WorkItem

    ctx = StageContext(Path("/tmp/w"), PipelineConfig().stage_params())
    stage = STAGES.get("features")
    item = WorkItem('albumA/和弦 "1"', payload={}, identity={"content": "abc", "n": [1, 2.5, None]}, upstream=("x", "y"))
    plain = json.dumps(
        {
            "stage": stage.name,
            "version": stage.version,
            "params": stage.fingerprint_params(ctx),
            "item": item.id,
            "identity": item.identity,
            "upstream": list(item.upstream),
        },
        sort_keys=True,
        default=str,
    )
    assert fingerprint(stage, item, ctx) == hashlib.sha256(plain.encode()).hexdigest()[:32]


def test_column_documents_decode_columns_on_use_and_copy_unchanged_ones_as_text():
    from mirpipe import columns

    data = columns.dumps(
        {"key": "track", "scan": {"files": 2}},
        {"track": ["a", "b"], "frames": [{"cqt": 1}, {"cqt": 2}], "note": ["x\ny", None]},
        rows=2,
    )
    assert json.loads(data)["columns"]["note"] == ["x\ny", None]  # one valid JSON document
    header, cols = columns.loads(data)
    assert header["scan"] == {"files": 2} and list(cols) == ["track", "frames", "note"] and not cols._decoded
    fields = {"track": "track", "frames": "frames"}  # field -> column, shared by the rows of one document
    rows = [columns.Row(cols, fields, i) for i in range(2)]
    assert rows[1]["frames"] == {"cqt": 2} and set(cols._decoded) == {"frames"}
    whole = columns.gather(rows, ["track", "frames"])
    assert all(isinstance(c, columns.Raw) for c in whole.values())  # every row, in order: copied as text
    part = columns.gather(rows[1:], ["track"])
    assert part == {"track": ["b"]}
    again = columns.dumps(header, whole, rows=2)
    assert columns.loads(again)[1]["frames"] == [{"cqt": 1}, {"cqt": 2}]
    cut = data[: data.rindex(b"\n}}")]
    with pytest.raises(columns.ColumnError, match="cut short"):
        columns.loads(cut)
    short = data.replace(b'"note":["x\\ny",null]', b'"note":["x"]')
    with pytest.raises(columns.ColumnError, match="expected 2 values"):
        columns.loads(short)[1]["note"]


def test_crossing_records_round_trip_with_the_keys_on_disk():
    """Checkpoint meta, item results, status rows and training progress keep the JSON keys they had as dicts."""
    from mirpipe.records import CheckpointMeta, ItemResult, StatusRow, TrainingProgress

    meta = CheckpointMeta(
        task="chord", model={"width": 8}, n_bins=216, state={"t": 0.5}, vocabulary=None, train_entries=3, val_entries=1
    )
    assert list(meta.to_json()) == ["task", "model", "n_bins", "state", "vocabulary", "train_entries", "val_entries"]
    assert CheckpointMeta.from_json(meta.to_json()) == meta
    tuned = meta.replace(state={**meta.state, "prior": [1.0]})
    assert tuned.state == {"t": 0.5, "prior": [1.0]} and meta.state == {"t": 0.5}
    assert CheckpointMeta.from_json({"model": {}, "n_bins": 4}).state == {}  # what readers assumed when absent
    done = ItemResult("done", "a", record={"x": 1}, seconds=1.0, attempts=1)
    assert done.done and ItemResult.from_json(done.to_json()) == done
    row = StatusRow("train", 2, 1, 0, 1, 0, 0, [], [])
    assert "details" not in row.to_json() and StatusRow.from_json(row.to_json()) == row
    assert row.replace(details={"chord": {}}).to_json()["details"] == {"chord": {}}
    progress = {
        "task": "chord",
        "epoch": 1,
        "max_epochs": 8,
        "step": 100,
        "total_steps": 800,
        "train_loss": 1.0,
        "val_loss": None,
        "metric": "acc",
        "value": 0.5,
        "best": 0.5,
        "best_step": 100,
        "lr": 0.002,
        "patches_per_s": 10.0,
        "finished": False,
        "tensorboard": None,
        "updated": "2026-01-01T00:00:00Z",
    }
    assert TrainingProgress.from_json(progress).to_json() == progress


def test_task_scores_round_trip_keeps_the_keys_on_disk():
    from mirpipe.records import TaskScores

    on_disk = {
        "accuracy": 0.5,
        "macro_f1": None,
        "columns": ["accuracy", "macro_f1"],
        "scored_by": "scikit-learn",
        "n_tracks": 2,
        "seconds": 3.5,
        "weighting": "w",
        "tracks": {"a": {"accuracy": 1.0}, "b": {"accuracy": 0.0}},
        "baseline": {"name": "pyin", "accuracy": 0.25},
        "confusion": [[1, 0], [0, 1]],
        "notes": ["a note"],
    }
    scores = TaskScores.from_json(on_disk)
    assert scores.metrics == {"accuracy": 0.5, "macro_f1": None}
    assert scores.extra == {"confusion": [[1, 0], [0, 1]]} and scores.notes == ["a note"]
    assert scores.to_json() == on_disk
    old = {k: v for k, v in on_disk.items() if k not in ("columns", "scored_by")}  # a file from before those keys
    assert TaskScores.from_json(old).columns == ["accuracy"] and TaskScores.from_json(old).scored_by.startswith("mir_eval")
    with pytest.raises(RecordError, match="n_tracks"):
        TaskScores.from_json({"seconds": 1.0})
