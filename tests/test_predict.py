"""mirpipe predict / export, robustness per shift and training status, on one tiny trained workdir.

One module fixture trains the chord and pitch models for a few steps on six short demo tracks
(sync cluster, robustness on): predict must reproduce evaluate's estimates on the test track,
a bundle must work from a fresh directory on recordings the project did not make (another
codec, another sample rate, stereo), and a broken file must be a classified failure.
"""

import csv
import json
import shutil
from pathlib import Path

import jams
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import small_config

from mirpipe.models.bundle import BundleError, load_bundle
from mirpipe.models.task import TASKS
from mirpipe.pipeline import workdir as wd
from mirpipe.pipeline.cli import main
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import parse_cluster
from mirpipe.pipeline.inference import features_of
from mirpipe.pipeline.ledger import Ledger
from mirpipe.pipeline.runner import Runner
from mirpipe.storage import open_store

SHIFTS = [-1, 0, 2]
TASK_NAMES = ["chord", "pitch"]  # the trainable tasks this fixture can train in seconds
TINY = {"chord": {"hidden": 16, "channels": 8}, "pitch": {"channels": [4], "tall_channels": 2, "tall_bins": 15}}


def tiny_config():
    data = small_config(tracks=6, shifts=SHIFTS).model_dump(mode="json")
    data["synthesize"].update(solo_fraction=0.0, min_duration=5.0, max_duration=7.0)
    data["train"] = {
        **data["train"],
        "tasks": TASK_NAMES,
        "threads": 1,
        "patch_frames": 32,
        "batch_size": 4,
        "n_active": 4,
        "rate": 4,
        "steps_per_epoch": 3,
        "max_epochs": 2,
        "checkpoint_every": 3,
        "models": TINY,
        "progress": "off",
    }
    data["evaluate"] = {**data["evaluate"], "tasks": TASK_NAMES, "figures": 0, "baselines": False, "robustness": True}
    return type(small_config()).model_validate(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("predict") / "work"
    cfg, cluster = tiny_config(), parse_cluster({"type": "sync"})
    wd.record(workdir, cfg, cluster)  # what `mirpipe run` records: --model WORKDIR reads it
    lines = []
    torch.set_num_threads(1)
    with open_executor(cluster) as ex:
        reports = {r.stage: r for r in Runner(workdir, cfg, log=lines.append, progress=False).run(ex)}
    assert all(r.failed == 0 for r in reports.values()), {k: r.failures for k, r in reports.items()}
    sync = workdir.parent / "sync.yaml"
    sync.write_text("cluster:\n  type: sync\n")
    return workdir, sync, lines


def _cli(args, cwd=None):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr if hasattr(res, "stderr") else ""


def _test_tracks(workdir):
    cols = json.loads((workdir / "manifest.json").read_text())["columns"]
    return {t: a for t, s, a in zip(cols["track"], cols["split"], cols["audio"]) if s == "test"}


def _obs(ann):
    return [(o.time, o.duration, o.value) for o in ann.data]


def test_predict_on_test_tracks_equals_evaluate(trained, tmp_path):
    workdir, sync, _ = trained
    tests = _test_tracks(workdir)
    assert tests
    code, out, _ = _cli(["predict", *tests.values(), "--model", workdir, "--out", tmp_path / "out", "--cluster", sync, "--json"])
    assert code == 0
    files = {Path(f["input"]).stem: f for f in json.loads(out)["files"]}
    bundle = load_bundle(next((tmp_path / "out" / ".mirpipe" / "model").glob("*.mirpipe")))
    store = open_store("zarr", workdir / "features")
    for track in tests:  # predict computes features as the features stage stored them, bit for bit
        kinds = sorted({m.feature for m in bundle.tasks.values()})
        arrays, geometry, _ = features_of(tests[track], bundle, kinds)
        entry = store.read_entry(track, kinds)
        for kind in kinds:
            assert np.array_equal(arrays[kind], entry.arrays[kind]), kind
            assert geometry[kind] == entry.attrs["features"][kind]
    for track in tests:
        jam = jams.load(files[track]["output"], validate=True, strict=True)
        for name in TASK_NAMES:
            task = TASKS.get(name)
            ours = [a for a in jam.annotations if a.namespace == task.namespace]
            assert len(ours) == 1, name
            theirs = jams.load(str(workdir / "reports" / name / "estimates" / f"{track}.jams")).annotations[0]
            ref = json.loads((workdir / "reports" / name / "scores.json").read_text())["tracks"][track]
            got = task.scorer.score(task.targets.reference(jams.load(str(Path(tests[track]).with_suffix(".jams")))), ours[0])
            if name == "chord":  # the same features, network and Viterbi decoding: the same segments
                assert _obs(ours[0]) == _obs(theirs)
                for metric, value in ref.items():
                    assert got[metric]["score"] == pytest.approx(value, abs=1e-9), metric
            else:  # a conv net on another thread count: equal up to float rounding
                a, b = _obs(ours[0]), _obs(theirs)
                assert [x[:2] for x in a] == [x[:2] for x in b]
                assert [x[2]["voiced"] for x in a] == [x[2]["voiced"] for x in b]
                np.testing.assert_allclose([x[2]["frequency"] for x in a], [x[2]["frequency"] for x in b], rtol=1e-5)


def _foreign_recordings(folder: Path) -> None:
    """Recordings no one in the project made: numpy tones, as OGG Vorbis at 44.1 kHz and as a
    24-bit stereo WAV at 48 kHz, and a file that is not audio at all."""
    folder.mkdir(parents=True)
    for name, sr, fmt in (("glide.ogg", 44100, ("OGG", "VORBIS")), ("sub/chords.wav", 48000, ("WAV", "PCM_24"))):
        t = np.arange(int(3.5 * sr)) / sr
        f0 = 196.0 * 2 ** (np.floor(t * 2) / 12)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        y = 0.25 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.05 * np.sin(2 * np.pi * 130.8 * t)
        if fmt[0] == "WAV":
            y = np.stack([y, 0.6 * y], axis=1)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / name, y.astype(np.float32), sr, format=fmt[0], subtype=fmt[1])
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio at all")


