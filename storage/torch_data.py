"""The bridge from patch streams to ``torch.utils.data``: batches ready for a trainer.

Each DataLoader worker takes the shards ``worker, worker + n_workers, ...`` of the
stream; the loader's round-robin over workers then restores the global batch
order, so batch ``i`` of an epoch is the same with 0, 1 or 2 workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .stream import PatchStream


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Features as float32; integer targets as int64 (class indices and masks)."""
    out = {}
    for name, a in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(a))
        out[name] = t.float() if a.dtype.kind == "f" else t.long()
    return out


class PatchDataset(IterableDataset):
    """One epoch of a ``PatchStream`` as an endless iterable of batches (a dict of tensors)."""

    def __init__(self, stream: PatchStream, epoch: int = 0, skip: int = 0, n_workers: int = 0):
        super().__init__()
        stream.check_workers(n_workers)
        self.stream = stream
        self.epoch = epoch
        self.skip = skip

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for batch in self.stream.batches(self.epoch, worker, n_workers, skip=self.skip):
            yield to_tensors(batch)


def epoch_loader(stream: PatchStream, epoch: int, skip: int = 0, n_workers: int = 0) -> DataLoader:
    """A DataLoader over one epoch's batches, from batch ``skip`` on.

    It has its own generator so creating it never consumes the global torch RNG
    (which would make a resumed run diverge from an uninterrupted one).
    """
    return DataLoader(
        PatchDataset(stream, epoch, skip, n_workers),
        batch_size=None,
        num_workers=n_workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
        prefetch_factor=4 if n_workers else None,
    )
