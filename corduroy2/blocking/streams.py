"""Streams in blocking mode: iterators, the callback feed and the follower read on threads
(there is no event loop to run them on)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from ..api.calls import Op, Runner
from ..api.changes import ChangesFeed, ChangesSink
from ..api.follower import ChangesFollower
from ..api.sinks import RowSink
from ..api.views import MakeSink, Wrap, keep_raw
from ..backend import Cancel, StopTransfer
from ..pipeline.exchange import Sender
from ..protocol.requests import Request

__all__ = ["RowReader", "ThreadedChangesFeed", "BlockingFollower", "PageReader", "BlockingDoor"]


class RowReader:
    """``for row in db.iter_view(...)`` in blocking mode.

    A worker thread reads the response and parses it; it blocks (and so stops reading the
    socket) while ``high_water`` rows wait for the reader. ``close()``, or leaving a ``with``
    block, aborts the request. ``fields`` holds the top-level members once the body has ended.
    """

    def __init__(self, sender: Sender, request: Request, wrap: Wrap, high_water: int,
                 make_sink: MakeSink = RowSink) -> None:
        if high_water < 1:
            raise ValueError("high_water must be at least 1")
        self._make_sink = make_sink
        self._sender, self._request, self._wrap, self._high = sender, request, wrap, high_water
        self._rows: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._ended = False
        self._closed = False
        self._waiting = False  # the worker waits for room in the queue
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.fields: dict[str, Any] = {}

    # consumer side, on the worker thread
    def header(self, fields: dict[str, Any]) -> None:
        self.fields = fields  # what came before the rows (an attachment's head)

    def rows(self, rows: list[Any]) -> None:
        wrapped = rows if self._wrap is keep_raw else list(map(self._wrap, rows))
        with self._cond:
            while len(self._rows) >= self._high and not self._closed:
                self._waiting = True  # set under the lock: see __next__
                self._cond.wait()
            self._waiting = False
            if self._closed:
                raise StopTransfer()
            self._rows.extend(wrapped)
            self._cond.notify_all()

    def end(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def _finished(self, value: Any, error: BaseException | None, *_: Any) -> None:
        with self._cond:
            self._ended = True
            if not isinstance(error, StopTransfer):
                self._error = error
            self._cond.notify_all()

    def _work(self) -> None:
        sink = self._make_sink(self._request, self, self._finished)
        self._sender.send(self._request, sink)

    # reader side
    def __iter__(self) -> RowReader:
        return self

    def __next__(self) -> Any:
        # A row is waiting and the worker is not: take it without the lock (deque operations
        # are atomic). Taking the lock and notifying per row cost the plain ``for`` a third of
        # its rate next to the callback feed (``python -m bench changes``, issue 19). The
        # worker, if it waits for room, sets ``_waiting`` first: the next call takes the lock
        # and wakes it.
        if self._rows and not self._waiting:
            try:
                return self._rows.popleft()
            except IndexError:  # close() from another thread emptied it meanwhile
                pass
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, daemon=True,
                                            name="corduroy2-rows")
            self._thread.start()
        with self._cond:
            while not self._rows and not self._ended:
                if self._waiting:  # the worker waits for room (since a lock-free take)
                    self._cond.notify_all()
                self._cond.wait()
            if self._rows:
                row = self._rows.popleft()
                self._cond.notify_all()
                return row
            if self._error is not None and not self._closed:
                raise self._error
            raise StopIteration

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._ended = True
            self._rows.clear()
            self._cond.notify_all()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadedChangesFeed(ChangesFeed):
    """corduroy's callback feed in blocking mode: it reads on a daemon thread, and ``latency``
    batches are flushed by a timer thread, so ``callback(seq, changes)`` runs on those threads.
    ``stop()`` takes effect when the next bytes arrive: ask for a ``heartbeat`` to bound that."""

    def start(self) -> ThreadedChangesFeed:
        self._lock = threading.RLock()
        self.listening = True
        thread = threading.Thread(target=self._read, daemon=True, name="corduroy2-changes")
        thread.start()
        return self

    def _read(self) -> None:
        sink = ChangesSink(self._request, self, self._finished, self._feed, beat=self._beat,
                           limit=self._limit, remember=self._sender.nodes is not None)
        self._sender.send(self._request, sink)

    def _beat(self) -> None:
        if self._stopped:
            raise StopTransfer()

    def rows(self, changes: list[dict[str, Any]]) -> None:
        self._beat()
        if self._latency <= 0:  # no timer thread: this reader is the feed's only thread
            super().rows(changes)
            return
        with self._lock:
            super().rows(changes)

    def _call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        def locked() -> None:
            with self._lock:
                fn()

        timer = threading.Timer(delay, locked)
        timer.daemon = True
        timer.start()
        return timer

    def _finished(self, value: Any, error: BaseException | None, *rest: Any) -> None:
        with self._lock:
            super()._finished(value, None if isinstance(error, StopTransfer) else error, *rest)


class BlockingFollower(ChangesFollower):
    """``db.follow(handler)`` in blocking mode: :meth:`run` follows on the calling thread and
    returns once :meth:`stop` was called (from the handler or another thread) or an error
    stopped it, after the last checkpoint is written. The handler runs on that thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_delay: float | None = None
        self._done = threading.Event()

    def run(self) -> Any:
        """Follow until stopped; returns the last delivered seq."""
        self._done.clear()
        try:
            self.start()  # loads the checkpoint and reads the first feed until it ends
            while not self._stopping:
                delay, self._next_delay = self._next_delay, None
                if delay is None:
                    break  # nothing scheduled: _fail stopped us
                if delay:
                    time.sleep(delay)
                self._connect()
            self._settle_stop()
        finally:
            self.running = False
            self._done.set()
        return self.seq

    def _connect(self) -> None:
        super()._connect()
        # send() returned: the feed is over (ended, failed, or stopped by StopTransfer, which
        # reports nothing), so no transfer is in flight any more.
        self._transfer = None

    def _reconnect_after(self, delay: float) -> None:
        if not self._busy and not self._queue:
            self._next_delay = delay

    def _halt_blocking_read(self) -> None:
        raise StopTransfer()

    def stop(self) -> Any:
        """Ask :meth:`run` to finish; from another thread, wait until it has (checkpoint
        written). Returns the last delivered seq."""
        self._stopping = True
        if self.running and not self._in_run_thread():
            self._done.wait()
        return self.seq

    def _in_run_thread(self) -> bool:
        return getattr(self, "_run_thread", None) is threading.current_thread()

    def start(self) -> BlockingFollower:
        self._run_thread = threading.current_thread()
        super().start()
        return self