def test_export_then_predict_in_a_fresh_directory(trained, tmp_path, monkeypatch):
    workdir, sync, _ = trained
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    code, out, _ = _cli(["export", "--workdir", workdir, "--out", fresh / "tiny.mirpipe", "--json"])
    assert code == 0 and sorted(json.loads(out)["tasks"]) == TASK_NAMES
    monkeypatch.chdir(fresh)  # nothing of the workdir is reachable by a relative path from here
    _foreign_recordings(fresh / "rec")
    args = ["predict", "rec", "missing.flac", "--model", "tiny.mirpipe", "--out", "out", "--cluster", sync, "--json"]
    code, out, _ = _cli(args)
    assert code == 1  # some inputs failed, the rest went on
    res = json.loads(out)
    by = {Path(f["input"]).name: f for f in res["files"]}
    assert by["broken.wav"]["status"] == "failed" and by["broken.wav"]["error_class"] == "AudioDecodeError"
    assert by["broken.wav"]["file"].endswith("broken.wav")
    assert by["missing.flac"]["status"] == "failed" and by["missing.flac"]["error_class"] == "MissingAudioError"
    bundle = load_bundle(fresh / "tiny.mirpipe")
    for name in ("glide.ogg", "chords.wav"):
        f = by[name]
        assert f["status"] == "done" and all(t in f["summary"] for t in TASK_NAMES)
        jam = jams.load(f["output"], validate=True, strict=True)
        jam.validate(strict=True)
        assert jam.file_metadata.duration == pytest.approx(3.5, abs=1e-3)
        assert sorted(a.namespace for a in jam.annotations) == sorted(TASKS.get(t).namespace for t in TASK_NAMES)
        for ann in jam.annotations:
            meta = ann.annotation_metadata
            assert meta.annotator["model"] == "tiny" and meta.annotator["model_identity"] == bundle.identity
            assert meta.annotator["training_fingerprint"] == bundle.tasks[meta.annotator["task"]].training["fingerprint"]
            assert meta.version and bundle.identity in meta.annotation_tools
            assert ann.data and ann.data[-1].time <= jam.file_metadata.duration
    assert Path(by["chords.wav"]["output"]) == Path("out/sub/chords.jams")  # a folder's layout is kept
    code, out, _ = _cli(args)  # resumed: the outputs for this model and these inputs are current
    assert code == 1 and json.loads(out)["counts"] == {"skipped": 2, "failed": 2}


