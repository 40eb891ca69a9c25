"""What an importer says about a dataset: its tracks, where their audio is, how to read their
annotations. Reading and writing are the corpus writer's (``importers.write``), so every
importer gets the same checks, error classes, JAMS validation and summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jams

# (file, the audio's duration in seconds) -> the annotations read from it
Reader = Callable[[Path, float], list[jams.Annotation]]


@dataclass
class AnnotationFile:
    """One annotation source of a track: a file and the function that reads it.

    ``required``: a file that is missing, unparseable or schema-invalid fails the track;
    otherwise its annotations are left out with a warning (a dataset's secondary
    annotations, e.g. the Beatles' keys, must not cost the chords).
    """

    path: Path
    read: Reader
    what: str  # e.g. "chords", "f0": how the summary names it
    required: bool = True


@dataclass
class TrackSource:
    """One track an importer found. ``track`` is its id in the corpus: a relative path without
    extension ("beatles/0111"); the corpus gets ``<track><audio suffix>`` (a symlink) and
    ``<track>.jams``."""

    track: str
    audio: Path
    annotations: list[AnnotationFile] = field(default_factory=list)
    split: str | None = None  # train / val / test when the dataset declares one
    title: str | None = None
    artist: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # into sandbox.mirpipe_import
    checksums: dict[str, str] = field(default_factory=dict)  # path -> md5, from a dataset index
    notes: list[str] = field(default_factory=list)  # warnings found while listing the track


@dataclass
class Listing:
    """An importer's view of a source: the tracks, what it could not pair (input errors),
    and lines for the summary (which index was used, what was skipped)."""

    tracks: list[TrackSource]
    failures: list[tuple[str, Exception]] = field(default_factory=list)  # (track, InputError)
    notes: list[str] = field(default_factory=list)
    source: str = ""  # what was imported, for the summary: "mirdata beatles 1.2 at DIR"


class Importer:
    """An importer per dataset kind, registered in ``IMPORTERS``. ``kind`` says which CLI command
    reaches it: ``mirpipe import mirdata NAME`` or ``mirpipe import folder``."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "mirdata" or "folder"
    summary: ClassVar[str] = ""  # one line: what it reads

    def list_tracks(self, root: Path, **options: Any) -> Listing:  # pragma: no cover - interface
        raise NotImplementedError
