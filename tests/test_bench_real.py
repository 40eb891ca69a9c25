"""benchmarks/bench_real.py on a folder this test makes (nothing of shared/realval): two synthesized
triad progressions of different lengths, a sine melody with silences, two instrument clips (one
named by the model's alias, one instrument the model does not know), an undecodable file, a JAMS
with no reference of any task, a JAMS without audio and two audio files sharing one JAMS.

The model is a bundle of three tiny seeded networks, untrained: the figures only have to be
mir_eval's on exactly what ``mirpipe predict`` writes for the same files, pooled by duration."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import jams
import mir_eval
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SR = 22050
TINY = {
    "chord": {"hidden": 8, "channels": 4},
    "pitch": {"channels": [4], "tall_channels": 2, "tall_bins": 15},
    "instrument": {"channels": [4, 8], "hidden": 8, "patch_frames": 32},
}
VOCABULARY = {"classes": ["flute", "piano", "voice"], "aliases": {"vocals": "voice"}}
NOTE = {"C": 60, "E": 64, "F": 65, "G": 67, "A": 69, "B": 71}


def load_script(name: str):
    """``benchmarks/<name>.py`` as a module (registered, so its dataclasses find their module)."""
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_bench():
    return load_script("bench_real")


def tiny_bundle(path: Path, seed: int = 0) -> Path:
    """A three-task model file as ``mirpipe export`` writes one, with seeded untrained networks."""
    from mirpipe.models.bundle import ModelBundle, TaskModel, current_versions
    from mirpipe.models.labels import Vocabulary
    from mirpipe.models.task import TASKS
    from mirpipe.stages.features import FeaturesParams
    from mirpipe.storage.feature_kinds import FEATURE_KINDS

    fp = FeaturesParams()
    vocab = Vocabulary(VOCABULARY["classes"], VOCABULARY["aliases"]).to_json()
    states = {"chord": {}, "pitch": {"threshold": 0.5}, "instrument": {"vocabulary": vocab}}
    torch.manual_seed(seed)
    models = {}
    for name, raw in TINY.items():
        task = TASKS.get(name).bind(vocab if name == "instrument" else None)
        params = task.trained.network.Params.model_validate(raw)
        n_bins = int(fp.kind_params(task.feature).n_bins)
        net = task.trained.network.build(n_bins=n_bins, params=params)
        models[name] = TaskModel(
            name=name,
            task_version=str(task.version),
            feature=task.feature,
            params=params.model_dump(mode="json"),
            n_bins=n_bins,
            state=states[name],
            decoding=task.trained.decoder.DecodeParams().model_dump(mode="json"),
            training={"fingerprint": "test", "checkpoint": "best"},
            vocabulary=vocab if name == "instrument" else None,
            weights={k: v.detach().clone() for k, v in net.state_dict().items()},
        )
    kinds = sorted({m.feature for m in models.values()})
    features = {
        "sr": fp.sr,
        "margin": 0,
        "kinds": {
            k: {"version": str(FEATURE_KINDS.get(k).version), "params": fp.kind_params(k).model_dump(mode="json")} for k in kinds
        },
        "geometry": {},
    }
    bundle = ModelBundle(features=features, tasks=models, versions=current_versions(), source="test", name="tiny")
    return bundle.save(path)


def voice_half(bundle_path: Path, audio: Path) -> None:
    """Set the pitch model's voicing threshold to the median peak salience it gives ``audio``: an
    untrained network's salience is flat (~0.01), and a contour half voiced checks more than none."""
    from mirpipe.models.bundle import build_network, load_bundle
    from mirpipe.models.task import TASKS
    from mirpipe.pipeline.inference import features_of
    from mirpipe.storage.feature_kinds import FEATURE_KINDS

    bundle = load_bundle(bundle_path)
    arrays, geometry, _ = features_of(audio, bundle, ["hcqt"])
    view = FEATURE_KINDS.get("hcqt").view(arrays["hcqt"][0], geometry["hcqt"], 0)
    salience = TASKS.get("pitch").trained.decoder.predict(build_network(bundle.tasks["pitch"], "cpu"), view, "cpu")
    bundle.tasks["pitch"].state = {"threshold": float(np.median(salience.max(axis=1)))}
    bundle.identity = bundle.compute_identity()
    bundle.save(bundle_path)


