"""A per-item time limit, so one hung file (a stalled read, a pathological input) cannot hang a run.

In the main thread (the synchronous executor) a SIGALRM interrupts the item with
``ItemTimeout``. In a Dask worker thread nothing can interrupt a running thread,
so the watchdog calls ``on_expire`` (which records the failure) and then ends the
worker process; the nanny starts a fresh worker and the runner reads the record.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_CODE = 70  # worker ended by the watchdog


class ItemTimeout(BaseException):
    """Raised in the main thread when the time limit expires (a BaseException, so that no
    ``except Exception`` inside a stage swallows it)."""


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


@contextmanager
def time_limit(seconds: float | None, on_expire: Callable[[], None]) -> Iterator[None]:
    """Bound the block to ``seconds``; ``on_expire`` runs only in the worker-process case."""
    if not seconds:
        yield
        return
    if threading.current_thread() is threading.main_thread():

        def _alarm(signum, frame):
            raise ItemTimeout(f"exceeded the time limit of {seconds:g}s")

        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elif _in_dask_worker():
        lock = threading.Lock()
        finished = False

        def _expire():
            with lock:  # the item cannot finish (and be marked done) while the watchdog fires
                if finished:
                    return
                try:
                    on_expire()
                finally:
                    os._exit(EXIT_CODE)

        timer = threading.Timer(seconds, _expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            with lock:
                finished = True
            timer.cancel()
    else:  # a thread we cannot interrupt nor kill the process of: no limit
        yield
