"""Keep stdout for the one JSON object a ``--json`` command prints.

Libraries sometimes print to stdout (pyfluidsynth does on import when ``CI`` is
set; Dask workers started during a run inherit the driver's stdout). While the
work runs, file descriptor 1 points at stderr, so their text reaches the user's
terminal without corrupting what a machine reads; stdout is restored before the
JSON is printed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Route fd 1 (and so ``sys.stdout`` and child processes) to stderr inside the block."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
