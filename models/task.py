"""The task contract and its registry: a new task is one module, composed of a few small parts.

A task module defines its parts and registers a ``Task`` holding them with ``@TASKS.register``.
The generic code (``Train``, ``Evaluate``, the features stage, the configuration, the CLI) knows
no task by name and never inspects a task's methods: an optional capability is a part, or a
method, that is None when absent.

- ``Targets`` (required): the reference's JAMS ``namespace`` (compatible namespaces are
  converted with ``jams.nsconvert``), ``encode`` (targets on a frame grid, stored under
  ``targets/``; ``arrays`` names those a training patch carries; bump ``version`` when they
  change), and how the task moves under a pitch shift, in one place: ``transpose`` (target
  arrays, feature-mode patches) and ``transpose_annotation`` (the reference annotation, for the
  namespaces matching ``moves``: audio-mode augmentation through ``annotation_transposers`` and
  evaluate's robustness table). ``moves = None`` declares the task invariant.
- ``network`` (``Network``; None: a target-only task, not trainable): ``Params``
  (``train.models.<task>``), ``prepare_batch`` (batch targets derived when a batch is cut, in the
  loader) and ``on_device`` (torch: derived on the trainer's device, e.g. a salience map from f0,
  so that the batch crosses the loader's worker boundary small), ``build``, ``loss``, ``metric`` / ``metric_name`` and ``fit_state``
  (what it estimates from the training targets, e.g. a transition prior, kept in the checkpoint).
- ``decoder`` (``Decoder``): ``DecodeParams`` (``evaluate.decoding.<task>``), ``predict``
  (network output of a whole track), ``decode`` (to a JAMS annotation), ``describe`` (one line
  for ``mirpipe predict``) and optionally ``tune`` (estimated from the trained model on the
  validation split, e.g. a threshold, kept in the checkpoint's state).
- ``scorer`` (``Scorer``): ``metrics``, ``score`` (one track; each metric with the weight that
  pools it), ``pool``, ``score_columns`` / ``scored_by`` (the summary table), ``summary`` and
  ``plot`` (always given the prediction); optionally ``evidence`` / ``pool_evidence`` (metrics
  over every track's evidence, e.g. macro-F1, and pooled figures).
- ``vocabulary`` (optional ``CorpusVocabulary``): ``labels`` (the classes a track carries;
  ingest records them and builds the vocabulary, ``models.labels``), ``bind`` (the task with
  that vocabulary: at training from the manifest, at evaluation from the checkpoint) and
  ``stream_weights`` (a weight per training track, e.g. class-balanced streaming).
- ``baseline`` (optional ``Baseline``): a non-learned method run on the same test audio, scored
  by the same ``scorer`` into the same report.

Torch-dependent parts import torch inside their methods, so the feature workers that only
``encode`` targets never import it. ``docs/extending/task.md`` adds a beat-tracking task end
to end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from mirpipe.annotations.namespaces import matches
from mirpipe.annotations.transpose import UNCLAIMED, Transposer
from mirpipe.errors import ConfigurationError
from mirpipe.registry import Registry

TASKS: Registry[Task] = Registry(
    "task",
    builtin=(
        "mirpipe.models.chord",
        "mirpipe.models.pitch",
        "mirpipe.models.multipitch",
        "mirpipe.models.instrument",
        "mirpipe.models.instrument_embed",
    ),
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


def per_task_params(value, kind: str, model_of: Callable[[Task], type[BaseModel]]) -> dict[str, BaseModel]:
    """Validate ``{task: raw settings}`` with each task's own model (``model_of(task)``: its
    ``network.Params`` or ``decoder.DecodeParams``)."""
    if not isinstance(value, dict):
        raise ValueError(f"{kind} maps task names to their settings")
    return {
        name: raw if isinstance(raw, BaseModel) else model_of(TASKS.get(name)).model_validate(raw or {})
        for name, raw in value.items()
    }


def pool_weighted(per_track: Sequence[Scores], metrics: Sequence[str]) -> dict[str, float | None]:
    """Totals over tracks: each metric's scores weighted by their weights (None when nothing counts)."""
    totals: dict[str, float | None] = {}
    for m in metrics:
        pairs = [(s[m]["score"], s[m]["weight"]) for s in per_track if m in s]
        pairs = [(v, w) for v, w in pairs if w > 0 and np.isfinite(v)]
        weight = sum(w for _, w in pairs)
        totals[m] = sum(v * w for v, w in pairs) / weight if weight > 0 else None
    return totals


