"""Instrument task: the corpus's own vocabulary, solo-clip classification and mixture tagging.

- **Labels**: ``tag_open`` annotations (``tag_*`` namespaces converted with jams.nsconvert),
  normalised (case, whitespace). Ingest builds the vocabulary with counts per split and the
  aliases of ``ingest.vocabularies.instrument`` (``models.labels``); training binds it
  (``bind``) and the checkpoint keeps it, so evaluation decodes with the classes it trained.
- **Store**: per frame of the HCQT grid, the ids of the labels sounding (``targets/instrument_labels``,
  ``SLOTS`` slots, 0 = none; ``models.labels.label_id``): independent of the vocabulary, so a
  new tag in the corpus recomputes no track's features. A tag without a duration spans the
  track (a clip-level tag). Instruments do not move under a pitch shift.
- **Feature**: the HCQT view of the wide CQT (hop 256, 60 bins/octave, harmonics 0.5..5 as
  channels: partials up to 5x the top note, ~10 kHz, where timbre lives; the chord CQT stops at
  C7 and ~10.8 frames/s blurs attacks); ~1 s patches, pooled to semitones in the network.
- **Batches** (``prepare_batch``): ids -> class indices; per patch, the share of its frames each
  class sounds (``presence``, the sigmoid head's target) and, where exactly one instrument
  sounds, that class (``single``, the softmax head's target; -1 elsewhere).
- **Network**: ``models.instrument_net.InstrumentNet``; loss: cross-entropy on single-instrument
  patches + BCE on every patch. Validation metric: ``patch_accuracy``.
- **Streaming**: ``stream_weights`` weights each training track by the mean inverse frequency
  of its classes, so every class is drawn about equally often per epoch.
- **Prediction**: patches every half patch over the track; a clip's label is the argmax of the
  mean of its patches' log-probabilities; instrument activity (sigmoid per patch) is decoded to
  ``tag_open`` observations with time spans; both are in the estimate's sandbox.
- **Scores** (scikit-learn): a track whose reference holds one label is a solo clip (accuracy,
  pooled macro-F1 and per-class precision/recall/F1, confusion matrix figure); other tracks are
  mixtures (average precision per class over all test patches, mAP).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .labels import Vocabulary, label_id, normalise
from .task import TASKS, CorpusVocabulary, Decoder, Network, Scorer, Scores, Targets, Task, annotations

LABELS = "targets/instrument_labels"
PRESENCE = "targets/instrument_presence"
SINGLE = "targets/instrument_single"
SLOTS = 8  # labels sounding at once that a frame can hold


def tag_spans(jam_or_ann, duration: float | None = None) -> list[tuple[str, float, float]]:
    """(normalised label, start, end) of every tag; a tag without duration runs to ``duration``
    (or forever). Takes a JAMS (every ``tag_open`` annotation, converted) or one annotation."""
    anns = (
        annotations(jam_or_ann, "tag_open")  # type: ignore[operator]  # mypy takes the name for the __future__ feature
        if hasattr(jam_or_ann, "annotations")
        else [jam_or_ann]
    )
    out = []
    for ann in anns:
        for obs in ann.data:
            name = normalise(obs.value)
            if name:
                end = obs.time + obs.duration if obs.duration > 0 else (duration if duration is not None else np.inf)
                out.append((name, float(obs.time), float(end)))
    return out


def encode(jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
    """(T, SLOTS) int32 label ids sounding at each frame (0 = none). More than ``SLOTS``
    labels at once is an error (never a silent drop)."""
    times = np.asarray(frame_times, dtype=float)
    spans = tag_spans(jam)
    names = sorted({name for name, _, _ in spans})
    active = np.zeros((len(times), len(names)), dtype=bool)
    for name, start, end in spans:
        active[:, names.index(name)] |= (times >= start) & (times < max(end, start + 1e-9))
    if active.sum(axis=1).max(initial=0) > SLOTS:
        raise ValueError(f"more than {SLOTS} instrument tags sound at once")
    ids = np.array([label_id(n) for n in names], dtype=np.int32)
    order = np.argsort(~active, axis=1, kind="stable")[:, :SLOTS]  # active labels first
    out = np.zeros((len(times), SLOTS), dtype=np.int32)
    k = order.shape[1]
    if k:
        rows = np.arange(len(times))[:, None]
        out[:, :k] = np.where(active[rows, order], ids[order], 0)
    return {"instrument_labels": out}


def patch_starts(n_frames: int, patch: int, hop: int) -> list[int]:
    """Patch starts every ``hop`` frames, the last aligned with the end (one patch when shorter)."""
    if n_frames <= patch:
        return [0]
    starts = list(range(0, n_frames - patch + 1, hop))
    if starts[-1] != n_frames - patch:
        starts.append(n_frames - patch)
    return starts


def batch_targets(ids: np.ndarray, lookup: Mapping[int, int], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(presence (B, C) float32, single (B,) int64) of a batch of label ids (B, T, SLOTS).

    presence: the share of a patch's frames (padding excluded) each class sounds in; single:
    the class of a patch where exactly one label sounds (an unknown label counts), else -1."""
    B = ids.shape[0]
    uniq, inverse = np.unique(ids, return_inverse=True)
    mapped = np.array([lookup.get(int(u), -1) for u in uniq], dtype=np.int64)[inverse.reshape(ids.shape)]
    valid = ids[..., 0] >= 0  # padded frames are -1 in every slot
    onehot = np.zeros(ids.shape[:2] + (n_classes + 1,), dtype=np.float32)
    np.put_along_axis(onehot, np.where(mapped >= 0, mapped, n_classes), 1.0, axis=-1)
    onehot = onehot[..., :n_classes] * valid[..., None]
    presence = onehot.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)[:, None]
    unknown = ((ids > 0) & (mapped < 0)).any(axis=(1, 2))
    sounding = (presence > 0).sum(axis=1) + unknown
    single = np.where(sounding == 1, presence.argmax(axis=1), -1) if n_classes else np.full(B, -1)
    return presence.astype(np.float32), single.astype(np.int64)


