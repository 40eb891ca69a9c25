"""What ingest decides about a track's annotations, and the prepared JAMS every later stage reads.

Ingest validates a track once and records a ``Preparation``: which annotation is the
reference where several of a task's namespace compete, how far interval boundaries
may be snapped, the audio's duration, and which channel stands for the track.
``prepared_jams`` turns the untouched corpus JAMS into exactly what ingest validated,
so features, training and evaluation all see the same labels on the same time line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from mirpipe import errors
from mirpipe.annotations.namespaces import converts_to
from mirpipe.records import Record

# Namespaces whose observations partition time (mir_eval rejects overlapping chord intervals).
PARTITION_NAMESPACES = re.compile(r"^(chord|key|segment)")


class ChoiceRule(BaseModel):
    """How the reference is picked when a track has several annotations of a task's namespace."""

    model_config = ConfigDict(extra="forbid")
    rule: Literal["first", "last", "annotator", "curator"] = "first"
    name: str | None = None  # the annotator's or curator's name, for those rules (case-insensitive)

    @model_validator(mode="after")
    def _name(self):
        if self.rule in ("annotator", "curator") and not self.name:
            raise ValueError(f"annotation choice rule {self.rule!r} needs a name")
        if self.rule in ("first", "last") and self.name:
            raise ValueError(f"annotation choice rule {self.rule!r} takes no name")
        return self


@dataclass(frozen=True)
class Choice(Record):
    """The reference kept for one namespace: its index in ``jam.annotations``, among how many."""

    index: int
    candidates: list[int]
    rule: str
    annotator: str | None


@dataclass(frozen=True)
class Preparation(Record):
    """Everything that turns a corpus track (audio + JAMS) into what the stages read."""

    channel: int | None  # None: the mean of the channels; k: channel k alone (the mean cancelled)
    choices: dict[str, Choice]  # namespace -> the reference kept where several competed
    timing_tolerance: float  # seconds: gaps and overlaps up to this are snapped in partition namespaces
    duration: float  # the decoded audio's, which every stage uses


def annotator_name(ann) -> str | None:
    meta = ann.annotation_metadata
    annotator = meta.annotator if meta is not None else None
    for key in ("name", "id"):
        value = getattr(annotator, key, None) if annotator is not None else None
        if isinstance(value, str) and value:
            return value
    return None


def curator_name(ann) -> str | None:
    meta = ann.annotation_metadata
    name = getattr(getattr(meta, "curator", None), "name", None)
    return name or None


def candidates(jam, namespace: str) -> list[int]:
    """Indices in ``jam.annotations`` of the annotations that are (or convert to) ``namespace``."""
    return [i for i, ann in enumerate(jam.annotations) if converts_to(ann.namespace, namespace)]


def choose(jam, namespace: str, rule: ChoiceRule, path: str) -> Choice | None:
    """The reference of ``namespace`` when several compete (None when there are fewer than two)."""
    found = candidates(jam, namespace)
    if len(found) < 2:
        return None
    if rule.rule in ("first", "last"):
        index = found[0] if rule.rule == "first" else found[-1]
    else:
        name_of = annotator_name if rule.rule == "annotator" else curator_name
        assert rule.name is not None  # (validated: these rules need a name)
        matching = [i for i in found if (name_of(jam.annotations[i]) or "").casefold() == rule.name.casefold()]
        if not matching:
            present = sorted({name_of(jam.annotations[i]) or "(unnamed)" for i in found})
            raise errors.AnnotationChoiceError(
                path, f"{len(found)} {namespace} annotations, none by {rule.rule} {rule.name!r} (present: {present})"
            )
        index = matching[0]
    return Choice(index, found, rule.rule, annotator_name(jam.annotations[index]))


def snap_intervals(ann, tolerance: float, path: str) -> int:
    """Close gaps and overlaps up to ``tolerance`` between consecutive observations of a
    partition annotation (in place); a larger overlap is an ``AnnotationOverlapError``.
    Returns how many boundaries moved."""
    if not PARTITION_NAMESPACES.match(ann.namespace) or len(ann.data) < 2:
        return 0
    obs = sorted(ann.data, key=lambda o: (o.time, o.duration))
    snapped, out = 0, [obs[0]]
    for nxt in obs[1:]:
        prev = out[-1]
        gap = nxt.time - (prev.time + prev.duration)
        if gap < -tolerance:
            raise errors.AnnotationOverlapError(
                path,
                f"{ann.namespace} observations overlap by {-gap:.6g} s at {nxt.time:.3f} s "
                f"({prev.value!r} and {nxt.value!r}); the timing tolerance is {tolerance:g} s",
            )
        if gap != 0 and abs(gap) <= tolerance:
            out[-1] = prev._replace(duration=max(nxt.time - prev.time, 0.0))
            snapped += 1
        out.append(nxt)
    if snapped:
        ann.data.clear()  # a SortedKeyList: refilled rather than edited in place
        ann.data.update(out)
    return snapped


def apply(jam, prep: Preparation, path: str) -> dict[str, int]:
    """Make ``jam`` what ingest validated, in place: drop the competing references, snap
    boundaries, take the audio's duration. Returns boundaries snapped per namespace."""
    import jams

    drop = {i for c in prep.choices.values() for i in c.candidates if i != c.index}
    kept = [a for i, a in enumerate(jam.annotations) if i not in drop]
    jam.annotations = jams.AnnotationArray(annotations=kept)
    snapped: dict[str, int] = {}
    for ann in jam.annotations:
        n = snap_intervals(ann, prep.timing_tolerance, path)
        if n:
            snapped[ann.namespace] = snapped.get(ann.namespace, 0) + n
    jam.file_metadata.duration = prep.duration
    return snapped


def prepared_jams(path: str, prep: Preparation):
    """The corpus JAMS at ``path`` as the stages read it (see ``apply``)."""
    import jams

    jam = jams.load(str(path), validate=False)
    apply(jam, prep, str(path))
    return jam
