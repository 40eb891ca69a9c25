"""Instrument task: a fixed 8-class vocabulary (Medley-solos-DB style) and frame targets
(targets only, no network yet)."""

from __future__ import annotations

import numpy as np

from .task import TASKS, Task, annotations

# The demo synthesizer's timbres; a user corpus tags its tracks with these names (tag_open).
INSTRUMENTS = ("organ", "pluck", "epiano", "mallet", "bowed", "reed", "flute", "brass")
INDEX = {name: i for i, name in enumerate(INSTRUMENTS)}


def encode(jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
    """Multi-hot (T, 8) of the instruments whose ``tag_open`` observation covers each frame.

    Tags outside the vocabulary are ignored; a track without tags is all zeros.
    """
    times = np.asarray(frame_times, dtype=float)
    labels = np.zeros((len(times), len(INSTRUMENTS)), dtype=np.uint8)
    for ann in annotations(jam, "tag_open"):  # tag_* namespaces converted
        for obs in ann.data:
            k = INDEX.get(str(obs.value))
            if k is None:
                continue
            inside = (times >= obs.time) & (times < obs.time + max(obs.duration, 1e-9))
            labels[inside, k] = 1
    return {"instruments": labels}


@TASKS.register
class InstrumentTask(Task):
    """Which instruments sound in each frame."""

    name = "instrument"
    namespace = "tag_open"
    merges_annotations = True  # tags from several annotations all hold
    targets = ("targets/instruments",)
    trainable = False

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        return encode(jam, frame_times)

    def transpose(self, targets: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        return targets  # a transposed flute is still a flute
