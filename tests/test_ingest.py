"""Ingest: good tracks pass, each bad input becomes a classified failure naming its file."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import PipelineConfig
from pipeline.cluster import open_executor
from pipeline.runner import Runner
from stages.ingest import assign_splits
from stages.synth.track import annotate, compose, render


def _good(corpus, name, index=0):
    s = compose(index, 0, False, 6, 8)
    sf.write(corpus / f"{name}.flac", render(s, 22050, 0, index), 22050)
    annotate(s, name, False).save(str(corpus / f"{name}.jams"))
    return s


@pytest.fixture
def messy_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _good(corpus, "good_a", 0)
    _good(corpus, "good_b", 1)
    good_jams = corpus / "good_a.jams"
    # zero-length audio
    sf.write(corpus / "empty.wav", np.zeros(0, np.float32), 22050)
    shutil.copy(good_jams, corpus / "empty.jams")
    # NaN samples
    y = np.ones(22050 * 8, np.float32) * 0.1
    y[100] = np.nan
    sf.write(corpus / "nan.wav", y, 22050, subtype="FLOAT")
    shutil.copy(good_jams, corpus / "nan.jams")
    # random bytes with an audio extension
    (corpus / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4096))
    shutil.copy(good_jams, corpus / "noise.jams")
    # annotations running past the audio
    sf.write(corpus / "short.flac", np.zeros(22050, np.float32), 22050)
    shutil.copy(good_jams, corpus / "short.jams")
    # schema-invalid JAMS
    sf.write(corpus / "badjams.flac", np.zeros(22050 * 8, np.float32), 22050)
    data = json.loads(good_jams.read_text())
    data["annotations"][0]["data"][0]["value"] = "H:maj"
    (corpus / "badjams.jams").write_text(json.dumps(data))
    # audio without JAMS, JAMS without audio
    sf.write(corpus / "lonely.flac", np.zeros(22050, np.float32), 22050)
    shutil.copy(good_jams, corpus / "orphan.jams")
    # two audio files with the same id
    shutil.copy(corpus / "good_a.flac", corpus / "twin.flac")
    sf.write(corpus / "twin.wav", np.zeros(22050, np.float32), 22050)
    shutil.copy(good_jams, corpus / "twin.jams")
    return corpus


EXPECTED = {
    "empty": ("EmptyAudioError", "empty.wav"),
    "nan": ("NonFiniteAudioError", "nan.wav"),
    "noise": ("AudioDecodeError", "noise.wav"),
    "short": ("AnnotationRangeError", "short.jams"),
    "badjams": ("AnnotationSchemaError", "badjams.jams"),
    "lonely": ("MissingAnnotationError", "lonely.flac"),
    "orphan": ("MissingAudioError", "orphan.jams"),
    "twin": ("DuplicateTrackError", "twin"),
}


def test_bad_inputs_are_classified_and_good_tracks_go_on(messy_corpus, tmp_path, sync_cluster):
    cfg = PipelineConfig.model_validate({"ingest": {"corpus": str(messy_corpus)}, "run": {"retries": 2, "retry_backoff": 0}})
    runner = Runner(tmp_path / "work", cfg, progress=False)
    with open_executor(sync_cluster) as ex:
        (report,) = runner.run(ex, only="ingest")
    assert report.done == 2 and report.failed == len(EXPECTED)
    failures = {f["item"]: f for f in report.failures}
    for item, (cls, filename) in EXPECTED.items():
        f = failures[item]
        assert f["error_class"] == cls, (item, f)
        assert f["kind"] == "input" and filename in f["file"] and f["message"]
        assert f["attempts"] == 1  # input errors are not retried
    manifest = json.loads((tmp_path / "work" / "manifest.json").read_text())["tracks"]
    assert [r["track"] for r in manifest] == ["good_a", "good_b"]
    assert all(len(r["audio_sha256"]) == 64 and r["duration"] > 5 for r in manifest)
    log = (tmp_path / "work" / "logs" / "failures.log").read_text().splitlines()
    assert len(log) == len(EXPECTED)
    # a rerun does not retry recorded failures, --retry-failed does
    with open_executor(sync_cluster) as ex:
        (again,) = runner.run(ex, only="ingest")
        assert again.scheduled == 0 and again.failed == len(EXPECTED)
        (retried,) = runner.run(ex, only="ingest", retry_failed=True)
        assert retried.scheduled == len(EXPECTED)


def test_splits_are_by_track_deterministic_and_stratified():
    records = {f"t{i:03d}": {"namespaces": ["chord"] if i % 4 else ["pitch_contour"]} for i in range(40)}
    fr = {"train": 0.7, "val": 0.15, "test": 0.15}
    a = assign_splits(records, fr, seed=0)
    assert a == assign_splits(dict(reversed(list(records.items()))), fr, seed=0)
    assert a != assign_splits(records, fr, seed=1)
    for ns in (["chord"], ["pitch_contour"]):
        group = [t for t, r in records.items() if r["namespaces"] == ns]
        counts = {s: sum(a[t] == s for t in group) for s in ("train", "val", "test")}
        assert all(counts[s] >= 1 for s in counts) and counts["train"] > counts["test"]