class InstrumentModel(BaseModel):
    """The CNN's size and the patches ``predict`` cuts (set ``patch_frames`` as training's)."""

    model_config = ConfigDict(extra="forbid")
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1, description="filters per conv block")
    hidden: int = Field(64, ge=4, description="units of the layer under the heads")
    pool_frames: int = Field(2, ge=1, description="frames averaged before the first conv (hop 256: 2 -> ~43 frames/s)")
    pool_bins: int = Field(5, ge=1, description="bins averaged before the first conv (60 bins/octave: 5 -> semitones)")
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    harmonics: int = Field(6, ge=1, description="input channels: the HCQT view's harmonics (features.hcqt.harmonics)")
    patch_frames: int = Field(88, ge=8, description="frames of the patches predict cuts (~1 s at hop 256)")
    freq_pooling: Literal["flatten", "global"] = Field(
        "flatten", description="flatten: keep frequency (register) under the heads; global: pool it like time"
    )
    eq_db: float = Field(0.0, ge=0.0, description="training augmentation: random EQ curves of about this many dB")
    contrast: float = Field(0.0, ge=0.0, lt=1.0, description="training augmentation: patch dB scaled by 1 +- this")
    stretch: float = Field(0.0, ge=0.0, lt=1.0, description="training augmentation: patches resampled in time by up to 1 +- this")
    harmonic_ratios: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 3.0, 4.0, 5.0],
        description="the HCQT view's harmonics (where each channel reads the EQ curve)",
    )


class InstrumentDecoding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.5, gt=0, lt=1, description="sigmoid activity above which an instrument sounds in a patch")


def _required(vocabulary: Vocabulary | None) -> Vocabulary:
    if vocabulary is None:
        raise ValueError("instrument: no vocabulary (run ingest, which builds it from the corpus's tags)")
    return vocabulary