def test_a_training_that_has_not_finished_is_not_exported(trained, tmp_path):
    """A checkpoint the ledger does not record as finished (a run still training or tuning the task:
    `best.pt` is written at each better epoch, the voicing threshold after the last one; or a run
    stopped mid-way) is refused by export and by predict --model WORKDIR, naming it: its decoding
    state would be missing (pitch would decode at threshold 0.5). The finished tasks still export."""
    workdir, sync, _ = trained
    work = tmp_path / "work"
    shutil.copytree(workdir, work, symlinks=True)
    ledger = Ledger(work)
    done = ledger.state("train").done
    finished, fingerprint = dict(done.record("pitch")), done.fingerprint("pitch")
    ledger.forget("train", "pitch")  # started again and not done yet
    code, _, err = _cli(["export", "--workdir", work, "--out", tmp_path / "m.mirpipe"])
    assert code == 2 and str(work / "train" / "pitch" / "best.pt") in err and "'pitch' is not finished" in err
    assert not (tmp_path / "m.mirpipe").exists()
    code, _, err = _cli(["predict", tmp_path, "--model", work, "--out", tmp_path / "out", "--cluster", sync])
    assert code == 2 and "'pitch' is not finished" in err
    code, out, _ = _cli(["export", "--workdir", work, "--out", tmp_path / "c.mirpipe", "--tasks", "chord", "--json"])
    assert code == 0 and json.loads(out)["tasks"] == ["chord"]
    # a run of other settings recorded as done: the checkpoint on disk is not the one it finished
    ledger.mark_done("train", "pitch", "another-run", finished, 1, 1.0)
    assert _cli(["export", "--workdir", work, "--out", tmp_path / "m.mirpipe"])[0] == 2
    ledger.mark_done("train", "pitch", fingerprint, finished, 1, 1.0)
    assert _cli(["export", "--workdir", work, "--out", tmp_path / "m.mirpipe"])[0] == 0


def test_loading_a_bundle_says_what_does_not_match(trained, tmp_path):
    workdir, _, _ = trained
    path = tmp_path / "m.mirpipe"
    assert _cli(["export", "--workdir", workdir, "--out", path])[0] == 0
    raw = torch.load(path, weights_only=True)
    major, minor = dict(raw), dict(raw)
    major["versions"] = {**raw["versions"], "torch": "99.0.0"}
    minor["versions"] = {**raw["versions"], "librosa": raw["versions"]["librosa"].split(".")[0] + ".999.0"}
    torch.save(major, tmp_path / "major.mirpipe")
    torch.save(minor, tmp_path / "minor.mirpipe")
    with pytest.raises(BundleError, match=r"torch 99\.0\.0 at export.*major versions differ"):
        load_bundle(tmp_path / "major.mirpipe")
    warned = []
    load_bundle(tmp_path / "minor.mirpipe", warn=warned.append)
    assert len(warned) == 1 and "librosa" in warned[0] and ".999.0 at export" in warned[0]
    (tmp_path / "junk.mirpipe").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="junk.mirpipe: not a mirpipe model bundle"):
        load_bundle(tmp_path / "junk.mirpipe")


def test_robustness_table_per_task_and_shift_zero_is_the_normal_score(trained):
    workdir, _, _ = trained
    for name in TASK_NAMES:
        task, out = TASKS.get(name), workdir / "reports" / name
        rows = list(csv.reader(open(out / "robustness.csv")))
        assert rows[0] == ["metric", "-1", "0", "+2"]
        assert [r[0] for r in rows[1:]] == list(task.scorer.metrics) and all(len(r) == len(SHIFTS) + 1 for r in rows)
        table = json.loads((out / "robustness.json").read_text())
        scores = json.loads((out / "scores.json").read_text())
        assert table["shifts"] == SHIFTS
        for metric, values in table["metrics"].items():
            assert values[SHIFTS.index(0)] == scores[metric], metric
            assert all(v is None or 0.0 <= v <= 1.0 for v in values)
        assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_status_shows_each_tasks_last_epoch_and_run_printed_tensorboard(trained):
    workdir, _, lines = trained
    assert sum("tensorboard --logdir" in line for line in lines) == 1  # once per run
    code, out, _ = _cli(["status", "--workdir", workdir, "--json"])
    assert code == 0
    details = json.loads(out)["stages"]["train"]["details"]
    assert sorted(details) == TASK_NAMES
    for name, p in details.items():
        assert (p["epoch"], p["max_epochs"], p["step"], p["finished"]) == (2, 2, 6, True)
        assert p["metric"] == TASKS.get(name).network.metric_name and p["train_loss"] > 0 and p["val_loss"] > 0
        assert p["patches_per_s"] > 0 and 0.0 <= p["value"] <= 1.0
    code, out, _ = _cli(["status", "--workdir", workdir])
    assert "chord: epoch 2/2 step 6/6" in out and "finished" in out
