"""Ingest keeps every track, labels it right and notices every change (a messy corpus, checked in the store)."""

import json
import os
import subprocess
import sys
import time
import unicodedata

import jams
import librosa
import numpy as np
import pytest
import soundfile as sf
from conftest import corpus_config, manifest_rows

from mirpipe.corpus import scan_corpus, track_id
from mirpipe.demo.track import annotate, compose, render
from mirpipe.models.task import TASKS
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import parse_cluster
from mirpipe.pipeline.runner import Runner
from mirpipe.storage import open_store

SR = 22050


def _track(folder, stem, index, audio=None, edit=None, suffix=".flac"):
    """A short demo track (audio + JAMS) under ``folder``; ``edit(data)`` changes the JAMS JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    score = compose(index, 0, False, 6, 7)
    y = render(score, SR, 0, index) if audio is None else audio(render(score, SR, 0, index))
    sf.write(folder / f"{stem}{suffix}", y, SR)
    data = json.loads(annotate(score, stem, False).dumps())
    if edit is not None:
        edit(data)
    (folder / f"{stem}.jams").write_text(json.dumps(data), encoding="utf-8")
    return score


def _chord(data):
    return next(a for a in data["annotations"] if a["namespace"] == "chord")


def _second_chord_annotation(data):
    """An automatic estimate first (every chord C:maj), the human reference second."""
    human = _chord(data)
    human["annotation_metadata"]["annotator"] = {"name": "human"}
    auto = json.loads(json.dumps(human))
    auto["annotation_metadata"]["annotator"] = {"name": "chordino"}
    for obs in auto["data"]:
        obs["value"] = "C:maj"
    data["annotations"].insert(0, auto)


def _noisy_boundaries(data):
    """Consecutive chords overlap or leave gaps of floating-point noise (as a rendered corpus does)."""
    obs = _chord(data)["data"]
    for i, o in enumerate(obs[:-1]):
        o["duration"] = obs[i + 1]["time"] - o["time"] + (7e-15 if i % 2 else -3e-15)


def _overlapping(data):
    obs = _chord(data)["data"]
    obs[0]["duration"] = obs[1]["time"] - obs[0]["time"] + 0.5


def _duration(delta):
    def edit(data):
        data["file_metadata"]["duration"] += delta

    return edit


@pytest.fixture
def corpus(tmp_path):
    c = tmp_path / "corpus"
    _track(c, "plain", 0)
    _track(c, "two_chord_annotations", 1, edit=_second_chord_annotation)
    _track(c, "inverted_stereo", 2, audio=lambda y: np.stack([y, -y], axis=1))
    _track(c, "silence", 3, audio=lambda y: np.zeros_like(y))
    _track(c, "duration_longer", 4, edit=_duration(2.0))
    _track(c, "duration_shorter", 5, edit=_duration(-2.0))
    _track(c, "和弦進行", 6)
    _track(c, "コード進行", 7)
    _track(c / "albumA", "01", 8)
    _track(c / "albumB", "01", 9)
    # the audio's name in NFD, its JAMS's in NFC: the same name to a reader
    name = "Café"
    _track(c, unicodedata.normalize("NFC", name), 10)
    os.rename(c / f"{unicodedata.normalize('NFC', name)}.flac", c / f"{unicodedata.normalize('NFD', name)}.flac")
    outside = tmp_path / "elsewhere"
    _track(outside, "linked", 11)
    os.symlink(outside, c / "linked_folder")
    os.symlink(c, c / "albumA" / "loop")  # a symlink loop back to the root
    _track(c, "noisy_boundaries", 12, edit=_noisy_boundaries)
    _track(c, "overlapping", 13, edit=_overlapping)
    (c / "README.txt").write_text("not a track")
    (c / ".DS_Store").write_bytes(b"\0")
    return c


EXPECTED_FAILURES = {
    "silence": ("SilentAudioError", "silence.flac"),
    "duration_longer": ("DurationMismatchError", "duration_longer.jams"),
    "duration_shorter": ("DurationMismatchError", "duration_shorter.jams"),
    "overlapping": ("AnnotationOverlapError", "overlapping.jams"),
}


def _run(work, corpus, only="features", **ingest):
    cfg = corpus_config(corpus, mode="feature", shifts=[0])
    data = cfg.model_dump(mode="json")
    data["ingest"].update(ingest)
    cfg = type(cfg).model_validate(data)
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        return {r.stage: r for r in Runner(work, cfg, progress=False).run(ex, until=only)}, Runner(work, cfg, progress=False)


def _chord_tags(jam, n_frames):
    times = librosa.frames_to_time(np.arange(n_frames), sr=SR, hop_length=2048)
    return TASKS.get("chord").targets.encode(jam, times)["chord_tag"]


def _stored(work, track, name="targets/chord_tag"):
    return open_store("zarr", work / "features").read_entry(track, [name]).arrays[name][0]


def test_messy_corpus_every_track_processed_right_or_classified(corpus, tmp_path):
    work = tmp_path / "work"
    reports, runner = _run(work, corpus, annotation_choice={"rule": "annotator", "name": "human"})
    ingest, features = reports["ingest"], reports["features"]
    failures = {f["item"]: f for f in ingest.failures}
    assert set(failures) == set(EXPECTED_FAILURES), failures
    for item, (cls, filename) in EXPECTED_FAILURES.items():
        assert failures[item]["error_class"] == cls and failures[item]["file"].endswith(filename), failures[item]
        assert failures[item]["kind"] == "input" and failures[item]["attempts"] == 1
    manifest = manifest_rows(work)
    # ids from the path relative to the root, NFC, readable in any script; the symlinked folder is followed
    assert set(manifest) == {
        "plain",
        "two_chord_annotations",
        "inverted_stereo",
        "和弦進行",
        "コード進行",
        "albumA/01",
        "albumB/01",
        "Café",
        "linked_folder/linked",
        "noisy_boundaries",
    }
    assert features.done == len(manifest) and features.failed == 0
    # the reference the configuration names (the human one, second in the file), in the store
    row = manifest["two_chord_annotations"]
    assert row["prep"]["choices"]["chord"] == {"index": 1, "candidates": [0, 1], "rule": "annotator", "annotator": "human"}
    human = jams.load(str(corpus / "two_chord_annotations.jams"), validate=False)
    del human.annotations[0]
    stored = _stored(work, "two_chord_annotations")
    assert np.array_equal(stored, _chord_tags(human, len(stored)))
    assert len(set(stored.tolist())) > 1  # not the automatic all-C:maj estimate
    assert [n["code"] for n in row["notices"]] == ["several_annotations"]
    # polarity-inverted stereo: the loudest channel stands for the track, with a warning; same features as mono
    row = manifest["inverted_stereo"]
    assert row["prep"]["channel"] == 0 and row["channels"] == 2
    assert [n["code"] for n in row["notices"]] == ["downmix"]
    cqt = open_store("zarr", work / "features").read_entry("inverted_stereo", ["cqt"]).arrays["cqt"]
    assert float(np.asarray(cqt, np.float32).max()) > -40  # not the silence of the channel mean
    # boundaries off by floating-point noise are snapped (recorded); labels intact; mir_eval accepts them
    row = manifest["noisy_boundaries"]
    assert [n["code"] for n in row["notices"]] == ["snapped"]
    from mirpipe.annotations.prepare import Preparation, prepared_jams

    ref = prepared_jams(row["jams"], Preparation.from_json(row["prep"]))
    intervals, labels = ref.annotations.search(namespace="chord")[0].to_interval_values()
    assert np.all(intervals[:-1, 1] <= intervals[1:, 0])
    import mir_eval

    mir_eval.chord.evaluate(intervals, labels, intervals, labels)  # would raise "must not overlap" unsnapped
    assert np.array_equal(_stored(work, "noisy_boundaries"), _chord_tags(ref, len(_stored(work, "noisy_boundaries"))))
    # every stage uses the audio's duration
    for r in manifest.values():
        assert r["prep"]["duration"] == r["duration"] == pytest.approx(sf.info(r["audio"]).duration)
    # every file the scan saw is used or reported with a reason; status prints it
    scan = json.loads((work / "manifest.json").read_text())["scan"]
    assert scan["ignored"] == {
        "hidden file": 1,
        "not audio or JAMS": 1,
        "symlinked folder already scanned (a loop or a second link)": 1,
    }
    assert scan["files"] == 2 * 14 + 2  # 14 tracks (audio + JAMS), README.txt, .DS_Store
    notes = next(r for r in runner.status() if r["stage"] == "ingest")["notes"]
    assert any("README.txt" in n for n in notes) and any("loop" in n for n in notes)
    assert any("WARNING two_chord_annotations: several_annotations" in n for n in notes)


def test_default_rule_is_first_and_says_so(corpus, tmp_path):
    reports, _ = _run(tmp_path / "work", corpus, only="ingest")
    manifest = manifest_rows(tmp_path / "work")
    notice = manifest["two_chord_annotations"]["notices"][0]
    assert notice["code"] == "several_annotations" and "#0" in notice["message"] and "rule first" in notice["message"]


def test_duration_mismatch_can_be_corrected_with_a_warning(corpus, tmp_path):
    work = tmp_path / "work"
    reports, _ = _run(work, corpus, only="ingest", duration_mismatch="correct")
    manifest = manifest_rows(work)
    for track in ("duration_longer", "duration_shorter"):
        assert [n["code"] for n in manifest[track]["notices"]] == ["duration_corrected"]
        assert manifest[track]["duration"] == pytest.approx(sf.info(manifest[track]["audio"]).duration)


def test_annotator_rule_without_a_match_is_classified(corpus, tmp_path):
    reports, _ = _run(tmp_path / "work", corpus, only="ingest", annotation_choice={"rule": "annotator", "name": "nobody"})
    f = next(f for f in reports["ingest"].failures if f["item"] == "two_chord_annotations")
    assert f["error_class"] == "AnnotationChoiceError" and "chordino" in f["message"] and "human" in f["message"]


def _restore_times(path, st):
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_same_size_edits_with_restored_mtime_are_noticed_and_only_they_rerun(tmp_path):
    corpus = tmp_path / "corpus"
    for i, name in enumerate(["a", "b", "c"]):
        _track(corpus, name, i, suffix=".wav")
    work = tmp_path / "work"
    _run(work, corpus)
    before_b = _stored(work, "b", "cqt").copy()
    # audio of b edited in place: same size, modification time put back (cp -p, rsync -t)
    st = os.stat(corpus / "b.wav")
    data = bytearray((corpus / "b.wav").read_bytes())
    data[1000:50000] = bytes(len(data[1000:50000]))  # a second of PCM samples zeroed
    with open(corpus / "b.wav", "r+b") as fh:
        fh.write(data)
    _restore_times(corpus / "b.wav", st)
    assert os.stat(corpus / "b.wav").st_size == st.st_size
    # JAMS of c edited in place, same size and modification time: one chord label changed
    path = corpus / "c.jams"
    st = os.stat(path)
    text = path.read_text()
    obs = _chord(json.loads(text))["data"][0]["value"]
    other = "D:min" if obs != "D:min" else "E:min"
    assert len(other) == 5
    new = text.replace(f'"value": "{obs}"', f'"value": "{other}"', 1) if len(obs) == 5 else None
    if new is None:
        pytest.skip("first chord label not 5 characters long")
    path.write_text(new)
    _restore_times(path, st)
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    # and a without any change but a chmod (inode change time moves, content does not)
    os.chmod(corpus / "a.wav", 0o600)
    reports, _ = _run(work, corpus)
    assert reports["ingest"].scheduled == 3  # a (chmod), b, c: re-hashed
    assert reports["features"].scheduled == 2  # b and c: a's content did not change
    assert not np.array_equal(_stored(work, "b", "cqt"), before_b)
    tags = _stored(work, "c")
    assert np.array_equal(tags, _chord_tags(jams.load(str(path), validate=False), len(tags)))
    # an unchanged rerun schedules nothing
    reports, _ = _run(work, corpus)
    assert reports["ingest"].scheduled == reports["features"].scheduled == 0


def test_ids_are_readable_unique_and_stable():
    assert track_id("albumA/01") == "albumA/01"
    assert track_id("和弦進行") == "和弦進行"
    a, b = track_id('what? "live"'), track_id("what_ _live_")
    assert a.startswith("what_ _live_~") and b == "what_ _live_" and a != b
    # a stem that would name another track's targets file ("x" has x.zarr.zip and x.targets.zarr.zip)
    reserved = track_id("album/x.targets")
    assert reserved.startswith("album/x.targets~") and track_id("album/x.Targets") != "album/x.Targets"


def test_case_twins_get_distinct_ids(tmp_path):
    (tmp_path / "Song.wav").write_bytes(b"")
    (tmp_path / "song.wav").write_bytes(b"")
    ids = sorted(scan_corpus(tmp_path).groups)
    assert len(ids) == 2 and ids[0].casefold() != ids[1].casefold()


def test_status_during_a_run_says_who_holds_the_workdir_and_what_runs(tmp_path, repo_root):
    """A run blocked on one track (a FIFO nobody writes yet): status names the run and shows the item running."""
    corpus = tmp_path / "corpus"
    _track(corpus, "a", 0)
    _track(corpus, "hang", 1)
    os.remove(corpus / "hang.flac")
    os.mkfifo(corpus / "hang.wav")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(json.dumps({"ingest": {"corpus": str(corpus)}, "run": {"time_limit": 120}}))
    (tmp_path / "cluster.yaml").write_text("cluster: {type: sync}\n")
    work = tmp_path / "work"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mirpipe",
            "run",
            "--only",
            "ingest",
            "--config",
            str(cfg),
            "--cluster",
            str(tmp_path / "cluster.yaml"),
            "--workdir",
            str(work),
        ],
        cwd=repo_root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        status = None
        while time.time() < deadline:
            time.sleep(1)
            if not (work / "mirpipe.yaml").exists():
                continue
            res = subprocess.run(
                [sys.executable, "-m", "mirpipe", "status", "--json", "--workdir", str(work)],
                cwd=repo_root,
                capture_output=True,
                text=True,
                timeout=120,
            )
            status = json.loads(res.stdout)
            if status["stages"]["ingest"]["running"] == 1:
                break
        assert status is not None and status["active_run"]["pid"] == run.pid, status
        assert status["stages"]["ingest"]["running"] == 1 and status["active_run"]["since"]
        text = subprocess.run(
            [sys.executable, "-m", "mirpipe", "status", "--workdir", str(work)],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert f"a run holds this workdir (pid {run.pid}" in text
    finally:
        run.kill()  # killed mid-item: its start marker stays behind, but no run holds the workdir any more
        run.wait(timeout=60)
    res = subprocess.run(
        [sys.executable, "-m", "mirpipe", "status", "--json", "--workdir", str(work)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = json.loads(res.stdout)
    assert after["active_run"] is None and after["stages"]["ingest"]["running"] == 0
