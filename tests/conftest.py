"""Shared fixtures: tiny demo corpora and configurations that keep the suite fast on 2 cores."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from mirpipe.pipeline.config import PipelineConfig, parse_cluster

SMALL_SHIFTS = [-2, 0, 3]

# Pipeline tests stop at the store; training and evaluation have their own (tests/test_train_evaluate_e2e.py).
NO_TRAINING = {"train": {"tasks": []}, "evaluate": {"tasks": []}}

# A chord model small enough to train in seconds on 2 cores (tests add their own steps and checkpoints).
TINY_CHORD_TRAIN = {
    "tasks": ["chord"],
    "models": {"chord": {"hidden": 16, "channels": 8}},
    "patch_frames": 32,
    "batch_size": 8,
    "n_active": 4,
    "rate": 4,
}
# training long enough to be stopped mid-epoch: only a stop (and the end) writes last.pt mid-run
STOPPABLE_TRAIN = {
    **TINY_CHORD_TRAIN,
    "steps_per_epoch": 25,
    "max_epochs": 3,
    "checkpoint_every": 1000,
    "loader_workers": 0,
    "progress": "lines",
}


def small_config(
    tracks: int = 3, shifts=None, store: str = "zarr", seed: int = 0, mode: str = "feature", **features
) -> PipelineConfig:
    """A demo run of a few short tracks and three pitch shifts."""
    return PipelineConfig.model_validate(
        {
            "synthesize": {
                "tracks": tracks,
                "seed": seed,
                "min_duration": 6.0,
                "max_duration": 10.0,
                "solo_fraction": 0.34,
                "clips_per_family": 0,
            },
            "augment": {"shifts": shifts or SMALL_SHIFTS, "mode": mode},
            "features": {"store": store, **features},
            "run": {"retries": 1, "retry_backoff": 0.0},
            **NO_TRAINING,
        }
    )


@pytest.fixture
def sync_cluster():
    return parse_cluster({"type": "sync"})


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# -- fault-injection fixtures: one small corpus, ingested and augmented once per session -------------

FAULT_SHIFTS = [-1, 0, 2]
FAULT_TRACKS = 4
FAULT_MODE = "audio"  # the fault tests run the audio mode (longer items, so kills land mid-stage); e2e runs feature mode


def corpus_config(corpus: Path, store: str = "zarr", shifts=None, mode: str = FAULT_MODE, **run) -> PipelineConfig:
    """A run over an existing corpus (no synthesize stage)."""
    return PipelineConfig.model_validate(
        {
            "ingest": {"corpus": str(corpus)},
            "augment": {"shifts": shifts or FAULT_SHIFTS, "mode": mode},
            "features": {"store": store},
            "run": {"retries": 1, "retry_backoff": 0.0, **run},
            **NO_TRAINING,
        }
    )


def manifest_rows(workdir: Path) -> dict[str, dict]:
    """The rows of a workdir's manifest.json (a table of columns) as JSON objects, by track."""
    import json

    columns = json.loads((Path(workdir) / "manifest.json").read_text())["columns"]
    return {track: {name: col[i] for name, col in columns.items()} for i, track in enumerate(columns["track"])}


def store_contents(workdir: Path, backend: str = "zarr") -> dict:
    """Every entry's arrays and attributes (less the per-run fingerprint): what "identical store" compares."""
    from mirpipe.storage import open_store

    store = open_store(backend, Path(workdir) / "features")
    out = {}
    for row in store.read_index().values():
        entry = store.read_entry(row.track)
        attrs = {k: v for k, v in entry.attrs.items() if k != "fingerprint"}
        out[row.track] = (entry.arrays, attrs)
    return out


def assert_same_store(a: dict, b: dict) -> None:
    import numpy as np

    assert sorted(a) == sorted(b) and a
    for key in a:
        arrays_a, attrs_a = a[key]
        arrays_b, attrs_b = b[key]
        assert sorted(arrays_a) == sorted(arrays_b), key
        for name in arrays_a:
            assert np.array_equal(arrays_a[name], arrays_b[name], equal_nan=True), (key, name)
        assert attrs_a == attrs_b, key


@pytest.fixture(scope="session")
def fault_corpus(tmp_path_factory) -> Path:
    """Four short demo tracks (6-8 s), synthesized once."""
    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.runner import Runner

    work = tmp_path_factory.mktemp("fault-corpus")
    cfg = PipelineConfig.model_validate(
        {
            "synthesize": {
                "tracks": FAULT_TRACKS,
                "seed": 3,
                "min_duration": 6.0,
                "max_duration": 8.0,
                "solo_fraction": 0.0,
                "clips_per_family": 0,
            }
        }
    )
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        Runner(work, cfg, progress=False).run(ex, only="synthesize")
    return work / "corpus"


@pytest.fixture(scope="session")
def augmented_template(tmp_path_factory, fault_corpus) -> Path:
    """A workdir with ingest done on the fault corpus; copy it, never modify it."""
    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.runner import Runner

    work = tmp_path_factory.mktemp("augmented") / "work"
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        Runner(work, corpus_config(fault_corpus), progress=False).run(ex, until="ingest")
    return work


