"""Store interface: one entry per track, variant-major then time-major arrays, JSON attributes.

Every array of an entry is shaped ``(V, T, ...)``: V variants stored whole (1 in
feature mode, where pitch shifts are bin offsets taken at sampling time; one per
shift in audio mode), T frames. A patch is a slice ``[v, start:stop]``. Workers
write entries (each atomically, as one file); only the driver writes the index.
Array names may be nested with ``/`` (``targets/chord_root``).

A backend is one module: a ``FeatureStore`` subclass registered with
``@STORE_BACKENDS.register(name=...)``; ``features.store`` names one.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirpipe.errors import EntryReadError, WorkdirFileError
from mirpipe.records import Record, RecordError, RecordTable
from mirpipe.registry import Registry

from .atomic import read_cached, read_file, remove_leftovers, temp_path, write_bytes_if_changed

INDEX_NAME = "index.json"
CHUNK_FRAMES = 1024  # frames per chunk: a whole-track slab is a few reads, a patch one or two
MAX_TIME_CHUNKS = 64  # chunks per variant of an array at most: a track of hours stays a bounded number of members

FEATURES, TARGETS = "features", "targets"  # the two files of an entry
TARGETS_PREFIX = "targets/"  # arrays named ``targets/...`` live in the targets file


def part_of(name: str) -> str:
    """The file of an entry that holds array ``name``: ``targets`` for ``targets/...``, else ``features``."""
    return TARGETS if name.startswith(TARGETS_PREFIX) else FEATURES


def chunk_frames(n_frames: int) -> int:
    """Frames per chunk of an array of ``n_frames``: ``CHUNK_FRAMES``, or more for a track so long
    that it would need more than ``MAX_TIME_CHUNKS`` chunks."""
    return max(CHUNK_FRAMES, -(-n_frames // MAX_TIME_CHUNKS))


def time_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk shape of a ``(V, T, ...)`` array: one variant, ``chunk_frames(T)`` frames (capped at T), everything else."""
    if len(shape) < 2:
        return tuple(max(1, n) for n in shape)
    return (1, min(chunk_frames(shape[1]), max(1, shape[1]))) + tuple(max(1, n) for n in shape[2:])


@dataclass(frozen=True)
class ArraySpec(Record):
    shape: list[int]
    dtype: str

    @classmethod
    def of(cls, array: np.ndarray) -> ArraySpec:
        return cls([int(n) for n in array.shape], str(array.dtype))


@dataclass(frozen=True)
class IndexRow(Record):
    """One entry of the store index (``index.json``), written by the driver after features."""

    track: str
    split: str
    variants: list[int]  # the pitch shift stored in each variant (feature mode: [0])
    shifts: list[int]  # the shifts a patch may be cut at (feature mode: by bin offsets)
    frames: dict[str, int]  # frames per feature (each feature has its own frame grid)
    arrays: dict[str, ArraySpec]
    path: str  # relative to the store root