class InstrumentTargets(Targets):
    """Label ids sounding per HCQT frame: independent of the vocabulary; invariant under a shift."""

    namespace = "tag_open"
    version = "2"  # 2: label ids over the track's own tags, on the HCQT grid
    arrays = (LABELS,)
    merges_annotations = True  # tags from several annotations all hold
    moves = None  # a transposed flute is still a flute

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        return encode(jam, frame_times)


class InstrumentVocabulary(CorpusVocabulary):
    """The corpus's tags as classes (``bind`` sets ``classes``: the vocabulary ingest built)."""

    def __init__(self, classes: Vocabulary | None = None):
        self.classes = classes

    def labels(self, jam) -> list[str]:
        return sorted({name for name, _, _ in tag_spans(jam)})

    def bind(self, task: Task, vocabulary: Mapping[str, Any] | None) -> Task:
        bound = copy.copy(task)
        classes = None if vocabulary is None else Vocabulary.from_json(vocabulary)
        bound.vocabulary = InstrumentVocabulary(classes)
        bound.network = type(task.network)(classes) if isinstance(task.network, InstrumentNetwork) else InstrumentNetwork(classes)
        return bound

    def stream_weights(self, labels: Sequence[Sequence[str]]) -> list[float]:
        """Per track, the mean over its classes of 1 / (training tracks of that class): each class
        then weighs about the same in the mux (a track without a class gets the smallest weight)."""
        vocab = _required(self.classes)
        classes = [{vocab.canonical(x) for x in ls} & set(vocab.classes) for ls in labels]
        counts: dict[str, int] = {}
        for cs in classes:
            for c in cs:
                counts[c] = counts.get(c, 0) + 1
        weights = [float(np.mean([1.0 / counts[c] for c in cs])) if cs else 0.0 for cs in classes]
        floor = min((w for w in weights if w > 0), default=1.0)
        return [w if w > 0 else floor for w in weights]


class InstrumentNetwork(Network):
    """Presence and single-instrument heads over the bound vocabulary's classes."""

    Params = InstrumentModel
    metric_name = "patch_accuracy"
    labels = LABELS  # the stored label ids a patch carries (Targets.arrays)

    def __init__(self, vocabulary: Vocabulary | None = None):
        self.vocabulary = vocabulary
        self._lookup: Mapping[int, int] = vocabulary.id_lookup() if vocabulary is not None else {}  # label id -> class

    def _vocab(self) -> Vocabulary:
        return _required(self.vocabulary)

    def prepare_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        presence, single = batch_targets(batch[self.labels], self._lookup, len(self._vocab().classes))
        out = {k: v for k, v in batch.items() if k != self.labels}
        return {**out, PRESENCE: presence, SINGLE: single}

    def build(self, n_bins: int, params: InstrumentModel):
        from .instrument_net import InstrumentNet

        net = InstrumentNet(
            params.harmonics,
            n_bins,
            len(self._vocab().classes),
            list(params.channels),
            params.hidden,
            params.pool_frames,
            params.pool_bins,
            params.dropout,
            params.freq_pooling,
            params.eq_db,
            params.contrast,
            list(params.harmonic_ratios),
            stretch=params.stretch,
        )
        net.patch_frames = params.patch_frames
        return net

    def loss(self, outputs, batch):
        import torch.nn.functional as F

        single = batch[SINGLE].long()
        bce = F.binary_cross_entropy_with_logits(outputs["tags"].float(), batch[PRESENCE].float())
        # mean over the single-instrument patches, 0 without any: sum / count (bitwise the mean
        # reduction) instead of a branch on any(), which would wait for the device every step
        ce = F.cross_entropy(outputs["clip"].float(), single, ignore_index=-1, reduction="sum")
        ce = ce / (single >= 0).sum().clamp_min(1)
        return ce + bce, {"ce": ce.detach(), "bce": bce.detach()}

    def metric(self, outputs, batch) -> tuple[float, float]:
        """Softmax accuracy on single-instrument patches, and the share of classes the sigmoid head
        gets right (presence at least half the patch) on the others."""
        import torch

        with torch.no_grad():
            single = batch[SINGLE].long()
            solo = single >= 0
            right = float((outputs["clip"].argmax(dim=-1)[solo] == single[solo]).sum())
            multi = ~solo
            if bool(multi.any()):
                tags = (outputs["tags"][multi] > 0) == (batch[PRESENCE][multi] >= 0.5)
                right += float(tags.float().mean(dim=-1).sum())
        return right, float(solo.shape[0])

    def fit_state(self, training_targets) -> dict[str, Any]:
        """The vocabulary (every class with a training example, else an error)."""
        vocab = self._vocab()
        vocab.check_trainable("instrument")
        return {"vocabulary": vocab.to_json()}


