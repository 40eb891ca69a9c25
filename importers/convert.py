"""Annotations as JAMS: intervals, events, f0 contours and tags in the namespaces the tasks read
(``chord``, ``pitch_contour``, ``tag_open``) and the others a dataset brings along; the
``.lab`` and ``.csv`` f0 readers of the folder importer; and a schema check whose message
names the offending value."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jams
import numpy as np

from .errors import AnnotationFormatError


def new_annotation(namespace: str, duration: float, source: str, annotator: str | None = None) -> jams.Annotation:
    """An empty annotation spanning the track, saying where it came from."""
    meta: dict[str, Any] = {"data_source": source}
    if annotator:
        meta["annotator"] = {"name": annotator}
    return jams.Annotation(namespace, time=0.0, duration=float(duration), annotation_metadata=meta)


def intervals(
    namespace: str, spans: np.ndarray, values: Sequence[Any], duration: float, source: str, annotator: str | None = None
) -> jams.Annotation:
    """(start, end) spans with one value each: chords, keys, sections, notes."""
    spans = np.asarray(spans, dtype=float).reshape(-1, 2)
    if len(spans) != len(values):
        raise ValueError(f"{len(spans)} intervals but {len(values)} labels")
    ann = new_annotation(namespace, duration, source, annotator)
    for (start, end), value in zip(spans, values):
        ann.append(time=float(start), duration=float(end - start), value=_plain(value), confidence=None)
    return ann


def events(
    namespace: str, times: Iterable[float], values: Iterable[Any], duration: float, source: str, annotator: str | None = None
) -> jams.Annotation:
    """Instants (beats, onsets): observations of duration 0."""
    ann = new_annotation(namespace, duration, source, annotator)
    for t, value in zip(times, values):
        ann.append(time=float(t), duration=0.0, value=_plain(value), confidence=None)
    return ann


def contour(
    times: np.ndarray, hz: np.ndarray, voiced: np.ndarray, duration: float, source: str, annotator: str | None = None
) -> jams.Annotation:
    """An f0 contour as ``pitch_contour``: one observation per sample; unvoiced samples keep
    their (absolute) frequency and say ``voiced: false``."""
    times, hz, voiced = np.asarray(times, float), np.asarray(hz, float), np.asarray(voiced, bool)
    if not (len(times) == len(hz) == len(voiced)):
        raise ValueError(f"{len(times)} times, {len(hz)} frequencies, {len(voiced)} voicings")
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(hz))):
        raise ValueError("non-finite time or frequency")
    if np.any(times < 0):
        raise ValueError(f"negative time {float(times.min())}")
    ann = new_annotation("pitch_contour", duration, source, annotator)
    for t, f, v in zip(times.tolist(), np.abs(hz).tolist(), voiced.tolist()):
        ann.append(time=t, duration=0.0, value={"index": 0, "frequency": f, "voiced": bool(v and f > 0)}, confidence=None)
    return ann


def tag(value: str, duration: float, source: str, namespace: str = "tag_open") -> jams.Annotation:
    """One tag spanning the whole track (a solo clip's instrument)."""
    ann = new_annotation(namespace, duration, source)
    ann.append(time=0.0, duration=float(duration), value=str(value), confidence=None)
    return ann


def _plain(value: Any) -> Any:
    """numpy scalars as Python values (JSON and the schema want them)."""
    return value.item() if isinstance(value, np.generic) else value


# -- the folder importer's readers -------------------------------------------------------------


def read_lab(path: Path, duration: float, source: str = "mirpipe import folder") -> list[jams.Annotation]:
    """A ``.lab`` chord file (start end label, whitespace separated) through ``jams.util.import_lab``."""
    import jams.util

    if path.stat().st_size == 0:
        raise ValueError("empty file")
    ann = jams.util.import_lab("chord", str(path))
    ann.duration = float(duration)
    ann.annotation_metadata = jams.AnnotationMetadata(data_source=source)
    ann.time = 0.0
    for obs in list(ann.data):
        if not isinstance(obs.value, str):  # a numeric-looking label, or a missing third column
            raise ValueError(f"line at {obs.time:.3f} s has no chord label (got {obs.value!r})")
    return [ann]


def read_f0_csv(path: Path, duration: float, source: str = "mirpipe import folder") -> list[jams.Annotation]:
    """A ``.csv`` f0 file: rows of time (s) and frequency (Hz), comma, tab or space separated, an
    optional header line; a frequency <= 0 is unvoiced (as in MedleyDB and vocadito)."""
    times, hz = read_two_columns(path)
    return [contour(times, hz, hz > 0, duration, source)]


def read_two_columns(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first two numeric columns of a delimited text file (a header line is skipped)."""
    text = path.read_text(encoding="utf-8-sig")
    rows = [r for r in text.splitlines() if r.strip() and not r.lstrip().startswith("#")]
    if not rows:
        raise ValueError("empty file")
    delimiter = "," if "," in rows[0] else ";" if ";" in rows[0] else None
    parsed = []
    for n, row in enumerate(rows):
        fields = next(csv.reader([row], delimiter=delimiter)) if delimiter else row.split()
        try:
            parsed.append((float(fields[0]), float(fields[1])))
        except (ValueError, IndexError):
            if n == 0:
                continue  # a header
            raise ValueError(f"line {n + 1}: expected time and frequency, got {row.strip()[:80]!r}") from None
    if not parsed:
        raise ValueError("no data rows")
    data = np.asarray(parsed, dtype=float)
    return data[:, 0], data[:, 1]


# -- schema check --------------------------------------------------------------------------------


def check_annotation(ann: jams.Annotation, path: Path | str) -> None:
    """Strict JAMS validation; an ``AnnotationFormatError`` naming the file and the first value the
    namespace's schema rejects (jams' own message quotes the whole label regex)."""
    try:
        ann.validate(strict=True)
        return
    except jams.SchemaError as exc:
        reason = str(exc).splitlines()[0]
    import jsonschema

    validator = jsonschema.Draft4Validator(jams.schema.namespace(ann.namespace))
    for obs in ann.data:
        record = {"time": obs.time, "duration": obs.duration, "value": obs.value, "confidence": obs.confidence}
        err = next(iter(validator.iter_errors(record)), None)
        if err is not None:
            what = err.message if "does not match" not in err.message else f"{obs.value!r} is not a valid {ann.namespace} value"
            raise AnnotationFormatError(path, f"{ann.namespace} at {obs.time:.3f} s: {what}")
    raise AnnotationFormatError(path, f"{ann.namespace}: {reason[:300]}")
