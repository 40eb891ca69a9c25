"""Progress of a stage's items on stderr: a tqdm bar on a terminal, else a plain line
every ``interval`` seconds and at the end (a log file gets no carriage-return updates)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class StageProgress:
    def __init__(self, name: str, total: int, enabled: bool = True, stream: TextIO | None = None, interval: float = 30.0):
        self.name, self.total, self.enabled = name, total, enabled
        self.stream = stream or sys.stderr
        self.interval = interval
        self.done = self.failed = 0
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if enabled and _isatty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"{name:>10}", unit="item", dynamic_ncols=True, file=self.stream)

    def update(self, failed: int) -> None:
        self.done += 1
        self.failed = failed
        try:
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(failed=failed, refresh=False)
            elif self.enabled and time.monotonic() - self.last >= self.interval:
                self._line()
        except OSError:  # stderr is a file on a full disk: progress is not worth stopping the run for
            self._silence()

    def _silence(self) -> None:
        self.enabled, self.bar = False, None

    def _line(self) -> None:
        self.last = now = time.monotonic()
        rate = self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        print(
            f"{self.name}: {self.done}/{self.total} items, {self.failed} failed, {now - self.t0:.0f}s elapsed, ETA {eta:.0f}s",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        try:
            if self.bar is not None:
                self.bar.close()
            elif self.enabled:
                self._line()
        except OSError:  # as in update
            self._silence()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
