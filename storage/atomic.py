"""Atomic file and directory replacement: write beside the target, then rename into place.

Every output mirpipe writes goes through here (store entries, ledger records,
JAMS estimates, reports, figures, checkpoints): a killed writer leaves at most a
``.tmp-*`` sibling, which ``remove_leftovers`` recognises and sweeps.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


def temp_path(final: Path) -> Path:
    """A unique temporary sibling of ``final`` (same filesystem, so rename is atomic)."""
    return final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{final.name}")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move directory ``tmp`` to ``final``, replacing any previous ``final``.

    A reader sees either the old or the new directory, never a mix. A previous
    directory is renamed aside first, then removed.
    """
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if not final.exists():
            raise
    trash = final.with_name(f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}-{final.name}")
    os.rename(final, trash)
    os.rename(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling path to write ``final`` through; rename it into place on success.

    For writers that take a path (``torch.save``, ``savefig``, ``JAMS.save``, soundfile);
    the temporary name ends like ``final``, for writers that pick the format from
    the suffix. On an exception the temporary file is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def read_file(path: Path | str) -> bytes:
    """A file mirpipe wrote; a WorkdirFileError naming the file when it cannot be read."""
    from mirpipe.errors import WorkdirFileError

    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise WorkdirFileError(path, f"cannot be read: {type(exc).__name__}: {exc}") from None


def read_json(path: Path | str):
    """A JSON file mirpipe wrote; a WorkdirFileError naming the file when it cannot be read."""
    from mirpipe.errors import WorkdirFileError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkdirFileError(path, f"cannot be read: {type(exc).__name__}: {exc}") from None


def write_json(path: Path, obj) -> None:
    write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())


def write_json_if_changed(path: Path, obj) -> bool:
    """Write a large document compactly, unless the file already holds exactly it (a rerun with
    nothing new keeps the file, and every reader's cache of it); True when written."""
    return write_bytes_if_changed(path, json.dumps(obj, separators=(",", ":"), default=str).encode())


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    """``write_bytes`` unless the file already holds exactly ``data``; True when written."""
    try:
        if os.path.getsize(path) == len(data) and Path(path).read_bytes() == data:
            return False
    except OSError:
        pass
    write_bytes(path, data)
    return True


_READ_CACHE: dict[str, tuple[tuple[int, int, int], Any]] = {}


def read_cached(path: Path | str, build: Callable[[Path], Any]) -> Any:
    """``build(path)``, once per version of the file in this process: files mirpipe writes are
    replaced by rename, so (inode, size, mtime) tells a new version."""
    st = os.stat(path)
    version = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _READ_CACHE.get(str(path))
    if hit is not None and hit[0] == version:
        return hit[1]
    value = build(Path(path))
    _READ_CACHE[str(path)] = (version, value)
    return value


def remove_leftovers(root: Path) -> int:
    """Delete temporary and trash files left under ``root`` by killed writers; returns how many.
    One walk of the tree (a store holds one file per track)."""
    n = 0
    if not os.path.isdir(root):
        return 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [d for d in dirnames if d.startswith((TMP_PREFIX, TRASH_PREFIX))]:
            shutil.rmtree(os.path.join(dirpath, name), ignore_errors=True)
            dirnames.remove(name)
            n += 1
        for name in filenames:
            if name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                try:
                    os.unlink(os.path.join(dirpath, name))
                except FileNotFoundError:
                    pass
                n += 1
    return n
