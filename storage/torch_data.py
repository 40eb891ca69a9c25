"""The bridge from patch streams to ``torch.utils.data``, and from the loader's batches to the model's.

Each DataLoader worker takes the shards ``worker, worker + n_workers, ...`` of the
stream; the loader's round-robin over workers then restores the global batch
order, so batch ``i`` of an epoch is the same with 0, 1 or 2 workers.

Batches cross the worker boundary small: arrays as the store keeps them (``to_tensors`` converts
nothing; with ``StreamSpec.geometry`` set, the feature as its kind's stored codes,
``FeatureKind.packer``) and targets as stored (f0, not a salience matrix). The trainer applies a
``Feed`` on its device: the model input (``FeatureKind.device_view``), floats as float32 and
integers as int64, then the targets the task derives there (``Network.on_device``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .feature_kinds import FEATURE_KINDS
from .stream import PatchStream


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Every array as a tensor of its own dtype (uint8 codes, float16 features, int16 targets stay
    as small as stored; ``Feed`` converts them where the model runs)."""
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in batch.items()}


def batch_bytes(batch: Mapping[str, Any]) -> int:
    """Bytes of a batch's arrays (numpy or torch): what crosses a DataLoader worker boundary."""
    return sum(int(a.nbytes) if isinstance(a, np.ndarray) else a.numel() * a.element_size() for a in batch.values())


