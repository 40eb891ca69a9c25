"""The instrument task: the corpus's own vocabulary (normalised, aliased, reported), class-balanced
streaming, clip aggregation, scikit-learn scores, and a corpus tagged with names the demo never
uses trained and evaluated end to end through the pipeline."""

from __future__ import annotations

import json

import jams
import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_recall_fscore_support

from mirpipe.models.instrument import (
    LABELS,
    PRESENCE,
    SINGLE,
    clip_scores,
    encode,
    patch_starts,
    weakest_classes,
    wilson_interval,
)
from mirpipe.models.labels import Vocabulary, VocabularyParams, build_vocabulary, label_id, normalise, notes, training_identity
from mirpipe.models.task import TASKS
from mirpipe.storage import open_store
from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec

SR = 22050


def _jam(tags, duration, split=None):
    jam = jams.JAMS()
    jam.file_metadata.duration = duration
    ann = jams.Annotation("tag_open", duration=duration)
    for value, start, dur in tags:
        ann.append(time=start, duration=dur, value=value, confidence=1.0)
    jam.annotations.append(ann)
    if split:
        jam.sandbox.update(split=split)
    return jam


# -- vocabulary ----------------------------------------------------------------------------------


def test_vocabulary_normalises_aliases_counts_per_split_and_reports_labels_outside_it():
    tracks = [
        ("train", [" Violin"]),
        ("train", ["violin", "CELLO"]),
        ("val", ["Violoncello"]),
        ("train", ["cello"]),
        ("test", ["violin"]),
        ("test", ["Oboe  d'amore"]),
        ("val", ["theremin"]),
    ]
    vocab = build_vocabulary(tracks, VocabularyParams(aliases={"Violoncello ": "Cello"}))
    assert vocab.classes == ["cello", "violin"]  # only labels a training track carries
    assert vocab.counts == {"cello": {"train": 2, "val": 1, "test": 0}, "violin": {"train": 2, "val": 0, "test": 1}}
    assert vocab.outside == {"oboe d'amore": {"train": 0, "val": 0, "test": 1}, "theremin": {"train": 0, "val": 1, "test": 0}}
    assert vocab.index("VIOLONCELLO") == vocab.index("cello") == 0 and vocab.index("theremin") is None
    lookup = vocab.id_lookup()
    assert lookup[label_id("violoncello")] == lookup[label_id("cello")] == 0 and lookup[label_id("violin")] == 1
    lines = "\n".join(notes("instrument", vocab))
    assert "2 classes" in lines and "cello 2/1/0" in lines and "violoncello -> cello" in lines
    assert "label 'theremin' is no class" in lines and 'label "oboe d\'amore" is no class' in lines
    assert Vocabulary.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab
    # training depends on the classes and aliases, not on the counts (a new test-only label retrains nothing)
    more = build_vocabulary(
        tracks + [("test", ["kazoo"]), ("test", ["cello"])], VocabularyParams(aliases={"Violoncello ": "Cello"})
    )
    assert more.outside != vocab.outside and training_identity(more.to_json()) == training_identity(vocab.to_json())


def test_a_declared_class_without_a_training_example_is_a_clear_error():
    vocab = build_vocabulary([("train", ["flute"]), ("test", ["oboe"])], VocabularyParams(classes=["Flute", "oboe"]))
    assert vocab.untrained() == ["oboe"] and vocab.outside == {}
    assert "class 'oboe' has no training example" in "\n".join(notes("instrument", vocab))
    task = TASKS.get("instrument").bind(vocab.to_json())
    with pytest.raises(ValueError, match=r"\['oboe'\] have no training example"):
        task.network.fit_state(iter(()))
    with pytest.raises(ValueError, match="not at another alias"):
        VocabularyParams(aliases={"a": "b", "b": "c"})


