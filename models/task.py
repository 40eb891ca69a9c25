"""The task interface and its registry: a new task is one module.

A task module subclasses ``Task`` and registers it with ``@TASKS.register``. It
declares everything the generic code needs, so ``Train``, ``Evaluate``, the
features stage, the configuration and the CLI know no task by name:

- **data**: the store array its network reads (``feature``), the JAMS namespace of
  its reference (``namespace``; compatible namespaces are converted with
  ``jams.nsconvert``), and ``encode`` (targets on a frame grid, stored under
  ``targets/``; bump ``version`` when they change);
- **training**: ``Params`` (network hyper-parameters, validated from
  ``train.models.<task>``), ``prepare_batch`` (batch targets derived from the stored
  ones when a batch is cut, e.g. a salience map from f0), ``build``, ``loss``,
  ``metric`` / ``metric_name``, ``fit_state`` (what it estimates from training
  targets, e.g. a transition prior, kept in the checkpoint) and ``tune`` (what it
  estimates from the trained model on the validation split, e.g. a decision
  threshold, kept in the checkpoint too);
- **inference**: ``DecodeParams`` (``evaluate.decoding.<task>``), ``predict``
  (network output of a whole track) and ``decode`` (to a JAMS annotation);
- **scoring**: ``score`` (one track; each metric with the weight that pools it,
  e.g. seconds), ``score_columns`` (what the summary table shows) and ``plot``;
- **baseline** (optional): ``baseline_name`` and ``baseline`` (a non-learned method run
  on the same test audio, scored with the same ``score`` into the same report);
- **a corpus vocabulary** (optional): ``labels`` (the class labels a track carries; ingest
  records them and builds the vocabulary, ``models.labels``), ``bind`` (the task with that
  vocabulary: at training from the manifest, at evaluation from the checkpoint) and
  ``stream_weights`` (a weight per training track, e.g. class-balanced streaming);
- **pooled scores** (optional): ``evidence`` (what pooling needs of one track beyond its
  scores, e.g. its clip label) and ``pool_evidence`` (metrics over all tracks' evidence,
  e.g. macro-F1, and pooled figures such as a confusion matrix).

Torch-dependent parts import torch inside their methods, so the feature workers
that only ``encode`` targets never import it. A target-only task (``trainable =
False``) encodes targets for the store and nothing else yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from mirpipe.annotations.namespaces import matches
from mirpipe.registry import Registry

TASKS: Registry["Task"] = Registry(
    "task",
    builtin=("mirpipe.models.chord", "mirpipe.models.pitch", "mirpipe.models.multipitch", "mirpipe.models.instrument"),
    entry_points="mirpipe.tasks",
    instantiate=True,
)

Scores = dict[str, dict[str, float]]  # metric -> {"score": value, "weight": pooling weight}


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def annotations(jam, namespace: str) -> list:  # type: ignore[no-redef]  # over the __future__ import's name
    """The track's annotations in ``namespace``, converting compatible ones (``chord_harte`` ->
    ``chord``, ``pitch_hz`` -> ``pitch_contour``, ``tag_*`` -> ``tag_open``, ...) with jams.nsconvert."""
    from copy import deepcopy

    import jams

    converters = jams.nsconvert.__CONVERSION__.get(namespace, {})
    out = []
    # matched by name here: jams' can_convert/convert use Annotation.search, which serializes
    # every observation, and convert re-validates (slow on 10 ms contours; ingest validated)
    for ann in jam.annotations:
        if ann.namespace == namespace:
            out.append(ann)
            continue
        source = next((src for src in converters if matches(ann.namespace, src)), None)
        if source is not None:
            out.append(converters[source](deepcopy(ann)))
    return out


def offered_namespaces(namespaces: Sequence[str]) -> list[str]:
    """Every namespace a track with annotations in ``namespaces`` offers after conversion."""
    import jams

    offered = set(namespaces)
    for target, sources in jams.nsconvert.__CONVERSION__.items():
        for source in sources:
            if any(matches(ns, source) for ns in namespaces):
                offered.add(target)
    return sorted(offered)


def per_task_params(value, kind: str, attr: str) -> dict[str, BaseModel]:
    """Validate ``{task: raw settings}`` with each task's own model (``Params`` or ``DecodeParams``)."""
    if not isinstance(value, dict):
        raise ValueError(f"{kind} maps task names to their settings")
    return {name: raw if isinstance(raw, BaseModel) else getattr(TASKS.get(name), attr).model_validate(raw or {})
            for name, raw in value.items()}


