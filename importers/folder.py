"""The plain importer: a folder of audio files with annotation files of the same name beside them.

- ``song.lab``: chords, ``start end label`` per line (Harte syntax, as Isophonics and most
  chord datasets ship them), read with ``jams.util.import_lab``;
- ``song.csv``: an f0 contour, ``time,frequency`` per row (comma, tab or space separated, an
  optional header), a frequency <= 0 meaning unvoiced;
- ``song.jams``: annotations that already are JAMS (merged in).

Subfolders are kept: ``DIR/album/01.wav`` becomes the track ``album/01``.
"""

from __future__ import annotations

import os
import unicodedata
from collections import defaultdict
from pathlib import Path

import jams

from mirpipe import errors as stage_errors
from mirpipe.audio.io import AUDIO_EXTENSIONS
from mirpipe.corpus import track_id

from . import IMPORTERS
from .base import AnnotationFile, Importer, Listing, TrackSource
from .convert import read_f0_csv, read_lab

SIDECARS = {".lab": "chords", ".csv": "f0", ".jams": "JAMS"}


def read_jams(path: Path, duration: float) -> list[jams.Annotation]:
    """The annotations of a JAMS file (strictly validated when loaded)."""
    return list(jams.load(str(path), validate=True, strict=True).annotations)


READERS = {".lab": read_lab, ".csv": read_f0_csv, ".jams": read_jams}


@IMPORTERS.register
class FolderImporter(Importer):
    name = "folder"
    kind = "folder"
    summary = "audio files with .lab chord files, .csv f0 files (or .jams) of the same name beside them"

    def list_tracks(self, root: Path, **options) -> Listing:
        root = Path(root)
        groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
        other = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                stem, suffix = os.path.splitext(name)
                suffix = suffix.lower()
                kind = "audio" if suffix in AUDIO_EXTENSIONS else suffix if suffix in SIDECARS else None
                if kind is None:
                    other += 1
                    continue
                rel = os.path.relpath(os.path.join(dirpath, stem), root).replace(os.sep, "/")
                groups[unicodedata.normalize("NFC", rel)][kind].append(Path(dirpath) / name)
        listing = Listing(tracks=[], source=f"folder {root}")
        for rel in sorted(groups):
            group = groups[rel]
            ident = track_id(rel)
            audio = group.get("audio", [])
            sidecars = [p for suffix in SIDECARS for p in group.get(suffix, [])]
            if not audio:
                listing.failures.append(
                    (ident, stage_errors.MissingAudioError(sidecars[0], "annotation without an audio file of the same name"))
                )
                continue
            if len(audio) > 1:
                listing.failures.append(
                    (
                        ident,
                        stage_errors.DuplicateTrackError(
                            audio[0], f"several audio files share the name {rel!r}: {[p.name for p in audio]}"
                        ),
                    )
                )
                continue
            parts = [AnnotationFile(path, READERS[path.suffix.lower()], SIDECARS[path.suffix.lower()]) for path in sidecars]
            listing.tracks.append(
                TrackSource(track=ident, audio=audio[0], annotations=parts, provenance={"source": str(root.resolve())})
            )
        if other:
            listing.notes.append(f"{other} files that are neither audio nor .lab/.csv/.jams were left alone")
        return listing