def test_stored_targets_are_label_ids_independent_of_the_vocabulary():
    jam = _jam([("Violin", 0.0, 2.0), (" cello ", 1.0, 2.0), ("drums", 0.0, 0.0)], 4.0)  # duration 0: the whole track
    times = np.arange(8) * 0.5
    ids = encode(jam, times)["instrument_labels"]
    assert ids.shape == (8, 8) and ids.dtype == np.int32
    sounding = [{int(i) for i in row if i} for row in ids]
    v, c, d = label_id("violin"), label_id("cello"), label_id("drums")
    assert sounding == [{v, d}, {v, d}, {v, c, d}, {v, c, d}, {c, d}, {c, d}, {d}, {d}]
    # the same stored ids under two vocabularies: the batch targets follow the vocabulary
    batch = {LABELS: np.stack([ids[:4], ids[4:]])}
    small = TASKS.get("instrument").bind(build_vocabulary([("train", ["violin", "cello"])]).to_json())
    out = small.network.prepare_batch(dict(batch))
    assert np.allclose(out[PRESENCE], [[0.5, 1.0], [0.5, 0.0]]) and list(out[SINGLE]) == [-1, -1]  # drums is unknown here
    big = TASKS.get("instrument").bind(build_vocabulary([("train", ["violin", "cello", "drums"])]).to_json())
    out = big.network.prepare_batch(dict(batch))
    assert np.allclose(out[PRESENCE], [[0.5, 1.0, 1.0], [0.5, 1.0, 0.0]]) and LABELS not in out


def test_single_instrument_patches_get_a_class_and_padding_is_ignored():
    task = TASKS.get("instrument").bind(build_vocabulary([("train", ["flute", "organ"])]).to_json())
    f, o = label_id("flute"), label_id("organ")
    ids = np.zeros((3, 4, 8), np.int32)
    ids[0, :, 0] = o
    ids[1, :2, 0] = f
    ids[1, 2:] = -1  # padded frames
    ids[2, :, 0], ids[2, 1, 1] = f, o
    out = task.network.prepare_batch({LABELS: ids})
    assert list(out[SINGLE]) == [1, 0, -1]
    assert np.allclose(out[PRESENCE], [[0, 1], [1, 0], [1, 0.25]])


# -- balanced streaming --------------------------------------------------------------------------

GEOMETRY = {
    "kind": "cqt",
    "sr": 22050,
    "hop_length": 2048,
    "fmin": 32.7,
    "n_bins": 12,
    "bins_per_octave": 12,
    "margin_bins": 0,
    "frame_rate": 22050 / 2048,
}


def test_class_balanced_weights_draw_every_class_about_equally(tmp_path):
    labels = {f"v{i}": ["violin"] for i in range(12)} | {"c0": ["cello"], "c1": ["Cello"], "o0": ["oboe"]}
    store = open_store("zarr", tmp_path)
    for track, names in labels.items():
        ids = np.full((1, 40, 8), 0, np.int32)
        ids[..., 0] = label_id(names[0])
        store.write_entry(
            track,
            {"cqt": np.zeros((1, 40, 12), np.float16), LABELS: ids},
            {"track": track, "variants": [0], "features": {"cqt": GEOMETRY}},
        )
    vocab = build_vocabulary([("train", names) for names in labels.values()])
    task = TASKS.get("instrument").bind(vocab.to_json())
    weights = task.vocabulary.stream_weights(list(labels.values()))
    per_class: dict[str, float] = {}
    for names, w in zip(labels.values(), weights):
        per_class[normalise(names[0])] = per_class.get(normalise(names[0]), 0) + w
    assert np.allclose(list(per_class.values()), 1.0)

    spec = StreamSpec("zarr", str(tmp_path), "cqt", (LABELS,), patch_frames=8, slab_frames=40, task=task)
    keys = [EntryKey(t, 40) for t in labels]
    mux = MuxSettings(batch_size=16, n_active=4, rate=4.0, n_shards=1)

    def shares(weighted: bool) -> np.ndarray:
        stream = PatchStream(spec, keys, mux, seed=3, weights=dict(zip(labels, weights)) if weighted else None)
        batches = stream.batches(epoch=0)
        drawn = np.concatenate([next(batches)[SINGLE] for _ in range(120)])
        return np.bincount(drawn, minlength=3) / len(drawn)

    balanced, plain = shares(True), shares(False)
    assert np.all(np.abs(balanced - 1 / 3) < 0.08), balanced
    assert plain[vocab.index("violin")] > 0.65, plain  # 12 of 15 tracks: without weights violin dominates


# -- prediction and scores -----------------------------------------------------------------------


