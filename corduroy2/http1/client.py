"""The lean transport's core: HTTP/1.1 connections kept per server, each request written in one
piece, each response fed straight to llhttp, whose callbacks feed the sink; nothing else runs
per request.

One request at a time per connection (no pipelining). Connections are kept per server
(:class:`Pool`), at most ``max_connections`` of them open or opening, requests beyond that
queued in order (FIFO). A connection the server closed while it was idle is dropped when that
is seen; one it closed as our request went out (its keep-alive timeout raced the request) is
found out when it closes with nothing read, and the request is sent again once on a fresh
connection, as the blocking transport does. A streamed request body is never sent on a reused
connection, since it could not be sent again.

What a front door gives (its framework's own API):

* a :class:`Link` per connection: write, pause and resume reading, abort, close, and the
  sending of a streamed request body (:meth:`Link.upload`);
* a :class:`Connector`, which opens a connection for a :class:`Connection` and says whether it
  could, with the failure already mapped to corduroy2's error;
* ``call_later`` for the timers, and the backend's :class:`~corduroy2.backend.SilenceWatch`.

The front door's protocol object calls :meth:`Connection.data_received` and
:meth:`Connection.connection_lost` as its framework calls it.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import httptools

from ..backend import Cancel, SilenceWatch, Sink, tls_meaning
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.bodies import BodySource
from ..protocol.requests import Request, check_headers
from ..protocol.responses import Headers
from ..protocol.urls import Address
from ._repairs import callback_error

__all__ = ["Link", "Upload", "Connector", "Exchange", "Connection", "Pool", "request_head"]

log = logging.getLogger("corduroy2")

#: Methods that send ``Content-Length: 0`` when they have no body, as Twisted's Agent does (a
#: server may refuse a PUT or POST without a length: 411).
_LENGTH_REQUIRED = frozenset({"PUT", "POST", "PATCH"})

CallLater = Callable[[float, Callable[[], None]], Cancel]


class Upload(Protocol):
    """A streamed request body being sent (:meth:`Link.upload`). It counts each piece sent as
    hearing from the server (``exchange.heard_at``) and fails the exchange if its source
    fails."""

    done: bool

    def stop(self) -> None:
        """Stop sending (the exchange is over); nothing is reported."""


class Link(Protocol):
    """A front door's connection to a server, as the core uses it."""

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def abort(self) -> None:
        """Drop the connection at once (``connection_lost`` follows)."""

    def close(self) -> None:
        """Close it once what was written has gone (``connection_lost`` follows)."""

    def upload(self, exchange: Exchange) -> Upload:
        """Begin sending ``exchange``'s streamed body (its head is written)."""


class Connector(Protocol):
    """Opens the connections of one server's :class:`Pool`."""

    def connect(self, conn: Connection, request: Request, connected: Callable[[Link], None],
                failed: Callable[[CouchError], None]) -> Cancel:
        """Open a connection for ``conn``, first wanted by ``request``: ``connected(link)``
        once it is open, else ``failed(error)`` (also after a cancel, which frees the pool's
        slot); never before this returns."""


@functools.lru_cache(maxsize=32)
def _header_lines(fields: tuple[tuple[str, str], ...]) -> bytes:
    """The header lines of ``fields``, checked (ValueError for a line break) and encoded once
    per header set: a Couch sends the same few again and again."""
    check_headers(fields)
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in fields)


def request_head(request: Request, origin: Address, target: str) -> bytes:
    """The request line and header fields of ``request``, as sent. ValueError for a header
    that cannot be sent as it is."""
    lines = _header_lines(request.headers)
    body = request.body
    if body is None:
        length = b"Content-Length: 0\r\n" if request.method in _LENGTH_REQUIRED else b""
    elif isinstance(body, BodySource):
        length = (b"Transfer-Encoding: chunked\r\n" if body.length is None
                  else b"Content-Length: %d\r\n" % body.length)
    else:
        length = b"Content-Length: %d\r\n" % len(body)
    return (f"{request.method} {target} HTTP/1.1\r\nHost: {origin.netloc}\r\n".encode("ascii")
            + lines + length + b"\r\n")


