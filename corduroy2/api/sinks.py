"""Sinks that parse a streamed row body as it arrives and hand the rows to a consumer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..backend import StopTransfer, Transfer
from ..errors import CouchError, DecodeError, ResponseCut
from ..protocol.requests import Request
from ..protocol.responses import NO_HEADERS, Headers, line_slices, make_error
from ..protocol.rows import NEED_DATA, End, Header, RowStream

__all__ = ["RowConsumer", "RowSink", "Finished"]

#: ``finished(value, error, status, headers)``: how a streamed body ended.
Finished = Callable[[Any, "BaseException | None", int, Headers], None]


class RowConsumer(Protocol):
    """Receives a streamed row body as it is parsed; :meth:`end` gives the operation's value.

    A consumer that looks at no row before :meth:`end` (a buffered result) may say so with a
    ``GATHER`` class attribute: the bytes a :class:`RowSink` lets pile up before it parses
    them. Rows are then parsed that many bytes at a time, whatever the chunks the transport
    hands over (see :class:`~corduroy2.api.views.Keep` for why).
    """

    def header(self, fields: dict[str, Any]) -> None: ...

    def rows(self, rows: list[Any]) -> None: ...

    def end(self, fields: dict[str, Any]) -> Any: ...


class RowSink:
    """A sink that parses a row-bearing body with :class:`RowStream` as chunks arrive.

    Rows reach the consumer per received chunk (a slice of it at a time when it is over
    ``PARSE_AT_MOST``), or per ``GATHER`` bytes if it has that attribute
    (:class:`RowConsumer`). Error replies (>= 400) are collected whole and mapped. A failure
    while parsing (bad JSON, an error member mid-stream, the consumer raising) cancels the
    transfer: the rest of the body is unwanted, and the connection must not be reused
    half-read.
    """

    __slots__ = ("_consumer", "_done", "_request", "transfer", "_parser", "_status",
                 "_headers", "_error_chunks", "_end", "_over", "_gather")

    #: How many of what this sink hands over are worth waking a waiting reader for at once
    #: where a woken reader runs inside the wake (``Backend.resumes_at_once``: Twisted); it is
    #: woken on the next loop turn otherwise (see :class:`~corduroy2.api.views.RowIterator`):
    #: parsed rows are small.
    WAKE_AT = 128
    #: Where a woken reader runs on a later loop pass (asyncio), what this sink hands over
    #: reaches an iterator at most a slice per pass (:class:`~corduroy2.api.pacing.Paced`):
    #: parsed rows, which the collector traverses while they wait in the iterator's queue.
    PACED = True
    #: The most of a chunk parsed at once, cut after a line's end (CouchDB puts each row and
    #: each change on a line of its own). A transport may hand over a quarter of a megabyte at
    #: a time (aiohttp's ``readany``): parsed at once, some 2,000 rows would be alive while the
    #: consumer takes them, and they would outlive the collector's young generation. The size
    #: of :class:`~corduroy2.api.pacing.Paced`'s slices, so that an iterator's are not cut
    #: again.
    PARSE_AT_MOST = 32 * 1024

    def __init__(self, request: Request, consumer: RowConsumer,
                 done: Finished) -> None:
        self._request = request
        self._gather: int = getattr(consumer, "GATHER", 0)
        self._consumer = consumer
        self._done = done
        self.transfer: Transfer | None = None
        self._parser: RowStream | None = None
        self._status = 0
        self._headers = NO_HEADERS
        self._error_chunks: list[bytes] = []
        self._end: dict[str, Any] | None = None
        self._over = False

    def on_start(self, status: int, headers: Headers) -> None:
        self._status, self._headers = status, headers
        if status < 400:
            self._parser = RowStream(status=status, headers=headers)

    def on_data(self, chunk: bytes) -> None:
        if self._over:
            return
        if self._parser is None:
            self._error_chunks.append(chunk)
            return
        try:
            if self._gather:
                self._receive_gathered(self._parser, chunk)
            elif len(chunk) <= self.PARSE_AT_MOST:
                self._parse(chunk)
            else:
                self._parse_in_slices(chunk)
        except StopTransfer:
            raise
        except Exception as exc:
            self._fail(exc)

    def _parse(self, piece: bytes) -> None:
        """Parse a piece of the body and hand over what it completes."""
        assert self._parser is not None
        self._parser.receive_data(piece)
        self._drain(self._parser)

    def _parse_in_slices(self, chunk: bytes) -> None:
        """:meth:`_parse` ``PARSE_AT_MOST`` bytes at a time (cut after a line's end), until
        the body needs no more (it ended, or failed)."""
        for piece in line_slices(chunk, self.PARSE_AT_MOST):
            self._parse(piece)
            if self._over:
                return

    def _receive_gathered(self, parser: RowStream, chunk: bytes) -> None:
        """Parse about ``GATHER`` bytes at a time, whatever the size of the chunks received."""
        gather = self._gather
        for start in range(0, len(chunk), gather):
            parser.receive_data(chunk[start:start + gather])  # (a small chunk is not copied)
            if parser.buffered >= gather:
                self._drain(parser)

    def _drain(self, parser: RowStream) -> None:
        consumer = self._consumer
        while True:
            rows = parser.rows_ready()
            if rows:
                consumer.rows(rows)
                continue
            event = parser.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, Header):
                consumer.header(event.fields)
            elif isinstance(event, End):
                self._end = event.fields
                return
            else:  # a row that rows_ready() left for next_event()
                consumer.rows([event.value])  # type: ignore[union-attr]

    def keep_transfer(self, transfer: Transfer) -> Transfer:
        """Keep the transfer that feeds this sink, to abort it if parsing fails, unless it
        has already ended (a synchronous backend ends inside ``send()``). Returns it."""
        if not self._over:
            self.transfer = transfer
        return transfer

    def _report(self, value: Any, error: BaseException | None) -> Transfer | None:
        """The body's end: ``done`` is told, and the transfer (which leads back to this sink)
        let go of. Returns the transfer, still running if the end came early."""
        self._over = True
        transfer, self.transfer = self.transfer, None
        self._done(value, error, self._status, self._headers)
        return transfer

    def _fail(self, exc: BaseException) -> None:
        transfer = self._report(None, exc)
        if transfer is not None:
            transfer.cancel()
        else:
            raise StopTransfer() from exc  # a synchronous backend: stop reading now

    def _error_reply(self) -> CouchError:
        """The error reply (>= 400), collected whole, as its exception."""
        return make_error(self._status, self._headers, b"".join(self._error_chunks),
                          method=self._request.method, url=self._request.url)

    def on_end(self) -> None:
        if self._over:
            return
        request = self._request
        if self._parser is None:
            self._report(None, self._error_reply())
            return
        try:
            self._parser.receive_data(b"")
            try:
                self._drain(self._parser)
            except ResponseCut as cut:
                # The transport saw the whole body by its framing: JSON that stops short is a
                # malformed reply, not a cut connection (which arrives through on_error).
                raise DecodeError(f"response body is incomplete JSON: {cut}") from cut
            if self._end is None:
                raise ResponseCut("response body ended early", method=request.method,
                                  url=request.url)
            value = self._consumer.end(self._end)
        except Exception as exc:
            self._report(None, exc)  # the body is complete: nothing to abort
            return
        self._report(value, None)

    def on_error(self, exc: CouchError) -> None:
        if not self._over:
            self._report(None, exc)
