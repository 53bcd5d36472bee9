"""The lean Twisted transport (``Couch(..., client="httptools")``): HTTP/1.1 over Twisted's
endpoints, responses parsed by httptools (llhttp, in C).

``Agent`` costs about 2.5 times what aiohttp costs per request, and corduroy2 sits a few per
cent above it: no trimming of our own layer could bring GETs under load up to aiocouch's. This
transport writes each request in one ``transport.write`` and feeds what arrives straight to
llhttp, whose callbacks feed the sink; nothing else runs per request.

One request at a time per connection (no pipelining). Connections are kept per server
(:class:`_Pool`), at most ``max_connections`` of them open or opening, requests beyond that
queued in order (FIFO). A connection the server closed while it was idle is dropped when that
is seen; one it closed as our request went out (its keep-alive timeout raced the request) is
found out when it closes with nothing read, and the request is sent again once on a fresh
connection, as the blocking transport does. A streamed request body is never sent on a reused
connection, since it could not be sent again.

Every native failure becomes corduroy2's error at the point where it is seen: connecting
(:func:`_connect_error`), the connection lost (:meth:`_Connection.connectionLost`), an invalid
response (:meth:`_Connection.dataReceived`), and the exchange's own timers.

httptools is imported by this module only, which the front door imports only for
``client="httptools"``. Only Twisted's public API is used.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Iterator
from typing import Any

import httptools
from twisted.internet import defer, error as ierror
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from ..backend import SilenceWatch, Sink, Transfer, TransportOptions, tls_meaning
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.bodies import BodySource
from ..protocol.requests import Request, check_headers
from ..protocol.responses import Headers
from ..protocol.urls import Address, address_and_target
from . import _repairs
from .backend import ATTEMPT_DELAY, DeferredBackend, StreamProducer, refusal
from .tls import MissingTLS, TLSPolicy, is_tls_error, twisted_ssl

__all__ = ["HttptoolsBackend"]

log = logging.getLogger("corduroy2")

#: Methods that send ``Content-Length: 0`` when they have no body, as Agent does (a server
#: may refuse a PUT or POST without a length: 411).
_LENGTH_REQUIRED = frozenset({"PUT", "POST", "PATCH"})


@functools.lru_cache(maxsize=32)
def _header_lines(fields: tuple[tuple[str, str], ...]) -> bytes:
    """The header lines of ``fields``, checked (ValueError for a line break) and encoded once
    per header set: a Couch sends the same few again and again."""
    check_headers(fields)
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in fields)


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


class _Exchange:
    """One request and its response: the :class:`~corduroy2.backend.Transfer` handle ``send``
    returns. It waits in its pool's queue, or for its connection, then runs on one; it ends
    exactly once (:meth:`completed` or :meth:`fail`), the sink hearing ``on_end`` or
    ``on_error`` then."""

    __slots__ = ("request", "head", "sink", "pool", "conn", "connecting", "finished", "paused",
                 "started", "retried", "upload", "timer", "idle_timeout", "heard_at",
                 "silences")

    def __init__(self, request: Request, sink: Sink, reactor: Any, timeout: float | None,
                 idle_timeout: float | None, silences: SilenceWatch) -> None:
        self.request = request
        self.head = b""  # the request line and headers, as sent
        self.sink = sink
        self.pool: _Pool | None = None
        self.conn: _Connection | None = None
        self.connecting: defer.Deferred[Any] | None = None
        self.finished = False
        self.paused = False
        self.started = False  # the response's headers have reached the sink
        self.retried = False  # sent again already after a stale connection
        self.upload: _Upload | None = None
        self.timer: IDelayedCall | None = None
        # Silence allowed from the server, from now until the end of the response; not
        # counted while paused (the silence is then ours): the backend's watch.
        self.idle_timeout = idle_timeout
        self.heard_at = 0.0
        self.silences = silences
        if timeout:
            self.timer = reactor.callLater(timeout, self._timed_out, timeout)
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
            self.conn.transport.pauseProducing()

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if not self.finished:
            if self.idle_timeout:  # the silence starts now
                self.silences.watch(self)
            if self.conn is not None:
                self.conn.transport.resumeProducing()

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
            if self.timer.active():
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
            self.connecting.cancel()  # the pool's errback frees the slot
        elif self.pool is not None:
            self.pool.unqueue(self)

    def completed(self, conn: _Connection, reusable: bool) -> None:
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
                conn.transport.resumeProducing()  # an idle connection reads (to see a close)
            assert self.pool is not None
            self.pool.release(conn, reusable)
        self.sink.on_end()

    def lost(self, conn: _Connection, reason: Failure, eof_body: bool) -> None:
        """``conn`` closed before the response was complete. ``eof_body``: the response is
        one whose body ends where the connection does."""
        self.conn = None
        request = self.request
        where = {"method": request.method, "url": request.url}
        value = reason.value
        if self.started:
            if eof_body and reason.check(ierror.ConnectionDone):
                self.completed(conn, reusable=False)
            else:
                self.fail(ResponseCut(f"response body ended early: {_text(value)}", **where))
            return
        if is_tls_error(value):
            # Also after the handshake: under TLS 1.3 a refused client certificate is told
            # with the first read.
            meaning = tls_meaning(repr(value))
            self.fail(ConnectError(f"{meaning}: {_text(value)}", **where))
        elif conn.reused and not conn.heard and not self.retried and \
                not isinstance(request.body, BodySource):
            # The server had closed the idle connection before it read the request: send it
            # again, once, on a fresh connection (which cannot be stale).
            self.retried = True
            assert self.pool is not None
            self.pool.assign(self, fresh=True)
        else:
            self.fail(ResponseCut(f"connection closed before a response: {_text(value)}",
                                  **where))


class _Upload:
    """A streamed request body (a :class:`BodySource`) on its connection: Agent's producer
    (:class:`~corduroy2.twisted_io.backend.StreamProducer`) registered with the transport,
    which pauses it while its send buffer is full, framed in chunks when its length is
    unknown. Each piece sent counts as hearing from the server: the silence watched is the
    exchange's."""

    def __init__(self, exchange: _Exchange, conn: _Connection) -> None:
        source = exchange.request.body
        assert isinstance(source, BodySource)
        self._exchange = exchange
        self._transport: Any = conn.transport
        self._chunked = source.length is None
        self._producer = StreamProducer(source)
        self.done = False
        self._transport.registerProducer(self._producer, True)
        writing = self._producer.startProducing(self)
        writing.addCallbacks(self._written, self._failed)

    def write(self, piece: bytes) -> None:
        self._exchange.heard_at = time.monotonic()
        if self._chunked:
            self._transport.writeSequence((b"%x\r\n" % len(piece), piece, b"\r\n"))
        else:
            self._transport.write(piece)

    def _written(self, _: Any) -> None:
        self.done = True
        self._transport.unregisterProducer()
        if self._chunked:
            self._transport.write(b"0\r\n\r\n")

    def _failed(self, failure: Failure) -> None:
        self.done = True
        self._transport.unregisterProducer()
        exc = failure.value
        if not isinstance(exc, CouchError):
            request = self._exchange.request
            exc = TransportError(f"reading the request body failed: {_text(exc)}",
                                 method=request.method, url=request.url)
        self._exchange.fail(exc)

    def stop(self) -> None:
        if not self.done:
            self.done = True
            self._producer.stopProducing()
            self._transport.unregisterProducer()


