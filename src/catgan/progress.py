"""The progress of a long pass that is not training (reference features, drawing samples, standing
statistics, checkpoint averaging): a tqdm bar with the time left on a terminal; elsewhere (a log file, a
pipe, CI) a line when the pass starts, one at each quarter with the time left, and one when it ends.

    with progress_pass("standing statistics", 100, "batches") as bar:
        for _ in range(100):
            ...
            bar.update(1)

Lines and the bar go to stderr (stdout stays the command's output), so nothing here needs a logger.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO


class _Lines:
    """The bar's stand-in where stderr is not a terminal: a line at the start, each quarter and the end."""

    def __init__(self, desc: str, total: int, unit: str, stream: TextIO) -> None:
        self.desc, self.total, self.unit, self.stream = desc, total, unit, stream
        self.done, self.next_quarter, self.t0 = 0, 1, time.perf_counter()
        self._say(f"{total:,} {unit} ...")

    def _say(self, text: str) -> None:
        print(f"{self.desc}: {text}", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self.total or self.done < self.total * self.next_quarter / 4:
            return
        self.next_quarter = int(4 * self.done / self.total) + 1
        elapsed = time.perf_counter() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        self._say(f"{self.done:,}/{self.total:,} {self.unit}, {elapsed:.0f} s, about {left:.0f} s left")

    def close(self) -> None:
        self._say(f"{self.done:,}/{self.total:,} {self.unit}, done in {time.perf_counter() - self.t0:.1f} s")


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def progress_pass(desc: str, total: int, unit: str, enabled: bool = True) -> Iterator[Any]:
    """A bar (or its lines) for a pass of `total` units, named in the plural (`unit`: "images");
    `enabled` False or total < 1: nothing shown."""
    if not enabled or total < 1:
        yield _Silent()
        return
    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False, file=stream) as bar:
            yield bar
        return
    lines = _Lines(desc, total, unit, stream)
    yield lines
    lines.close()  # not after an error: its own message says what happened