@pytest.fixture(scope="session")
def reference_store(tmp_path_factory, augmented_template, fault_corpus) -> dict:
    """The store of an uninterrupted LocalCluster run of the fault corpus."""
    import shutil

    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.runner import Runner

    work = tmp_path_factory.mktemp("reference") / "work"
    shutil.copytree(augmented_template, work)
    with open_executor(parse_cluster({"type": "local", "n_workers": 2, "memory_limit": "3GiB"})) as ex:
        (report,) = Runner(work, corpus_config(fault_corpus), progress=False).run(ex, only="features")
    assert report.done == report.total == FAULT_TRACKS
    return store_contents(work)


@pytest.fixture
def augmented(tmp_path, augmented_template) -> Path:
    """A fresh copy of the augmented workdir."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(augmented_template, work)
    return work


def toy_chord_store(root: Path, lengths, tags, n_bins: int, seed: int = 0):
    """A small real Zarr store whose chord tags are learnable from the features: one entry per
    length, its frames cycling through ``tags`` (vocabulary classes) in runs of ten, each tag's
    bin raised in the CQT."""
    import numpy as np

    from mirpipe.storage import open_store

    store = open_store("zarr", root)
    rng = np.random.default_rng(seed)
    geometry = {
        "kind": "cqt",
        "sr": 22050,
        "hop_length": 2048,
        "fmin": 32.7,
        "n_bins": n_bins,
        "bins_per_octave": 36,
        "margin_bins": 0,
        "frame_rate": 22050 / 2048,
    }
    for i, n in enumerate(lengths):
        tag = np.repeat(rng.choice(list(tags), n // 10 + 1), 10)[:n].astype(np.int16)
        cqt = rng.normal(-60, 3, (n, n_bins)).astype(np.float16)
        cqt[np.arange(n), tag % n_bins] += 30
        root_pc = np.where(tag < 168, tag // 14, 12).astype(np.int16)
        pitches = np.zeros((n, 12), np.int8)
        pitches[np.arange(n), root_pc % 12] = 1
        arrays = {
            "cqt": cqt,
            "targets/chord_tag": tag,
            "targets/chord_root": root_pc,
            "targets/chord_bass": root_pc,
            "targets/chord_pitches": pitches,
        }
        store.write_entry(f"t{i}", {k: v[None] for k, v in arrays.items()}, {"variants": [0], "features": {"cqt": geometry}})
    return store


# -- a tiny evaluated workdir (chord, 6 short tracks, 2 training steps) ------------------------------

TINY_CHORD = {
    "tasks": ["chord"],
    "models": {"chord": {"hidden": 8, "channels": 4}},
    "patch_frames": 16,
    "batch_size": 4,
    "n_active": 4,
    "rate": 4,
    "steps_per_epoch": 2,
    "max_epochs": 1,
    "loader_workers": 0,
}


def build_workdir(root):
    """A tiny workdir through the real pipeline: 6 short demo tracks, features, a chord model trained
    for 2 steps and evaluated (the in-process cluster, recorded as a CLI run records it)."""
    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.runner import Runner
    from mirpipe.pipeline.workdir import record

    data = small_config(tracks=6, shifts=[0, 2]).model_dump(mode="json")
    data["synthesize"].update(solo_fraction=0.0, min_duration=5.0, max_duration=6.0)
    data["train"] = {**data["train"], **TINY_CHORD}
    data["evaluate"] = {**data["evaluate"], "tasks": ["chord"], "figures": 0, "baselines": False}
    cfg = type(small_config()).model_validate(data)
    cluster = parse_cluster({"type": "sync"})
    record(root, cfg, cluster)
    with open_executor(cluster) as ex:
        reports = {r.stage: r for r in Runner(root, cfg, progress=False).run(ex)}
    assert reports["evaluate"].done >= 1 and not reports["evaluate"].failed, reports["evaluate"].failures
    return root


@pytest.fixture(scope="session")
def evaluated_workdir(tmp_path_factory):
    """One tiny evaluated workdir for the tests of ``mirpipe.open``, experiments and the report page
    (they read it; experiments add theirs under it)."""
    return build_workdir(tmp_path_factory.mktemp("evaluated"))


def _pyin_scores(perf, y, fam, sr: int = 22050) -> tuple[float, float]:
    """(raw pitch accuracy, median cents error on frames voiced in both) of pYIN on a rendered
    demo performance ``y`` against its labelled lead contour; pYIN searches the family's range."""
    import librosa
    import mir_eval
    import numpy as np

    from mirpipe.demo.labels import contour

    f0, voiced, _ = librosa.pyin(
        y,
        fmin=librosa.midi_to_hz(fam.low + fam.sounding - 2),
        fmax=librosa.midi_to_hz(fam.high + fam.sounding + 2),
        sr=sr,
        frame_length=2048,
        hop_length=256,
    )
    est_t = librosa.times_like(f0, sr=sr, hop_length=256)
    ref_t, ref_hz, ref_v = contour(perf)
    rpa = mir_eval.melody.evaluate(ref_t, np.where(ref_v, ref_hz, 0), est_t, np.where(voiced, np.nan_to_num(f0), 0))[
        "Raw Pitch Accuracy"
    ]
    ref_at = np.interp(est_t, ref_t, np.where(ref_v, ref_hz, np.nan))
    both = voiced & np.isfinite(ref_at) & (np.interp(est_t, ref_t, ref_v.astype(float)) == 1)
    return rpa, float(np.median(np.abs(1200 * np.log2(f0[both] / ref_at[both]))))


@pytest.fixture
def pyin_scores():
    """How well pYIN on a rendered demo performance follows its labelled contour (``_pyin_scores``)."""
    return _pyin_scores
