"""The corpus scan: every file seen is counted, and either belongs to a track or is listed
with the reason it was left out.

Track ids come from the path relative to the corpus root, folders included
(``albumA/01``), Unicode-normalised to NFC, so an audio file and its JAMS pair up
however the file system spells their names, and tracks named only in non-Latin
script keep readable ids. Symlinked folders are followed once; a loop, or a second
link to a folder already scanned, is reported rather than walked again.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mirpipe.audio.io import AUDIO_EXTENSIONS
from mirpipe.records import Record

# characters a track id does not keep (control characters, and what Windows or shells choke on)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"\\|?*]+')
IGNORED_LISTED = 200  # paths listed per reason in the manifest (all are counted)
_KINDS = {"jams": "jams", **{ext.lstrip(".").lower(): "audio" for ext in AUDIO_EXTENSIONS}}  # by extension, no dot


# an id never ends like this: a store entry's targets file is ``<id>.targets<suffix>`` beside ``<id><suffix>``
_RESERVED_ENDING = ".targets"


def track_id(key: str) -> str:
    """A readable, path-safe id for the NFC relative stem ``key`` ("album/01"); a lossy
    cleaning adds a short hash of ``key``, so two different names never share an id. A stem
    ending in ``.targets`` gets the hash too (its store entry would be another track's targets file)."""
    reserved = key.lower().endswith(_RESERVED_ENDING)
    if not reserved and _UNSAFE.search(key) is None and all(part and part.strip(" .") == part for part in key.split("/")):
        return key  # the common case: nothing to clean
    parts = [(_UNSAFE.sub("_", part).strip(" .") or "_") for part in key.split("/")]
    ident = "/".join(parts)
    return ident if ident == key and not reserved else f"{ident}~{_short_hash(key)}"


def _short_hash(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class ScanSummary(Record):
    """What the manifest keeps of a scan: counts, and per reason the files left out."""

    files: int
    tracks: int
    ignored: dict[str, int]
    examples: dict[str, list[str]]  # up to IGNORED_LISTED paths per reason


@dataclass
class Scan:
    groups: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # id -> {"audio": [...], "jams": [...]}
    files: int = 0
    ignored: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> paths

    def summary(self) -> ScanSummary:
        return ScanSummary(
            files=self.files,
            tracks=len(self.groups),
            ignored={reason: len(paths) for reason, paths in sorted(self.ignored.items())},
            examples={reason: sorted(paths)[:IGNORED_LISTED] for reason, paths in sorted(self.ignored.items())},
        )


def scan_corpus(corpus: Path) -> Scan:
    """Walk ``corpus`` (following symlinked folders once) and group audio and JAMS by track id."""
    scan = Scan()
    by_key: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"audio": [], "jams": []})
    root = Path(corpus)
    st = os.stat(root)
    visited = {(st.st_dev, st.st_ino): str(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            if name.startswith("."):
                scan.ignored["hidden folder (not scanned)"].append(full)
                continue
            try:
                dst = os.stat(full)
            except OSError:
                scan.ignored["folder that cannot be read"].append(full)
                continue
            node = (dst.st_dev, dst.st_ino)  # (not `key`: that name holds str stems below)
            if node in visited:
                scan.ignored["symlinked folder already scanned (a loop or a second link)"].append(f"{full} -> {visited[node]}")
                continue
            visited[node] = full
            keep.append(name)
        dirnames[:] = keep
        reldir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if reldir == "." else reldir + "/"
        base = os.path.join(dirpath, "")  # file paths as os.path.join(dirpath, name) gives them
        scan.files += len(filenames)
        for name in sorted(filenames):  # (the per-file work is kept small: a corpus has 10^5-10^6 files)
            if name[0] == ".":
                scan.ignored["hidden file"].append(base + name)
                continue
            stem, dot, ext = name.rpartition(".")  # as os.path.splitext for a name not starting with "."
            kind = _KINDS.get(ext.lower()) if dot else None
            if kind is None:
                scan.ignored["not audio or JAMS"].append(base + name)
                continue
            # special files (a FIFO, a device) and broken links are kept: validation classifies them
            rel = prefix + stem
            if not rel.isascii():
                rel = unicodedata.normalize("NFC", rel)
            by_key[rel][kind].append(base + name)
    ids = {key: track_id(key) for key in by_key}
    # ids that differ only in case would share a file on case-insensitive file systems
    folded: dict[str, set[str]] = defaultdict(set)
    for ident in ids.values():
        folded[ident.casefold()].add(ident)
    for key, ident in ids.items():
        if len(folded[ident.casefold()]) > 1 and not ident.endswith(_short_hash(key)):
            ids[key] = f"{ident}~{_short_hash(key)}"
    groups = scan.groups
    for key in sorted(by_key):
        files = by_key[key]
        group = groups.get(ids[key])
        if group is None:  # the common case: one key per id, its files found in name order
            groups[ids[key]] = {kind: paths if len(paths) < 2 else sorted(paths) for kind, paths in files.items()}
            continue
        for kind in ("audio", "jams"):
            group[kind] = sorted(group[kind] + files[kind])
    return scan