def pool_weighted(per_track: Sequence[Scores], metrics: Sequence[str]) -> dict[str, float | None]:
    """Totals over tracks: each metric's scores weighted by their weights (None when nothing counts)."""
    totals: dict[str, float | None] = {}
    for m in metrics:
        pairs = [(s[m]["score"], s[m]["weight"]) for s in per_track if m in s]
        pairs = [(v, w) for v, w in pairs if w > 0 and np.isfinite(v)]
        weight = sum(w for _, w in pairs)
        totals[m] = sum(v * w for v, w in pairs) / weight if weight > 0 else None
    return totals


class Task:
    """One model the pipeline trains and scores; see the module docstring."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # of the targets ``encode`` writes (the features fingerprint holds it)
    namespace: ClassVar[str]  # JAMS namespace of the reference
    feature: ClassVar[str] = "cqt"  # feature kind the network reads (a store array; its frame grid holds the targets)
    targets: ClassVar[tuple[str, ...]] = ()  # store arrays a training patch carries ("targets/...")
    trainable: ClassVar[bool] = True
    # False: one reference per track (ingest picks it by ``ingest.annotation_choice`` when several
    # compete); True: every annotation of the namespace counts (instrument tags from several taggers)
    merges_annotations: ClassVar[bool] = False
    metric_name: ClassVar[str] = "accuracy"  # validation metric, higher is better
    metrics: ClassVar[tuple[str, ...]] = ()  # per-track scores, in table order
    score_columns: ClassVar[tuple[str, ...]] = ()  # the pooled scores the run summary shows
    scored_by: ClassVar[str] = "mir_eval, duration-weighted"  # how the pooled scores were made (the summary's header)
    Params: ClassVar[type[BaseModel]] = NoParams
    DecodeParams: ClassVar[type[BaseModel]] = NoParams
    baseline_name: ClassVar[str | None] = None  # a reference method scored beside the model (``baseline``)

    # -- data --------------------------------------------------------------------
    def usable(self, namespaces: Sequence[str]) -> bool:
        """Does a track offering these namespaces (after conversion) teach this task?"""
        return self.namespace in namespaces

    def reference(self, jam):
        """The reference annotation of a track (the first in ``namespace``, converted), or None."""
        found = annotations(jam, self.namespace)
        return found[0] if found else None

    def labels(self, jam) -> list[str] | None:
        """The class labels a track carries (raw, as annotated), for a task whose classes come from
        the corpus; None (the default): the task has a fixed vocabulary."""
        return None

    @property
    def has_labels(self) -> bool:
        return type(self).labels is not Task.labels

    def bind(self, vocabulary: Mapping[str, Any] | None) -> "Task":
        """This task with the corpus vocabulary (``models.labels.Vocabulary`` as JSON); the default
        ignores it. Training binds the manifest's, evaluation the checkpoint's."""
        return self

    def stream_weights(self, labels: Sequence[Sequence[str]]) -> list[float] | None:
        """A sampling weight per training track (its ``labels``, as ingest recorded them) for the
        patch mux; None (the default): every track alike."""
        return None

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        """Targets on the frame grid, keyed by name (stored as ``targets/<name>``)."""
        raise NotImplementedError

    def transpose(self, targets: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The targets (store names -> frames) of audio pitch-shifted by ``n`` semitones.

        Feature-mode augmentation takes a shift as a bin offset of the features when a
        patch is cut, and moves the targets with this; a task whose targets do not move
        (instrument labels) returns them as they are.
        """
        if n == 0:
            return targets
        raise NotImplementedError(f"task {self.name!r} does not say how its targets move under a pitch shift")

    # -- training ----------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch of stored targets (numpy, ``(B, T, ...)``; padded frames ``-1``) with whatever
        the loss needs derived from them; runs where batches are cut (loader workers)."""
        return batch

    def build(self, n_bins: int, params: Any):  # Any: each task takes its own params model
        """The network (a torch.nn.Module) for ``n_bins`` feature bins."""
        raise NotImplementedError(f"task {self.name!r} has no network yet")

    def loss(self, outputs, batch):
        """(loss tensor, {part: float}) of a batch."""
        raise NotImplementedError

    def metric(self, outputs, batch) -> tuple[float, float]:
        """(numerator, denominator) of the validation metric over a batch."""
        raise NotImplementedError

    def fit_state(self, training_targets) -> dict[str, Any]:
        """JSON-able values estimated from the training targets (an iterable of {target: array}),
        stored in the checkpoint for decoding."""
        return {}

    def tune(self, model, batches, device) -> dict[str, Any]:
        """JSON-able values estimated from the trained ``model`` (eval mode) on the validation
        ``batches`` (tensors, as ``prepare_batch`` made them), merged into the checkpoint's state."""
        return {}

    # -- inference ---------------------------------------------------------------
    def predict(self, model, features: np.ndarray, device) -> np.ndarray:
        """The network's output over a whole track (T, ...) as a numpy array."""
        raise NotImplementedError

    def decode(self, prediction: np.ndarray, frame_times: np.ndarray, duration: float,
               state: Mapping[str, Any], options: Any):  # Any: each task takes its own decode model
        """A JAMS annotation of ``namespace`` from a whole-track prediction."""
        raise NotImplementedError

    def baseline(self, audio_path: str, prep, duration: float):
        """The baseline's annotation of one test track (``stages.annotations.Preparation`` says how
        to read its audio), or None; scored with ``score`` beside the model's."""
        return None

    # -- scoring -----------------------------------------------------------------
    def score(self, ref, est) -> Scores:
        """Per-metric score of one track and the weight that pools it over tracks."""
        raise NotImplementedError

    def pool(self, per_track: Sequence[Scores]) -> dict[str, float | None]:
        return pool_weighted(per_track, self.metrics)

    def evidence(self, ref, est) -> dict[str, Any] | None:
        """JSON-able data of one track that pooled metrics need beyond its scores (e.g. its clip
        label and the estimate's); kept in the evaluate record. None (the default): nothing."""
        return None

    def pool_evidence(self, evidence: Sequence[Mapping[str, Any]], figures: Path) -> dict[str, Any]:
        """Metrics over every scored track's ``evidence`` (JSON-able; they join and override the
        pooled totals in ``scores.json``; a ``notes`` list of lines is printed under the task's
        score table, e.g. an interval), and pooled figures written under ``figures``."""
        return {}

    def summary(self, scores: Mapping[str, Any]) -> str:
        """A few words on one track's scores (figure titles)."""
        return " ".join(f"{m} {scores[m]['score']:.2f}" for m in self.score_columns[:2] if m in scores)

    def plot(self, path: Path, features: np.ndarray, frame_rate: float, ref, est, title: str,
             prediction: np.ndarray | None = None) -> None:
        """A figure of one scored track (written through the atomic helper); ``prediction`` is
        what ``predict`` returned for it."""

    # -- prediction ------------------------------------------------------------------
    def describe(self, annotation) -> str:
        """One line on a decoded annotation (``mirpipe predict`` prints it per file). Generic:
        the observations, and for labels the distinct ones and the one covering the most time."""
        data = list(annotation.data)
        labels = [obs.value for obs in data]
        if not labels or not all(isinstance(v, str) for v in labels):
            return f"{len(data)} observations"
        seconds: dict[str, float] = {}
        for obs in data:
            seconds[obs.value] = seconds.get(obs.value, 0.0) + float(obs.duration or 0.0)
        top = max(seconds, key=seconds.__getitem__)
        total = sum(seconds.values())
        share = f" ({seconds[top] / total:.0%} of the time)" if total > 0 else ""
        return f"{len(data)} segments, {len(seconds)} labels, mostly {top}{share}"

    def transpose_reference(self, annotation, n: int):
        """The reference annotation of the track pitch-shifted by ``n`` semitones (robustness
        scoring), or None (the default): evaluate then transposes the whole JAMS with the deformer
        audio-mode augmentation uses (chord and key labels, f0 and notes move; tags stay). A task
        whose namespace that deformer does not know, yet moves with pitch, overrides this."""
        return None
