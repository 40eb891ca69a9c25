"""`mirpipe import`: datasets in their mirdata loaders' layouts and a plain folder become a corpus
(audio linked in place, strictly valid JAMS), failures are classified per track, and an imported
corpus runs through ingest and features. Nothing is downloaded: the datasets are built here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dataset_layouts as layouts
import jams
import mirdata  # noqa: F401 - a declared dependency (the 'datasets' extra): a missing one fails here, not skips
import numpy as np
import pytest


def cli(*args: str):
    """The real click command, in-process."""
    from click.testing import CliRunner

    from mirpipe.pipeline.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def load(path: Path) -> jams.JAMS:
    return jams.load(str(path), validate=True, strict=True)


def as_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- chords: beatles --------------------------------------------------------------------------------


def test_beatles_with_its_index_links_audio_in_place_and_writes_valid_jams(tmp_path):
    home, out = tmp_path / "Beatles", tmp_path / "corpus"
    index = layouts.beatles(home)
    (home / "beatles_index_1.2.json").write_text(json.dumps(index))
    res = cli("import", "mirdata", "beatles", "--data-home", str(home), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    report = as_json(res)
    assert report["imported"] == 3 and report["failed"] == [] and report["warnings"] == []
    assert any("found in the data home" in n for n in report["notes"])
    for tid, entry in index["tracks"].items():
        link = out / "beatles" / f"{tid}.wav"
        assert link.is_symlink() and os.readlink(link) == str(home / entry["audio"][0])  # no copy
        jam = load(out / "beatles" / f"{tid}.jams")
        assert jam.file_metadata.duration == pytest.approx(4.0) and jam.file_metadata.artist == "The Beatles"
        assert jam.sandbox.mirpipe_import["track_id"] == tid and "split" not in jam.sandbox
        namespaces = sorted(a.namespace for a in jam.annotations)
        assert namespaces == ["beat", "chord", "key_mode", "segment_open"]
        lab = [line.split() for line in (home / entry["chords"][0]).read_text().splitlines()]
        chords = jam.search(namespace="chord")[0].data
        assert [o.value for o in chords] == [row[2] for row in lab]
        ends = [x for o in chords for x in (o.time, o.time + o.duration)]
        assert ends == pytest.approx([float(x) for a, b, _ in lab for x in (a, b)])
    assert load(out / "beatles" / "10212.jams").file_metadata.title == "CD2_-_12_-_Revolution_9"


def test_beatles_checksums_catch_a_changed_file_and_the_rest_is_imported(tmp_path):
    home, out = tmp_path / "Beatles", tmp_path / "corpus"
    index = layouts.beatles(home)
    (tmp_path / "index.json").write_text(json.dumps(index))
    damaged = home / index["tracks"]["0111"]["chords"][0]
    damaged.write_text(damaged.read_text().replace("E:min", "E:maj"))
    res = cli(
        "import",
        "mirdata",
        "beatles",
        "--data-home",
        str(home),
        "--out",
        str(out),
        "--index",
        str(tmp_path / "index.json"),
        "--checksums",
        "--json",
    )
    assert res.exit_code == 1
    report = as_json(res)
    assert report["imported"] == 2
    (failure,) = report["failed"]
    assert failure["track"] == "beatles/0111" and failure["error_class"] == "ChecksumError" and failure["file"] == str(damaged)
    assert "FAILED beatles/0111: ChecksumError" in res.stderr
    assert not (out / "beatles" / "0111.jams").exists()


def test_a_missing_audio_file_is_a_classified_failure_and_earlier_imports_of_it_are_removed(tmp_path):
    home, out = tmp_path / "Beatles", tmp_path / "corpus"
    index = layouts.beatles(home)
    assert cli("import", "mirdata", "beatles", "--data-home", str(home), "--out", str(out)).exit_code == 0
    gone = home / index["tracks"]["0301"]["audio"][0]
    gone.unlink()  # its chord file stays: the index built from the layout still lists the track
    res = cli("import", "mirdata", "beatles", "--data-home", str(home), "--out", str(out), "--json")
    assert res.exit_code == 1
    report = as_json(res)
    assert report["imported"] == 2 and report["total"] == 3
    assert [(f["track"], f["error_class"], f["file"]) for f in report["failed"]] == [
        ("beatles/0301", "MissingAudioError", str(gone))
    ]
    assert any("built from the files" in n for n in report["notes"])
    assert not (out / "beatles" / "0301.jams").exists() and not os.path.lexists(out / "beatles" / "0301.wav")
    assert (out / "beatles" / "0111.jams").exists()


def test_an_invalid_secondary_annotation_is_left_out_with_a_warning_an_invalid_chord_fails(tmp_path):
    home, out = tmp_path / "Beatles", tmp_path / "corpus"
    index = layouts.beatles(home)
    key = home / index["tracks"]["0111"]["keys"][0]
    key.write_text("0.000\t4.000\tKey\tH:phrygian-ish\n")
    lab = home / index["tracks"]["10212"]["chords"][0]
    lab.write_text("0.0 2.0 C:maj\n2.0 4.0 C:major7\n")
    res = cli("import", "mirdata", "beatles", "--data-home", str(home), "--out", str(out), "--json")
    assert res.exit_code == 1
    report = as_json(res)
    (failure,) = report["failed"]
    assert failure["error_class"] == "AnnotationFormatError" and failure["file"] == str(lab)
    assert "C:major7" in failure["message"]  # mirdata's own chord parser refuses it
    (warning,) = report["warnings"]
    assert warning.startswith("beatles/0111: keys left out") and str(key) in warning
    assert [a.namespace for a in load(out / "beatles" / "0111.jams").annotations] == ["chord", "segment_open", "beat"]


# -- f0: vocadito, medleydb_pitch ---------------------------------------------------------------------


def test_vocadito_f0_and_both_annotators_notes(tmp_path):
    home, out = tmp_path / "vocadito", tmp_path / "corpus"
    layouts.vocadito(home, n=2)
    res = cli("import", "mirdata", "vocadito", "--data-home", str(home), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "2 imported, 0 failed, 0 warnings" in res.stdout
    jam = load(out / "vocadito" / "2.jams")
    rows = np.loadtxt(home / "Annotations" / "F0" / "vocadito_2_f0.csv", delimiter=",")
    contour = jam.search(namespace="pitch_contour")[0].data
    assert len(contour) == len(rows)
    assert [o.time for o in contour] == pytest.approx(rows[:, 0].tolist())
    assert [o.value["frequency"] for o in contour] == pytest.approx(rows[:, 1].tolist())
    assert [o.value["voiced"] for o in contour] == (rows[:, 1] > 0).tolist()
    notes = jam.search(namespace="note_hz")
    assert sorted(a.annotation_metadata.annotator.name for a in notes) == ["A1", "A2"]
    assert [o.value for o in notes[0].data] == pytest.approx([220 * 2 ** (2 / 12), 1.5 * 220 * 2 ** (2 / 12)], rel=1e-4)


def test_medleydb_pitch_with_an_explicit_index(tmp_path):
    home, out = tmp_path / "MedleyDB-Pitch", tmp_path / "corpus"
    layouts.medleydb_pitch(home)
    tid = "AClassicEducation_NightOwl_STEM_08"
    index = {
        "version": "3.0",
        "tracks": {
            tid: {
                "audio": [f"audio/{tid}.wav", layouts.md5(home / "audio" / f"{tid}.wav")],
                "pitch": [f"pitch/{tid}.csv", layouts.md5(home / "pitch" / f"{tid}.csv")],
                "notes_pyin": [None, None],
            }
        },
    }
    (tmp_path / "mdbp.json").write_text(json.dumps(index))
    res = cli(
        "import",
        "mirdata",
        "medleydb_pitch",
        "--data-home",
        str(home),
        "--out",
        str(out),
        "--index",
        str(tmp_path / "mdbp.json"),
        "--checksums",
        "--json",
    )
    assert res.exit_code == 0, res.output
    assert any("given with --index" in n for n in as_json(res)["notes"])
    jam = load(out / "medleydb_pitch" / f"{tid}.jams")
    assert (jam.file_metadata.title, jam.file_metadata.artist) == ("NightOwl", "AClassicEducation")
    assert [a.namespace for a in jam.annotations] == ["pitch_contour"]  # the index names no notes file


# -- instruments: medley_solos_db ---------------------------------------------------------------------


def test_medley_solos_db_tags_and_official_splits(tmp_path):
    home, out = tmp_path / "msdb", tmp_path / "corpus"
    layouts.medley_solos_db(home)
    res = cli("import", "mirdata", "medley_solos_db", "--data-home", str(home), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert as_json(res)["imported"] == len(layouts.MSDB_CLIPS)
    for subset, instrument, _, song, uuid in layouts.MSDB_CLIPS:
        jam = load(out / "medley_solos_db" / f"{uuid}.jams")
        assert jam.sandbox.split == {"training": "train", "validation": "val", "test": "test"}[subset]
        (ann,) = jam.annotations
        (obs,) = ann.data
        assert (ann.namespace, obs.value, obs.time) == ("tag_open", instrument, 0.0)
        assert obs.duration == pytest.approx(65536 / layouts.SR) == jam.file_metadata.duration
        assert jam.sandbox.mirpipe_import["song_id"] == song


def test_medley_solos_db_without_its_metadata_is_a_usage_error(tmp_path):
    home = tmp_path / "msdb"
    layouts.medley_solos_db(home)
    (home / "annotation" / "Medley-solos-DB_metadata.csv").unlink()
    res = cli("import", "mirdata", "medley_solos_db", "--data-home", str(home), "--out", str(tmp_path / "corpus"))
    assert res.exit_code == 2 and "Medley-solos-DB_metadata.csv is missing" in res.stderr


def test_unknown_names_and_overlapping_folders_are_usage_errors(tmp_path):
    res = cli("import", "mirdata", "beetles", "--data-home", str(tmp_path), "--out", str(tmp_path / "c"))
    assert res.exit_code == 2 and "unknown importer 'beetles'" in res.stderr and "medley_solos_db" in res.stderr
    res = cli("import", "mirdata", "beatles", "--data-home", str(tmp_path), "--out", str(tmp_path / "c"))
    assert res.exit_code == 2 and "no tracks under" in res.stderr
    res = cli("import", "folder", str(tmp_path), "--out", str(tmp_path / "corpus"))
    assert res.exit_code == 2 and "must not contain one another" in res.stderr
    listed = cli("import", "list").stdout
    assert all(name in listed for name in ("folder", "beatles", "vocadito", "medleydb_pitch", "medley_solos_db"))


# -- the plain folder importer --------------------------------------------------------------------


def test_folder_of_audio_with_lab_and_csv_files(tmp_path):
    src, out = tmp_path / "recordings", tmp_path / "corpus"
    layouts.tone(src / "album" / "01.wav")
    (src / "album" / "01.lab").write_text("0.0\t2.0\tC:maj\n2.0\t4.0\tA:min\n")
    layouts.tone(src / "02.flac")
    (src / "02.csv").write_text("time,frequency\n0.0,0\n0.01,261.6\n0.02,-261.6\n")
    layouts.tone(src / "03.wav")  # no annotation: imported for prediction, with a warning
    (src / "04.lab").write_text("0.0 1.0 C\n")  # no audio
    layouts.tone(src / "05.wav")
    (src / "05.lab").write_text("0.0 1.0 C:maj\n1.0 2.0 Cmaj\n")
    (src / "notes.txt").write_text("not audio")
    res = cli("import", "folder", str(src), "--out", str(out), "--json")
    assert res.exit_code == 1
    report = as_json(res)
    assert report["imported"] == 3 and report["total"] == 5
    failed = {f["track"]: (f["error_class"], f["file"]) for f in report["failed"]}
    assert failed == {"04": ("MissingAudioError", str(src / "04.lab")), "05": ("AnnotationFormatError", str(src / "05.lab"))}
    assert "chord at 1.000 s: 'Cmaj' is not a valid chord value" in res.stderr
    assert report["warnings"] == ["03: no annotations (imported for prediction; the tasks have nothing to learn from it)"]
    assert any("1 files that are neither" in n for n in report["notes"])
    chords = load(out / "album" / "01.jams").search(namespace="chord")[0].data
    assert [(o.time, o.duration, o.value) for o in chords] == [(0.0, 2.0, "C:maj"), (2.0, 2.0, "A:min")]
    assert os.readlink(out / "album" / "01.wav") == str(src / "album" / "01.wav")
    contour = load(out / "02.jams").search(namespace="pitch_contour")[0].data
    assert [(o.value["frequency"], o.value["voiced"]) for o in contour] == [(0.0, False), (261.6, True), (261.6, False)]
    assert (out / "02.flac").is_symlink()


# -- an imported corpus through the pipeline ----------------------------------------------------


@pytest.mark.slow
def test_an_imported_corpus_runs_through_ingest_and_features(tmp_path, sync_cluster):
    from conftest import corpus_config, manifest_rows

    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.runner import Runner
    from mirpipe.storage import open_store

    corpus = tmp_path / "corpus"
    layouts.beatles(tmp_path / "Beatles")
    layouts.vocadito(tmp_path / "vocadito", n=1)
    layouts.medley_solos_db(tmp_path / "msdb", clips=layouts.MSDB_CLIPS[:3])
    for name, home in (("beatles", "Beatles"), ("vocadito", "vocadito"), ("medley_solos_db", "msdb")):
        assert cli("import", "mirdata", name, "--data-home", str(tmp_path / home), "--out", str(corpus)).exit_code == 0
    work = tmp_path / "work"
    cfg = corpus_config(corpus, shifts=[0, 1], mode="feature")
    with open_executor(sync_cluster) as ex:
        reports = {r.stage: r for r in Runner(work, cfg, progress=False).run(ex, until="features")}
    assert (reports["ingest"].done, reports["ingest"].failed) == (7, 0)
    assert (reports["features"].done, reports["features"].failed) == (7, 0)
    rows = manifest_rows(work)
    assert "chord" in rows["beatles/0111"]["offers"] and "pitch_contour" in rows["vocadito/1"]["offers"]
    for _, _, _, _, uuid in layouts.MSDB_CLIPS[:3]:
        row = rows[f"medley_solos_db/{uuid}"]
        jam = load(corpus / "medley_solos_db" / f"{uuid}.jams")
        assert row["declared_split"] == row["split"] == jam.sandbox.split  # the dataset's split is honoured
    assert rows["beatles/0111"]["audio"] == str(corpus / "beatles" / "0111.wav")
    store = open_store("zarr", work / "features")
    assert sorted(store.read_index()) == sorted(rows)
    shutil.rmtree(work)
