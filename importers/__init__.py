"""Importers: datasets researchers already have, turned into a mirpipe corpus.

The corpus references the audio in place (a symlink per track, nothing copied) and
holds one strictly valid JAMS beside each link, so ``ingest`` pairs and reads them
as any corpus. Importers register in ``IMPORTERS`` (one per dataset kind), like
tasks and stages; a package can add one through the ``mirpipe.importers`` entry-point
group.

- ``folder``: audio with ``.lab`` chord files and ``.csv`` f0 files beside it.
- mirdata loaders (``mirpipe import mirdata NAME``): ``beatles`` (chords, keys,
  sections, beats), ``vocadito`` and ``medleydb_pitch`` (f0, notes),
  ``medley_solos_db`` (instrument tags, official splits).
"""

from __future__ import annotations

from mirpipe.registry import Registry

from .base import AnnotationFile, Importer, Listing, TrackSource

IMPORTERS: Registry[Importer] = Registry(
    "importer",
    builtin=("mirpipe.importers.folder", "mirpipe.importers.mirdata_loaders"),
    entry_points="mirpipe.importers",
    instantiate=True,
)


def importer_names(kind: str) -> list[str]:
    """The registered importers reached by ``mirpipe import <kind>``."""
    return [name for name in IMPORTERS.names() if IMPORTERS.get(name).kind == kind]


__all__ = ["IMPORTERS", "AnnotationFile", "Importer", "Listing", "TrackSource", "importer_names"]
