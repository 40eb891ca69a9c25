"""Checkpoints read with torch's safe unpickler (``weights_only=True``), never with pickled code.

A checkpoint or bundle in a workdir may come from anyone who could write there: ``torch.load``
with ``weights_only=False`` would run whatever its pickle names. So every load goes through
``load_checkpoint``, and what the trainer writes is made of what the safe loader accepts:
tensors and plain containers (dict, list, tuple, str, int, float, bool, None) -- ``plain``
turns dataclasses, numpy values, paths and pydantic models into those on save.
"""

from __future__ import annotations

import dataclasses
import enum
import pickle
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from mirpipe.errors import WorkdirError


class CheckpointError(WorkdirError, ValueError):
    """A checkpoint that cannot be loaded safely or at all (the message names the file and why);
    the CLI exits 2 with it. A ``ValueError`` too, for callers written before ``MirpipeError``."""


def refusal(exc: BaseException) -> str:
    """Why torch could not load a file, without torch's advice to load it unsafely."""
    parts = [p.strip() for p in str(exc).split("\n\n") if p.strip() and "weights_only" not in p]
    return " ".join(parts) or type(exc).__name__


def load_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint (a dict) read with ``weights_only=True``; ``CheckpointError`` naming ``path`` when
    the safe loader refuses it (an older mirpipe's checkpoint, or a tampered file) or it is unreadable."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: cannot be loaded safely, it holds more than tensors and plain values "
            f"({refusal(exc)}): an older mirpipe's checkpoint or a tampered file; "
            "train again (`mirpipe verify --repair` marks a workdir's for it)"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's zip reader and unpickler raise anything on a torn or foreign file
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {refusal(exc)})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a mirpipe checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def checkpoint_is_safe(path: Path | str) -> bool:
    """Whether the safe loader would accept ``path``: its pickle scanned for globals, nothing run or read
    beyond it (cheap enough for planning a run)."""
    try:
        return not torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a torch zip checkpoint at all (torch raises by cause): the loader refuses it too
        return False


def plain(obj: Any) -> Any:
    """``obj`` as tensors and plain containers only (what ``weights_only=True`` loads): dataclasses and
    pydantic models as dicts, enums as their values, tuples as lists, numpy scalars and arrays as Python values and lists,
    paths as strings. Anything else is a ``TypeError`` at save time, not a checkpoint that cannot load."""
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.generic):  # before float: np.float64 is a float, but pickles as numpy
        return obj.item()
    if isinstance(obj, enum.Enum):
        return plain(obj.value)
    for base in (bool, int, float, str):  # a subclass pickles as its own class
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    raise TypeError(f"a checkpoint holds only tensors and plain values, not {type(obj).__name__}: {obj!r:.80}")
