"""The musicnn feature kind (a pretrained tagger's embedding) and the opt-in instrument_embed task.

Tests that run the network need the musicnn checkpoint (``pip install --no-deps musicnn==0.1.0``;
``make install`` puts it in the venv): they are skipped, saying so, where it is not installed."""

from __future__ import annotations

import importlib.util
import json

import jams
import numpy as np
import pytest
import soundfile as sf

from mirpipe.storage import musicnn
from mirpipe.storage.feature_kinds import FEATURE_KINDS

HAVE_MUSICNN = importlib.util.find_spec("musicnn") is not None
needs_musicnn = pytest.mark.skipif(not HAVE_MUSICNN, reason=f"the musicnn checkpoint is not installed ({musicnn.INSTALL})")
SR = 22050


def _tone(kind: str, f0: float, seconds: float, rng, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * f0 * t
    y = {"sine": np.sin(phase), "square": np.sign(np.sin(phase)), "saw": 2 * ((f0 * t) % 1.0) - 1}[kind]
    return (y * rng.uniform(0.2, 0.4) * np.minimum(1, np.minimum(t, t[-1] - t) / 0.02)).astype(np.float32)


def test_a_missing_checkpoint_is_an_error_naming_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else real(name, *a))
    musicnn.load_network.cache_clear()
    kind = FEATURE_KINDS.get("musicnn")
    with pytest.raises(musicnn.MissingPackageError, match=r"pip install --no-deps musicnn==0\.1\.0"):
        kind.compute(np.zeros(SR, np.float32), SR, kind.Params(), 0)
    musicnn.load_network.cache_clear()


def test_the_default_pipeline_leaves_the_opt_in_task_and_its_feature_out():
    from mirpipe.stages.features import FeaturesParams

    p = FeaturesParams()
    assert "instrument_embed" not in p.target_tasks() and "musicnn" not in p.kinds()
    assert "musicnn" in FeaturesParams(tasks=["instrument_embed"]).kinds()
    from mirpipe.stages.ingest import IngestParams

    with pytest.raises(ValueError, match="uses task 'instrument'"):
        IngestParams(vocabularies={"instrument_embed": {}})
    with pytest.raises(ValueError, match="hop_frames"):
        FEATURE_KINDS.get("musicnn").Params(window_frames=8, hop_frames=16)


@needs_musicnn
def test_the_checkpoint_reads_without_tensorflow():
    w = musicnn.read_checkpoint(str(musicnn.checkpoint_prefix("MTT_musicnn")) + "/")
    assert w["conv2d/kernel"].shape == (7, 38, 1, 204) and w["conv2d_5/kernel"].shape == (7, 561, 1, 64)
    assert w["dense/kernel"].shape == (1506, 200) and w["dense_1/kernel"].shape == (200, 50)
    assert all(np.isfinite(v).all() for v in w.values())


@needs_musicnn
@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.7, 4.05])
def test_the_kind_stores_float16_frames_whose_count_n_frames_predicts(seconds):
    kind = FEATURE_KINDS.get("musicnn")
    rng = np.random.default_rng(0)
    y = _tone("saw", 220.0, seconds, rng)
    for params in (kind.Params(), kind.Params(layer="penultimate", window_frames=32, hop_frames=8)):
        frames, geometry = kind.compute(y, SR, params, 0)
        assert frames.dtype == np.float16 and frames.shape == (kind.n_frames(len(y), params, SR, 0), geometry["n_bins"])
        assert geometry == kind.geometry(SR, params, 0) and geometry["sr"] == musicnn.SR
        assert geometry["hop_length"] == kind.hop_length(params) == params.hop_frames * musicnn.FFT_HOP
        assert np.isfinite(frames.astype(np.float32)).all()
        again, _ = kind.compute(y.copy(), SR, params, 0)
        assert np.array_equal(frames, again)  # deterministic
        view = kind.view(frames, geometry, 3)  # a shift reads the unshifted frames (an embedding has no bins to move)
        assert view.shape == (1, *frames.shape) and view.dtype == np.float32
        assert kind.input_bins(geometry) == geometry["n_bins"]


