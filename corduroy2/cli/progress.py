"""Progress on stderr: a rich progress bar when stderr is a terminal, nothing otherwise.

rich is imported only when a bar is drawn, so a command whose stderr is a pipe or a file (a
script, cron, the tests) neither loads it nor writes anything but errors there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["Meter", "meter"]

#: Seconds between two updates of the bar: rich takes a lock and a time sample per update, too
#: much to pay once per document.
REFRESH = 0.1


class Meter(Protocol):
    """What the commands report their progress to."""

    def add(self, docs: int, nbytes: int = 0) -> None:
        """``docs`` more documents (and ``nbytes`` more bytes) done."""


class _Silent:
    def add(self, docs: int, nbytes: int = 0) -> None:
        return None


class _Bar:
    """A rich task, fed in batches of at most one update per :data:`REFRESH` seconds. Its
    completion counts documents, or bytes when the total is known in bytes (``load`` knows
    its file's size, not how many documents the file holds)."""

    def __init__(self, progress: Any, task: Any, by_bytes: bool) -> None:
        self._progress, self._task, self._by_bytes = progress, task, by_bytes
        self._docs = self._bytes = 0
        self._next = 0.0

    def add(self, docs: int, nbytes: int = 0) -> None:
        self._docs += docs
        self._bytes += nbytes
        now = time.monotonic()
        if now >= self._next:
            self._next = now + REFRESH
            self.flush()

    def flush(self) -> None:
        done = self._bytes if self._by_bytes else self._docs
        self._progress.update(self._task, completed=done, docs=self._docs, bytes=self._bytes)


@contextmanager
def meter(label: str, enabled: bool, *, total_docs: int | None = None,
          total_bytes: int | None = None) -> Iterator[Meter]:
    """A :class:`Meter` drawn as a bar on stderr while the block runs when ``enabled``, else
    one that does nothing. The bar shows documents, bytes, the rate and, given a total, the
    time left."""
    if not enabled:
        yield _Silent()
        return
    from rich import filesize
    from rich.console import Console
    from rich.progress import (
        BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn,
    )
    from rich.text import Text

    by_bytes = total_bytes is not None

    class Docs(ProgressColumn):
        def render(self, task: Task) -> Text:
            docs = int(task.fields.get("docs", 0))
            of = f"/{int(task.total):,}" if task.total is not None and not by_bytes else ""
            return Text(f"{docs:,}{of} docs", style="magenta")

    class Bytes(ProgressColumn):
        def render(self, task: Task) -> Text:
            size = filesize.decimal(int(task.fields.get("bytes", 0)))
            of = f"/{filesize.decimal(int(task.total))}" if task.total and by_bytes else ""
            return Text(size + of, style="green")

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.speed
            if not speed:
                return Text("-", style="cyan")
            rate = f"{filesize.decimal(int(speed))}/s" if by_bytes else f"{speed:,.0f} docs/s"
            return Text(rate, style="cyan")

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), Docs(), Bytes(), Rate(),
        TimeRemainingColumn(), console=Console(stderr=True), speed_estimate_period=10.0,
    )
    with progress:
        total = total_bytes if by_bytes else total_docs
        bar = _Bar(progress, progress.add_task(label, total=total, docs=0, bytes=0), by_bytes)
        try:
            yield bar
        finally:
            bar.flush()
