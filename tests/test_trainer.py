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


def test_the_host_reads_the_losses_at_logging_points_only_and_the_epoch_loss_is_every_steps(store, tmp_path):
    """A ``float(loss)`` per step would make the host wait for a GPU every step: ``train_step``
    returns the loss as a tensor and ``fit`` reads the steps' losses in one go at an epoch end or a
    checkpoint; the epoch's loss is still the sum of every step's, in step order."""
    from mirpipe.models.trainer import StepLosses

    trainer = _trainer(store, tmp_path)  # 4 steps an epoch, a checkpoint every 3 steps, progress off
    reads: list[list[int]] = []
    per_step: dict[int, float] = {}

    class Counting(StepLosses):
        def read(self):
            out = super().read()
            if out:
                reads.append([step for step, _ in out])
                per_step.update({step: parts["loss"] for step, parts in out})
            return out

    trainer._losses = Counting()
    assert isinstance(trainer.train_step(next(iter(trainer.train_batches(0, 0))))["loss"], torch.Tensor)
    trainer = _trainer(store, tmp_path / "run")
    trainer._losses = Counting()
    trainer.fit(stop_at_step=8)
    assert reads == [[1, 2, 3], [4], [5, 6], [7, 8]]  # checkpoint 3, epoch end 4, checkpoint 6, epoch end 8
    history = trainer.state.history
    assert history[0]["train_loss"] == sum(per_step[s] for s in (1, 2, 3, 4)) / 4
    assert history[1]["train_loss"] == sum(per_step[s] for s in (5, 6, 7, 8)) / 4


def test_step_losses_read_floats_in_step_order_once():
    from mirpipe.models.trainer import StepLosses

    losses = StepLosses()
    losses.add(1, {"loss": torch.tensor(0.25), "ce": torch.tensor(0.125)})
    losses.add(2, {"loss": torch.tensor(1 / 3), "extra": 0.5})  # a plugin task's float part
    assert losses.read() == [(1, {"loss": 0.25, "ce": 0.125}), (2, {"loss": float(torch.tensor(1 / 3)), "extra": 0.5})]
    assert losses.read() == []


def test_the_loader_plan_feeds_a_gpu_from_the_cores_and_leaves_a_cpu_trainer_its_threads():
    from mirpipe.storage.torch_data import loader_plan

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    gpu16 = loader_plan("auto", cuda, n_shards=4, cores=16)
    assert (gpu16.workers, gpu16.prefetch, gpu16.pin_memory) == (4, 2, True)  # 4 divides the shards
    assert loader_plan("auto", cuda, n_shards=4, cores=4).workers == 2  # 3 spare cores, 3 does not divide 4
    assert loader_plan("auto", cuda, n_shards=12, cores=8).workers == 6
    assert loader_plan("auto", cuda, n_shards=4, cores=1).workers == 0
    on_cpu = loader_plan("auto", cpu, n_shards=4, cores=16)
    assert (on_cpu.workers, on_cpu.pin_memory) == (0, False) and "threads" in on_cpu.describe()
    assert loader_plan(2, cpu, n_shards=4, cores=2).prefetch == 4  # as asked
    daemon = loader_plan("auto", cuda, n_shards=4, cores=16, can_fork=False)
    assert daemon.workers == 0 and "distributed.worker.daemon" in daemon.describe()


def test_the_loader_plan_s_batches_are_the_batches_of_any_worker_count(store):
    from mirpipe.storage.torch_data import LoaderPlan

    geometry = store.read_attrs("t0")["features"][TASK.feature]
    spec = StreamSpec("zarr", str(store.root), TASK.feature, TASK.targets.arrays, 32, 64, geometry=geometry)
    keys = [EntryKey(f"t{i}", 150 + 20 * i) for i in range(4)]
    stream = PatchStream(spec, keys, MuxSettings(batch_size=4, n_active=2, rate=4, n_shards=2), seed=3)
    alone = [b for _, b in zip(range(6), epoch_loader(stream, 1))]
    planned = [b for _, b in zip(range(6), epoch_loader(stream, 1, plan=LoaderPlan(2, 3, False)))]
    for a, b in zip(alone, planned, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