class _Connection(Protocol):
    """One HTTP/1.1 connection: writes its exchange's request, feeds what arrives to llhttp,
    and llhttp's callbacks (the ``on_*`` methods) feed the exchange's sink."""

    #: TCP's (or TLS over TCP's) transport: set when connected, before anyone uses it.
    transport: Any

    def __init__(self, pool: _Pool) -> None:
        self.pool: _Pool | None = pool  # None once it no longer counts in the pool
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.reused = False  # it has carried a whole exchange before the current one
        self.heard = False  # something arrived for the current exchange
        self.open = True
        self._fields: list[tuple[bytes, bytes]] = []
        self._head: list[tuple[bytes, bytes]] = []  # the header fields of the last response
        self._keep_alive = False
        self._informational = False  # a 1xx response, which precedes the real one
        self._closed: defer.Deferred[None] | None = None

    # -- requests -----------------------------------------------------------------------------

    def run(self, exchange: _Exchange) -> None:
        """Send ``exchange``'s request on this idle connection, in one write when its body
        is in memory."""
        self.exchange = exchange
        exchange.conn = self
        self.heard = False
        transport = self.transport
        body = exchange.request.body
        if isinstance(body, BodySource):
            transport.write(exchange.head)
            exchange.upload = _Upload(exchange, self)
        elif body:
            transport.write(exchange.head + body)
        else:
            transport.write(exchange.head)
        if exchange.paused:
            transport.pauseProducing()

    def discard(self) -> None:
        """Drop the connection at once (its exchange is abandoned, or it is not wanted)."""
        if self.pool is not None:
            self.pool.forget(self)
        if self.open:
            self.transport.abortConnection()

    # -- what arrives -------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
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
            raised = _repairs.callback_error(exc)
            if isinstance(raised, _HeadersOnly):
                self.parser = httptools.HttpResponseParser(self)
                return
            # A sink raised: corduroy2's own sinks do not, so this is a bug worth a trace;
            # the response cannot be followed any further.
            log.error("a response's consumer failed", exc_info=raised or exc)
            self._invalid(exchange, f"its consumer failed: {_text(raised or exc)}")
        except httptools.HttpParserError as exc:
            self._invalid(exchange, f"invalid HTTP response: {_text(exc)}")

    def _invalid(self, exchange: _Exchange, message: str) -> None:
        request = exchange.request
        self.discard()
        exchange.fail(TransportError(message, method=request.method, url=request.url))

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

    def connectionLost(self, reason: Failure = Failure(ierror.ConnectionDone())) -> None:  # noqa: N802
        self.open = False
        if self.pool is not None:
            self.pool.forget(self)
        if self._closed is not None:
            self._closed.callback(None)
        exchange, self.exchange = self.exchange, None
        if exchange is not None and not exchange.finished:
            exchange.lost(self, reason, self._eof_body())

    def _eof_body(self) -> bool:
        """Whether the response under way has its body end with the connection: one with
        neither a length nor chunks (HTTP/1.0 style)."""
        names = {name.lower() for name, _ in self._head}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def close(self) -> defer.Deferred[None]:
        """Close this idle connection; fires once it is closed."""
        if not self.open:
            return defer.succeed(None)
        self._closed = defer.Deferred()
        self.transport.loseConnection()
        return self._closed


