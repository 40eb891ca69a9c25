"""A trained model as one file (``NAME.mirpipe``): what prediction needs, nothing else.

A bundle holds, per trained task, the network's weights and parameters, the number
of input bins, the state estimated when training (e.g. a transition prior, a tuned
decision threshold), the decoding options evaluation uses, and the training
run's fingerprint; for all of them the feature settings (sample rate, each feature
kind's parameters and version, the margin and geometry the network was trained on)
and the library versions at export. ``identity`` is a digest of all of that (weights
included): two bundles with the same identity predict the same thing.

Loading checks versions against this installation (``check_versions``): a different
major version of mirpipe, torch or librosa, a newer bundle format, a feature kind of
another version or a task not registered here is an error; a different minor version
(or a task's target-encoding version) is a warning. Saved with ``torch.save`` and read
with ``weights_only=True``: plain containers and tensors, no pickled code.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mirpipe.errors import ConfigurationError

SUFFIX = ".mirpipe"
FORMAT = 1
CHECKED_LIBRARIES = ("mirpipe", "torch", "librosa", "numpy", "jams")
# a different major version of these is an error: features or weights may not mean the same
STRICT_LIBRARIES = ("mirpipe", "torch", "librosa")


class BundleError(ConfigurationError):
    """A bundle (``--model``) that cannot be used here (what does not match is in the message); the CLI
    exits 2 with it. A ``ConfigurationError``, so a ``MirpipeError`` and a ``ValueError``."""


@dataclass
class TaskModel:
    """One trained task of a bundle."""

    name: str
    task_version: str  # the task's target encoding version at training
    feature: str  # the feature kind its network reads
    params: dict[str, Any]  # the network's parameters (the task's ``Params``)
    n_bins: int
    state: dict[str, Any]  # fit_state + tune (decoding needs it)
    decoding: dict[str, Any]  # the task's ``DecodeParams`` as evaluate used them
    training: dict[str, Any]  # fingerprint (training data and settings), checkpoint, steps, best metric
    vocabulary: dict[str, Any] | None = None  # the corpus classes it was trained on (``Task.bind``), if any
    weights: dict[str, Any] = field(repr=False, default_factory=dict)  # state_dict (tensors)


@dataclass
class ModelBundle:
    features: dict[str, Any]  # sr, margin (semitones), kinds {name: {version, params}}, geometry {name: ...}
    tasks: dict[str, TaskModel]
    versions: dict[str, str]
    source: str  # where it was exported from (a workdir)
    name: str = ""
    identity: str = ""
    format: int = FORMAT

    @property
    def fingerprint(self) -> str:
        """The training fingerprints of every task, in one digest."""
        parts = [f"{t} {m.training.get('fingerprint', '')}" for t, m in sorted(self.tasks.items())]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def compute_identity(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"features": self.features, "format": self.format}, sort_keys=True).encode())
        for _name, m in sorted(self.tasks.items()):
            head = {k: v for k, v in asdict(m).items() if k != "weights"}
            h.update(json.dumps(head, sort_keys=True, default=str).encode())
            for key in sorted(m.weights):
                h.update(key.encode())
                h.update(m.weights[key].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:24]

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "identity": self.identity,
            "source": self.source,
            "features": self.features,
            "versions": self.versions,
            "tasks": {n: asdict(m) for n, m in self.tasks.items()},
        }

    def save(self, path: Path | str) -> Path:
        """Write atomically (a killed export leaves no half file under the final name)."""
        import torch

        from mirpipe.storage.atomic import atomic_path

        path = Path(path)
        self.identity = self.identity or self.compute_identity()
        buf = io.BytesIO()
        torch.save(self.to_payload(), buf)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(buf.getvalue())
        return path


def current_versions() -> dict[str, str]:
    import jams
    import librosa
    import numpy
    import torch

    from mirpipe import __version__

    return {
        "mirpipe": __version__,
        "torch": torch.__version__.split("+")[0],
        "librosa": librosa.__version__,  # type: ignore[attr-defined]  # set at runtime, not in librosa's .pyi
        "numpy": numpy.__version__,
        "jams": jams.__version__,
    }


def _major_minor(version: str) -> tuple[int, int]:
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits))
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def check_versions(bundle: ModelBundle) -> tuple[list[str], list[str]]:
    """(errors, warnings): what in ``bundle`` does not match this installation, in words."""
    from mirpipe.storage.feature_kinds import FEATURE_KINDS

    from .task import TASKS

    errors, warnings = [], []
    if bundle.format > FORMAT:
        errors.append(f"bundle format {bundle.format} is newer than this mirpipe reads ({FORMAT}): upgrade mirpipe")
    here = current_versions()
    for lib in CHECKED_LIBRARIES:
        then, now = bundle.versions.get(lib), here.get(lib)
        if then is None or then == now:
            continue
        assert now is not None  # current_versions() gives every checked library
        (ma, mi), (na, ni) = _major_minor(then), _major_minor(now)
        what = f"{lib} {then} at export, {now} here"
        if ma != na and lib in STRICT_LIBRARIES:
            errors.append(f"{what} (major versions differ)")
        elif (ma, mi) != (na, ni):
            warnings.append(f"{what} (results may differ slightly)")
    for kind, info in bundle.features.get("kinds", {}).items():
        if kind not in FEATURE_KINDS.names():
            errors.append(f"feature kind {kind!r} is not registered here (a plugin missing?)")
        elif str(FEATURE_KINDS.get(kind).version) != str(info.get("version")):
            errors.append(
                f"feature kind {kind!r} is version {FEATURE_KINDS.get(kind).version} here, "
                f"{info.get('version')} at training: its features would not be the ones the network learned"
            )
    for name, m in bundle.tasks.items():
        if name not in TASKS.names():
            errors.append(f"task {name!r} is not registered here (a newer mirpipe or a plugin missing?)")
        elif str(TASKS.get(name).version) != str(m.task_version):
            warnings.append(f"task {name!r} is version {TASKS.get(name).version} here, {m.task_version} at training")
    return errors, warnings


def load_bundle(path: Path | str, warn=None) -> ModelBundle:
    """Read and check a bundle; raises ``BundleError`` naming the file and every mismatch that
    stops it, and passes each lesser mismatch to ``warn`` (default: ``warnings.warn``)."""
    import pickle

    import torch

    from .checkpoint import refusal

    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
        bundle = _from_payload(raw)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:  # refused by the safe loader: never advise loading it unsafely
        raise BundleError(f"{path}: not a mirpipe model bundle, it cannot be loaded safely ({refusal(exc)})") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a foreign, torn or older file (torch raises by cause): say which and why
        raise BundleError(f"{path}: not a mirpipe model bundle ({type(exc).__name__}: {refusal(exc)})") from None
    errors, warns = check_versions(bundle)
    if errors:
        raise BundleError(f"{path}: cannot be used with this installation: " + "; ".join(errors))
    if warn is None:
        import warnings

        warn = lambda message: warnings.warn(message, stacklevel=3)
    for message in warns:
        warn(f"{path.name}: {message}")
    return bundle


def _from_payload(raw: Mapping[str, Any]) -> ModelBundle:
    if not isinstance(raw, Mapping) or "tasks" not in raw or "features" not in raw:
        raise ValueError("no tasks/features in it")
    tasks = {n: TaskModel(**m) for n, m in raw["tasks"].items()}
    return ModelBundle(
        features=raw["features"],
        tasks=tasks,
        versions=dict(raw.get("versions", {})),
        source=raw.get("source", ""),
        name=raw.get("name", ""),
        identity=raw.get("identity", ""),
        format=int(raw.get("format", 0)),
    )


def build_network(m: TaskModel, device):
    """The task's network with the bundle's weights, in eval mode on ``device``."""
    from .task import TASKS

    task = TASKS.get(m.name).bind(m.vocabulary)  # a corpus-vocabulary task sizes its heads by its classes
    model = task.trained.network.build(n_bins=m.n_bins, params=task.trained.network.Params.model_validate(m.params))
    model.load_state_dict(m.weights)
    return model.to(device).eval()
