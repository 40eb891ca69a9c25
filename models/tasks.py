"""What the generic trainer needs to know about a task: its feature, targets, network and loss.

A new task is one entry here plus its module (vocabulary, encode, decode, score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class TaskSpec:
    name: str
    feature: str
    targets: tuple[str, ...]
    build: Callable[..., Any]  # (n_bins, **model params) -> torch.nn.Module
    loss: Callable[..., Any]  # (outputs, batch) -> (loss tensor, {head: float})
    metric: Callable[..., tuple[float, float]]  # (outputs, batch) -> (numerator, denominator)
    metric_name: str
    usable: Callable[[list[str]], bool]  # from a track's annotated namespaces: does it teach this task?


def get_task(name: str) -> TaskSpec:
    if name == "chord":
        from . import chord, chord_net

        return TaskSpec(
            name="chord",
            feature=chord.FEATURE,
            targets=chord_net.TARGETS,
            build=chord_net.ChordNet,
            loss=chord_net.loss,
            metric=chord_net.metric,
            metric_name="tag_accuracy",
            usable=lambda namespaces: "chord" in namespaces,
        )
    raise ValueError(f"unknown task {name!r}; tasks are {TASK_NAMES}")


TASK_NAMES = ("chord",)
