"""Ingest: good tracks pass, each bad input becomes a classified failure naming its file."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import manifest_rows

from mirpipe.demo.track import annotate, compose, render
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import PipelineConfig
from mirpipe.pipeline.runner import Runner
from mirpipe.stages.ingest import assign_splits


def _good(corpus, name, index=0):
    s = compose(index, 0, False, 6, 8)
    sf.write(corpus / f"{name}.flac", render(s, 22050, 0, index), 22050)
    annotate(s, name, False).save(str(corpus / f"{name}.jams"))
    return s


def _tone(n: int) -> np.ndarray:
    """A quiet 220 Hz tone (well above the silence threshold) of ``n`` samples."""
    return (0.05 * np.sin(2 * np.pi * 220 * np.arange(n) / 22050)).astype(np.float32)


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
    sf.write(corpus / "short.flac", _tone(22050), 22050)
    data = json.loads(good_jams.read_text())
    data["file_metadata"]["duration"] = 1.0  # the file's duration is right; its chords run on
    (corpus / "short.jams").write_text(json.dumps(data))
    # schema-invalid JAMS
    sf.write(corpus / "badjams.flac", _tone(22050 * 8), 22050)
    data = json.loads(good_jams.read_text())
    data["annotations"][0]["data"][0]["value"] = "H:maj"
    (corpus / "badjams.jams").write_text(json.dumps(data))
    # audio without JAMS, JAMS without audio
    sf.write(corpus / "lonely.flac", _tone(22050), 22050)
    shutil.copy(good_jams, corpus / "orphan.jams")
    # two audio files with the same id
    shutil.copy(corpus / "good_a.flac", corpus / "twin.flac")
    sf.write(corpus / "twin.wav", _tone(22050), 22050)
    shutil.copy(good_jams, corpus / "twin.jams")
    # infinite samples
    y = np.ones(22050 * 8, np.float32) * 0.1
    y[5000] = np.inf
    sf.write(corpus / "inf.wav", y, 22050, subtype="FLOAT")
    shutil.copy(good_jams, corpus / "inf.jams")
    # truncated WAV: the header declares 8 s, the file holds half of it
    sf.write(corpus / "truncated.wav", np.full(22050 * 8, 0.1, np.float32), 22050, subtype="PCM_16")
    data_bytes = (corpus / "truncated.wav").read_bytes()
    (corpus / "truncated.wav").write_bytes(data_bytes[: len(data_bytes) // 2])
    shutil.copy(good_jams, corpus / "truncated.jams")
    # an unsupported container: an MP4/M4A box header no decoder here reads
    (corpus / "container.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isomiso2" + bytes(4096))
    shutil.copy(good_jams, corpus / "container.jams")
    # a JAMS with a namespace jams does not know
    sf.write(corpus / "namespace.flac", _tone(22050 * 8), 22050)
    data = json.loads(good_jams.read_text())
    data["annotations"][0]["namespace"] = "chord_klingon"
    (corpus / "namespace.jams").write_text(json.dumps(data))
    # a read that never returns (a FIFO nobody writes): only the per-file time limit ends it
    os.mkfifo(corpus / "hang.wav")
    shutil.copy(good_jams, corpus / "hang.jams")
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
    "inf": ("NonFiniteAudioError", "inf.wav"),
    "truncated": ("LengthMismatchError", "truncated.wav"),
    "container": ("UnsupportedFormatError", "container.m4a"),
    "namespace": ("UnknownNamespaceError", "namespace.jams"),
    "hang": ("TimeLimitError", "hang.wav"),
}


def test_bad_inputs_are_classified_and_good_tracks_go_on(messy_corpus, tmp_path, sync_cluster):
    cfg = PipelineConfig.model_validate(
        {"ingest": {"corpus": str(messy_corpus)}, "run": {"retries": 2, "retry_backoff": 0, "time_limit": 8}}
    )
    runner = Runner(tmp_path / "work", cfg, progress=False)
    with open_executor(sync_cluster) as ex:
        (report,) = runner.run(ex, only="ingest")
    assert report.done == 2 and report.failed == len(EXPECTED)
    failures = {f["item"]: f for f in report.failures}
    for item, (cls, filename) in EXPECTED.items():
        f = failures[item]
        assert f["error_class"] == cls, (item, f)
        assert f["kind"] == "input" and filename in f["file"] and f["message"] and f["traceback"]
        assert f["attempts"] == 1  # input errors are not retried
    manifest = list(manifest_rows(tmp_path / "work").values())
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


def test_unreadable_file_is_classified_through_the_cli(tmp_path, repo_root):
    """chmod 000 on a track's audio; as root the run drops the capabilities that bypass permissions."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _good(corpus, "good_a", 0)
    _good(corpus, "locked", 1)
    (corpus / "locked.flac").chmod(0)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(json.dumps({"ingest": {"corpus": str(corpus)}}))
    (tmp_path / "cluster.yaml").write_text("cluster: {type: sync}\n")
    cmd = [
        sys.executable,
        "-m",
        "mirpipe",
        "run",
        "--only",
        "ingest",
        "--json",
        "--config",
        str(cfg),
        "--cluster",
        str(tmp_path / "cluster.yaml"),
        "--workdir",
        str(tmp_path / "work"),
    ]
    if os.geteuid() == 0:  # root reads anything: take CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH away
        cmd = [
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
        ] + cmd
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert res.returncode == 1, res.stderr[-3000:]  # a file failed: exit code 1
    ingest = json.loads(res.stdout)["stages"]["ingest"]
    assert ingest["done"] == 1 and ingest["failed"] == 1
    (f,) = ingest["failures"]
    assert f["item"] == "locked" and f["error_class"] == "UnreadableFileError"
    assert f["file"].endswith("locked.flac") and "permission" in f["message"]


def test_splits_are_by_track_deterministic_and_stratified():
    records = {f"t{i:03d}": ["chord"] if i % 4 else ["pitch_contour"] for i in range(40)}
    fr = {"train": 0.7, "val": 0.15, "test": 0.15}
    a = assign_splits(records, fr, seed=0)
    assert a == assign_splits(dict(reversed(list(records.items()))), fr, seed=0)
    assert a != assign_splits(records, fr, seed=1)
    for ns in (["chord"], ["pitch_contour"]):
        group = [t for t, r in records.items() if r == ns]
        counts = {s: sum(a[t] == s for t in group) for s in ("train", "val", "test")}
        assert all(counts[s] >= 1 for s in counts) and counts["train"] > counts["test"]
