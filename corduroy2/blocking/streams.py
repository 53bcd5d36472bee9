"""Streams in blocking mode, where there is no event loop to run them on: an iterator reads in
the caller's thread as it is iterated, the callback feed on a thread of its own, and the
follower in the thread that runs it."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..api.calls import Op, Runner
from ..api.changes import ChangesFeed, ChangesSink
from ..api.follower import ChangesFollower
from ..api.sinks import RowSink
from ..api.views import MakeSink, Wrap, keep_raw
from ..backend import Cancel, StopTransfer
from ..pipeline.exchange import Exchange, Sender
from ..protocol.requests import Request

__all__ = ["RowReader", "ThreadedChangesFeed", "BlockingFollower", "PageReader", "BlockingDoor"]


class RowReader:
    """``for row in db.iter_view(...)`` in blocking mode: the body is read in the caller's
    thread, as the loop asks for rows.

    When no parsed row is waiting, the transport reads on until the next piece of the body
    brings some, or the body ends; then it is paused (:meth:`rows`), so nothing is read while
    the caller is not asking: that is the back-pressure, and at most one piece's rows wait
    (``high_water`` bounds nothing more here). The request goes through the pipeline as any
    other, at the first ``next()``: retries and renewals happen before the first row, and an
    error is raised in the caller's loop once the rows before it are taken. ``close()``, or
    leaving a ``with`` block, aborts the request (from another thread too). ``fields`` holds the
    top-level members once the body has ended.

    Reading in the caller's thread replaced a reading thread that handed rows over through a
    lock and a condition: a ``for`` over a feed, 10,349 -> 8,951 instructions a change
    (``python -m bench changes --instructions``: 0.93 -> 1.06 of the callback feed's rate),
    and in CPU time 0.69 -> 1.04 of the callback feed's (issue 19).
    """

    def __init__(self, sender: Sender, request: Request, wrap: Wrap, high_water: int,
                 make_sink: MakeSink = RowSink) -> None:
        if high_water < 1:
            raise ValueError("high_water must be at least 1")
        self._make_sink = make_sink
        self._sender, self._request, self._wrap = sender, request, wrap
        self._rows: collections.deque[Any] = collections.deque()
        self._exchange: Exchange | None = None
        self._ended = False
        self._error: BaseException | None = None
        self.fields: dict[str, Any] = {}

    # -- consumer side (called by the sink, inside _read_more) ----------------------------------

    def header(self, fields: dict[str, Any]) -> None:
        self.fields = fields  # what came before the rows (an attachment's head)

    def rows(self, rows: list[Any]) -> None:
        self._rows.extend(rows if self._wrap is keep_raw else map(self._wrap, rows))
        assert self._exchange is not None
        self._exchange.pause()  # the caller has rows to take: read no further for now

    def end(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def _finished(self, value: Any, error: BaseException | None, *_: Any) -> None:
        self._ended = True
        self._error = error

    # -- reader side ----------------------------------------------------------------------------

    def _read_more(self) -> None:
        """Have the transport read until a row is parsed or the body has ended."""
        exchange = self._exchange
        if exchange is not None:
            exchange.resume()
            return
        sink = self._make_sink(self._request, self, self._finished)
        self._exchange = exchange = Exchange(self._sender, self._request, sink)
        exchange.start()
        sink.keep_transfer(exchange)  # to abort it if parsing fails later

    def __iter__(self) -> Iterator[Any]:
        return self._each()

    def _each(self) -> Iterator[Any]:
        """What ``for`` runs: a generator's step is C-level, where ``__next__`` costs a
        Python call per row."""
        rows = self._rows
        while True:
            while rows:
                yield rows.popleft()
            if self._ended:
                if self._error is not None:
                    raise self._error
                return
            self._read_more()

    def __next__(self) -> Any:
        while not self._rows and not self._ended:
            self._read_more()
        if self._rows:
            return self._rows.popleft()
        if self._error is not None:
            raise self._error
        raise StopIteration

    def close(self) -> None:
        self._ended = True
        self._error = None
        self._rows.clear()
        if self._exchange is not None:
            self._exchange.cancel()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadedChangesFeed(ChangesFeed):
    """corduroy's callback feed in blocking mode: it reads on a daemon thread, and ``latency``
    batches are flushed by a timer thread, so ``callback(seq, changes)`` runs on those threads.
    ``stop()`` cancels the request, which takes effect when the next bytes arrive (the reading
    thread is inside the request until then): ask for a ``heartbeat`` to bound that."""

    def start(self) -> ThreadedChangesFeed:
        self._lock = threading.RLock()
        self.listening = True
        # With latency, the reading thread and the timer thread's flushes take turns on the
        # batch; without, the reading thread is the feed's only one and takes no lock.
        consumer = self if self._latency <= 0 else _TakingTurns(self, self._lock)
        sink = ChangesSink(self._request, consumer, self._finished, self._feed,
                           limit=self._limit, remember=self._sender.nodes is not None)
        exchange = self._transfer = Exchange(self._sender, self._request, sink)
        threading.Thread(target=exchange.start, daemon=True, name="corduroy2-changes").start()
        return self

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
            super()._finished(value, error, *rest)


class _TakingTurns:
    """A feed, as its sink's consumer, whose every call takes ``lock`` first."""

    __slots__ = ("_feed", "_lock")

    def __init__(self, feed: ChangesFeed, lock: threading.RLock) -> None:
        self._feed, self._lock = feed, lock

    def header(self, fields: dict[str, Any]) -> None:
        with self._lock:
            self._feed.header(fields)

    def rows(self, changes: list[dict[str, Any]]) -> None:
        with self._lock:
            self._feed.rows(changes)

    def end(self, fields: dict[str, Any]) -> None:
        with self._lock:
            self._feed.end(fields)


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
    """The blocking front door's streams: read in the caller's thread (iterators, the
    follower), or on a thread of their own (the callback feed)."""

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
