"""A polite stop: SIGTERM (a SLURM walltime or pre-emption, ``kill``, ``scancel``) asks long work to
finish the step it is in, save what it has and stop, instead of dying mid-step.

The driver (``mirpipe run``) and every Dask worker process install the handler in their main
thread. The first SIGTERM sets a process-wide flag and the long loops (the trainer, after each step)
save a checkpoint and raise ``StopRequested``; the runner submits nothing more and says how to
resume. A second SIGTERM ends the process at once (the default action).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

from mirpipe.errors import MirpipeError

_REQUESTED = threading.Event()
RESUME_HINT = "stopped; resume with mirpipe run"


class StopRequested(MirpipeError):
    """Work that stopped on request after saving what it had; ``mirpipe run`` resumes it (not a failure)."""


def request() -> None:
    """Ask this process's long work to stop at its next safe point."""
    _REQUESTED.set()


async def request_async() -> None:
    """``request`` as a coroutine (``Client.run(..., wait=False)`` takes only coroutines)."""
    request()


def requested() -> bool:
    return _REQUESTED.is_set()


def clear() -> None:
    _REQUESTED.clear()


def install_sigterm_handler(announce: Callable[[str], None] | None = None) -> bool:
    """In the main thread: the first SIGTERM asks for a stop (``announce`` says so), a second one ends the
    process. Returns False where no handler can be installed (not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return False

    def _handler(signum, frame) -> None:
        if _REQUESTED.is_set():  # asked twice: stop now
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        request()
        message = "mirpipe: SIGTERM: finishing the current step, saving, then stopping (a second SIGTERM ends it now)"
        try:
            (announce or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
        except Exception:  # noqa: BLE001 - a closed stream must not turn the stop into a crash
            pass

    signal.signal(signal.SIGTERM, _handler)
    return True