@needs_musicnn
def test_the_port_tags_a_piano_like_tone_and_a_noise_burst_differently():
    """The MagnaTagATune head on top of the port: decaying harmonic tones are not tagged 'drums'
    first, and noise bursts are (a coarse check that the weights landed where they belong; the
    port equals TensorFlow's graph to 3e-6, scripts/check_musicnn_port.py)."""
    rng = np.random.default_rng(0)
    sr = musicnn.SR
    t = np.arange(int(0.5 * sr)) / sr
    note = sum(np.sin(2 * np.pi * 261.6 * k * t) / k for k in range(1, 8)) * np.exp(-4 * t)
    burst = rng.standard_normal(len(t)) * np.exp(-30 * t)
    tags = musicnn.MTT_LABELS
    keys = musicnn.embed(np.tile(note, 8).astype(np.float32), 64, 16)["logits"].mean(axis=0)
    hits = musicnn.embed(np.tile(burst, 8).astype(np.float32), 64, 16)["logits"].mean(axis=0)
    assert keys[tags.index("piano")] > keys[tags.index("drums")]
    assert hits[tags.index("drums")] > hits[tags.index("piano")]


@pytest.fixture(scope="module")
def clip_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed_corpus")
    rng = np.random.default_rng(1)
    i = 0
    for kind in ("sine", "square", "saw"):
        for split, n in (("train", 4), ("val", 1), ("test", 2)):
            for _ in range(n):
                sf.write(root / f"clip{i:02d}.wav", _tone(kind, float(rng.uniform(150, 500)), 2.0, rng), SR)
                jam = jams.JAMS(file_metadata=jams.FileMetadata(duration=2.0))
                ann = jams.Annotation(namespace="tag_open", duration=2.0)
                ann.append(time=0.0, duration=2.0, value=kind)
                jam.annotations.append(ann)
                jam.sandbox.split = split
                jam.save(str(root / f"clip{i:02d}.jams"))
                i += 1
    return root


@needs_musicnn
def test_the_embedding_head_trains_evaluates_exports_and_predicts(clip_corpus, tmp_path, sync_cluster):
    from click.testing import CliRunner

    from mirpipe.pipeline import workdir as wd
    from mirpipe.pipeline.cli import main
    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.config import parse_pipeline
    from mirpipe.pipeline.runner import Runner
    from mirpipe.storage import open_store

    cfg = parse_pipeline(
        {
            "ingest": {"corpus": str(clip_corpus)},
            "augment": {"shifts": [-1, 0, 1]},  # any shift reads the unshifted embedding
            "features": {"tasks": ["instrument_embed"]},
            "train": {
                "tasks": ["instrument_embed"],
                "models": {"instrument_embed": {"hidden": 16, "patch_frames": 8}},
                "patch_frames": 8,
                "slab_frames": 16,
                "batch_size": 8,
                "n_active": 4,
                "rate": 4,
                "steps_per_epoch": 20,
                "max_epochs": 3,
                "lr": 0.01,
                "threads": 1,
                "progress": "off",
            },
            "evaluate": {"tasks": ["instrument_embed"], "figures": 1, "baselines": False},
            "run": {"retries": 0},
        }
    )
    with open_executor(sync_cluster) as ex:
        reports = {r.stage: r for r in Runner(tmp_path, cfg, progress=False).run(ex)}
    for stage in ("ingest", "features", "train", "evaluate"):
        assert not reports[stage].failures, (stage, reports[stage].failures)
    store = open_store("zarr", tmp_path / "features")
    track = next(iter(store.read_index()))
    entry = store.read_entry(track)
    assert entry.attrs["features"]["musicnn"]["kind"] == "musicnn" and "hcqt" not in entry.attrs["features"]
    assert entry.arrays["musicnn"].shape[1:] == (8, 1506) and entry.arrays["musicnn"].dtype == np.float16  # 2 s: 8 frames
    assert entry.arrays["targets/instrument_embed_labels"].shape[1] == 8  # the embedding's frame grid
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["vocabularies"]) == {"instrument"}  # labels_of: the instrument task's, built once
    scores = json.loads((tmp_path / "reports" / "instrument_embed" / "scores.json").read_text())
    assert scores["n_clips"] == 6 and 0.0 <= scores["accuracy"] <= 1.0

    wd.record(tmp_path, cfg, sync_cluster)
    (tmp_path / "sync.yaml").write_text("cluster:\n  type: sync\n")
    bundle = tmp_path / "embed.mirpipe"
    res = CliRunner().invoke(main, ["export", "--workdir", str(tmp_path), "--out", str(bundle)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    audio = clip_corpus / "clip05.wav"
    args = [
        "predict",
        str(audio),
        "--model",
        str(bundle),
        "--out",
        str(tmp_path / "pred"),
        "--cluster",
        str(tmp_path / "sync.yaml"),
    ]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = jams.load(str(tmp_path / "pred" / "clip05.jams"), validate=True, strict=True)
    ann = out.search(namespace="tag_open")[0]
    assert ann.sandbox.clip["label"] in {"sine", "square", "saw"}
    assert ann.sandbox.activity["classes"] == ["saw", "sine", "square"]