class _Fields:
    """A response's header fields as llhttp gave them, decoded when first iterated: most
    responses' headers are never read (a document GET looks at none)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw)


class _HeadersOnly(Exception):
    """Raised from the parser's headers callback to stop it after a HEAD response's headers:
    llhttp cannot be told that a response has no body (httptools does not pass its "skip the
    body" answer on), so it would wait for Content-Length bytes that never come."""


class Exchange:
    """One request and its response: the :class:`~corduroy2.backend.Transfer` handle ``send``
    returns. It waits in its pool's queue, or for its connection, then runs on one; it ends
    exactly once (:meth:`completed` or :meth:`fail`), the sink hearing ``on_end`` or
    ``on_error`` then."""

    __slots__ = ("request", "head", "sink", "pool", "conn", "connecting", "finished", "paused",
                 "started", "retried", "upload", "timer", "idle_timeout", "heard_at",
                 "silences")

    def __init__(self, request: Request, sink: Sink, call_later: CallLater | None,
                 timeout: float | None, idle_timeout: float | None,
                 silences: SilenceWatch) -> None:
        self.request = request
        self.head = b""  # the request line and headers, as sent
        self.sink = sink
        self.pool: Pool | None = None
        self.conn: Connection | None = None
        self.connecting: Cancel | None = None
        self.finished = False
        self.paused = False
        self.started = False  # the response's headers have reached the sink
        self.retried = False  # sent again already after a stale connection
        self.upload: Upload | None = None
        self.timer: Cancel | None = None
        # Silence allowed from the server, from now until the end of the response; not
        # counted while paused (the silence is then ours): the backend's watch.
        self.idle_timeout = idle_timeout
        self.heard_at = 0.0
        self.silences = silences
        if timeout and call_later is not None:
            self.timer = call_later(timeout, lambda: self._timed_out(timeout))
        if idle_timeout:
            silences.watch(self)

    # -- the sink's side ----------------------------------------------------------------------

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self._stop_timers()
            self._let_go()

    def pause(self) -> None:
        if self.paused or self.finished:
            return
        self.paused = True
        self.silences.unwatch(self)
        if self.conn is not None:
            self.conn.link.pause_reading()

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if not self.finished:
            if self.idle_timeout:  # the silence starts now
                self.silences.watch(self)
            if self.conn is not None:
                self.conn.link.resume_reading()

    # -- timers -------------------------------------------------------------------------------

    def silence_expired(self) -> None:
        self._time_out(f"no data for {self.idle_timeout:g} s (idle_timeout)")

    def _timed_out(self, seconds: float) -> None:
        self.timer = None
        self._time_out(f"request timed out after {seconds:g} s (request_timeout)")

    def _time_out(self, message: str) -> None:
        if not self.finished:
            self.fail(Timeout(message, method=self.request.method, url=self.request.url))

    def _stop_timers(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.idle_timeout:
            self.silences.unwatch(self)

    # -- ending -------------------------------------------------------------------------------

    def fail(self, exc: CouchError) -> None:
        """End with ``exc``, dropping whatever the exchange holds (its connection is never
        reused: the rest of its response may still be on the way)."""
        if self.finished:
            return
        self.finished = True
        self._stop_timers()
        self._let_go()
        self.sink.on_error(exc)

    def _let_go(self) -> None:
        """Give up the queue place, the connect or the connection of an abandoned exchange."""
        if self.upload is not None:
            self.upload.stop()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.exchange = None
            conn.discard()
        elif self.connecting is not None:
            self.connecting.cancel()  # the connector reports a failure, which frees the slot
        elif self.pool is not None:
            self.pool.unqueue(self)

    def completed(self, conn: Connection, reusable: bool) -> None:
        """The whole response has arrived on ``conn``; ``reusable``: it may carry another."""
        self.finished = True
        self._stop_timers()
        self.conn = None
        upload = self.upload
        if upload is not None and not upload.done:
            # The server answered before it had the whole body (a refusal): the connection
            # is in the middle of a request, so it cannot carry another; dropped at once, it
            # does not go on sending the rest.
            upload.stop()
            conn.discard()
        else:
            if self.paused:
                conn.link.resume_reading()  # an idle connection reads (to see a close)
            assert self.pool is not None
            self.pool.release(conn, reusable)
        self.sink.on_end()

    def lost(self, conn: Connection, error: BaseException | None, tls: bool,
             eof_body: bool) -> None:
        """``conn`` closed before the response was complete: cleanly (``error`` None) or with
        ``error`` (``tls``: a TLS failure). ``eof_body``: the response is one whose body ends
        where the connection does."""
        self.conn = None
        request = self.request
        where = {"method": request.method, "url": request.url}
        if self.started:
            if eof_body and error is None:
                self.completed(conn, reusable=False)
            else:
                self.fail(ResponseCut(f"response body ended early: {_text(error)}", **where))
            return
        if tls:
            # Also after the handshake: under TLS 1.3 a refused client certificate is told
            # with the first read.
            self.fail(ConnectError(f"{tls_meaning(repr(error))}: {_text(error)}", **where))
        elif conn.reused and not conn.heard and not self.retried and \
                not isinstance(request.body, BodySource):
            # The server had closed the idle connection before it read the request: send it
            # again, once, on a fresh connection (which cannot be stale).
            self.retried = True
            assert self.pool is not None
            self.pool.assign(self, fresh=True)
        else:
            self.fail(ResponseCut(f"connection closed before a response: {_text(error)}",
                                  **where))


class Connection:
    """One HTTP/1.1 connection: writes its exchange's request on its :class:`Link`, feeds what
    arrives to llhttp, and llhttp's callbacks (the ``on_*`` methods) feed the exchange's
    sink."""

    #: The front door's connection: set when connected, before anyone uses it.
    link: Link

    def __init__(self, pool: Pool) -> None:
        self.pool: Pool | None = pool  # None once it no longer counts in the pool
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.reused = False  # it has carried a whole exchange before the current one
        self.heard = False  # something arrived for the current exchange
        self.open = True
        self._fields: list[tuple[bytes, bytes]] = []
        self._head: list[tuple[bytes, bytes]] = []  # the header fields of the last response
        self._keep_alive = False
        self._informational = False  # a 1xx response, which precedes the real one

    # -- requests -----------------------------------------------------------------------------

    def run(self, exchange: Exchange) -> None:
        """Send ``exchange``'s request on this idle connection, in one write when its body
        is in memory."""
        self.exchange = exchange
        exchange.conn = self
        self.heard = False
        link = self.link
        body = exchange.request.body
        if isinstance(body, BodySource):
            link.write(exchange.head)
            exchange.upload = link.upload(exchange)
        elif body:
            link.write(exchange.head + body)
        else:
            link.write(exchange.head)
        if exchange.paused:
            link.pause_reading()

    def discard(self) -> None:
        """Drop the connection at once (its exchange is abandoned, or it is not wanted)."""
        if self.pool is not None:
            self.pool.forget(self)
        if self.open:
            self.link.abort()

    # -- what arrives (from the front door's protocol) ----------------------------------------

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Nothing was asked: the server misbehaves, or the bytes belong to an abandoned
            # response whose connection is being dropped.
            if self.pool is not None:
                self.discard()
            return
        self.heard = True
        if exchange.idle_timeout:
            exchange.heard_at = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            raised = callback_error(exc)
            if isinstance(raised, _HeadersOnly):
                self.parser = httptools.HttpResponseParser(self)
                return
            # A sink raised: corduroy2's own sinks do not, so this is a bug worth a trace;
            # the response cannot be followed any further.
            log.error("a response's consumer failed", exc_info=raised or exc)
            self._invalid(exchange, f"its consumer failed: {_text(raised or exc)}")
        except httptools.HttpParserError as exc:
            self._invalid(exchange, f"invalid HTTP response: {_text(exc)}")

    def connection_lost(self, error: BaseException | None, tls: bool = False) -> None:
        """The connection is gone: closed cleanly (``error`` None) or not (``tls``: the error
        is a TLS failure)."""
        self.open = False
        if self.pool is not None:
            self.pool.forget(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None and not exchange.finished:
            exchange.lost(self, error, tls, self._eof_body())

    def _invalid(self, exchange: Exchange, message: str) -> None:
        request = exchange.request
        self.discard()
        exchange.fail(TransportError(message, method=request.method, url=request.url))

    # -- llhttp's callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            self._informational = True
            self._fields = []
            return
        fields = self._head = self._fields
        self._fields = []
        self._keep_alive = parser.should_keep_alive()
        exchange = self.exchange
        if exchange is None or exchange.finished:
            return
        exchange.started = True
        exchange.sink.on_start(status, Headers(_Fields(fields)))
        if exchange.request.method == "HEAD" and self.exchange is exchange:
            self.on_message_complete()
            raise _HeadersOnly()

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.sink.on_data(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        exchange, self.exchange = self.exchange, None
        if exchange is not None and not exchange.finished:
            self.reused = True
            exchange.completed(self, self._keep_alive)

    def _eof_body(self) -> bool:
        """Whether the response under way has its body end with the connection: one with
        neither a length nor chunks (HTTP/1.0 style)."""
        names = {name.lower() for name, _ in self._head}
        return b"content-length" not in names and b"transfer-encoding" not in names


class Pool:
    """The connections to one server: at most ``limit`` open or opening, idle ones kept for
    the next request (the last one in first: the warmest), requests beyond the limit queued in
    order."""

    def __init__(self, origin: Address, limit: int, connector: Connector) -> None:
        self.origin = origin
        self._limit = limit
        self._connector = connector
        self.idle: list[Connection] = []
        self.count = 0  # connections open or opening
        self.closed = False  # the backend was closed: connections are not kept any more
        self._waiting: collections.deque[Exchange] = collections.deque()

    def assign(self, exchange: Exchange, fresh: bool = False) -> None:
        """Run ``exchange`` on an idle connection, else a new one, else when one is free.
        ``fresh``: only on a new connection."""
        exchange.pool = self
        if self.idle and not fresh:
            self.idle.pop().run(exchange)
        elif self.count < self._limit:
            self._connect(exchange)
        elif fresh:
            # Sent once already (or a body that cannot wait behind a stale connection): first
            # in line, and an idle connection makes room for it.
            self._waiting.appendleft(exchange)
            if self.idle:
                self.idle[0].discard()
        else:
            self._waiting.append(exchange)

    def release(self, conn: Connection, reusable: bool) -> None:
        """``conn``'s exchange is complete: it serves the next request waiting, or waits."""
        if not reusable or not conn.open or self.closed:
            self.forget(conn)
            if conn.open:
                conn.link.close()
            return
        waiting = self._waiting
        while waiting:
            exchange = waiting.popleft()
            if exchange.finished:
                continue
            if _wants_fresh(exchange):
                waiting.appendleft(exchange)
                conn.discard()  # room for a fresh one
                return
            conn.run(exchange)
            return
        self.idle.append(conn)

    def forget(self, conn: Connection) -> None:
        """``conn`` no longer counts (closed, or being closed): a request waiting may connect."""
        if conn.pool is not self:
            return
        conn.pool = None
        self.count -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        self._wake()

    def unqueue(self, exchange: Exchange) -> None:
        try:
            self._waiting.remove(exchange)
        except ValueError:
            pass

    def _wake(self) -> None:
        waiting = self._waiting
        while waiting and self.count < self._limit:
            exchange = waiting.popleft()
            if not exchange.finished:
                self._connect(exchange)

    def _connect(self, exchange: Exchange) -> None:
        self.count += 1
        conn = Connection(self)

        def connected(link: Link) -> None:
            exchange.connecting = None
            conn.link = link
            if exchange.finished:
                self.release(conn, True)
            else:
                conn.run(exchange)

        def failed(error: CouchError) -> None:
            exchange.connecting = None
            conn.open = False
            self.count -= 1
            self._wake()
            exchange.fail(error)  # (nothing, if it was cancelled meanwhile)

        exchange.connecting = self._connector.connect(conn, exchange.request, connected, failed)

    def close(self) -> list[Connection]:
        """Stop keeping connections; returns the idle ones, for the front door to close. A
        busy one is closed once its exchange is over."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.pool = None
            self.count -= 1
        return idle


def _wants_fresh(exchange: Exchange) -> bool:
    """An exchange that must not go out on a reused connection: it was sent once on a stale
    one already, or its body is streamed (it could not be sent again)."""
    return exchange.retried or isinstance(exchange.request.body, BodySource)


def _text(exc: BaseException | None) -> str:
    return "the connection was closed" if exc is None else f"{type(exc).__name__}: {exc}"