class Feed:
    """What the trainer applies to each batch on its device: the loader's compact batch -> the model's.

    1. the model input from the feature's parts (``FeatureKind.device_view`` of ``geometry``; without
       a geometry the batch already holds the model input, as ``StreamSpec.geometry`` None streams it);
    2. every other array as the losses take it: floats as float32, integers as int64;
    3. the targets the task derives on the device (``task.network.on_device``, e.g. a salience
       map from f0).

    ``task`` is the streamed task (its ``feature`` and ``network``); a pure function of the batch,
    so resuming stays exact.
    """

    def __init__(self, task: Any, geometry: Mapping[str, Any] | None = None):
        self.feature: str = task.feature
        self.network = task.network
        self.view: Any = None
        self.octaves: torch.Tensor | None = None  # where the input's bins lie (timbre augmentation)
        self.db_floor: float | None = None  # the stored frames' silence, which a gain keeps
        if geometry is not None:
            kind = FEATURE_KINDS.get(geometry["kind"])
            self.view = kind.device_view(geometry)
            octaves = kind.octaves(geometry)
            self.octaves = None if octaves is None else torch.from_numpy(octaves)
            self.db_floor = kind.db_floor(geometry)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prefix = self.feature + ":"
        parts: dict[str, torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        timbre: dict[str, torch.Tensor] = {}
        for name, t in batch.items():
            if name == self.feature:
                parts[""] = t
            elif name.startswith(prefix):
                parts[name[len(prefix) :]] = t
            elif name.startswith(TIMBRE_PREFIX):
                timbre[name[len(TIMBRE_PREFIX) :]] = t
            else:
                out[name] = t.float() if t.is_floating_point() else t.long()
        if parts:
            x = parts[""] if self.view is None else self.view(parts)
            x = x.float()
            if timbre:
                if self.octaves is None:
                    raise ValueError(
                        f"{self.feature}: timbre augmentation needs the feature kind's bin positions (FeatureKind.octaves)"
                    )
                self.octaves = self.octaves.to(x.device)
                x = deform_timbre(
                    x, self.octaves, timbre["tilt"], timbre["snr"], timbre["colour"], timbre.get("gain"), self.db_floor
                )
            out = {self.feature: x, **out}
        return out if self.network is None else self.network.on_device(out)


TIMBRE_PREFIX = "aug:"
LOG10_OVER_10 = math.log(10.0) / 10.0


def deform_timbre(
    x: torch.Tensor,
    octaves: torch.Tensor,
    tilt: torch.Tensor,
    snr: torch.Tensor,
    colour: torch.Tensor,
    gain: torch.Tensor | None = None,
    floor: float | None = None,
) -> torch.Tensor:
    """A batch of dB spectra (``(B, ...)``, bins last; ``octaves`` each bin's position, broadcast
    against one patch) with each patch's EQ tilt (dB per octave about the middle of the range), gain
    (dB; None: none) and additive noise summed in power: a noise floor ``snr`` dB below the patch's
    peak (after the gain) at mid-range, sloping by ``colour`` dB per octave (NaN ``snr``: none).

    A gain moves every value above the silence ``floor`` (each patch's minimum when None) and none
    below it: silence stays silence, as in a louder or quieter recording of the same music, and what
    a quieter one pushes under the floor is cut there, as the store cuts it. Torch, on the batch's device."""
    lead = (-1,) + (1,) * (x.dim() - 1)
    centred = (octaves - (octaves.max() + octaves.min()) / 2).to(x.dtype)
    y = x + tilt.reshape(lead).to(x.dtype) * centred
    peak = x.flatten(1).amax(dim=1)
    if gain is not None:
        g = gain.reshape(lead).to(x.dtype)
        lowest = x.flatten(1).amin(dim=1).reshape(lead) if floor is None else torch.full_like(g, floor)
        # cut at the floor only what the gain itself pushes under it: a zero gain leaves y (tilt and all) as it is
        y = torch.where(x > lowest, torch.maximum(y + g, torch.minimum(y, lowest)), y)
        peak = peak + gain.to(x.dtype)
    noisy = ~torch.isnan(snr)
    level = peak - torch.nan_to_num(snr, nan=0.0)
    noise = level.reshape(lead) + colour.reshape(lead).to(x.dtype) * centred
    with_noise = torch.logaddexp(y * LOG10_OVER_10, noise * LOG10_OVER_10) / LOG10_OVER_10
    return torch.where(noisy.reshape(lead), with_noise, y)


class PatchDataset(IterableDataset):
    """One epoch of a ``PatchStream`` as an iterable of batches (a dict of tensors): endless, or its
    first ``steps`` batches (counted over all workers, from batch ``skip`` on)."""

    def __init__(self, stream: PatchStream, epoch: int = 0, skip: int = 0, n_workers: int = 0, steps: int | None = None):
        super().__init__()
        stream.check_workers(n_workers)
        self.stream = stream
        self.epoch = epoch
        self.skip = skip
        self.steps = steps

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an endless patch stream has no length (give steps)")
        return self.steps

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = self.stream.batches(self.epoch, worker, n_workers, skip=self.skip)
        if self.steps is not None:  # this worker's share of global batches skip .. skip + steps - 1
            batches = islice(batches, max(0, -(-(self.steps - worker) // n_workers)))
        for batch in batches:
            yield to_tensors(batch)


BATCHES_IN_FLIGHT = 8  # batches the loader workers hold ready in all (prefetch = this / workers, at least 2)


@dataclass(frozen=True)
class LoaderPlan:
    """How the trainer's DataLoader runs: worker processes, batches each prefetches, and whether its
    batches land in pinned (page-locked) memory so that the copy to a GPU is asynchronous."""

    workers: int = 0
    prefetch: int | None = None
    pin_memory: bool = False
    why: str = ""

    def describe(self) -> str:
        where = (
            f"{self.workers} loader workers, {self.prefetch} batches prefetched each" if self.workers else "read in the trainer"
        )
        return f"{where}{', pinned memory' if self.pin_memory else ''}{f' ({self.why})' if self.why else ''}"


def loader_plan(
    requested: int | Literal["auto"], device: torch.device, n_shards: int, cores: int, can_fork: bool = True
) -> LoaderPlan:
    """The loader for a trainer on ``device`` with ``cores`` CPU cores (``train.loader_workers``).

    ``auto``: on a GPU, the largest worker count that divides the stream's shards (so batches do not
    depend on it) and leaves one core to the training loop; on a CPU, none: there the model's own
    threads use the cores, and a loader process would take them away (reading is a few % of a CPU
    step). Workers are started only where this process may start processes: a Dask worker is a
    daemonic process unless its Dask config says ``distributed.worker.daemon: false``."""
    cuda = device.type == "cuda"
    if requested == "auto":
        spare = max(0, cores - 1)
        workers = max((d for d in range(1, n_shards + 1) if n_shards % d == 0 and d <= spare), default=0) if cuda else 0
        why = f"auto: {cores} cores, {n_shards} shards" if cuda else "auto: the trainer's threads use the CPU cores"
    else:
        workers, why = int(requested), ""
    if workers and not can_fork:
        workers, why = 0, "this process is daemonic (a Dask worker): set distributed.worker.daemon false for loader workers"
    prefetch = max(2, math.ceil(BATCHES_IN_FLIGHT / workers)) if workers else None
    return LoaderPlan(workers, prefetch, cuda, why)


def epoch_loader(
    stream: PatchStream, epoch: int, skip: int = 0, n_workers: int = 0, plan: LoaderPlan | None = None
) -> DataLoader:
    """A DataLoader over one epoch's batches, from batch ``skip`` on (``plan``: its workers, prefetch and
    pinned memory; else ``n_workers`` workers, 4 batches prefetched each).

    It has its own generator so creating it never consumes the global torch RNG
    (which would make a resumed run diverge from an uninterrupted one).
    """
    plan = plan or LoaderPlan(n_workers, 4 if n_workers else None)
    return DataLoader(PatchDataset(stream, epoch, skip, plan.workers), **loader_options(plan))


def loader_options(plan: LoaderPlan) -> dict[str, Any]:
    """DataLoader arguments of a plan: whole batches from the dataset, and a generator of its own."""
    return {
        "batch_size": None,
        "num_workers": plan.workers,
        "generator": torch.Generator().manual_seed(0),
        "persistent_workers": False,
        "prefetch_factor": plan.prefetch,
        "pin_memory": plan.pin_memory,
    }


class StreamLoader(DataLoader):
    """A DataLoader over a ``PatchStream`` for code of one's own: each ``iter()`` is the next epoch
    (``steps`` batches, epochs numbered from ``epoch``), the same batches with any worker count that
    divides the stream's shards.

    Batches cross the worker boundary compact (``to_tensors``); with a ``feed`` each batch is then moved
    to ``device`` and made into model input there (``Feed``: float32 features, int64 targets), as the
    trainer does. Without one, batches come as streamed (moved to ``device``)."""

    def __init__(
        self,
        stream: PatchStream,
        steps: int,
        n_workers: int = 0,
        feed: Feed | None = None,
        device: str | torch.device = "cpu",
        epoch: int = 0,
    ):
        # pinned on a GPU: the copy to the device runs asynchronously
        plan = LoaderPlan(n_workers, 4 if n_workers else None, torch.device(device).type == "cuda")
        super().__init__(PatchDataset(stream, epoch, 0, n_workers, steps=steps), **loader_options(plan))
        self.feed = feed
        self.device = torch.device(device)
        self.next_epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:  # type: ignore[override]
        self.dataset.epoch = self.next_epoch  # type: ignore[attr-defined]
        self.next_epoch += 1
        for batch in super().__iter__():
            moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            yield moved if self.feed is None else self.feed(moved)
