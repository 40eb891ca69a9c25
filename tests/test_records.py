"""Typed records: what crosses stages round-trips through JSON and refuses what does not fit."""

from __future__ import annotations

import json

import pytest

from mirpipe.errors import WorkdirFileError
from mirpipe.records import RecordError
from mirpipe.stages import StageContext
from mirpipe.stages.features import FeaturesRecord
from mirpipe.stages.annotations import Choice, Preparation
from mirpipe.stages.ingest import MANIFEST, ManifestRow, Notice, read_manifest
from mirpipe.storage import ArraySpec, IndexRow, open_store


def _row(**over) -> ManifestRow:
    base = dict(track="t", audio="/c/t.flac", jams="/c/t.jams", sr=22050, duration=3.5, channels=1,
                audio_sha256="a", jams_sha256="j", namespaces=["chord_harte"], offers=["chord", "chord_harte"],
                prep=Preparation(channel=None, choices={"chord": Choice(1, [0, 1], "last", "human")},
                                 timing_tolerance=1e-3, duration=3.5),
                notices=[Notice("several_annotations", "2 chord annotations")], declared_split=None, content="c",
                split="train", fingerprint="f")
    return ManifestRow(**{**base, **over})


def test_nested_records_round_trip_through_json():
    rec = FeaturesRecord("t", [0], [-1, 0, 2], {"cqt": 10}, {"cqt": ArraySpec([1, 10, 216], "float16")}, {"cqt": 0.1})
    back = FeaturesRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert back == rec and isinstance(back.arrays["cqt"], ArraySpec)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("offers"), "missing ['offers']"),
    (lambda d: d.update(ofers=["chord"]), "unknown ['ofers']"),
])
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
    assert store.read_index() == [row]
    (tmp_path / "features" / "index.json").write_text(json.dumps({"entries": [{"track": "t"}]}))
    with pytest.raises(WorkdirFileError, match="index.json"):
        store.read_index()
