"""One declaration of the training settings: the ``train:`` section inherits the trainer's fields,
and the fingerprint read from each field's declaration covers what it covered before."""

from __future__ import annotations

from typing import Any

import pytest

from mirpipe.models.settings import TrainerSettings, TrainingSettings, fingerprinted
from mirpipe.stages.train import TrainParams

# The fingerprint as stages/train.py computed it before the fields declared it (pinned here).
OLD_NOT_FINGERPRINTED = {
    "device",
    "threads",
    "loader_workers",
    "checkpoint_every",
    "progress",
    "progress_interval",
    "tasks",
    "models",
    "overrides",
    "compile",  # added later: how fast training runs, not what it learns
    "channels_last",
    "deform_share",  # added later: each task's item carries the share it trains with (augment.deformations)
}
OLD_SINCE_ADDED = {"sampling": "track", "lr_schedule": "plateau"}


def old_fingerprinted(p: TrainParams) -> dict[str, Any]:
    dumped = p.model_dump(mode="json", exclude=OLD_NOT_FINGERPRINTED)
    return {k: v for k, v in dumped.items() if k not in OLD_SINCE_ADDED or v != OLD_SINCE_ADDED[k]}


DEFAULT_KEYS = {
    "patch_frames",
    "slab_frames",
    "batch_size",
    "n_active",
    "rate",
    "mux_mode",
    "n_shards",
    "steps_per_epoch",
    "max_epochs",
    "patience",
    "lr",
    "lr_factor",
    "lr_patience",
    "weight_decay",
    "grad_clip",
    "seed",
    "amp",
}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"sampling": "frames"},
        {"lr_schedule": "cosine"},
        {"device": "cpu", "threads": 2, "loader_workers": 2, "checkpoint_every": 7, "progress": "off", "progress_interval": 5},
        {"loader_workers": "auto", "compile": True, "channels_last": True},
        {"max_epochs": 3, "patience": 1, "lr": 0.01, "batch_size": 8, "seed": 4, "amp": False},
        {"tasks": ["chord"], "overrides": {"chord": {"batch_size": 16}}},
    ],
)
def test_fingerprint_is_the_one_before_the_declarations(changes):
    p = TrainParams(**changes)
    assert fingerprinted(p) == old_fingerprinted(p)
    for task in p.overrides:
        assert fingerprinted(p.for_task(task)) == old_fingerprinted(p.for_task(task))


def test_fingerprinted_keys_by_default():
    assert set(fingerprinted(TrainParams())) == DEFAULT_KEYS


def test_one_declaration_with_the_pipeline_defaults():
    for name in TrainingSettings.model_fields:
        assert name in TrainParams.model_fields
        assert TrainParams.model_fields[name].default == TrainingSettings.model_fields[name].default
    assert TrainerSettings().max_epochs == TrainParams().max_epochs == 8
    assert TrainerSettings().patience == TrainParams().patience == 4


def test_trainer_settings_from_the_section():
    p = TrainParams(max_epochs=3, lr=0.01, device="cpu", threads=1, batch_size=8)
    s = p.trainer_settings()
    assert type(s) is TrainerSettings and not s.deterministic
    assert (s.max_epochs, s.lr, s.device, s.threads) == (3, 0.01, "cpu", 1)
    # what a checkpoint's "settings" holds: the trainer's fields, in the order the dataclass had
    assert list(s.model_dump(mode="json")) == [
        "steps_per_epoch",
        "max_epochs",
        "patience",
        "lr",
        "weight_decay",
        "lr_schedule",
        "lr_factor",
        "lr_patience",
        "grad_clip",
        "checkpoint_every",
        "device",
        "amp",
        "seed",
        "threads",
        "compile",
        "channels_last",
        "deterministic",
    ]
    assert p.trainer_settings(deterministic=True).deterministic


def test_the_shipped_cosine_schedules_run_to_their_end():
    """Early stopping inside a cosine anneal ends training at the lr it had reached (the demo's
    instrument model stopped at step 800 of 1500 with the global patience of 4): every task the
    shipped pipeline.yaml trains on a cosine schedule has patience for all its epochs."""
    from pathlib import Path

    from mirpipe.pipeline.config import load_pipeline

    train = load_pipeline(Path(__file__).resolve().parents[1] / "pipeline.yaml").train
    cosine = [name for name in train.tasks if train.for_task(name).lr_schedule == "cosine"]
    assert "instrument" in cosine
    for name in cosine:
        settings = train.for_task(name)
        assert settings.patience >= settings.max_epochs, name