class InstrumentDecoder(Decoder):
    DecodeParams = InstrumentDecoding

    def patch_frames(self, model, n_frames: int) -> int:
        """Frames of the patches ``predict`` cuts from a track of ``n_frames`` (a shorter track is padded)."""
        return int(getattr(model, "patch_frames", 88))

    def predict(self, model, features: np.ndarray, device) -> np.ndarray:
        """Per patch (every half patch): [start frame, stop frame, C clip log-probabilities, C activities]."""
        import torch

        x = np.asarray(features, np.float32)  # (H, T, F)
        T = x.shape[1]
        P = self.patch_frames(model, T)
        if T < P:
            x = np.concatenate([x, np.full((x.shape[0], P - T, x.shape[2]), x.min(), np.float32)], axis=1)
        starts = patch_starts(T, P, max(1, P // 2))
        rows = []
        with torch.no_grad():
            for a in range(0, len(starts), 64):
                chunk = np.stack([x[:, s : s + P] for s in starts[a : a + 64]])
                out = model(torch.from_numpy(chunk).to(device))
                logp = torch.log_softmax(out["clip"].float(), dim=-1).cpu().numpy()
                act = torch.sigmoid(out["tags"].float()).cpu().numpy()
                rows.append(np.concatenate([logp, act], axis=1))
        pred = np.concatenate(rows)
        bounds = np.array([[s, min(s + P, T)] for s in starts], np.float32)
        return np.concatenate([bounds, pred], axis=1)

    def decode(self, prediction, frame_times, duration, state: Mapping[str, Any], options: InstrumentDecoding):
        import jams

        vocab = Vocabulary.from_json(state["vocabulary"])
        C = len(vocab.classes)
        hop = float(frame_times[1] - frame_times[0]) if len(frame_times) > 1 else 0.0
        starts = prediction[:, 0].astype(int)
        stops = prediction[:, 1].astype(int)
        t0 = np.asarray(frame_times)[starts]
        t1 = np.minimum(np.asarray(frame_times)[np.maximum(stops - 1, 0)] + hop, duration)
        logp, act = prediction[:, 2 : 2 + C], prediction[:, 2 + C : 2 + 2 * C]
        mean = logp.mean(axis=0)
        clip = int(np.argmax(mean))
        probs = np.exp(mean - mean.max())
        probs /= probs.sum()
        ann = jams.Annotation(namespace="tag_open", duration=duration)
        for k, name in enumerate(vocab.classes):
            on = act[:, k] >= options.threshold
            i = 0
            while i < len(on):
                if not on[i]:
                    i += 1
                    continue
                j = i
                while j + 1 < len(on) and on[j + 1] and t0[j + 1] <= t1[j]:
                    j += 1
                ann.append(
                    time=float(t0[i]),
                    duration=float(max(t1[j] - t0[i], 0.0)),
                    value=name,
                    confidence=float(act[i : j + 1, k].mean()),
                )
                i = j + 1
        ann.sandbox.update(
            clip={"label": vocab.classes[clip], "probabilities": {c: round(float(p), 4) for c, p in zip(vocab.classes, probs)}},
            activity={
                "classes": vocab.classes,
                "aliases": vocab.aliases,
                "times": [[round(float(a), 3), round(float(b), 3)] for a, b in zip(t0, t1)],
                "probabilities": np.round(act, 4).tolist(),
            },
        )
        return ann


class InstrumentScorer(Scorer):
    metrics = ("accuracy", "mAP")  # per track: a clip's accuracy, a mixture's mean AP
    score_columns = ("accuracy", "macro_f1", "mAP")
    scored_by = "scikit-learn: accuracy and macro-F1 over the solo clips, mAP over the mixtures' patches"

    def _compare(self, ref, est) -> dict[str, Any] | None:
        box = est.sandbox
        activity = getattr(box, "activity", None)
        if activity is None:
            raise ValueError("the estimate carries no instrument activity (sandbox.activity)")
        vocab = Vocabulary(list(activity["classes"]), dict(activity.get("aliases", {})))
        spans = [(vocab.canonical(n), a, b) for n, a, b in tag_spans(ref, ref.duration)]
        names = {n for n, _, _ in spans}
        if not names:
            return None
        if len(names) == 1:
            return {"kind": "clip", "classes": vocab.classes, "ref": names.pop(), "est": box.clip["label"]}
        times = np.asarray(activity["times"], float).reshape(-1, 2)
        truth = np.zeros((len(times), len(vocab.classes)), dtype=np.int8)
        for k, c in enumerate(vocab.classes):
            covered = np.zeros(len(times))
            for n, a, b in spans:
                if n == c:
                    covered += np.clip(np.minimum(times[:, 1], b) - np.maximum(times[:, 0], a), 0, None)
            truth[:, k] = covered >= 0.5 * np.maximum(times[:, 1] - times[:, 0], 1e-9)
        return {
            "kind": "mixture",
            "classes": vocab.classes,
            "ref": truth.tolist(),
            "est": np.asarray(activity["probabilities"], float).reshape(len(times), -1).tolist(),
        }

    def score(self, ref, est) -> Scores:
        ev = self._compare(ref, est)
        if ev is None:
            return {}
        if ev["kind"] == "clip":
            return {"accuracy": {"score": float(ev["ref"] == ev["est"]), "weight": 1.0}}
        ap = average_precisions(np.asarray(ev["ref"]), np.asarray(ev["est"]))
        values = [v for v in ap.values() if v is not None]
        return {"mAP": {"score": float(np.mean(values)) if values else float("nan"), "weight": 1.0 if values else 0.0}}

    def evidence(self, ref, est) -> dict[str, Any] | None:
        return self._compare(ref, est)

    def pool_evidence(self, evidence: Sequence[Mapping[str, Any]], figures: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        clips = [e for e in evidence if e["kind"] == "clip"]
        if clips:
            out.update(clip_scores([e["ref"] for e in clips], [e["est"] for e in clips], clips[0]["classes"]))
            lo, hi = out["accuracy_ci95"]
            weakest = weakest_classes(out["per_class"])
            out["notes"] = [
                f"{len(clips)} solo clips: accuracy {out['accuracy']:.3f}, 95% interval {lo:.2f}-{hi:.2f} "
                f"(Wilson); one clip moves it by {1 / len(clips):.3f}",
                *(["lowest recall: " + ", ".join(weakest)] if weakest else []),
            ]
            plot_confusion(
                figures / "confusion_matrix.png",
                out["confusion"]["classes"],
                np.asarray(out["confusion"]["matrix"]),
                f"instrument: {len(clips)} test clips, accuracy {out['accuracy']:.3f} "
                f"(95% {lo:.2f}-{hi:.2f}), macro-F1 {out['macro_f1']:.3f}",
            )
        mixes = [e for e in evidence if e["kind"] == "mixture"]
        if mixes:
            classes = mixes[0]["classes"]
            truth = np.concatenate([np.asarray(e["ref"]).reshape(-1, len(classes)) for e in mixes])
            probs = np.concatenate([np.asarray(e["est"]).reshape(-1, len(classes)) for e in mixes])
            ap = average_precisions(truth, probs)
            values = [v for v in ap.values() if v is not None]
            out["mAP"] = float(np.mean(values)) if values else None
            out["n_mixtures"] = len(mixes)
            out["ap_per_class"] = {classes[k]: v for k, v in ap.items()}
        return out

    def summary(self, scores: Mapping[str, Any]) -> str:
        return " ".join(f"{m} {scores[m]['score']:.2f}" for m in self.metrics if m in scores)

    def plot(self, path: Path, features: np.ndarray, frame_rate: float, ref, est, title: str, prediction: np.ndarray) -> None:
        from .figures import plot_segments

        plot_segments(
            path,
            features[min(1, features.shape[0] - 1)],
            frame_rate,
            [("reference", ref), ("estimate", est)],
            title,
            ylabel="HCQT bin (h=1)",
        )


@TASKS.register
class InstrumentTask(Task):
    """Which instrument plays a solo clip, and which instruments sound when in a mixture."""

    name = "instrument"
    feature = "hcqt"
    targets = InstrumentTargets()
    network = InstrumentNetwork()
    decoder = InstrumentDecoder()
    scorer = InstrumentScorer()
    vocabulary = InstrumentVocabulary()


def average_precisions(truth: np.ndarray, probs: np.ndarray) -> dict[int, float | None]:
    """scikit-learn's average precision per class (column); None where the class never sounds."""
    from sklearn.metrics import average_precision_score

    out: dict[int, float | None] = {}
    for k in range(truth.shape[1] if truth.ndim == 2 else 0):
        out[k] = float(average_precision_score(truth[:, k], probs[:, k])) if truth[:, k].any() else None
    return out


def clip_scores(ref: Sequence[str], est: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """scikit-learn's accuracy, macro-F1 (over the classes in the reference or the estimates),
    per-class precision/recall/F1/support and the confusion matrix of solo clips; with the accuracy's
    95% interval, since a few dozen test clips move the accuracy by several points per clip."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    present = set(ref) | set(est)
    labels = [c for c in classes if c in present] + sorted(present - set(classes))
    p, r, f, s = precision_recall_fscore_support(ref, est, labels=labels, zero_division=0)
    correct = sum(a == b for a, b in zip(ref, est))
    return {
        "accuracy": float(accuracy_score(ref, est)),
        "accuracy_ci95": list(wilson_interval(correct, len(ref))),
        "macro_f1": float(f1_score(ref, est, labels=labels, average="macro", zero_division=0)),
        "n_clips": len(ref),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(labels)
        },
        "confusion": {"classes": labels, "matrix": confusion_matrix(ref, est, labels=labels).tolist()},
    }


def weakest_classes(per_class: Mapping[str, Mapping[str, float]], n: int = 3) -> list[str]:
    """The n reference classes recalled least (under 1), as 'name right/support', worst first."""
    rows = [(v["recall"], c, v["support"]) for c, v in per_class.items() if v["support"] and v["recall"] < 1]
    return [f"{c} {round(r * s)}/{s}" for r, c, s in sorted(rows)[:n]]


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """scipy's Wilson score interval for a proportion: honest at small n and at 0 or 1, unlike +-1.96 SE."""
    from scipy.stats import binomtest

    if trials <= 0:
        return (0.0, 1.0)
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def plot_confusion(path: Path, classes: Sequence[str], matrix: np.ndarray, title: str) -> None:
    """The confusion matrix (rows: reference, columns: estimate) with class names and counts."""
    from .figures import pyplot, save_figure

    plt = pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(2 + 0.6 * n, 1.5 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(matrix[i, j])),
                    ha="center",
                    va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                    fontsize=8,
                )
    ax.set_xlabel("estimate")
    ax.set_ylabel("reference")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
