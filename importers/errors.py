"""Classified import errors: each names the file and the reason (the stages' ``InputError``s)."""

from __future__ import annotations

from mirpipe.errors import InputError


class MissingFileError(InputError):
    """A file the dataset names (its index, its metadata) is not under the data home."""


class AnnotationFormatError(InputError):
    """An annotation file that cannot be parsed, or whose values the JAMS schema rejects."""


class ChecksumError(InputError):
    """A file whose md5 differs from the one the dataset's index holds (another version, or damaged)."""


class IndexEntryError(InputError):
    """A track entry of a dataset index that the loader cannot use (missing keys, wrong types)."""
