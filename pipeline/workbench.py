"""The researcher's workbench: ``mirpipe.open(workdir)`` opens a workdir the pipeline built, with the
configuration it recorded, for code of one's own: the manifest, the splits, the vocabularies and the
feature store; DataLoaders of the patches the trainer streams (the same streams, the same seeds);
whole test tracks with their reference annotations; the pooled scores.

Everything here reads; nothing writes into the workdir. See docs/api.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mirpipe.errors import WorkdirError
from mirpipe.models.task import TASKS, Task
from mirpipe.records import TaskScores
from mirpipe.stage import StageContext
from mirpipe.storage import open_store
from mirpipe.storage.feature_kinds import FEATURE_KINDS
from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec, resolve_shift
from mirpipe.workdir import Workdir

if TYPE_CHECKING:
    import jams

    from mirpipe.records import RecordTable
    from mirpipe.stages.ingest import ManifestRow
    from mirpipe.storage.base import FeatureStore
    from mirpipe.storage.torch_data import Feed, StreamLoader

    from .config import PipelineBase


class WorkbenchError(WorkdirError):
    """A workdir lacks what was asked of it (no record, no manifest, no features, no scores); the
    message names the workdir, the task and the command that makes it."""


@dataclass(frozen=True)
class Track:
    """One whole track for evaluation, unshifted: what ``evaluate`` predicts from and scores against."""

    track: str  # the track id (the manifest's)
    split: str
    features: np.ndarray  # (frames, bins) float32: the task's model input (``FeatureKind.view``)
    targets: dict[str, np.ndarray]  # the task's stored targets on the same frame grid (e.g. targets/chord_tag)
    frame_times: np.ndarray  # seconds of each frame
    duration: float  # seconds of audio (what ``evaluate`` gives the decoder)
    reference: jams.Annotation  # the reference annotation evaluate scores against (prepared as ingest did)
    jam: jams.JAMS  # the whole prepared reference JAMS


class Workbench:
    """A workdir opened for research code (``mirpipe.open``). Attributes:

    - ``workdir``: its path; ``dirs``: every path in it (``mirpipe.workdir.Workdir``);
    - ``config``: the pipeline configuration the workdir recorded (``mirpipe.yaml``).
    """

    def __init__(self, workdir: Path | str, config: PipelineBase):
        self.workdir = Path(workdir)
        self.config = config
        self.dirs = Workdir(self.workdir)
        self.ctx = StageContext(self.workdir, config.stage_params(), tuple(config.plugins))

    def __repr__(self) -> str:
        return f"mirpipe.open({str(self.workdir)!r})"

    # -- what the workdir holds ------------------------------------------------------------------

    @cached_property
    def manifest(self) -> RecordTable[ManifestRow]:
        """Ingest's manifest: one row per track (``manifest[track]``, ``manifest.column("split")``)."""
        from mirpipe.stages.ingest import read_manifest

        if not self.dirs.manifest.exists():
            raise WorkbenchError(
                f"{self.workdir}: no manifest ({self.dirs.MANIFEST}); ingest has not run: mirpipe run --workdir {self.workdir}"
            )
        return read_manifest(self.ctx)

    @property
    def splits(self) -> dict[str, list[str]]:
        """Track ids per split (``train``, ``val``, ``test``), sorted."""
        out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for track, split in zip(self.manifest, self.manifest.column("split")):
            out.setdefault(split, []).append(track)
        return {s: sorted(ids) for s, ids in out.items()}

    @property
    def vocabularies(self) -> dict[str, dict[str, Any]]:
        """The class vocabularies ingest built from the corpus, per task (``models.labels.Vocabulary`` as
        JSON); a task with a fixed class set of its own has none."""
        return dict(self.manifest.extra.get("vocabularies", {}))

    @cached_property
    def store(self) -> FeatureStore:
        """The feature store the run wrote (``features.store``, ``features.store_path``)."""
        fp = self.ctx.params["features"]
        store = open_store(fp.store, self.dirs.store_root(fp.store_path))
        if not len(store.read_index()):
            raise WorkbenchError(
                f"{self.workdir}: no features in the store {store.root}; "
                f"compute them first: mirpipe run --workdir {self.workdir} --until features"
            )
        return store

    def task(self, name: str) -> Task:
        """The registered task ``name``, bound to the vocabulary ingest built for it."""
        from mirpipe.stages.train import vocabulary

        if name not in TASKS.names():
            raise WorkbenchError(f"{self.workdir}: no task {name!r}; tasks: {', '.join(TASKS.names())}")
        task = TASKS.get(name)
        return task.bind(vocabulary(self.ctx, task))

    def input_bins(self, task_or_feature: str) -> int:
        """Frequency bins of the model input of a task (or a feature kind): what a network is built for."""
        feature = self._resolve(task_or_feature)[1]
        return FEATURE_KINDS.get(feature).input_bins(self._geometry(feature, self._track_with(feature)))

    def feed(self, task: str) -> Feed:
        """The ``storage.torch_data.Feed`` of a task: compact batches (``loader(..., raw=True)``) -> model
        input, applied on the device where the batch is (``feed({k: v.to(device) ...})``)."""
        from mirpipe.storage.torch_data import Feed

        t = self.task(task)
        return Feed(t, self._geometry(t.feature, self._track_with(t.feature)))

    # -- streams ---------------------------------------------------------------------------------

    def loader(
        self,
        task_or_feature: str,
        split: str = "train",
        batch_size: int | None = None,
        patch_frames: int | None = None,
        shifts: list[int] | tuple[int, ...] | None = None,
        balance: bool | None = None,
        seed: int | None = None,
        workers: int = 0,
        steps: int | None = None,
        epoch: int = 0,
        device: str = "cpu",
        raw: bool = False,
    ) -> StreamLoader:
        """A ``torch.utils.data.DataLoader`` of random patches of ``split``: the trainer's stream.

        Each batch is a dict: the model input under the feature's name (``cqt``: float32 ``(batch,
        patch_frames, bins)``) and, for a task, its targets (``targets/chord_tag``: int64 ``(batch,
        patch_frames)``; padded frames are -1). Batches cross the worker boundary as the store keeps them
        and are made into model input on ``device`` in the main process, as the trainer does; ``raw=True``
        yields them compact instead (``feed(task)`` converts them).

        - ``task_or_feature``: a task (its feature and targets) or a feature kind (features alone);
        - ``batch_size``, ``patch_frames``: default the run's ``train`` settings for the task;
        - ``shifts``: the semitones each activation draws from (default: for ``train`` the run's
          ``augment`` shifts, else ``[0]``); a feature alone streams only stored variants;
        - ``balance``: None: as the trainer (the task's stream weights and ``train.sampling``); True:
          the task's class balance alone; False: every track alike;
        - ``seed``: default the run's ``train.seed`` (with the defaults: the trainer's very batches);
        - ``workers``: DataLoader processes; any count dividing ``train.n_shards`` gives the same batches;
        - ``steps``: batches per ``iter()`` (default ``train.steps_per_epoch``); each ``iter()`` is the next
          epoch, numbered from ``epoch`` (epochs draw different patches; a seed repeats them all).
        """
        from mirpipe.stages.train import entry_weights, sampling_weights, split_entries, task_stream
        from mirpipe.storage.torch_data import StreamLoader

        task, feature = self._resolve(task_or_feature)
        base = self.ctx.params["train"]
        p = base.for_task(task.name) if task is not None else base
        changes = {k: v for k, v in {"batch_size": batch_size, "patch_frames": patch_frames}.items() if v is not None}
        if changes:
            p = type(p).model_validate({**p.model_dump(exclude={"models"}), **changes, "models": p.models})
        keys = split_entries(self.ctx, feature, (split,), task)[split]
        self.store  # noqa: B018 - a store without features says so first
        if not keys:
            what = f"annotated for {task.name}" if task is not None else f"with {feature}"
            raise WorkbenchError(f"{self.workdir}: no tracks of the {split!r} split {what} in the store")
        if shifts is None:
            shifts = tuple(self.ctx.params["augment"].active_shifts()) if split == "train" else (0,)
        seed = p.seed if seed is None else seed
        if task is not None:
            if balance is None:
                weights = entry_weights(self.ctx, task, p.sampling, keys)
            elif balance:
                if task.vocabulary is None:
                    raise WorkbenchError(
                        f"task {task.name} has no class balance (no corpus vocabulary); use balance=None or False"
                    )
                labels = [self.manifest.value(k.track, "labels").get(task.labels_name, []) for k in keys]
                w = sampling_weights(task, "track", keys, labels)
                weights = None if w is None else {k.track: x for k, x in zip(keys, w)}
            else:
                weights = None
            made = task_stream(self.ctx, task, p, keys, shifts, seed, weights)
            stream, feed = made.stream, None if raw else made.feed
        else:
            fp = self.ctx.params["features"]
            spec = StreamSpec(fp.store, str(self.store.root), feature, (), p.patch_frames, p.slab_frames, shifts=tuple(shifts))
            stream = PatchStream(spec, keys, MuxSettings(p.batch_size, p.n_active, p.rate, p.mux_mode, p.n_shards), seed)
            feed = None
        return StreamLoader(stream, steps or p.steps_per_epoch, workers, feed, device, epoch)

    # -- evaluation --------------------------------------------------------------------------------

    def tracks(self, split: str, task: str) -> Iterator[Track]:
        """Whole tracks of ``split`` annotated for ``task``, unshifted, in track order: the model input,
        the stored targets, the frame times and the reference annotation (what ``evaluate`` scores)."""
        import librosa

        from mirpipe.annotations.prepare import Preparation, prepared_jams

        t = self.task(task)
        keys = self._keys(t, split)
        names = [t.feature, *t.targets.arrays]
        kind = FEATURE_KINDS.get(t.feature)
        for key in keys:
            entry = self.store.read_entry(key.track, names)
            variant, _ = resolve_shift(entry.attrs, 0)
            geometry = entry.attrs["features"][t.feature]
            stored = entry.arrays[t.feature][variant]
            prep = Preparation.from_json(self.manifest.value(key.track, "prep"))
            jam = prepared_jams(self.manifest.value(key.track, "jams"), prep)
            reference = t.targets.reference(jam)
            if reference is None:
                raise WorkbenchError(f"{self.workdir}: track {key.track} has no {t.namespace} reference annotation")
            yield Track(
                track=key.track,
                split=split,
                features=np.asarray(kind.view(stored, geometry, 0), dtype=np.float32),
                targets={n: entry.arrays[n][variant] for n in t.targets.arrays},
                frame_times=librosa.frames_to_time(
                    np.arange(stored.shape[0]), sr=geometry["sr"], hop_length=geometry["hop_length"]
                ),
                duration=float(prep.duration),
                reference=reference,
                jam=jam,
            )

    def scores(self, task: str) -> TaskScores:
        """The task's pooled test scores as ``evaluate`` wrote them (``reports/<task>/scores.json``)."""
        from mirpipe.storage.atomic import read_json

        path = self.dirs.scores(task)
        if not path.exists():
            raise WorkbenchError(
                f"{self.workdir}: no scores for task {task!r} ({path.relative_to(self.workdir)}); "
                f"train and evaluate it: mirpipe run --workdir {self.workdir}"
            )
        return TaskScores.from_json(read_json(path))

    # -- helpers -------------------------------------------------------------------------------------

    def _resolve(self, name: str) -> tuple[Task | None, str]:
        if name in TASKS.names():
            task = self.task(name)
            return task, task.feature
        if name in FEATURE_KINDS.names():
            return None, name
        raise WorkbenchError(
            f"{self.workdir}: {name!r} is neither a task ({', '.join(TASKS.names())}) "
            f"nor a feature kind ({', '.join(FEATURE_KINDS.names())})"
        )

    def _keys(self, task: Task, split: str) -> list[EntryKey]:
        from mirpipe.stages.train import split_entries

        self.store  # noqa: B018 - a store without features says so first
        return sorted(split_entries(self.ctx, task.feature, (split,), task)[split], key=lambda k: k.track)

    def _track_with(self, feature: str) -> str:
        for track, frames in zip(self.store.read_index(), self.store.read_index().column("frames")):
            if feature in frames:
                return track
        raise WorkbenchError(f"{self.workdir}: no entry in the store holds the feature {feature!r}")

    def _geometry(self, feature: str, track: str) -> dict[str, Any]:
        return dict(self.store.read_attrs(track)["features"][feature])


def open(workdir: Path | str) -> Workbench:  # noqa: A001 - mirpipe.open, as the API names it
    """Open a workdir the pipeline ran in (``mirpipe run --workdir``) with its recorded configuration."""
    from . import workdir as wd

    path = Path(workdir)
    if not path.is_dir():
        raise WorkbenchError(f"{path}: no such workdir")
    if wd.recorded(path) is None:
        raise WorkbenchError(f"{path}: not a mirpipe workdir (no {wd.RECORD}); run one first: mirpipe run --workdir {path}")
    pipeline, _ = wd.resolve(path, None, None)
    return Workbench(path, pipeline)
