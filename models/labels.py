"""Class vocabularies from the corpus's own labels (tag annotations), for tasks that declare
``Task.labels``: normalisation, aliases, counts per split, and the label ids the store keeps.

The store never holds a vocabulary index: a track's targets name its labels by ``label_id``
(a stable hash of the normalised label), so a new tag in the corpus changes the vocabulary
(ingest's manifest, the store index, the checkpoint) without recomputing any track's
features; ids become class indices when a batch is cut (``Vocabulary.id_lookup``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPLITS = ("train", "val", "test")


def normalise(label: Any) -> str:
    """Case and whitespace folded: ``" Acoustic  Guitar"`` -> ``"acoustic guitar"``."""
    return " ".join(str(label).split()).lower()


def label_id(label: str) -> int:
    """A positive 31-bit id of a normalised label, stable across processes and runs (0 = none)."""
    digest = hashlib.sha256(normalise(label).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF or 1


class VocabularyParams(BaseModel):
    """How a task's labels become classes (``ingest.vocabularies.<task>`` in pipeline.yaml)."""

    model_config = ConfigDict(extra="forbid")
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="label -> the class it counts as "
        "(e.g. {'violoncello': cello}); matched after normalising case and whitespace",
    )
    classes: list[str] | None = Field(
        None,
        description="a fixed class list; default: every label with a training "
        "example. Each class needs a training example (else training stops with an error)",
    )

    @model_validator(mode="after")
    def _normalise(self):
        aliases = {normalise(k): normalise(v) for k, v in self.aliases.items()}
        chained = sorted(k for k, v in aliases.items() if v in aliases and aliases[v] != v)
        if chained:
            raise ValueError(f"aliases must point at a class, not at another alias: {chained}")
        self.aliases = {k: v for k, v in aliases.items() if k != v}
        if self.classes is not None:
            classes = [self.aliases.get(normalise(c), normalise(c)) for c in self.classes]
            if len(set(classes)) != len(classes) or not classes:
                raise ValueError(f"classes must be distinct and non-empty after normalising and aliasing: {self.classes}")
            self.classes = classes
        return self


@dataclass
class Vocabulary:
    """A task's classes, the aliases that map labels onto them, and what the corpus holds."""

    classes: list[str]
    aliases: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # class -> split -> tracks carrying it
    outside: dict[str, dict[str, int]] = field(default_factory=dict)  # labels that are no class -> split -> tracks

    def canonical(self, label: Any) -> str:
        name = normalise(label)
        return self.aliases.get(name, name)

    def index(self, label: Any) -> int | None:
        name = self.canonical(label)
        return self.classes.index(name) if name in self.classes else None

    def id_lookup(self) -> dict[int, int]:
        """Stored label id -> class index, for every class name and alias."""
        lookup: dict[int, int] = {}
        for name in [*self.classes, *self.aliases]:
            k = self.index(name)
            if k is not None:
                lookup[label_id(name)] = k
        return lookup

    def untrained(self) -> list[str]:
        """Classes without a training track."""
        return [c for c in self.classes if self.counts.get(c, {}).get("train", 0) == 0]

    def check_trainable(self, task: str) -> None:
        if not self.classes:
            raise ValueError(f"{task}: the corpus has no labels to learn (no training track carries one)")
        missing = self.untrained()
        if missing:
            raise ValueError(
                f"{task}: class(es) {missing} have no training example (a track of the train split "
                "carrying the label); add tracks, alias the label onto another class, or drop it from "
                f"ingest.vocabularies.{task}.classes"
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Vocabulary:
        return cls(
            list(data["classes"]),
            dict(data.get("aliases", {})),
            {k: dict(v) for k, v in data.get("counts", {}).items()},
            {k: dict(v) for k, v in data.get("outside", {}).items()},
        )


def training_identity(vocabulary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What of a vocabulary a trained model depends on: its classes and aliases (not the counts,
    so a test track's new label rescores without retraining)."""
    if vocabulary is None:
        return None
    return {"classes": list(vocabulary["classes"]), "aliases": dict(vocabulary.get("aliases", {}))}


def build_vocabulary(tracks: Iterable[tuple[str, Sequence[str]]], params: VocabularyParams | None = None) -> Vocabulary:
    """The vocabulary of ``(split, labels)`` per track: each label normalised and aliased; the
    classes are ``params.classes`` or every label a training track carries (sorted); the rest
    is ``outside`` (reported, never dropped silently)."""
    params = params or VocabularyParams()
    vocab = Vocabulary([], dict(params.aliases))
    seen: dict[str, dict[str, int]] = {}
    for split, labels in tracks:
        for name in {vocab.canonical(label) for label in labels if normalise(label)}:
            row = seen.setdefault(name, {s: 0 for s in SPLITS})
            row[split] = row.get(split, 0) + 1
    if params.classes is not None:
        vocab.classes = list(params.classes)
    else:
        vocab.classes = sorted(name for name, row in seen.items() if row.get("train", 0) > 0)
    vocab.counts = {c: seen.get(c, {s: 0 for s in SPLITS}) for c in vocab.classes}
    vocab.outside = {name: row for name, row in sorted(seen.items()) if name not in vocab.classes}
    ids: dict[int, str] = {}
    for name in [*seen, *vocab.classes]:
        other = ids.setdefault(label_id(name), name)
        if other != name:  # a 31-bit hash collision: vanishingly rare, never silent
            raise ValueError(f"labels {other!r} and {name!r} share the label id {label_id(name)}; alias one of them")
    return vocab


def notes(task: str, vocab: Vocabulary) -> list[str]:
    """Status lines: the classes with their counts per split, and the labels outside them."""
    out = [
        f"{task} vocabulary: {len(vocab.classes)} classes (tracks train/val/test): "
        + ", ".join(f"{c} {'/'.join(str(vocab.counts.get(c, {}).get(s, 0)) for s in SPLITS)}" for c in vocab.classes)
    ]
    if vocab.aliases:
        out.append("  aliases: " + ", ".join(f"{k} -> {v}" for k, v in sorted(vocab.aliases.items())))
    for name, row in vocab.outside.items():
        out.append(
            f"  WARNING {task}: label {name!r} is no class (tracks train/val/test "
            f"{'/'.join(str(row.get(s, 0)) for s in SPLITS)}): not learnt, not scored as a class"
        )
    for name in vocab.untrained():
        out.append(f"  WARNING {task}: class {name!r} has no training example: training {task} will stop with an error")
    return out
