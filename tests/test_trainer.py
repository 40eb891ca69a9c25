"""The generic trainer on CPU: checkpoints are complete, and resuming is exact."""

import pytest
import torch
from conftest import toy_chord_store

from mirpipe.models import chord
from mirpipe.models.task import TASKS
from mirpipe.models.trainer import Trainer, TrainerSettings
from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec, track_patches
from mirpipe.storage.torch_data import Feed, epoch_loader, to_tensors

TASK = TASKS.get("chord")
N_BINS = 48


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A small real Zarr store whose chord tags are learnable from the features."""
    return toy_chord_store(tmp_path_factory.mktemp("store"), [150 + 20 * i for i in range(6)], [0, 14, 28, 42, 56, 70], N_BINS)


def _trainer(store, out_dir, workers=0, run_key="run-1", lr_schedule="plateau", **model):
    torch.manual_seed(0)
    params = TASK.network.Params(
        **{"architecture": "cr2", "structured": True, "hidden": 8, "channels": 4, "dropout": 0.3, **model}
    )
    model = TASK.network.build(n_bins=N_BINS, params=params)
    geometry = store.read_attrs("t0")["features"][TASK.feature]  # packed batches and a feed, as the train stage has them
    spec = StreamSpec(
        "zarr", str(store.root), TASK.feature, TASK.targets.arrays, patch_frames=32, slab_frames=64, geometry=geometry
    )
    keys = [EntryKey(f"t{i}", 150 + 20 * i) for i in range(6)]
    stream = PatchStream(spec, keys[:4], MuxSettings(batch_size=4, n_active=2, rate=4, n_shards=2), seed=3)
    settings = TrainerSettings(
        steps_per_epoch=4,
        max_epochs=10,
        patience=10,
        lr=1e-2,
        checkpoint_every=3,
        device="cpu",
        seed=5,
        threads=1,
        deterministic=True,
        lr_patience=3,
        lr_schedule=lr_schedule,
    )
    return Trainer(
        model,
        TASK,
        lambda epoch, skip: epoch_loader(stream, epoch, skip=skip, n_workers=workers),
        lambda: (to_tensors(b) for b in track_patches(spec, keys[4:], 4)),
        settings,
        out_dir,
        run_key=run_key,
        meta={"note": "test"},
        log=lambda m: None,
        tensorboard=False,
        feed=Feed(TASK, geometry),
    )


def _params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("lr_schedule", ["plateau", "cosine"])
def test_k_steps_then_resume_to_2k_equals_2k_in_one_go(store, tmp_path, lr_schedule):
    k = 6  # mid-epoch: the resumed run must skip into epoch 1 exactly
    straight = _trainer(store, tmp_path / "straight", lr_schedule=lr_schedule)
    straight.fit(stop_at_step=2 * k)
    first = _trainer(store, tmp_path / "resumed", lr_schedule=lr_schedule)
    first.fit(stop_at_step=k)
    assert first.state.global_step == k and (tmp_path / "resumed" / "last.pt").exists()
    mid = _params(first)
    second = _trainer(store, tmp_path / "resumed", workers=2, lr_schedule=lr_schedule)  # a fresh process would do the same
    second.fit(stop_at_step=2 * k)
    assert second.state.global_step == 2 * k
    a, b = _params(straight), _params(second)
    assert any(not torch.equal(mid[n], b[n]) for n in b)  # it did train after resuming
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    timing = {"patches_per_s"}
    assert [{k: v for k, v in row.items() if k not in timing} for row in second.state.history] == [
        {k: v for k, v in row.items() if k not in timing} for row in straight.state.history
    ]
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


def test_the_cosine_schedule_anneals_the_learning_rate_to_zero_by_the_last_step(store, tmp_path):
    import math

    trainer = _trainer(store, tmp_path / "cosine", lr_schedule="cosine")  # 10 epochs x 4 steps, lr 1e-2
    trainer.fit(stop_at_step=10)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 10 / 40)))
    trainer.fit()
    assert trainer.state.global_step == 40 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert [row["lr"] for row in trainer.state.history] == sorted((row["lr"] for row in trainer.state.history), reverse=True)


def test_checkpoint_holds_everything_needed_to_resume(store, tmp_path):
    trainer = _trainer(store, tmp_path)
    summary = trainer.fit(stop_at_step=8)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "state", "settings", "meta"} <= set(ckpt)
    assert {"torch", "numpy", "python"} <= set(ckpt["rng"])
    assert ckpt["state"]["global_step"] == 8 and ckpt["state"]["epoch"] == 2 and ckpt["state"]["step_in_epoch"] == 0
    assert len(summary["history"]) == 2 and "tag_accuracy" in summary["history"][0]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["state"]["best_step"] in (4, 8)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_another_run_key_or_a_finished_run_starts_afresh(store, tmp_path):
    _trainer(store, tmp_path).fit(stop_at_step=3)
    other = _trainer(store, tmp_path, run_key="run-2")
    assert not other.try_resume()
    same = _trainer(store, tmp_path)
    assert same.try_resume() and same.state.global_step == 3


def test_training_learns_the_synthetic_task(store, tmp_path):
    trainer = _trainer(store, tmp_path, hidden=16, channels=16, dropout=0.0)
    trainer.settings = TrainerSettings(**{**trainer.settings.__dict__, "max_epochs": 15, "patience": 15})
    summary = trainer.fit()
    assert summary["finished"] and summary["epochs"] == 15
    accuracies = [row["tag_accuracy"] for row in summary["history"]]
    assert accuracies[-1] > accuracies[0] and summary["best_metric"] > 0.8
    assert chord.N_TAGS == trainer.model.tag.out_features


def test_torch_threads_default_to_the_dask_workers_share_of_the_cores():
    """Inside a Dask worker a trainer takes the worker's threads, not every core: trainers side by
    side on one host would otherwise oversubscribe it (3x slower steps measured on 2 cores)."""
    import os

    from mirpipe.models.trainer import default_threads
    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.config import parse_cluster

    assert default_threads() == len(os.sched_getaffinity(0))
    with open_executor(parse_cluster({"type": "local", "n_workers": 1, "threads_per_worker": 3, "memory_limit": "1GiB"})) as ex:
        assert ex.client.submit(default_threads, pure=False).result() == 3
