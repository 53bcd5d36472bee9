"""Rows from views, ``_all_docs`` and ``_find``: results, per-row callbacks and iterators.

Every form is built on the same stream: :class:`~corduroy2.protocol.rows.RowStream` parses the
body as it arrives, and a consumer decides what happens to each row. The buffered result keeps
them; ``on_row``/``on_rows`` hand them over and drop them; an iterator queues a bounded number
and pauses the transport while its reader is behind.
"""

from __future__ import annotations

import collections
import gc
import types
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from operator import methodcaller
from typing import Any

from ..backend import Outcome, Transfer
from ..pipeline.exchange import Sender
from ..protocol.requests import Request
from .calls import Op, Runner, Stream
from .documents import Document
from .pacing import Paced
from .sinks import Finished, RowSink

__all__ = ["Row", "ViewResult", "FindResult", "RowIterator", "Pages", "Keep", "Each", "OnRow",
           "OnRows", "run_rows"]


class Row(dict):  # type: ignore[type-arg]
    """One view row: ``.id``, ``.key``, ``.value``, ``.doc`` (a Document or None), ``.error``
    (e.g. ``"not_found"`` for a missing key in ``_all_docs?keys``); ``row["key"]`` reads it as
    the dict it is.

    A dict subclass, so that the parser's rows become Rows at C speed: ``map(Row, rows)`` per
    received batch copies each parsed dict in C and lets the original go, and the attributes
    are C-level getters (``methodcaller``). A million rows in hand this way cost about what the
    floor's one ``orjson.loads`` of the whole body costs, in 30% less memory (``python -m bench
    rows``, ``kept/raw``: 0.93-0.98 of its CPU time, issue 19); a slotted wrapper over the dict,
    made per row in Python, cost 1.2-1.5x it.
    """

    __slots__ = ()

    id = property(methodcaller("get", "id"))
    key = property(methodcaller("get", "key"))
    value = property(methodcaller("get", "value"))
    error = property(methodcaller("get", "error"))

    @property
    def doc(self) -> Document | None:
        doc = self.get("doc")
        return None if doc is None else Document(doc)

    @property
    def raw(self) -> dict[str, Any]:
        """The row as CouchDB sent it: the Row itself (kept for corduroy2 0.x code)."""
        return self

    def __repr__(self) -> str:
        if self.error:
            return f"<Row {self.key!r} «{self.error}»>"
        ident = f" {self.id}" if self.id is not None else ""
        doc = " +doc" if self.get("doc") is not None else ""
        return f"<Row {self.key!r}{ident} / {self.value!r}{doc}>"


class ViewResult:
    """A view or ``_all_docs`` answer: ``.rows``, ``.total_rows``, ``.offset``,
    ``.update_seq``, and every other top-level member in ``.fields``. Streamed calls
    (``on_row``/``on_rows``) return one with no rows."""

    def __init__(self, rows: Sequence[Row], fields: dict[str, Any]) -> None:
        self.rows = rows
        self.fields = fields

    total_rows = property(lambda self: self.fields.get("total_rows"))
    offset = property(lambda self: self.fields.get("offset"))
    update_seq = property(lambda self: self.fields.get("update_seq"))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> Row:
        return self.rows[index]

    def __repr__(self) -> str:
        return f"<ViewResult {len(self.rows)}/{self.total_rows} rows>"


class FindResult:
    """A Mango ``_find`` answer: ``.docs`` (Documents), ``.bookmark``, ``.warning``,
    ``.execution_stats`` (CouchDB sends these after the docs)."""

    def __init__(self, docs: list[Document], fields: dict[str, Any]) -> None:
        self.docs = docs
        self.fields = fields

    bookmark = property(lambda self: self.fields.get("bookmark"))
    warning = property(lambda self: self.fields.get("warning"))
    execution_stats = property(lambda self: self.fields.get("execution_stats"))

    def __len__(self) -> int:
        return len(self.docs)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.docs)

    def __getitem__(self, index: int) -> Document:
        return self.docs[index]

    def __repr__(self) -> str:
        return f"<FindResult {len(self.docs)} docs>"


Wrap = Callable[[Any], Any]  # raw row -> Row or Document
MakeSink = Callable[[Request, Any, Finished], RowSink]  # (request, consumer, done) -> sink
Build = Callable[[list[Any], dict[str, Any]], Any]  # rows, fields -> result