class _Pool:
    """The connections to one server: at most ``max_connections`` open or opening, idle ones
    kept for the next request (the last one in first: the warmest), requests beyond the limit
    queued in order."""

    def __init__(self, backend: HttptoolsBackend, origin: Address) -> None:
        self.origin = origin
        self.reactor = backend.reactor
        self._limit = backend.options.max_connections
        self._connect_timeout = backend.options.connect_timeout
        kwargs: dict[str, Any] = {"attemptDelay": ATTEMPT_DELAY}
        if self._connect_timeout is not None:
            kwargs["timeout"] = self._connect_timeout
        endpoint: Any = HostnameEndpoint(self.reactor, origin.host, origin.port, **kwargs)
        if origin.scheme == "https":
            host = origin.host.encode("idna")
            endpoint = wrapClientTLS(backend.tls.creatorForNetloc(host, origin.port), endpoint)
        self._endpoint = endpoint
        self.idle: list[_Connection] = []
        self.count = 0  # connections open or opening
        self.closed = False  # the backend was closed: connections are not kept any more
        self._waiting: collections.deque[_Exchange] = collections.deque()

    def assign(self, exchange: _Exchange, fresh: bool = False) -> None:
        """Run ``exchange`` on an idle connection, else a new one, else when one is free.
        ``fresh``: only on a new connection."""
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

    def release(self, conn: _Connection, reusable: bool) -> None:
        """``conn``'s exchange is complete: it serves the next request waiting, or waits."""
        if not reusable or not conn.open or self.closed:
            self.forget(conn)
            if conn.open:
                conn.transport.loseConnection()
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

    def forget(self, conn: _Connection) -> None:
        """``conn`` no longer counts (closed, or being closed): a request waiting may connect."""
        if conn.pool is not self:
            return
        conn.pool = None
        self.count -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        self._wake()

    def unqueue(self, exchange: _Exchange) -> None:
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

    def _connect(self, exchange: _Exchange) -> None:
        self.count += 1
        connecting = self._endpoint.connect(_OneConnection(_Connection(self)))
        exchange.connecting = connecting
        connecting.addCallbacks(self._connected, self._not_connected,
                                callbackArgs=(exchange,), errbackArgs=(exchange,))

    def _connected(self, conn: _Connection, exchange: _Exchange) -> None:
        exchange.connecting = None
        set_no_delay = getattr(conn.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            # A streamed body's pieces go out as they come: Nagle's algorithm would hold a
            # small one back until the server acknowledged the head (40 ms on Linux).
            set_no_delay(True)
        if exchange.finished:
            self.release(conn, True)
        else:
            conn.run(exchange)

    def _not_connected(self, failure: Failure, exchange: _Exchange) -> None:
        exchange.connecting = None
        self.count -= 1
        self._wake()
        if not exchange.finished:
            exchange.fail(self._connect_error(failure, exchange.request))

    def _connect_error(self, failure: Failure, request: Request) -> CouchError:
        """What a failed connect means, as corduroy2's error."""
        where = {"method": request.method, "url": request.url}
        exc = failure.value
        netloc = self.origin.netloc
        err: CouchError
        if isinstance(exc, (ierror.TimeoutError, defer.TimeoutError)):
            err = Timeout(f"timed out after {self._connect_timeout:g} s connecting to {netloc} "
                          f"(connect_timeout)", **where)
        elif is_tls_error(exc):
            err = ConnectError(f"{tls_meaning(repr(exc))}: {_text(exc)}", **where)
        else:
            err = ConnectError(f"cannot connect to {netloc}: {_text(exc)}", **where)
        err.__cause__ = exc
        return err

    def close(self) -> list[defer.Deferred[None]]:
        """Close the idle connections, and each busy one once its exchange is over; one
        Deferred for each idle one, fired once it is closed."""
        self.closed = True
        idle, self.idle = self.idle, []
        closing = []
        for conn in idle:
            conn.pool = None
            self.count -= 1
            closing.append(conn.close())
        return closing


class _OneConnection(Factory):
    """Builds the one protocol given (``connectProtocol``'s factory, made quiet): a noisy
    factory logs "Starting factory" and "Stopping factory" for every connection, and until
    an application begins logging, Twisted keeps its recent log events, and with each its
    source, so a connection's objects would outlive it."""

    noisy = False

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def buildProtocol(self, addr: Any) -> _Connection:  # noqa: N802 (Twisted's name)
        return self._conn


def _wants_fresh(exchange: _Exchange) -> bool:
    """An exchange that must not go out on a reused connection: it was sent once on a stale
    one already, or its body is streamed (it could not be sent again)."""
    return exchange.retried or isinstance(exchange.request.body, BodySource)


def _text(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}: {exc}"


class HttptoolsBackend(DeferredBackend):
    """``Couch(..., client="httptools")`` on Twisted. ``reactor`` defaults to the global
    reactor, looked up on first use."""

    def __init__(self, options: TransportOptions | None = None, reactor: Any = None) -> None:
        super().__init__(options, reactor)
        # Made now, so that the TLS settings given (a bad certificate file, or pyOpenSSL
        # missing) fail when the Couch is made.
        self.tls = TLSPolicy(self.options)
        self._pools: dict[Address, _Pool] = {}
        self._silences: SilenceWatch | None = None

    def send(self, request: Request, sink: Sink) -> Transfer:
        silences = self._silences
        if silences is None:
            silences = self._silences = SilenceWatch(self.reactor.callLater)
        options = self.options
        try:
            lines = _header_lines(request.headers)
            origin, target = address_and_target(request.url)
            if origin.scheme == "https":
                twisted_ssl()  # without TLS support, a clear error now
        except (ValueError, MissingTLS) as exc:
            refused = _Exchange(request, sink, None, None, None, silences)
            refused.fail(refusal(exc, request))
            return refused
        exchange = _Exchange(request, sink, self.reactor,
                             request.timeout or options.request_timeout,
                             request.idle_timeout or options.idle_timeout, silences)
        body = request.body
        if body is None:
            length = b"Content-Length: 0\r\n" if request.method in _LENGTH_REQUIRED else b""
        elif isinstance(body, BodySource):
            length = (b"Transfer-Encoding: chunked\r\n" if body.length is None
                      else b"Content-Length: %d\r\n" % body.length)
        else:
            length = b"Content-Length: %d\r\n" % len(body)
        exchange.head = (f"{request.method} {target} HTTP/1.1\r\nHost: {origin.netloc}\r\n"
                         .encode("ascii") + lines + length + b"\r\n")
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self, origin)
        exchange.pool = pool
        pool.assign(exchange, fresh=isinstance(body, BodySource))
        return exchange

    def close(self) -> defer.Deferred[None]:
        """Close idle connections; the Deferred fires when they are closed."""
        if self._silences is not None:
            self._silences.close()
            self._silences = None
        pools, self._pools = self._pools, {}
        closing = [d for pool in pools.values() for d in pool.close()]
        return defer.gatherResults(closing).addCallback(lambda _: None)