def _prediction(logp: np.ndarray, act: np.ndarray, patch: int, n_frames: int) -> np.ndarray:
    starts = patch_starts(n_frames, patch, patch // 2)
    assert len(starts) == len(logp)
    bounds = np.array([[s, min(s + patch, n_frames)] for s in starts], np.float32)
    return np.concatenate([bounds, logp, act], axis=1)


def test_a_clip_label_is_the_mean_of_its_patch_log_probabilities():
    task = TASKS.get("instrument")
    vocab = build_vocabulary([("train", ["a", "b", "c"])])
    # patch argmaxes vote b, b, c, but c is far more certain where it wins and b is never unlikely
    probs = np.array([[0.05, 0.50, 0.45], [0.05, 0.50, 0.45], [0.01, 0.04, 0.95]])
    n_frames, patch = 20, 10
    pred = _prediction(np.log(probs), np.full((3, 3), 0.1), patch, n_frames)
    times = np.arange(n_frames) * 0.1
    est = task.decoder.decode(pred, times, 2.0, {"vocabulary": vocab.to_json()}, task.decoder.DecodeParams())
    mean = np.log(probs).mean(axis=0)
    assert est.sandbox.clip["label"] == ["a", "b", "c"][int(np.argmax(mean))] == "c"
    assert est.sandbox.clip["probabilities"]["c"] == pytest.approx(np.exp(mean[2]) / np.exp(mean).sum(), abs=1e-4)
    assert patch_starts(20, 10, 5) == [0, 5, 10] and patch_starts(23, 10, 5) == [0, 5, 10, 13] and patch_starts(4, 10, 5) == [0]


def test_mixture_activity_is_decoded_to_time_spans_and_scored_with_average_precision():
    task = TASKS.get("instrument")
    vocab = build_vocabulary([("train", ["bass", "drums", "flute"])])
    n_frames, patch = 50, 10  # patches at 0, 5, ..., 40 frames (hop 0.1 s)
    act = np.zeros((9, 3))
    act[:, 1] = 0.9  # drums throughout
    act[2:5, 2] = [0.8, 0.7, 0.6]  # flute in patches 2..4
    act[:, 0] = np.linspace(0.1, 0.6, 9)
    pred = _prediction(np.log(np.full((9, 3), 1 / 3)), act, patch, n_frames)
    times = np.arange(n_frames) * 0.1
    est = task.decoder.decode(pred, times, 5.0, {"vocabulary": vocab.to_json()}, task.decoder.DecodeParams(threshold=0.5))
    spans = {(o.value, round(o.time, 3), round(o.duration, 3)) for o in est.data}
    assert ("drums", 0.0, 5.0) in spans and ("flute", 1.0, 2.0) in spans and ("bass", 3.5, 1.5) in spans
    ref = _jam([("Drums", 0.0, 5.0), ("flute", 1.0, 1.0), ("bass", 2.0, 3.0)], 5.0).annotations[0]
    ev = task.scorer.evidence(ref, est)
    assert ev["kind"] == "mixture" and ev["classes"] == vocab.classes
    truth, scores = np.asarray(ev["ref"]), np.asarray(ev["est"])
    assert truth.shape == scores.shape == (9, 3)
    assert list(truth[:, 2]) == [0, 1, 1, 1, 0, 0, 0, 0, 0]  # a patch counts a class sounding in half of it
    expected = np.mean([average_precision_score(truth[:, k], scores[:, k]) for k in range(3)])
    assert task.scorer.score(ref, est)["mAP"]["score"] == pytest.approx(expected)
    pooled = task.scorer.pool_evidence([ev, ev], figures=None)
    assert pooled["mAP"] == pytest.approx(
        np.mean([average_precision_score(np.r_[truth[:, k], truth[:, k]], np.r_[scores[:, k], scores[:, k]]) for k in range(3)])
    )


def test_clip_scores_equal_scikit_learns(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["piano", "organ", "flute", "violin"]
    ref = list(rng.choice(classes, 40))
    est = [r if rng.random() < 0.7 else str(rng.choice(classes + ["kazoo"])) for r in ref]
    out = clip_scores(ref, est, classes)
    labels = [c for c in classes if c in set(ref) | set(est)] + (["kazoo"] if "kazoo" in est else [])
    assert out["accuracy"] == pytest.approx(accuracy_score(ref, est))
    assert out["macro_f1"] == pytest.approx(f1_score(ref, est, labels=labels, average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(ref, est, labels=labels, zero_division=0)
    for i, c in enumerate(labels):
        assert out["per_class"][c] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    # the pooled report: the same numbers from per-track evidence, and the confusion matrix figure
    task = TASKS.get("instrument")
    pooled = task.scorer.pool_evidence(
        [{"kind": "clip", "classes": classes, "ref": a, "est": b} for a, b in zip(ref, est)], tmp_path
    )
    assert pooled["macro_f1"] == out["macro_f1"] and pooled["confusion"]["classes"] == labels
    assert np.asarray(pooled["confusion"]["matrix"]).sum() == 40
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    # the accuracy's Wilson interval: centred on (k + z^2/2) / (n + z^2), and printed as a note
    k, n, z = sum(a == b for a, b in zip(ref, est)), 40, 1.959964
    centre, half = (k + z * z / 2) / (n + z * z), z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    assert pooled["accuracy_ci95"] == pytest.approx([centre - half, centre + half], abs=1e-6)
    assert wilson_interval(15, 30) == pytest.approx((0.3315, 0.6685), abs=1e-4)
    assert wilson_interval(30, 30)[1] == 1.0 and wilson_interval(0, 30)[0] == 0.0
    assert any("95% interval" in note and "40 solo clips" in note for note in pooled["notes"])
    assert pooled["notes"][-1].startswith("lowest recall: ")
    per_class = {
        "oboe": {"recall": 0.5, "support": 4},
        "harp": {"recall": 1.0, "support": 3},
        "tuba": {"recall": 0.0, "support": 2},
        "kazoo": {"recall": 0.0, "support": 0},
    }
    assert weakest_classes(per_class) == ["tuba 0/2", "oboe 2/4"]  # never-sounding and perfect classes left out


def test_score_table_prints_a_tasks_notes(capsys):
    from mirpipe.pipeline.cli import _score_table
    from mirpipe.records import TaskScores

    scores = {
        "instrument": TaskScores.from_json(
            {
                "accuracy": 0.5,
                "columns": ["accuracy"],
                "n_tracks": 30,
                "seconds": 90.0,
                "notes": ["30 solo clips: accuracy 0.500, 95% interval 0.33-0.67 (Wilson)"],
            }
        )
    }
    _score_table(scores, __import__("pathlib").Path("w"), json_mode=False)
    assert "  30 solo clips: accuracy 0.500, 95% interval 0.33-0.67 (Wilson)" in capsys.readouterr().out


# -- a corpus of its own, end to end -------------------------------------------------------------

WAVES = {  # instrument names the demo never uses, each a waveform of its own
    "kazoo": lambda ph: np.sign(np.sin(ph)),
    "theremin": lambda ph: np.sin(ph),
    "didgeridoo": lambda ph: 2 * ((ph / (2 * np.pi)) % 1.0) - 1,
}


def _tone(kind: str, f0: float, seconds: float, rng) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    vib = 1 + 0.003 * np.sin(2 * np.pi * 5 * t)
    y = WAVES[kind](2 * np.pi * f0 * vib * t) * rng.uniform(0.1, 0.4)
    return (y * np.minimum(1, np.minimum(t, t[-1] - t) / 0.02)).astype(np.float32)


@pytest.fixture(scope="module")
def own_corpus(tmp_path_factory):
    """Clips of three made-up instruments (spelled with odd case, spaces and an alias), a mixture
    per split, and a test clip whose tag no training track carries."""
    root = tmp_path_factory.mktemp("own_corpus")
    rng = np.random.default_rng(1)
    spell = {"kazoo": ["Kazoo", " kazoo ", "KAZOO"], "theremin": ["theremin", "Etherphone"], "didgeridoo": ["didgeridoo"]}
    i = 0
    for kind in WAVES:
        for split, n in (("train", 4), ("val", 1), ("test", 2)):
            for _ in range(n):
                f0 = float(rng.uniform(150, 500))
                sf.write(root / f"clip{i:02d}.wav", _tone(kind, f0, 1.5, rng), SR)
                _jam([(spell[kind][i % len(spell[kind])], 0.0, 1.5)], 1.5, split).save(str(root / f"clip{i:02d}.jams"))
                i += 1
    for split in ("train", "val", "test"):
        y = np.zeros(int(3 * SR), np.float32)
        y[: int(2 * SR)] += _tone("kazoo", 220.0, 2.0, rng)
        y[int(1 * SR) :] += _tone("theremin", 330.0, 2.0, rng)
        sf.write(root / f"mix_{split}.wav", y, SR)
        _jam([("kazoo", 0.0, 2.0), ("theremin", 1.0, 2.0)], 3.0, split).save(str(root / f"mix_{split}.jams"))
    sf.write(root / "odd.wav", _tone("theremin", 200.0, 1.5, rng), SR)
    _jam([("Glass Harmonica", 0.0, 1.5)], 1.5, "test").save(str(root / "odd.jams"))
    return root


def test_a_corpus_with_its_own_names_trains_and_evaluates_with_its_own_vocabulary(own_corpus, tmp_path, sync_cluster):
    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.config import parse_pipeline
    from mirpipe.pipeline.runner import Runner
    from mirpipe.stage import StageContext
    from mirpipe.stages.ingest import Ingest, read_manifest

    cfg = parse_pipeline(
        {
            "ingest": {"corpus": str(own_corpus), "vocabularies": {"instrument": {"aliases": {"etherphone": "Theremin"}}}},
            "augment": {"shifts": [-1, 0, 1]},
            "features": {"tasks": ["instrument"]},
            "train": {
                "tasks": ["instrument"],
                "models": {"instrument": {"channels": [8, 16], "hidden": 16, "patch_frames": 32}},
                "patch_frames": 32,
                "slab_frames": 128,
                "batch_size": 16,
                "n_active": 4,
                "rate": 4,
                "steps_per_epoch": 15,
                "max_epochs": 3,
                "lr": 0.01,
                "threads": 1,
                "progress": "off",
            },
            "evaluate": {"tasks": ["instrument"], "figures": 1},
            "run": {"retries": 0},
        }
    )
    with open_executor(sync_cluster) as ex:
        reports = {r.stage: r for r in Runner(tmp_path, cfg, progress=False).run(ex)}
    for stage in ("ingest", "features", "train", "evaluate"):
        assert not reports[stage].failures, (stage, reports[stage].failures)
    ctx = StageContext(tmp_path, cfg.stage_params())
    vocab = Vocabulary.from_json(read_manifest(ctx).extra["vocabularies"]["instrument"])
    assert vocab.classes == ["didgeridoo", "kazoo", "theremin"]
    assert vocab.counts["kazoo"] == {"train": 5, "val": 2, "test": 3} and vocab.counts["theremin"]["train"] == 5
    assert vocab.outside == {"glass harmonica": {"train": 0, "val": 0, "test": 1}}
    status = "\n".join(Ingest().status_notes(ctx))
    assert "label 'glass harmonica' is no class" in status and "etherphone -> theremin" in status
    index = open_store("zarr", tmp_path / "features").read_index()
    assert index.extra["vocabularies"]["instrument"]["classes"] == vocab.classes

    scores = json.loads((tmp_path / "reports" / "instrument" / "scores.json").read_text())
    assert scores["n_clips"] == 7 and scores["n_mixtures"] == 1 and scores["columns"] == ["accuracy", "macro_f1", "mAP"]
    assert scores["scored_by"].startswith("scikit-learn")  # the summary's header says so, not mir_eval
    assert set(scores["per_class"]) >= {"didgeridoo", "kazoo", "theremin", "glass harmonica"}
    assert scores["per_class"]["glass harmonica"]["recall"] == 0.0  # reported and scored, never a class it could learn
    assert scores["accuracy"] >= 4 / 7, scores  # three clear waveforms: far above chance (1/3)
    assert scores["mAP"] is not None and 0.0 <= scores["mAP"] <= 1.0
    assert (tmp_path / "reports" / "instrument" / "figures" / "confusion_matrix.png").exists()
    est = jams.load(str(tmp_path / "reports" / "instrument" / "estimates" / "mix_test.jams"))
    assert est.annotations[0].namespace == "tag_open" and est.annotations[0].sandbox.activity["classes"] == vocab.classes

    # the trained model as one file predicts with the vocabulary it was trained on (predict + export)
    from click.testing import CliRunner

    from mirpipe.pipeline import workdir as wd
    from mirpipe.pipeline.cli import main

    wd.record(tmp_path, cfg, sync_cluster)  # what `mirpipe run` records: export reads it
    sync = tmp_path / "sync.yaml"
    sync.write_text("cluster:\n  type: sync\n")
    bundle = tmp_path / "inst.mirpipe"
    res = CliRunner().invoke(main, ["export", "--workdir", str(tmp_path), "--out", str(bundle)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    inputs = [own_corpus / "mix_test.wav", own_corpus / "odd.wav"]
    res = CliRunner().invoke(
        main,
        ["predict", *map(str, inputs), "--model", str(bundle), "--out", str(tmp_path / "pred"), "--cluster", str(sync)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    for audio in inputs:
        out = jams.load(str(tmp_path / "pred" / f"{audio.stem}.jams"), validate=True, strict=True)
        ann = out.search(namespace="tag_open")[0]
        assert ann.sandbox.activity["classes"] == vocab.classes
        assert ann.data and {o.value for o in ann.data} <= set(vocab.classes)
