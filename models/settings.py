"""The optimisation settings of a training run, declared once.

``TrainingSettings`` holds the fields the trainer reads (epochs, learning rate and its schedule,
clipping, checkpoints, device, seed, threads) with the defaults users and the demo get.
``TrainerSettings`` is what ``models.trainer.Trainer`` takes (those fields, plus ``deterministic``
for tests and benchmarks); ``stages.train.TrainParams`` (the ``train:`` section) inherits the same
fields, so there is no second copy to keep in step.

Each field says whether it is hashed into a training's fingerprint: ``NOT_FINGERPRINTED`` for
settings that change where or how fast training runs, not what it learns; ``since(value)`` for a
setting added after models were trained, left out at the value that is what training did before
it existed (an upgrade does not retrain). ``fingerprinted`` reads these declarations.
No torch here: the configuration is validated without importing it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NOT_FINGERPRINTED: dict[str, Any] = {"fingerprint": False}


def since(value: Any) -> dict[str, Any]:
    """A field's marker: fingerprinted except at ``value`` (its behaviour before the field existed)."""
    return {"fingerprint_unless": value}


class TrainingSettings(BaseModel):
    """Optimisation and trainer settings shared by every task (fields in the trainer's order)."""

    model_config = ConfigDict(extra="forbid")
    steps_per_epoch: int = Field(100, ge=1)
    max_epochs: int = Field(8, ge=1)
    patience: int = Field(
        4,
        ge=1,
        description="epochs without improvement before stopping (with lr_schedule cosine, set it to max_epochs: "
        "an early stop ends the anneal at the lr it had reached)",
    )
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["plateau", "cosine"] = Field(
        "plateau",
        description="plateau: ReduceLROnPlateau on the validation metric (lr_factor, lr_patience); "
        "cosine: from lr down to 0 over max_epochs x steps_per_epoch, stepped every step",
        json_schema_extra=since("plateau"),
    )
    lr_factor: float = Field(0.5, gt=0, lt=1)
    lr_patience: int = Field(2, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints", json_schema_extra=NOT_FINGERPRINTED)
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N", json_schema_extra=NOT_FINGERPRINTED)
    amp: bool = Field(True, description="mixed precision on CUDA")
    seed: int = 0
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads; default: in a Dask worker its own threads (its share of the cores), else all cores",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for training steps (benchmarks/bench_gpu_train.py --variants measures it)",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    channels_last: bool = Field(
        False,
        description="4-D model inputs (the HCQT) and weights in channels-last memory order (faster convolutions on "
        "tensor cores; benchmarks/bench_gpu_train.py --variants measures it)",
        json_schema_extra=NOT_FINGERPRINTED,
    )

    def trainer_settings(self, **changes: Any) -> TrainerSettings:
        """These settings as the trainer takes them (only ``TrainingSettings``' fields, so a subclass's
        other fields do not reach the checkpoint)."""
        return TrainerSettings(**{name: getattr(self, name) for name in TrainingSettings.model_fields}, **changes)


class TrainerSettings(TrainingSettings):
    """What ``Trainer`` takes: the training settings and whether torch runs deterministic algorithms."""

    deterministic: bool = Field(False, json_schema_extra=NOT_FINGERPRINTED)


def fingerprinted(settings: BaseModel) -> dict[str, Any]:
    """The fields of ``settings`` (JSON values) that a training's fingerprint covers, per each field's
    declaration (``NOT_FINGERPRINTED``, ``since``)."""
    dumped = settings.model_dump(mode="json")
    out = {}
    for name, info in type(settings).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("fingerprint") is False:
            continue
        if "fingerprint_unless" in extra and dumped[name] == extra["fingerprint_unless"]:
            continue
        out[name] = dumped[name]
    return out
