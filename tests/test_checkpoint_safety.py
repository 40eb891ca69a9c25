"""Checkpoints and bundles are read with torch's safe unpickler: a crafted file never runs code.

A malicious pickle (its ``__reduce__`` would create a marker file) is planted where each loader
looks -- a workdir's ``train/<task>/best.pt`` (evaluate, ``mirpipe export``, ``mirpipe predict
--model WORKDIR``), the trainer's resume ``last.pt``, a ``.mirpipe`` bundle -- and each refuses it
with an error naming the file, the marker never appears, and no message advises loading it unsafely.
What the trainer writes is plain enough for the safe loader, and resumes from it.
"""

import os
import pathlib
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import small_config, toy_chord_store

from mirpipe.models.bundle import BundleError, load_bundle
from mirpipe.models.checkpoint import CheckpointError, checkpoint_is_safe, load_checkpoint, plain
from mirpipe.models.task import TASKS
from mirpipe.models.trainer import Trainer, TrainerSettings, TrainState
from mirpipe.pipeline import workdir as wd
from mirpipe.pipeline.cli import main
from mirpipe.pipeline.config import parse_cluster
from mirpipe.pipeline.inference import bundle_from_workdir
from mirpipe.stages import StageContext, WorkItem
from mirpipe.stages.evaluate import load_model
from mirpipe.stages.train import Train

TASK = TASKS.get("chord")
N_BINS = 24
UNSAFE_ADVICE = "weights_only=False"


class ShellPayload:
    """Unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class TouchPayload:
    """Unpickling it calls ``pathlib.Path.touch(marker)``: no shell needed."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


PAYLOADS = [ShellPayload, TouchPayload]


def plant(path: Path, payload: type, marker: Path, raw: bool = False) -> Path:
    """A checkpoint-shaped file at ``path`` whose unpickling would create ``marker``: a torch zip
    checkpoint, or (``raw``) a bare pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"model": {}, "meta": {"model": {}, "n_bins": N_BINS}, "state": {"run_key": "x"}, "evil": payload(marker)}
    if raw:
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    assert not marker.exists()
    return path


def assert_refused(message: str, path: Path, marker: Path) -> None:
    assert str(path) in message and "cannot be loaded safely" in message, message
    assert UNSAFE_ADVICE not in message and "weights_only" not in message, message
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_payloads_are_live(tmp_path, payload):
    """Sanity: a plain unpickler runs them (so a refusal below is what keeps the marker away)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(payload(marker)))
    assert marker.exists()


# -- the loader every checkpoint read goes through --------------------------------------------------


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the bare pickle
@pytest.mark.parametrize("raw", [False, True], ids=["torch-zip", "bare-pickle"])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_load_checkpoint_refuses_code(tmp_path, payload, raw):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "best.pt", payload, marker, raw=raw)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert_refused(str(err.value), path, marker)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # torch's advice is not chained in
    assert not checkpoint_is_safe(path)


def test_an_old_checkpoint_with_numpy_state_is_refused_not_run(tmp_path):
    """What mirpipe wrote before (numpy RNG state in the pickle): refused by the safe loader, said so."""
    path = tmp_path / "last.pt"
    torch.save({"rng": {"numpy": np.random.get_state()}, "state": {"run_key": "run"}}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)
    assert not checkpoint_is_safe(path)


def test_plain_turns_what_tasks_return_into_safe_values():
    from dataclasses import dataclass
    from enum import Enum

    class Kind(str, Enum):  # noqa: UP042 - the str mix-in is the case under test (StrEnum is one too)
        A = "a"

    @dataclass
    class Point:
        x: float
        where: Path

    value = {
        "threshold": np.float64(0.25),
        "n": np.int64(3),
        "prior": np.eye(2),
        "pair": (1, 2.0),
        "point": Point(1.5, Path("/a/b")),
        "w": torch.ones(2),
        "none": None,
        "kind": Kind.A,
    }
    out = plain(value)
    assert out["threshold"] == 0.25 and type(out["threshold"]) is float and type(out["n"]) is int
    assert type(out["kind"]) is str and out["kind"] == "a"
    assert out["prior"] == [[1.0, 0.0], [0.0, 1.0]] and out["pair"] == [1, 2.0]
    assert out["point"] == {"x": 1.5, "where": "/a/b"} and out["w"] is value["w"]
    with pytest.raises(TypeError, match="plain values"):
        plain({"f": object()})


# -- the trainer: what it writes is safe; an unsafe last.pt is an unreadable one (start over) -----------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_chord_store(tmp_path_factory.mktemp("store"), [120] * 3, [0, 14, 28], N_BINS)