class Keep:
    """Consumer that keeps every row, for the buffered result.

    With ``freeze_gc`` (asked for by the caller: ``db.view(..., freeze_gc=True)``), building
    many rows is spared most of CPython's cyclic collector, which otherwise rescans every row
    already kept each time it runs (reference/transports.md: more than parsing and transport
    together). Once ``FREEZE_AFTER`` rows are kept, ``gc.freeze()`` after each batch moves what
    exists into the permanent generation, which the collector skips. At the end
    ``gc.unfreeze()`` hands it back, but only if nothing was frozen before this view began: the
    application's own ``gc.freeze()`` (a pre-fork server's) is never undone. The freeze is
    process-wide, so meanwhile cyclic garbage made elsewhere waits for the end of the view to
    be collected (reference counting still frees the rest at once).
    """

    FREEZE_AFTER = 10_000

    #: Bytes the sink gathers before it parses them (:class:`~corduroy2.api.sinks.RowConsumer`):
    #: nobody sees a row before the end, and rows in hand cost mostly in the cyclic collector,
    #: which costs less when rows are decoded and made Rows a few hundred at a time than per
    #: 1.5 kB chunk (CouchDB's, as Twisted, http.client and mostly curl hand them over) or per
    #: 256 kB (aiohttp's): 1M rows in hand (``bench rows``), the collector's CPU time went from
    #: 2.6-2.8 s (1.5 kB) and 2.25 s (aiohttp) to 1.6-1.8 s; of 8, 16, 32 and 64 kB, 16 kB
    #: cost least (issue 19).
    GATHER = 16 * 1024

    __slots__ = ("_wrap", "_build", "_rows", "_freeze", "_thaw_at_end", "__weakref__")

    def __init__(self, wrap: Wrap, build: Build, freeze_gc: bool = False) -> None:
        self._wrap, self._build = wrap, build
        self._rows: list[Any] = []
        self._freeze = freeze_gc
        self._thaw_at_end = False

    def header(self, fields: dict[str, Any]) -> None:
        return None  # End carries the header fields again

    def rows(self, rows: list[Any]) -> None:
        kept = self._rows
        kept.extend(map(self._wrap, rows))
        if self._freeze and len(kept) >= self.FREEZE_AFTER:
            if not self._thaw_at_end and gc.get_freeze_count() == 0:
                self._thaw_at_end = True  # nothing of anyone else's is frozen
            gc.freeze()

    def end(self, fields: dict[str, Any]) -> Any:
        self._thaw()
        return self._build(self._rows, fields)

    def _thaw(self) -> None:
        if self._thaw_at_end:
            self._thaw_at_end = False
            gc.unfreeze()

    def __del__(self) -> None:
        self._thaw()  # the stream failed before end(): do not leave the heap frozen


class Each:
    """Consumer that hands rows to ``on_row`` one by one, or to ``on_rows`` per received
    chunk, and keeps none of them."""

    __slots__ = ("_wrap", "_build", "_on_row", "_on_rows")

    def __init__(self, wrap: Wrap, build: Build, on_row: Callable[[Any], Any] | None,
                 on_rows: Callable[[list[Any]], Any] | None) -> None:
        self._wrap, self._build = wrap, build
        self._on_row, self._on_rows = on_row, on_rows

    def header(self, fields: dict[str, Any]) -> None:
        return None

    def rows(self, rows: list[Any]) -> None:
        wrapped = list(map(self._wrap, rows))
        if self._on_rows is not None:
            self._on_rows(wrapped)
        if self._on_row is not None:
            for row in wrapped:
                self._on_row(row)

    def end(self, fields: dict[str, Any]) -> Any:
        return self._build([], fields)


@types.coroutine
def ready(value: Any) -> Generator[Any, None, Any]:
    """An awaitable that is already settled: ``await ready(x)`` is ``x`` at once, on any
    loop (asyncio, Tornado, Twisted's ``Deferred.fromCoroutine``), without a Future or a
    Deferred or a trip through the loop. A generator that returns before its first ``yield``
    is the cheapest such object CPython has: awaiting it never raises StopIteration."""
    return value
    yield  # type: ignore[unreachable]  # makes this a generator; never reached


