"""Errors every layer may raise (this module imports nothing heavy).

Every error mirpipe raises on purpose derives from ``MirpipeError``; anything else that
reaches the command line is a bug (exit 3, traceback in a log file). Three families:

- ``ConfigurationError``: a configuration file, command-line option or named file the user
  must fix (the CLI exits 2 with the message);
- ``WorkdirError``: the workdir cannot be used as it is (busy with another run, a file mirpipe
  keeps there cannot be read, its filesystem is full: ``DiskFullError``; the CLI exits 2);
- ``InputError``: an input file's fault, recorded per item and never retried (exit 1)."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path


class MirpipeError(Exception):
    """The root of every error mirpipe raises on purpose (a bug raises something else)."""


class ConfigurationError(MirpipeError, ValueError):
    """A configuration file, command-line option or named file the user must fix; the message names it.
    A ``ValueError`` too, so callers written before this class keep catching it."""


class WorkdirError(MirpipeError):
    """The workdir cannot be used as it is: another run holds it, or a file in it cannot be read."""


class WorkdirFileError(WorkdirError, RuntimeError):
    """A file mirpipe keeps in a workdir or store (record, manifest, index) that cannot be read."""

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.path, self.reason))


class EntryReadError(WorkdirFileError):
    """A file of the feature store that does not read back while training or evaluating (a chunk that
    fails its checksum or does not decode, a cut file): ``path`` names the entry file, the reason the
    array and what failed. Within the same run, the runner makes that track's features item pending,
    recomputes it and runs the item again."""

    def __init__(self, path: Path | str, reason: str | None = None):
        if reason is None:  # re-raised by a DataLoader from its worker: one message, the original its last line
            found = re.search(r"EntryReadError: (.*?): ((?:array|the entry) .*)", str(path))
            path, reason = (found.group(1), found.group(2)) if found else (str(path), "")
        super().__init__(path, reason)


class DiskFullError(WorkdirError):
    """No space left where mirpipe writes (``ENOSPC``), or the user's disk quota used up (``EDQUOT``,
    the usual case on an HPC filesystem): ``path`` names where the write failed and ``free`` the bytes
    left on that filesystem. Not the input's fault and not transient: an item that fails so is not
    retried within the run, the run stops scheduling writes, and the next ``mirpipe run`` (once space
    is freed) tries the item again without ``--retry-failed``."""

    kind = "disk_full"  # the ledger's failure kind: planning retries these items on a plain run

    def __init__(self, path: Path | str, free: int | None, quota: bool = False):
        self.path = str(path)
        self.free = free
        self.quota = quota
        what = "disk quota exceeded" if quota else "disk full"
        room = f"{free} bytes free" if free is not None else "free space unknown"
        self.reason = f"{what} at {self.path} ({room}): free space and run `mirpipe run` again"
        super().__init__(self.reason)

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.path, self.free, self.quota))


DISK_FULL_ERRNOS = {errno.ENOSPC: False, errno.EDQUOT: True}  # errno -> is it a quota
# the same errors as libraries word them when they drop the errno (HDF5's error stack, a wrapped message)
_DISK_FULL_WORDS = {"no space left on device": False, "disk quota exceeded": True, "errno = 28": False}


def free_bytes(path: Path | str) -> int | None:
    """Bytes free on the filesystem of ``path`` (of its nearest existing parent); None when unknown."""
    p = Path(os.path.abspath(path))
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
        todo += [c for c in getattr(e, "exceptions", ()) if isinstance(c, BaseException)]  # exception groups


def disk_full_error(exc: BaseException, where: Iterable[Path | str] = ()) -> DiskFullError | None:
    """``exc`` as a ``DiskFullError`` when it, or an exception in its chain (``__cause__``,
    ``__context__``), is an ``OSError`` with errno ``ENOSPC`` or ``EDQUOT`` (or a library's message
    saying so); else None. The path is the file the ``OSError`` names, else the one of ``where`` (the
    places the failing code writes to) with the least free space."""
    quota: bool | None = None
    path: str | None = None
    for e in _chain(exc):
        if isinstance(e, DiskFullError):
            return e
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            quota = DISK_FULL_ERRNOS[e.errno]
            path = next((str(f) for f in (e.filename, e.filename2) if f not in (None, "")), None)
            break
        text = str(e).lower()
        hit = next((q for words, q in _DISK_FULL_WORDS.items() if words in text), None)
        if hit is not None and quota is None:
            quota = hit
    if quota is None:
        return None
    if path is not None:
        return DiskFullError(path, free_bytes(path), quota)
    places = [(free_bytes(w), str(w)) for w in where] or [(free_bytes(os.getcwd()), os.getcwd())]
    free, path = min(places, key=lambda fw: (fw[0] is None, fw[0] or 0))  # the fullest of them
    return DiskFullError(path, free, quota)


class InputError(MirpipeError):
    """A bad input file; ``path`` names it and ``reason`` says what is wrong."""

    kind = "input"

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.path, self.reason))


class AudioDecodeError(InputError):
    """The audio cannot be opened or decoded."""


class UnreadableFileError(InputError):
    """The file exists but cannot be read (permissions, I/O error)."""


class EmptyAudioError(InputError):
    """The audio holds no samples."""


class NonFiniteAudioError(InputError):
    """The audio contains NaN or infinite samples."""


class LengthMismatchError(InputError):
    """The decoded length disagrees with the header (truncated file)."""


class AnnotationSchemaError(InputError):
    """The JAMS does not load or does not validate against its schema."""


class UnknownNamespaceError(AnnotationSchemaError):
    """The JAMS uses an annotation namespace the jams schema does not know."""


class TimeLimitError(InputError):
    """Processing the file took longer than the per-item time limit (a hung read, a pathological file)."""


class AnnotationRangeError(InputError):
    """An annotation runs past the end of the audio."""


class MissingAnnotationError(InputError):
    """Audio without a JAMS beside it."""


class MissingAudioError(InputError):
    """A JAMS without audio beside it."""


class DuplicateTrackError(InputError):
    """Two inputs map to the same track id."""


class UnsupportedFormatError(InputError):
    """A container no decoder here understands."""


class SilentAudioError(InputError):
    """The audio is silent or nearly so (below ``ingest.silence_db``): nothing to learn from."""


class DurationMismatchError(InputError):
    """The JAMS ``file_metadata.duration`` disagrees with the decoded audio beyond the tolerance
    (the annotation likely belongs to another version of the recording)."""


class AnnotationOverlapError(InputError):
    """Observations of a namespace that forbids overlaps (chords, keys, segments) overlap by more
    than the timing tolerance."""


class AnnotationChoiceError(InputError):
    """Several annotations of a task's namespace, and the configured rule picks none of them."""


class SplitError(InputError):
    """The JAMS declares a split (``sandbox.split``) that is not train, val or test."""


class ScoringError(InputError):
    """The reference cannot be scored (mir_eval rejects it): deterministic, so never retried."""


def is_permanent(exc: BaseException) -> bool:
    """Errors worth no retry: the same input fails the same way."""
    return isinstance(exc, InputError)


def is_retryable(exc: BaseException) -> bool:
    """Errors worth retrying within a run: neither the input's fault, nor a full disk (space does not
    come back within seconds; the next run tries again), nor a damaged store entry."""
    # a damaged store entry reads the same on a retry: the runner recomputes it instead (``EntryReadError``)
    return not is_permanent(exc) and not isinstance(exc, (DiskFullError, EntryReadError))