def _trainer(store, out_dir: Path, log=lambda m: None) -> Trainer:
    from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec, track_patches
    from mirpipe.storage.torch_data import epoch_loader, to_tensors

    torch.manual_seed(0)
    model = TASK.network.build(
        n_bins=N_BINS, params=TASK.network.Params(architecture="cr2", structured=True, hidden=8, channels=4)
    )
    spec = StreamSpec("zarr", str(store.root), TASK.feature, TASK.targets.arrays, patch_frames=32, slab_frames=64)
    keys = [EntryKey(f"t{i}", 120) for i in range(3)]
    stream = PatchStream(spec, keys[:2], MuxSettings(batch_size=4, n_active=2, rate=4, n_shards=1), seed=3)
    settings = TrainerSettings(
        steps_per_epoch=3, max_epochs=3, patience=5, checkpoint_every=2, device="cpu", seed=5, threads=1, deterministic=True
    )
    # meta as a caller might hand it: numpy values, a path, a tuple (stored as plain values)
    meta = {"state": {"threshold": np.float32(0.5), "prior": np.ones(3)}, "source": Path("/x"), "shape": (1, 2)}
    return Trainer(
        model,
        TASK,
        lambda epoch, skip: epoch_loader(stream, epoch, skip=skip, n_workers=0),
        lambda: (to_tensors(b) for b in track_patches(spec, keys[2:], 4)),
        settings,
        out_dir,
        run_key="run",
        meta=meta,
        log=log,
        tensorboard=False,
        progress="off",
    )


def test_the_trainers_checkpoints_load_safely_and_resume(store, tmp_path):
    first = _trainer(store, tmp_path)
    first.fit(stop_at_step=4)
    for name in ("last.pt", "best.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / name) == []
        ckpt = torch.load(tmp_path / name, weights_only=True)
        assert ckpt["meta"] == {"state": {"threshold": 0.5, "prior": [1.0, 1.0, 1.0]}, "source": "/x", "shape": [1, 2]}
        assert TrainState(**ckpt["state"]).run_key == "run"
    lines = []
    second = _trainer(store, tmp_path, log=lines.append)
    assert second.try_resume() and second.state.global_step == 4
    assert not any("unreadable" in line for line in lines)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_malicious_last_pt_is_an_unreadable_checkpoint_and_training_starts_over(store, tmp_path, payload):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "out" / "last.pt", payload, marker)
    lines = []
    trainer = _trainer(store, tmp_path / "out", log=lines.append)
    assert not trainer.try_resume()
    said = [line for line in lines if "ignoring unreadable checkpoint" in line]
    assert len(said) == 1
    assert_refused(said[0], path, marker)
    summary = trainer.fit(stop_at_step=2)  # started over: the planted file is replaced by a safe one
    assert summary["steps"] == 2 and not marker.exists() and checkpoint_is_safe(path)


# -- a workdir: evaluate's load, bundle_from_workdir, mirpipe export / predict --model WORKDIR ---------


@pytest.fixture
def workdir(tmp_path):
    """A recorded workdir (what `mirpipe run` records) training chord; no checkpoint yet."""
    data = small_config().model_dump(mode="json")
    data["train"] = {**data["train"], "tasks": ["chord"]}
    data["evaluate"] = {**data["evaluate"], "tasks": ["chord"]}
    cfg = type(small_config()).model_validate(data)
    work = tmp_path / "work"
    wd.record(work, cfg, parse_cluster({"type": "sync"}))
    ctx = StageContext(work, cfg.stage_params(), tuple(cfg.plugins))
    return work, ctx


@pytest.mark.parametrize("payload", PAYLOADS)
def test_evaluate_and_bundle_from_workdir_refuse_a_malicious_best_pt(workdir, tmp_path, payload):
    work, ctx = workdir
    marker = tmp_path / "pwned"
    path = plant(work / "train" / "chord" / "best.pt", payload, marker)
    with pytest.raises(CheckpointError) as err:
        load_model(ctx, "chord", "best", torch.device("cpu"))
    assert_refused(str(err.value), path, marker)
    with pytest.raises(CheckpointError) as err:
        bundle_from_workdir(ctx)
    assert_refused(str(err.value), path, marker)
    record = SimpleNamespace(task="chord", checkpoint="train/chord/best.pt")  # the fields verify reads
    item = WorkItem("chord", payload={"task": "chord"})
    assert Train().outputs_valid(item, ctx, record)  # planning: a stat, the file is there
    reason = Train().verify_outputs(item, ctx, record)  # `mirpipe verify`: damaged, --repair trains it again
    assert reason is not None and reason.startswith("checkpoint train/chord/best.pt: not one the safe loader accepts")
    assert not marker.exists()


def _cli(args) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


@pytest.mark.parametrize("payload", PAYLOADS)
def test_export_and_predict_refuse_a_workdir_with_a_malicious_best_pt(workdir, tmp_path, payload):
    work, _ = workdir
    marker = tmp_path / "pwned"
    path = plant(work / "train" / "chord" / "best.pt", payload, marker)
    code, out = _cli(["export", "--workdir", work, "--out", tmp_path / "m.mirpipe"])
    assert code == 2 and "mirpipe: error:" in out
    assert_refused(out, path, marker)
    assert not (tmp_path / "m.mirpipe").exists()
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    code, out = _cli(["predict", audio, "--model", work, "--out", tmp_path / "out"])
    assert code == 2 and "mirpipe: error:" in out
    assert_refused(out, path, marker)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_malicious_bundle_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.mirpipe"
    torch.save({"format": 1, "tasks": {}, "features": {}, "versions": {}, "evil": payload(marker)}, path)
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    message = str(err.value)
    assert str(path) in message and "cannot be loaded safely" in message and "weights_only" not in message
    assert not marker.exists()
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    code, out = _cli(["predict", audio, "--model", path, "--out", tmp_path / "out"])
    assert code == 2 and str(path) in out and "weights_only" not in out and not marker.exists()