class RowIterator:
    """``async for row in db.iter_view(...)``: rows as they are parsed, in bounded memory.

    At most about ``high_water`` parsed rows wait in the queue (plus the rows of one received
    chunk): past that the transport is paused until the reader has taken half of them.
    ``__anext__`` returns an awaitable: when a row is already waiting, a settled one
    (:func:`ready`) that makes no promise; otherwise the backend's native promise (a Future, or
    a Deferred under Twisted's ``Deferred.fromCoroutine``), which a cancel aborts the request
    through. Making a promise per row cost the iterator half its rate or more next to the
    callback path (``python -m bench changes``, ``iter/cb``, issue 19). ``async for`` does not
    call ``__anext__`` per row: :meth:`__aiter__` gives an async generator that yields the rows
    already parsed and awaits ``__anext__`` only when it must wait.
    ``fields`` holds the top-level members once the body has ended. ``close()`` (or
    ``async with``) aborts the request when the reader stops early.
    """

    def __init__(self, sender: Sender, request: Request, wrap: Wrap,
                 high_water: int = 1000, make_sink: MakeSink = RowSink) -> None:
        if high_water < 1:
            raise ValueError("high_water must be at least 1")
        self._make_sink = make_sink
        self._sender = sender
        self._request = request
        self._wrap = wrap
        self._high = high_water
        self._queue: collections.deque[Any] = collections.deque()
        self._waiter: Callable[[Outcome], None] | None = None
        self._transfer: Transfer | None = None
        self._paused = False
        self._keep = 0  # __anext__'s fast path takes a row while the queue holds more than this
        self._ended = False
        # Where the backend resumes a reader at once (Backend.resumes_at_once), a waiting one
        # is woken at once when this many rows are queued, else on the next loop turn, so that
        # rows arriving piece by piece (Twisted delivers each 1.5 kB chunk of a feed on its
        # own) reach it together: one promise settled per batch, not per piece; and the batch
        # stays small enough (3 GC-tracked objects a change, under the collector's 700) that
        # the rows do not outlive a collection. The sink says how many (RowSink.WAKE_AT: 128
        # rows; an attachment's chunk: 1). Twisted's ``async for`` over a feed: 14,100 ->
        # 11,794 instructions a change (``bench changes --instructions``; only on the next
        # loop turn: 12,715, the bigger batches paying the collector). Elsewhere a promise
        # settled at once resumes its reader on the loop's next pass anyway, with what came
        # meanwhile: it is woken by the first rows (see _start).
        self._wake_at = 1
        self._wake_due = False
        self._error: BaseException | None = None
        self.fields: dict[str, Any] = {}

    # -- consumer side (called by the RowSink) --------------------------------------------------

    def header(self, fields: dict[str, Any]) -> None:
        self.fields = fields  # what came before the rows (an attachment's head)

    def rows(self, rows: list[Any]) -> None:
        self._queue.extend(rows if self._wrap is keep_raw else map(self._wrap, rows))
        if self._waiter is not None:
            if len(self._queue) >= self._wake_at:
                self._wake()
            elif not self._wake_due:
                self._wake_due = True
                self._sender.backend.call_later(0, self._due_wake)
        if len(self._queue) >= self._high and not self._paused and self._transfer is not None:
            self._paused = True
            self._keep = self._high // 2 + 1  # rows __anext__ may take before _take() resumes
            self._transfer.pause()

    def end(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        return None

    def _finished(self, value: Any, error: BaseException | None, *_: Any) -> None:
        self._ended = True
        self._error = error
        self._wake()

    def _due_wake(self) -> None:
        self._wake_due = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and (self._queue or self._ended):
            self._waiter = None
            self._deliver(waiter)

    # -- reader side ------------------------------------------------------------------------

    def _start(self) -> None:
        sink = self._make_sink(self._request, self, self._finished)
        backend = self._sender.backend
        if backend.resumes_at_once:
            # The reader takes the rows of a wake (WAKE_AT) before the transport hands over
            # more, so that no more wait in the queue: pacing would only cost (``async for``
            # over a feed, ``bench changes --instructions``: Twisted 12,153 -> 11,766
            # instructions a change, twisted-httptools 9,260 -> 8,928).
            self._wake_at = sink.WAKE_AT
            self._transfer = sink.keep_transfer(self._sender.send(self._request, sink))
            return
        # Woken by the first rows (_wake_at 1): no timer for a wake due, and one loop pass to
        # the reader, not two (tornado-curl's ``async for`` over a feed, ``bench changes
        # --instructions``: 9,169 -> 8,905 instructions a change).
        if not sink.PACED:
            self._transfer = sink.keep_transfer(self._sender.send(self._request, sink))
            return
        paced = Paced(sink, backend.call_later)
        self._transfer = sink.keep_transfer(paced.keep(self._sender.send(self._request, paced)))

    def _take(self) -> Any:
        """The next queued row; the transport resumes once half the queue has been read."""
        row = self._queue.popleft()
        if self._paused and len(self._queue) <= self._high // 2:
            self._paused = False
            self._keep = 0
            assert self._transfer is not None
            self._transfer.resume()
        return row

    def _deliver(self, done: Callable[[Outcome], None]) -> None:
        if self._queue:
            done(Outcome(value=self._take()))
        elif self._error is not None:
            done(Outcome(error=self._error))
        else:
            done(Outcome(error=StopAsyncIteration()))

    def _next(self, done: Callable[[Outcome], None]) -> RowIterator:
        if self._queue or self._ended:
            self._deliver(done)
        else:
            self._waiter = done
        return self

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._each()

    async def _each(self) -> AsyncIterator[Any]:
        """What ``async for`` runs: a row already parsed is yielded straight from the queue;
        waiting, resuming the transport, the end and errors are :meth:`__anext__`'s. An async
        generator's step is C-level where ``__anext__`` costs a Python call and a settled
        awaitable per row: ``async for`` over a feed, 11,558 -> 10,838 instructions a change
        on tornado-curl, 14,648 -> 14,100 on Twisted (``bench changes --instructions``)."""
        queue = self._queue
        while True:
            # The rows queued now but those kept for __anext__ (whose _take() resumes a paused
            # transport), counted once rather than checked per row: ``async for`` over a feed,
            # 11,766 -> 11,596 instructions a change on Twisted, 8,818 -> 8,637 on curl.
            try:
                for _ in range(len(queue) - self._keep):
                    yield queue.popleft()
            except IndexError:  # emptied meanwhile (close(), or another reader's __anext__)
                pass
            try:
                row = await self.__anext__()
            except StopAsyncIteration:
                return
            yield row

    def __anext__(self) -> Any:
        queue = self._queue
        if len(queue) > self._keep:  # parsed already, and no resume due: no promise to make
            return ready(queue.popleft())
        if queue:
            return ready(self._take())
        if self._transfer is None and not self._ended:
            self._start()
        return self._sender.backend.run(self._next)

    def cancel(self) -> None:
        """Part of the cancel-handle contract: a cancelled ``__anext__`` stops the iteration."""
        self.close()

    def close(self) -> None:
        """Stop: abort the request and drop queued rows. A pending ``__anext__`` ends the
        iteration (an attachment handler closes the download when its browser leaves)."""
        if not self._ended:
            self._ended = True
            self._error = None
            if self._transfer is not None:
                self._transfer.cancel()
        self._queue.clear()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter(Outcome(error=StopAsyncIteration()))

    async def __aenter__(self) -> RowIterator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Pages:
    """An iterator of result pages that fetches each page only when asked: ``async for page in
    ...``, each ``__anext__`` the backend's promise. (Blocking mode has its own, a plain
    iterator.)"""

    def __init__(self, runner: Runner, fetch: Callable[[dict[str, Any]], Op[Any]]) -> None:
        self._runner = runner
        self._fetch = fetch
        self._state: dict[str, Any] = {}

    def __aiter__(self) -> Pages:
        return self

    def __anext__(self) -> Any:
        return self._runner.run(self._fetch(self._state), None)


#: Raw row -> :class:`Row`: the class itself, so that ``map(wrap_row, rows)`` runs in C.
wrap_row = Row


def keep_raw(raw: Any) -> Any:
    return raw


def build_view(rows: list[Any], fields: dict[str, Any]) -> ViewResult:
    return ViewResult(rows, fields)


def build_find(docs: list[Any], fields: dict[str, Any]) -> FindResult:
    return FindResult(docs, fields)


OnRow = Callable[[Any], Any] | None
OnRows = Callable[[list[Any]], Any] | None


def run_rows(runner: Runner, request: Request, wrap: Any, build: Any, on_row: OnRow,
             on_rows: OnRows, freeze_gc: bool, callback: Any) -> Any:
    """Run a row-bearing request: kept for the buffered result (``build(rows, fields)``), or
    handed to ``on_row`` / ``on_rows`` and dropped."""
    if on_row is None and on_rows is None:
        consumer: Any = Keep(wrap, build, freeze_gc)
    else:
        consumer = Each(wrap, build, on_row, on_rows)
    return runner.stream(Stream(request, consumer), callback)
