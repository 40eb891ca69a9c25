"""Errors every layer may raise (this module imports nothing heavy)."""

from __future__ import annotations

from pathlib import Path


class WorkdirFileError(RuntimeError):
    """A file mirpipe keeps in a workdir or store (record, manifest, index) that cannot be read."""

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")