class Targets:
    """What a task learns from: its reference namespace, its stored targets, and how both move
    under a pitch shift (the one place that says so)."""

    namespace: ClassVar[str]  # JAMS namespace of the reference
    arrays: ClassVar[tuple[str, ...]] = ()  # store arrays a training patch carries ("targets/...")
    version: ClassVar[str] = "1"  # of the targets ``encode`` writes (the features fingerprint holds it)
    # False: one reference per track (ingest picks it by ``ingest.annotation_choice`` when several
    # compete); True: every annotation of the namespace counts (instrument tags from several taggers)
    merges_annotations: ClassVar[bool] = False
    # regex of the namespaces ``transpose_annotation`` moves (the reference's, and those converted to
    # it when they move differently); None: the task is invariant under a pitch shift
    moves: ClassVar[str | None] = None

    def usable(self, namespaces: Sequence[str]) -> bool:
        """Does a track offering these namespaces (after conversion) teach this task?"""
        return self.namespace in namespaces

    def reference(self, jam):
        """The reference annotation of a track (the first in ``namespace``, converted), or None."""
        found = annotations(jam, self.namespace)
        return found[0] if found else None

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        """Targets on the frame grid, keyed by name (stored as ``targets/<name>``)."""
        raise NotImplementedError

    def transpose(self, targets: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The targets (store names -> frames) of audio pitch-shifted by ``n`` semitones: feature
        mode takes a shift as a bin offset of the features when a patch is cut and moves the targets
        with this. The default serves invariant tasks (``moves`` None): the targets as they are."""
        if n == 0 or self.moves is None:
            return targets
        raise NotImplementedError(f"{type(self).__name__} moves with pitch but does not say how its targets do")

    def transpose_annotation(self, annotation, n: int):
        """The annotation (in a namespace matching ``moves``) of audio pitch-shifted by ``n``
        semitones, a new one (the given one untouched): audio-mode augmentation and evaluate's
        robustness table. The default serves invariant tasks: the annotation as it is."""
        if n == 0 or self.moves is None:
            return annotation
        raise NotImplementedError(f"{type(self).__name__} moves with pitch but does not say how its annotation does")


class Network:
    """How a task trains: its network, loss and validation metric."""

    Params: ClassVar[type[BaseModel]] = NoParams
    metric_name: ClassVar[str] = "accuracy"  # validation metric, higher is better

    def prepare_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch of stored targets (numpy, ``(B, T, ...)``; padded frames ``-1``) with whatever
        the loss needs derived from them; runs where batches are cut (loader workers), so what it
        adds crosses the worker boundary: derive large targets in ``on_device`` instead."""
        return batch

    def on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """torch, on the trainer's device (a GPU when there is one): targets derived from the compact
        ones the batch carries (e.g. a salience map from f0), after the model input is made
        (``storage.torch_data.Feed``; floats are float32, integers int64). Training, validation and
        ``Decoder.tune`` see its output. Default: the batch as it is."""
        return batch

    def build(self, n_bins: int, params: Any):  # Any: each task takes its own params model
        """The network (a torch.nn.Module) for ``n_bins`` feature bins."""
        raise NotImplementedError

    def loss(self, outputs, batch):
        """(loss tensor, {part: detached 0-d tensor or float}) of a batch. Tensors keep training from
        waiting for the device each step (the trainer reads them at logging points only); build the
        loss without branching on tensor values (``if mask.any()``) for the same reason."""
        raise NotImplementedError

    def metric(self, outputs, batch) -> tuple[float, float]:
        """(numerator, denominator) of the validation metric over a batch."""
        raise NotImplementedError

    def fit_state(self, training_targets) -> dict[str, Any]:
        """JSON-able values estimated from the training targets (an iterable of {target: array}),
        stored in the checkpoint for decoding."""
        return {}


class Decoder:
    """How a trained network's output becomes a JAMS annotation."""

    DecodeParams: ClassVar[type[BaseModel]] = NoParams
    # optional: (model in eval mode, validation batches as the trainer sees them (``on_device`` applied, on
    # ``device``), device) ->
    # JSON-able values merged into the checkpoint's state (e.g. a tuned threshold); None: nothing to tune
    tune: Callable[[Any, Any, Any], dict[str, Any]] | None = None

    def predict(self, model, features: np.ndarray, device) -> np.ndarray:
        """The network's output over a whole track (T, ...) as a numpy array."""
        raise NotImplementedError

    def decode(
        self, prediction: np.ndarray, frame_times: np.ndarray, duration: float, state: Mapping[str, Any], options: Any
    ):  # Any: each task takes its own decode model
        """A JAMS annotation of the task's namespace from a whole-track prediction."""
        raise NotImplementedError

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


class Scorer:
    """How a track is scored and scores are pooled, summarised and drawn."""

    metrics: ClassVar[tuple[str, ...]] = ()  # per-track scores, in table order
    score_columns: ClassVar[tuple[str, ...]] = ()  # the pooled scores the run summary shows
    scored_by: ClassVar[str] = "mir_eval, duration-weighted"  # how the pooled scores were made (the summary's header)
    # optional: (ref, est) -> JSON-able data of one track that pooled metrics need beyond its scores
    # (e.g. its clip label and the estimate's), kept in the evaluate record; None: nothing
    evidence: Callable[[Any, Any], dict[str, Any] | None] | None = None
    # optional: (every scored track's evidence, figures folder) -> metrics joining (overriding) the
    # pooled totals in ``scores.json`` (a ``notes`` list of lines is printed under the score table),
    # pooled figures written under the folder; None when ``evidence`` is None
    pool_evidence: Callable[[Sequence[Mapping[str, Any]], Path], dict[str, Any]] | None = None

    def score(self, ref, est) -> Scores:
        """Per-metric score of one track and the weight that pools it over tracks."""
        raise NotImplementedError

    def pool(self, per_track: Sequence[Scores]) -> dict[str, float | None]:
        return pool_weighted(per_track, self.metrics)

    def summary(self, scores: Mapping[str, Any]) -> str:
        """A few words on one track's scores (figure titles)."""
        return " ".join(f"{m} {scores[m]['score']:.2f}" for m in self.score_columns[:2] if m in scores)

    def plot(self, path: Path, features: np.ndarray, frame_rate: float, ref, est, title: str, prediction: np.ndarray) -> None:
        """A figure of one scored track (written through the atomic helper); ``prediction`` is what
        ``Decoder.predict`` returned for it. The default draws nothing."""


class CorpusVocabulary:
    """A task whose classes come from the corpus (instrument tags): what a track carries, the task
    bound to the vocabulary ingest built, and per-track sampling weights."""

    def labels(self, jam) -> list[str] | None:
        """The class labels a track carries (raw, as annotated)."""
        raise NotImplementedError

    def bind(self, task: Task, vocabulary: Mapping[str, Any] | None) -> Task:
        """``task`` with the corpus vocabulary (``models.labels.Vocabulary`` as JSON)."""
        raise NotImplementedError

    def stream_weights(self, labels: Sequence[Sequence[str]]) -> list[float] | None:
        """A sampling weight per training track (its ``labels``, as ingest recorded them) for the
        patch mux; None: every track alike."""
        return None


class Baseline:
    """A non-learned method scored beside the model on the same test audio."""

    name: ClassVar[str]

    def run(self, audio_path: str, prep, duration: float):
        """The baseline's annotation of one test track (``mirpipe.annotations.prepare.Preparation``
        says how to read its audio), or None; scored with the task's ``Scorer``."""
        raise NotImplementedError


class Trained(NamedTuple):
    """The parts every trainable task has (``Task.trained``), typed as present."""

    network: Network
    decoder: Decoder
    scorer: Scorer


class Task:
    """One model the pipeline trains and scores: a name, the feature it reads, and its parts
    (see the module docstring). Optional parts are None when absent."""

    name: ClassVar[str]
    feature: ClassVar[str] = "cqt"  # feature kind the network reads (a store array; its frame grid holds the targets)
    # True: not among the default ``features.tasks`` (every other registered task); name it there to compute its
    # targets and feature (a task whose feature needs an optional package: ``instrument_embed``)
    opt_in: ClassVar[bool] = False
    # the task whose corpus labels and vocabulary this one uses (ingest records and builds them once, under
    # that name): ``instrument_embed`` learns the instrument task's classes. None: its own
    labels_of: ClassVar[str | None] = None
    targets: Targets
    network: Network | None = None
    decoder: Decoder | None = None
    scorer: Scorer | None = None
    vocabulary: CorpusVocabulary | None = None
    baseline: Baseline | None = None

    @property
    def trainable(self) -> bool:
        return self.network is not None

    @property
    def trained(self) -> Trained:
        """The network, decoder and scorer that training, evaluation and prediction use; a
        ConfigurationError naming the task when it has no network (a target-only task) or lacks the
        decoder or scorer a trained network needs."""
        if self.network is None or self.decoder is None or self.scorer is None:
            missing = [n for n in ("network", "decoder", "scorer") if getattr(self, n) is None]
            raise ConfigurationError(f"task {self.name!r} cannot be trained or scored: it has no {', '.join(missing)}")
        return Trained(self.network, self.decoder, self.scorer)

    @property
    def namespace(self) -> str:
        return self.targets.namespace

    @property
    def version(self) -> str:
        return self.targets.version

    @property
    def labels_name(self) -> str:
        """Where ingest keeps this task's corpus labels and vocabulary (``labels_of`` or its own name)."""
        return self.labels_of or self.name

    def bind(self, vocabulary: Mapping[str, Any] | None) -> Task:
        """This task with the corpus vocabulary; a task without one (``vocabulary`` None) ignores it.
        Training binds the manifest's, evaluation the checkpoint's."""
        return self if self.vocabulary is None else self.vocabulary.bind(self, vocabulary)


def annotation_transposers() -> dict[str, Transposer]:
    """{namespace regex: transposer} for ``mirpipe.audio.deform``: every registered task's
    ``Targets.transpose_annotation`` for the namespaces it ``moves``, then the pitched namespaces
    no task claims (``mirpipe.annotations.transpose.UNCLAIMED``)."""
    out: dict[str, Transposer] = {}
    for task in TASKS.values():
        if task.targets.moves is not None:
            out.setdefault(task.targets.moves, task.targets.transpose_annotation)
    for pattern, transposer in UNCLAIMED.items():  # after the tasks': the deformer takes the first match
        out.setdefault(pattern, transposer)
    return out