class PageReader:
    """``for page in db.pages(...)`` in blocking mode: each page fetched when asked for."""

    def __init__(self, runner: Runner, fetch: Callable[[dict[str, Any]], Op[Any]]) -> None:
        self._runner = runner
        self._fetch = fetch
        self._state: dict[str, Any] = {}

    def __iter__(self) -> PageReader:
        return self

    def __next__(self) -> Any:
        try:
            return self._runner.run(self._fetch(self._state), None)
        except StopAsyncIteration:  # how a page operation says there is none left
            raise StopIteration from None


class BlockingDoor:
    """The blocking front door's streams: read on threads, or on the caller's (the follower)."""

    def iterate(self, sender: Sender, request: Request, wrap: Wrap, high_water: int,
                make_sink: MakeSink = RowSink) -> RowReader:
        return RowReader(sender, request, wrap, high_water, make_sink)

    def feed(self, db: Any, request: Request, feed: str,
             callback: Callable[[Any, list[dict[str, Any]]], Any], latency: float,
             max_batch: int, since: Any,
             on_error: Callable[[BaseException], Any] | None,
             limit: int | None = None) -> ThreadedChangesFeed:
        return ThreadedChangesFeed(db.name, db.couch.sender, request, feed, callback, latency,
                                   max_batch, since, on_error, limit).start()

    def follower(self, db: Any, handler: Callable[[dict[str, Any]], Any],
                 **kwargs: Any) -> BlockingFollower:
        return BlockingFollower(db, handler, **kwargs)

    def pages(self, runner: Runner, fetch: Callable[[dict[str, Any]], Op[Any]]) -> PageReader:
        return PageReader(runner, fetch)