def _midi_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _tones(freqs: list[float], seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    y = sum(np.sin(2 * np.pi * f * t) for f in freqs) / max(len(freqs), 1)
    return (0.3 * y * np.minimum(1, np.minimum(t, t[-1] - t) / 0.01)).astype(np.float32)


def _save(folder: Path, stem: str, y: np.ndarray, annotation: jams.Annotation | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{stem}.wav", y, SR)
    jam = jams.JAMS(file_metadata=jams.FileMetadata(duration=len(y) / SR))
    if annotation is not None:
        jam.annotations.append(annotation)
    jam.save(str(folder / f"{stem}.jams"), strict=True)


def _chords(folder: Path, stem: str, labels: list[str], seconds: float) -> None:
    ann = jams.Annotation(namespace="chord", duration=len(labels) * seconds)
    parts = []
    for i, label in enumerate(labels):
        root, quality = label.split(":")
        third = 3 if quality == "min" else 4
        parts.append(_tones([_midi_hz(NOTE[root] + k) for k in (0, third, 7, 12)], seconds))
        ann.append(time=i * seconds, duration=seconds, value=label)
    _save(folder, stem, np.concatenate(parts), ann)


def _melody(folder: Path) -> None:
    """Silence, A3, E4, silence: a contour on a 10 ms grid, frequency 0 where unvoiced."""
    segments = [(0.5, 0.0), (1.0, 220.0), (1.0, 330.0), (0.5, 0.0)]
    y = np.concatenate([_tones([f] if f else [], s) if f else np.zeros(int(s * SR), np.float32) for s, f in segments])
    ann = jams.Annotation(namespace="pitch_contour", duration=len(y) / SR)
    edges = np.cumsum([0.0] + [s for s, _ in segments])
    for t in np.arange(0.0, len(y) / SR - 0.005, 0.01):
        f = segments[min(int(np.searchsorted(edges, t, side="right")) - 1, len(segments) - 1)][1]
        ann.append(time=float(t), duration=0.0, value={"index": 0, "frequency": f, "voiced": f > 0})
    _save(folder, "sine_melody", y, ann)


def _tag(label: str, seconds: float) -> jams.Annotation:
    ann = jams.Annotation(namespace="tag_open", duration=seconds)
    ann.append(time=0.0, duration=seconds, value=label)
    return ann


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("realish")
    _chords(root / "a", "triads_long", ["C:maj", "A:min", "F:maj"], 1.0)
    _chords(root / "a", "triads_short", ["G:maj", "E:min"], 0.75)
    _melody(root / "b")
    _save(root / "c", "singer", _tones([300.0, 600.0, 900.0], 1.5), _tag("Vocals", 1.5))
    _save(root / "c", "kazoo", _tones([400.0, 800.0], 1.5), _tag("kazoo", 1.5))
    beat = jams.Annotation(namespace="beat", duration=1.0)
    beat.append(time=0.5, duration=0.0, value=1)
    _save(root, "beats_only", _tones([440.0], 1.0), beat)
    _save(root, "broken", _tones([440.0], 1.0), _tag("piano", 1.0))
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    (root / "lonely.jams").write_text((root / "beats_only.jams").read_text())
    _save(root / "c", "twice", _tones([440.0], 1.0), _tag("piano", 1.0))
    sf.write(root / "c" / "twice.flac", _tones([440.0], 1.0), SR)
    return root


@pytest.fixture(scope="module")
def scored(folder, tmp_path_factory):
    """(report JSON, stdout, exit status) of the benchmark, and the estimates `mirpipe predict` writes."""
    from mirpipe.pipeline.cli import main

    work = tmp_path_factory.mktemp("bench")
    model = tiny_bundle(work / "tiny.mirpipe")
    voice_half(model, folder / "b" / "sine_melody.wav")
    torch.set_num_threads(1)
    bench = load_bench()
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = bench.main(["--model", str(model), "--folder", str(folder), "--json", str(work / "report.json")])
    sync = work / "sync.yaml"
    sync.write_text("cluster:\n  type: sync\n")
    res = CliRunner().invoke(
        main,
        ["predict", str(folder), "--model", str(model), "--out", str(work / "pred"), "--cluster", str(sync)],
        catch_exceptions=False,
    )
    assert res.exit_code == 1, res.output  # broken.wav fails there too (and twice.* write one output)
    report = json.loads((work / "report.json").read_text())
    return report, stdout.getvalue(), status, work / "pred"


def _file(report: dict, name: str) -> dict:
    (found,) = [f for f in report["files"] if f["file"] == name]
    return found


def _estimate(pred: Path, name: str, namespace: str) -> jams.Annotation:
    jam = jams.load(str(pred / Path(name).with_suffix(".jams")), validate=False)
    (ann,) = [a for a in jam.annotations if a.namespace == namespace]
    return ann


def test_chord_scores_are_mir_evals_on_what_predict_writes_pooled_by_duration(folder, scored):
    report, _, _, pred = scored
    expected, spans = {}, {}
    for name in ("a/triads_long.wav", "a/triads_short.wav"):
        ref = jams.load(str(folder / Path(name).with_suffix(".jams"))).annotations[0]
        est = _estimate(pred, name, "chord")
        ref_int, ref_lab = ref.to_interval_values()
        est_int, est_lab = est.to_interval_values()
        expected[name] = mir_eval.chord.evaluate(np.asarray(ref_int), ref_lab, np.asarray(est_int), est_lab)
        spans[name] = float(np.max(ref_int) - np.min(ref_int))
        scores = _file(report, name)["tasks"]["chord"]["scores"]
        for m in ("root", "majmin", "sevenths"):
            assert scores[m]["score"] == pytest.approx(expected[name][m], abs=1e-9), (name, m)
    pooled = report["aggregate"]["chord"]["model"]
    assert pooled["files"] == 2
    for m in ("root", "majmin", "sevenths"):  # every frame of maj/min triads is comparable: weight = the span
        want = sum(expected[n][m] * spans[n] for n in spans) / sum(spans.values())
        assert pooled["metrics"][m] == pytest.approx(want, abs=1e-9), m


def _contour(ann: jams.Annotation) -> tuple[np.ndarray, np.ndarray]:
    times = np.array([o.time for o in ann.data])
    hz = np.array([abs(o.value["frequency"]) * (1 if o.value["voiced"] else -1) for o in ann.data])
    return times, hz


def test_melody_scores_and_pyin_beside_them_are_mir_evals(folder, scored):
    from mirpipe.models.task import TASKS

    report, _, _, pred = scored
    name = "b/sine_melody.wav"
    ref_t, ref_f = _contour(jams.load(str(folder / "b" / "sine_melody.jams")).annotations[0])
    row = _file(report, name)["tasks"]["pitch"]
    short = {"OA": "Overall Accuracy", "RPA": "Raw Pitch Accuracy", "RCA": "Raw Chroma Accuracy"}
    short |= {"VR": "Voicing Recall", "VFA": "Voicing False Alarm"}
    model = mir_eval.melody.evaluate(ref_t, ref_f, *_contour(_estimate(pred, name, "pitch_contour")))
    pyin = TASKS.get("pitch").baseline.run(str(folder / name), SimpleNamespace(channel=None), 3.0)
    baseline = mir_eval.melody.evaluate(ref_t, ref_f, *_contour(pyin))
    for m, long in short.items():
        assert row["scores"][m]["score"] == pytest.approx(model[long], abs=1e-9), m
        assert row["baseline"]["scores"][m]["score"] == pytest.approx(baseline[long], abs=1e-9), m
    assert 0.2 < model["Voicing Recall"] < 1 and 0 < model["Voicing False Alarm"] < 1  # half voiced: both signs checked
    assert row["baseline"]["name"] == "pyin" and baseline["Overall Accuracy"] > 0.8  # pYIN finds two clean sines
    agg = report["aggregate"]["pitch"]
    assert agg["model"]["metrics"]["OA"] == pytest.approx(model["Overall Accuracy"], abs=1e-9)
    assert agg["baseline"]["metrics"]["OA"] == pytest.approx(baseline["Overall Accuracy"], abs=1e-9)


def test_an_instrument_the_model_does_not_know_is_counted_apart_not_scored(scored):
    report, out, _, pred = scored
    singer = _file(report, "c/singer.wav")["tasks"]["instrument"]
    said = _estimate(pred, "c/singer.wav", "tag_open").sandbox.clip["label"]
    assert singer["mapped"] == ["voice"] and singer["status"] == "scored"  # "Vocals" by the model's own alias
    assert singer["estimate"] == said and singer["correct"] == (said == "voice")
    kazoo = _file(report, "c/kazoo.wav")["tasks"]["instrument"]
    assert kazoo["status"] == "not in vocabulary" and kazoo["correct"] is None
    pooled = report["aggregate"]["instrument"]["model"]
    assert pooled["files"] == 1 and pooled["accuracy"] == float(said == "voice")
    assert pooled["not_in_vocabulary"] == 1 and pooled["not_in_vocabulary_labels"] == {"kazoo": 1}
    assert "1 not in vocabulary (kazoo x1)" in out and "kazoo -> " in out


def test_a_broken_file_is_named_with_its_reason_and_the_rest_is_scored(scored):
    report, out, status, _ = scored
    assert status == 1
    failed = dict(line.split(": ", 1) for line in report["failures"])
    assert set(failed) == {"broken.wav", "beats_only.wav", "lonely.jams", "c/twice.flac"}
    assert failed["c/twice.flac"].startswith("2 audio files share the stem (twice.flac, twice.wav)")
    assert failed["broken.wav"].startswith("AudioDecodeError: cannot decode")
    assert failed["beats_only.wav"].startswith("no reference for a task of the model")
    assert failed["lonely.jams"] == "a JAMS without an audio file of the same stem"
    assert "- broken.wav: AudioDecodeError: cannot decode" in out
    scored_files = {f["file"] for f in report["files"] if f["tasks"]}
    assert scored_files == {"a/triads_long.wav", "a/triads_short.wav", "b/sine_melody.wav", "c/singer.wav", "c/kazoo.wav"}
    assert "| chord | tiny | 2 |" in out and "| melody | pyin | 1 |" in out and "| instrument | tiny | 1 |" in out


def test_gain_db_scores_the_same_recordings_louder_and_quieter(folder, tmp_path):
    """``--gain-db``: each recording again as a float WAV copy that many dB louder or quieter (no
    clipping), one row per level; the 0 dB row is the report's own figures."""
    bench = load_bench()
    import argparse
    import contextlib
    import io

    copy = bench.scaled_copy(folder / "a" / "triads_long.wav", 12.0, tmp_path / "loud")
    x, sr = sf.read(folder / "a" / "triads_long.wav", dtype="float32")
    y, sr2 = sf.read(copy, dtype="float32")
    assert sr2 == sr and sf.info(str(copy)).subtype == "FLOAT"
    np.testing.assert_allclose(y, x * 10 ** (12 / 20), rtol=1e-6)
    assert np.abs(y).max() > 1.0  # louder than full scale, kept
    assert bench.parse_gains("-12, 0,12,12") == [-12.0, 12.0]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated"):
        bench.parse_gains("loud")

    model = tiny_bundle(tmp_path / "tiny.mirpipe")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = bench.main(
            [
                "--model",
                str(model),
                "--folder",
                str(folder / "a"),
                "--no-pyin",
                "--gain-db=-12,12",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
    report = json.loads((tmp_path / "r.json").read_text())
    assert status == 0 and report["failures"] == []
    assert [lv["gain_db"] for lv in report["levels"]] == [-12.0, 0.0, 12.0]
    assert report["levels"][1]["aggregate"] == report["aggregate"]
    for lv in report["levels"]:
        assert lv["aggregate"]["chord"]["model"]["files"] == 2
    out = stdout.getvalue()
    assert "| gain dB | chord root | chord majmin |" in out and "| -12 |" in out and "| +12 |" in out and "| mean |" in out


# -- benchmarks/compare_real.py: reports side by side -----------------------------------------------


def load_compare():
    return load_script("compare_real")


@pytest.fixture(scope="module")
def second(folder, tmp_path_factory):
    """The report of another tiny model (seed 1) on the same folder, and one on a copy without its clips."""
    import shutil

    work = tmp_path_factory.mktemp("second")
    part = work / "part"
    shutil.copytree(folder, part, ignore=shutil.ignore_patterns("c"))
    model = tiny_bundle(work / "tiny1.mirpipe", seed=1)
    voice_half(model, folder / "b" / "sine_melody.wav")
    bench = load_bench()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        bench.main(["--model", str(model), "--folder", str(folder), "--no-pyin", "--json", str(work / "all.json")])
        bench.main(["--model", str(model), "--folder", str(part), "--no-pyin", "--json", str(work / "part.json")])
    return work / "all.json", work / "part.json"


def _run_compare(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = load_compare().main(argv)
    return status, out.getvalue(), err.getvalue()


def test_compare_real_puts_settings_side_by_side_with_means_over_seeds_and_the_verdict(scored, second, tmp_path):
    """One row per setting: a setting of two reports shows their mean and range; the verdict says
    better or not on each of the bar's headlines from the reports' own pooled figures; pYIN gets its row."""
    report, _, _, _ = scored
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(report))
    other = json.loads(second[0].read_text())
    status, out, err = _run_compare(
        [f"base={ref},{second[0]}", f"seed1={second[0]}", "--json", str(tmp_path / "c.json"), "--per-file"]
    )
    assert status == 0, err
    figures = json.loads((tmp_path / "c.json").read_text())
    base, seed1 = figures["settings"]
    for task, m in (("chord", "majmin"), ("pitch", "OA"), ("pitch", "VFA")):
        a, b = (r["aggregate"][task]["model"]["metrics"][m] for r in (report, other))
        assert base["figures"][f"{task} {m}"] == [a, b]
        assert seed1["figures"][f"{task} {m}"] == [b]
        mean = (a + b) / 2
        assert f"{mean:.3f} ({min(a, b):.3f}-{max(a, b):.3f})" in out
        higher = m != "VFA"
        expected = (b > mean) if higher else (b < mean)
        assert seed1["verdict"]["better"][f"{task} {m}"] is expected
        # the reference's own two reports differ by |a - b|: seed1 lies within half of that of their mean
        assert seed1["verdict"]["within_reference_seeds"][f"{task} {m}"] is True
    pyin = report["aggregate"]["pitch"]["baseline"]
    assert f"| {pyin['name']} (beside the melody model) |" in out
    assert f"{pyin['metrics']['OA']:.3f}" in out
    assert "| base | 2 |" in out and "| seed1 | 1 |" in out and "(reference)" in out


def test_compare_real_says_what_the_figures_rest_on_and_counts_files_per_setting(scored, tmp_path):
    """The melody's unvoiced seconds are the sine melody's two silences (0.5 s each); a setting equal
    to the reference is better on no file and worse on none."""
    report, _, _, _ = scored
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(report))
    status, out, _ = _run_compare([f"base={ref}", f"same={ref}", "--per-file"])
    assert status == 0
    (line,) = [x for x in out.splitlines() if x.startswith("| melody |")]
    unvoiced = float(line.split("s voiced (VR, RPA), ")[1].split(" s unvoiced")[0])
    assert abs(unvoiced - 1.0) < 0.05, line
    (tally,) = [x for x in out.splitlines() if x.startswith("| same |") and x.count("|") == 5]
    better, worse, equal = (int(c) for c in tally.strip("|").split("|")[1:])
    assert better == 0 and worse == 0 and equal > 0
    assert "no: chord majmin not better" in out  # equal is not better


def test_compare_real_refuses_reports_of_other_files_and_names_them(scored, second, tmp_path):
    report, _, _, _ = scored
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(report))
    status, out, err = _run_compare([f"base={ref}", f"part={second[1]}"])
    assert status == 2 and out == ""
    assert f"{second[1]}: not the files of {ref}" in err
    assert (
        "only here: none; only there: c/kazoo.wav, c/singer.wav, c/twice.flac" in err
    )  # the clips it lacks (twice.* is one row)
    status, _, err = _run_compare([f"base={ref}", f"base={ref}"])
    assert status == 2 and "share a name" in err
    (tmp_path / "junk.json").write_text("{}")
    status, _, err = _run_compare([f"base={ref}", f"junk={tmp_path / 'junk.json'}"])
    assert status == 2 and "junk.json" in err and "not a bench_real.py --json report" in err