@dataclass
class Entry:
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    """Round-trip attributes through JSON so both backends store and return the same values."""
    return json.loads(json.dumps(attrs, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


class ArraySink(ABC):
    """A backend's writer of one file under construction: arrays created with their final shape,
    then filled chunk by chunk (each chunk written once: a zip member cannot be rewritten)."""

    @abstractmethod
    def create(self, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...]) -> None: ...

    @abstractmethod
    def put(self, name: str, variant: int, start: int, frames: np.ndarray) -> None:
        """Frames ``[start, start + len(frames))`` of variant ``variant``; ``start`` is on a chunk boundary."""

    @abstractmethod
    def close(self) -> None:
        """Finish the file (flush, write the directory)."""


class PartWriter:
    """Writes one file of an entry as its frames come (block-wise features, chunk-wise copies):
    frames of each (array, variant) arrive in time order and are buffered to whole chunks,
    so memory holds a chunk per array, never a track. ``commit`` checks every frame of every
    array was written, then renames the file into place; a writer left without ``commit``
    (an exception) leaves only a temporary file, which ``discard`` removes."""

    def __init__(
        self, sink: ArraySink, tmp: Path, final: Path, describe: str, publish: Callable[[Path, Path], None] = os.replace
    ):
        self.sink, self.tmp, self.final, self.describe, self.publish = sink, tmp, final, describe, publish
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.chunk: dict[str, int] = {}
        self.written: dict[tuple[str, int], int] = {}
        self.pending: dict[tuple[str, int], list[np.ndarray]] = {}
        self.committed = False

    def create(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        """Declare array ``name`` of ``(V, T, ...)`` ``shape``; its frames follow through ``write``."""
        if len(shape) < 2:
            raise ValueError(f"{self.describe}: array {name} must be (variants, frames, ...), got shape {shape}")
        chunks = time_chunks(tuple(shape))
        self.sink.create(name, tuple(shape), np.dtype(dtype), chunks)
        self.shapes[name], self.chunk[name] = tuple(shape), chunks[1]
        for v in range(shape[0]):
            self.written[(name, v)], self.pending[(name, v)] = 0, []

    def write(self, name: str, variant: int, start: int, frames: np.ndarray) -> None:
        """Frames ``[start, start + len(frames))`` of one variant, right after the ones before."""
        key = (name, variant)
        done = self.written[key] + sum(len(f) for f in self.pending[key])
        if start != done:
            raise ValueError(f"{self.describe}: {name}[{variant}] frames must come in order: got {start}, expected {done}")
        if start + len(frames) > self.shapes[name][1]:
            raise ValueError(
                f"{self.describe}: {name}[{variant}] has {self.shapes[name][1]} frames, got up to {start + len(frames)}"
            )
        self.pending[key].append(np.asarray(frames))
        self._flush(key, final=False)

    def write_array(self, name: str, data: np.ndarray) -> None:
        """A whole ``(V, T, ...)`` array at once."""
        self.create(name, data.shape, data.dtype)
        for v in range(data.shape[0]):
            self.write(name, v, 0, data[v])

    def copy(self, name: str, source: Any) -> None:
        """Array ``name`` from a sliceable handle of another file, chunk by chunk (bytes as stored)."""
        shape = tuple(source.shape)
        self.create(name, shape, source.dtype)
        step = self.chunk[name]
        for v in range(shape[0]):
            for a in range(0, shape[1], step):
                self.write(name, v, a, np.asarray(source[v, a : a + step]))
            if shape[1] == 0:
                self.write(name, v, 0, np.asarray(source[v, 0:0]))

    def _flush(self, key: tuple[str, int], final: bool) -> None:
        """Write the buffered frames of ``key`` that fill whole chunks (all of them at the array's end or when ``final``)."""
        name, v = key
        step, total = self.chunk[name], self.shapes[name][1]
        buffered = sum(len(f) for f in self.pending[key])
        start = self.written[key]
        n = buffered if (final or start + buffered == total) else (buffered // step) * step
        if n == 0:
            return
        data = np.concatenate(self.pending[key]) if len(self.pending[key]) > 1 else self.pending[key][0]
        self.sink.put(name, v, start, data[:n])
        self.written[key] = start + n
        self.pending[key] = [data[n:]] if n < len(data) else []

    def commit(self) -> Path:
        for key in self.pending:
            self._flush(key, final=True)
        short = {f"{n}[{v}]": w for (n, v), w in self.written.items() if w != self.shapes[n][1]}
        if short:
            raise ValueError(f"{self.describe}: arrays left incomplete (frames written: {short})")
        self.sink.close()
        self.publish(self.tmp, self.final)
        self.committed = True
        return self.final

    def discard(self) -> None:
        if self.committed:
            return
        try:
            self.sink.close()
        except Exception:  # noqa: BLE001 - the file is thrown away; its writer's state does not matter
            pass
        self.tmp.unlink(missing_ok=True)


class FeatureStore(ABC):
    """An entry is two files per track: the features file (``<track><suffix>``: every feature kind)
    and, when any task has targets, the targets file (``<track>.targets<suffix>``): targets are
    rewritten when a task is added or changed without touching the feature chunks. Readers see one
    entry: ``open_arrays`` routes ``targets/...`` names to the targets file and merges the attributes."""

    backend: str
    suffix: str

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def entry_relpath(self, track: str, part: str = FEATURES) -> str:
        """A file of the entry, relative to the store root (the index's ``path`` is the features file)."""
        return f"{track}{self.suffix}" if part == FEATURES else f"{track}.targets{self.suffix}"

    def entry_path(self, track: str, part: str = FEATURES) -> Path:
        return self.root / self.entry_relpath(track, part)

    def has_entry(self, track: str) -> bool:
        return self.entry_path(track).exists()

    def has_part(self, track: str, part: str) -> bool:
        return self.entry_path(track, part).exists()

    def entry_stamp(self, track: str) -> list[int] | None:
        """(size, mtime_ns) of the features file, then of the targets file when there is one; None
        when the features file is missing: what a completion record keeps so that planning notices a
        damaged, replaced or removed file without opening it."""
        stamp: list[int] = []
        for part in (FEATURES, TARGETS):
            try:  # a string path: planning stats every entry, and pathlib costs more than the stat
                st = os.stat(f"{self.root}{os.sep}{self.entry_relpath(track, part)}")
            except OSError:
                if part == FEATURES:
                    return None
                continue
            stamp += [st.st_size, st.st_mtime_ns]
        return stamp

    # -- writing ---------------------------------------------------------------
    def write_entry(self, track: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
        """Both files of an entry from whole arrays (``targets/...`` to the targets file; none: no
        targets file), each written atomically; a concurrent or repeated write is harmless."""
        bad = {k: v.shape for k, v in arrays.items() if np.ndim(v) < 2}
        if bad:
            raise ValueError(f"entry {track}: arrays must be (variants, frames, ...), got {bad}")
        targets = {k: v for k, v in arrays.items() if part_of(k) == TARGETS}
        final = self.write_part(track, FEATURES, {k: v for k, v in arrays.items() if k not in targets}, attrs)
        if targets:
            self.write_part(track, TARGETS, targets, {k: attrs[k] for k in ("track", "variants") if k in attrs})
        else:
            self.remove_part(track, TARGETS)
        return final

    def write_part(self, track: str, part: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
        """One file of an entry from whole arrays, atomically."""
        with self.part_writer(track, part, attrs) as w:
            for name, data in arrays.items():
                w.write_array(name, np.ascontiguousarray(data))
        return w.final

    @contextmanager
    def part_writer(self, track: str, part: str, attrs: dict[str, Any]) -> Iterator[PartWriter]:
        """A ``PartWriter`` of one file of an entry (attributes fixed up front: a zip member is
        written once), committed when the block ends without an exception."""
        final = self.entry_path(track, part)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(final)
        writer = PartWriter(self._sink(tmp, _jsonable(attrs)), tmp, final, f"entry {track} ({part})", self._publish)
        try:
            yield writer
            writer.commit()
        finally:
            writer.discard()

    def remove_part(self, track: str, part: str) -> None:
        self.entry_path(track, part).unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------
    def read_entry(self, track: str, names: Iterable[str] | None = None) -> Entry:
        """Whole arrays, every variant (a read error is an ``EntryReadError`` naming the file and arrays)."""
        wanted = None if names is None else list(names)
        with self.reading(track, wanted or ()), self.opened(track, wanted) as (arrays, attrs):
            return Entry({n: np.asarray(a[...]) for n, a in arrays.items()}, attrs)

    def read_slab(self, track: str, names: Iterable[str] | None, start: int, stop: int | None, variant: int = 0) -> Entry:
        """Frames [start, stop) of one variant of the named arrays (all arrays when ``names`` is None)."""
        with self.opened(track, names) as (arrays, attrs):
            return Entry({n: np.asarray(a[variant, start:stop]) for n, a in arrays.items()}, attrs)

    @contextmanager
    def opened(self, track: str, names: Iterable[str] | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        handles, attrs, owner = self.open_arrays(track, names)
        try:
            yield handles, attrs
        finally:
            if owner is not None:
                owner.close()

    def open_arrays(self, track: str, names: Iterable[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """Sliceable handles of the named arrays (all when None), the entry's attributes, and a
        ``close()``-able owner (or None).

        For readers that cut many slabs from the same entries (streaming): opening
        costs metadata reads that one open handle pays only once. ``targets/...`` names come
        from the targets file, opened only when one is asked for (or all are).
        """
        wanted = None if names is None else list(names)
        want_targets = wanted is None or any(part_of(n) == TARGETS for n in wanted)
        handles, attrs, owner = self._open(
            self.entry_path(track), None if wanted is None else [n for n in wanted if part_of(n) == FEATURES]
        )
        owners = [owner]
        try:
            if want_targets and (wanted is not None or self.has_part(track, TARGETS)):
                t_handles, t_attrs, t_owner = self._open(
                    self.entry_path(track, TARGETS), None if wanted is None else [n for n in wanted if part_of(n) == TARGETS]
                )
                owners.append(t_owner)
                handles.update(t_handles)
                attrs = {**t_attrs, **attrs}
        except BaseException:
            _close_all(owners)
            raise
        if wanted is not None:
            handles = {n: handles[n] for n in wanted}
        return handles, attrs, _Owners(owners) if len(owners) > 1 else owner

    @contextmanager
    def reading(self, track: str, names: Iterable[str] = ()) -> Iterator[None]:
        """Read errors of the block as ``EntryReadError`` naming the entry file and the arrays (a damaged
        chunk, a cut file: the runner then recomputes the track's entry)."""
        try:
            yield
        except EntryReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to read a stored array back is damage
            raise self.read_error(track, names, exc) from exc

    def read_error(self, track: str, names: Iterable[str], exc: BaseException) -> EntryReadError:
        """The ``EntryReadError`` of ``exc`` raised reading arrays ``names`` of ``track``'s entry."""
        names = list(names)
        part = TARGETS if names and all(part_of(n) == TARGETS for n in names) else FEATURES
        what = f"array {', '.join(names)}" if names else "the entry"
        return EntryReadError(self.entry_path(track, part), f"{what} of track {track!r}: {type(exc).__name__}: {exc}")

    def track_of(self, path: str | Path) -> str | None:
        """The track whose entry file ``path`` is (either file), None for any other path."""
        try:
            rel = Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return None
        for ending in (f".targets{self.suffix}", self.suffix):
            if ending and rel.endswith(ending):
                return rel[: -len(ending)]
        return None

    def read_attrs(self, track: str) -> dict[str, Any]:
        with self.opened(track, ()) as (_, attrs):
            return attrs

    def part_attrs(self, track: str, part: str) -> dict[str, Any] | None:
        """The attributes of one file of an entry; None when it is missing or does not open."""
        try:
            _, attrs, owner = self._open(self.entry_path(track, part), [])
        except Exception:  # noqa: BLE001 - missing, cut or foreign: the caller recomputes the part
            return None
        if owner is not None:
            owner.close()
        return attrs

    def is_valid(self, track: str) -> bool:
        """True when the entry's files open and hold all their chunks (a killed writer leaves it invalid)."""
        if not self._valid(self.entry_path(track)):
            return False
        return not self.has_part(track, TARGETS) or self._valid(self.entry_path(track, TARGETS))

    def part_valid(self, track: str, part: str) -> bool:
        return self._valid(self.entry_path(track, part))

    def part_readable(self, track: str, part: str) -> bool:
        """``part_valid``, and every chunk of every array reads and decodes (zip CRCs, codec checks),
        one chunk at a time (a track of hours is never read whole)."""
        return self.part_problem(track, part) is None

    def part_label(self, track: str, part: str) -> str:
        """How a reason names one file of an entry: ``entry <file>`` or ``targets file <file>``."""
        return f"{'targets file' if part == TARGETS else 'entry'} {Path(self.entry_relpath(track, part)).name}"

    def part_problem(self, track: str, part: str) -> str | None:
        """What is wrong with one file of an entry, or None when it opens, holds all its chunks and
        every chunk of every array reads and decodes (one chunk at a time, as ``part_readable``).
        The reason names the file, then the array and chunk (its grid position, variant and frames)
        and the reader's own message: ``entry t.zarr.zip: array cqt chunk 0/0/0 (variant 0, frames
        0-1024): BadZipFile: Bad CRC-32 for file 'cqt/c/0/0/0'``."""
        label = self.part_label(track, part)
        if not self.has_part(track, part):
            return f"{label} missing"
        path = self.entry_path(track, part)
        try:
            handles, _, owner = self._open(path, None)
        except Exception as exc:  # noqa: BLE001 - what the backend says is the reason
            return f"{label}: does not open: {_describe(exc)}"
        try:
            if not handles:
                return f"{label}: holds no arrays"
            for name, handle in handles.items():
                present, total = getattr(handle, "nchunks_initialized", None), getattr(handle, "nchunks", None)
                if isinstance(present, int) and isinstance(total, int) and present != total:
                    return f"{label}: array {name}: {present} of {total} chunks present (an interrupted or cut write)"
            for name, handle in handles.items():
                shape = tuple(handle.shape)
                if len(shape) < 2:
                    continue
                step = chunk_frames(shape[1])
                for v in range(shape[0]):
                    for a in range(0, shape[1], step):
                        try:
                            np.asarray(handle[v, a : a + step])
                        except Exception as exc:  # noqa: BLE001 - any failure to read back is damage: say which chunk
                            grid = "/".join(map(str, (v, a // step, *[0] * (len(shape) - 2))))
                            stop = min(a + step, shape[1])
                            return f"{label}: array {name} chunk {grid} (variant {v}, frames {a}-{stop}): {_describe(exc)}"
        except Exception as exc:  # noqa: BLE001 - listing the arrays of a damaged file failed
            return f"{label}: {_describe(exc)}"
        finally:
            if owner is not None:
                owner.close()
        if not self._valid(path):  # the backend's own check (HDF5: a file cut short)
            return f"{label}: incomplete (the {self.backend} backend's check of its chunks fails)"
        return None

    # -- what a backend implements -----------------------------------------------
    @abstractmethod
    def _sink(self, tmp: Path, attrs: dict[str, Any]) -> ArraySink:
        """A writer of a new file at ``tmp`` with attributes ``attrs`` (JSON values)."""

    def _publish(self, tmp: Path, final: Path) -> None:
        """Put a finished file in place (atomically)."""
        os.replace(tmp, final)

    @abstractmethod
    def _open(self, path: Path, names: list[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """Handles of the named arrays of one file (all when None), its attributes, a ``close()``-able owner or None."""

    @abstractmethod
    def _valid(self, path: Path) -> bool:
        """The file opens and holds all its chunks."""

    # -- index (driver only) -------------------------------------------------
    def write_index(self, rows: list[IndexRow]) -> None:
        self.write_index_json([row.to_json() for row in rows])

    def write_index_json(self, rows: Iterable[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
        """The index from rows in JSON form (the fields of ``IndexRow``) and document-level ``extra``
        values (the corpus's class vocabularies); the file is left as it is when it already holds them."""
        self.write_index_table(RecordTable.from_dicts(IndexRow, "track", rows, extra={**(extra or {}), "backend": self.backend}))

    def write_index_table(self, table: RecordTable[IndexRow]) -> None:
        """The index as a column document (left as it is when the file already holds it)."""
        table.extra["backend"] = self.backend
        write_bytes_if_changed(self.root / INDEX_NAME, table.to_bytes())

    def read_index(self) -> RecordTable[IndexRow]:
        """The index rows by track (empty before features ran), read once per version of the file
        in a process; a malformed index is a ``WorkdirFileError``."""
        path = self.root / INDEX_NAME
        if not path.exists():
            return RecordTable.from_rows(IndexRow, "track", [])
        return read_cached(path, _load_index)

    def remove_leftovers(self) -> int:
        return remove_leftovers(self.root)


def _describe(exc: BaseException) -> str:
    """``Class: message`` of an exception, on one line (the message of its cause when it has none)."""
    text = " ".join(str(exc).split())
    if not text and exc.__cause__ is not None:
        return _describe(exc.__cause__)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Owners:
    """Closes the handles of both files of an entry."""

    def __init__(self, owners: list[Any]):
        self.owners = owners

    def close(self) -> None:
        _close_all(self.owners)


def _close_all(owners: list[Any]) -> None:
    for owner in owners:
        if owner is not None:
            owner.close()


def _load_index(path: Path) -> RecordTable[IndexRow]:
    try:
        return RecordTable.from_bytes(IndexRow, "track", read_file(path), rows_key="entries")
    except (KeyError, TypeError, RecordError) as exc:
        raise WorkdirFileError(path, f"not a store index written by this mirpipe ({exc}); rerun features") from None


STORE_BACKENDS: Registry[type[FeatureStore]] = Registry(
    "store backend",
    builtin=("mirpipe.storage.zarr_store", "mirpipe.storage.hdf5_store", "mirpipe.storage.memory_store"),
    entry_points="mirpipe.store_backends",
)


def open_store(backend: str, root: Path | str) -> FeatureStore:
    """The store of a registered backend at ``root`` (for ``memory``, the name of a preloaded store)."""
    return STORE_BACKENDS.get(backend)(root)
