"""The lean Twisted transport (``Couch(..., client="httptools")``): HTTP/1.1 over Twisted's
endpoints, responses parsed by httptools (llhttp, in C).

``Agent`` costs about 2.5 times what aiohttp costs per request, and corduroy2 sits a few per
cent above it: no trimming of our own layer could bring GETs under load up to aiocouch's. This
transport writes each request in one ``transport.write`` and feeds what arrives straight to
llhttp. The HTTP/1.1 side (connections kept per server, requests queued, stale connections,
the parser's callbacks) is :mod:`corduroy2.http1.client`, shared with the Tornado door's
httptools transport; this module gives it Twisted's connections (:class:`_Link`), connects
them (:class:`_Connector`) and maps Twisted's connect failures.

httptools is imported (through the core) only when the front door is asked for
``client="httptools"``. Only Twisted's public API is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error as ierror
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from ..backend import Cancel, SilenceWatch, Sink, Transfer, TransportOptions, tls_meaning
from ..errors import ConnectError, CouchError, Timeout, TransportError
from ..http1.client import Connection, Exchange, Pool, request_head
from ..protocol.bodies import BodySource
from ..protocol.requests import Request
from ..protocol.urls import Address, address_and_target
from .backend import ATTEMPT_DELAY, DeferredBackend, StreamProducer, refusal
from .tls import MissingTLS, TLSPolicy, is_tls_error, twisted_ssl

__all__ = ["HttptoolsBackend"]


class _Link(Protocol):
    """A Twisted connection, as the core's :class:`~corduroy2.http1.client.Link`."""

    #: TCP's (or TLS over TCP's) transport: set when connected, before anyone uses it.
    transport: Any

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._closed: defer.Deferred[None] | None = None
        self._open = True

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self._conn.data_received(data)

    def connectionLost(self, reason: Failure = Failure(ierror.ConnectionDone())) -> None:  # noqa: N802
        self._open = False
        if self._closed is not None:
            self._closed.callback(None)
        clean = reason.check(ierror.ConnectionDone) is not None
        value = reason.value
        self._conn.connection_lost(None if clean else value, tls=is_tls_error(value))

    # -- the Link ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()

    def abort(self) -> None:
        self.transport.abortConnection()

    def close(self) -> None:
        self.transport.loseConnection()

    def upload(self, exchange: Exchange) -> _Upload:
        return _Upload(exchange, self.transport)

    def closing(self) -> defer.Deferred[None]:
        """Close this idle connection; fires once it is closed."""
        if not self._open:
            return defer.succeed(None)
        self._closed = defer.Deferred()
        self.transport.loseConnection()
        return self._closed


class _Upload:
    """A streamed request body (a :class:`BodySource`) on its connection: Agent's producer
    (:class:`~corduroy2.twisted_io.backend.StreamProducer`) registered with the transport,
    which pauses it while its send buffer is full, framed in chunks when its length is
    unknown. Each piece sent counts as hearing from the server: the silence watched is the
    exchange's."""

    def __init__(self, exchange: Exchange, transport: Any) -> None:
        source = exchange.request.body
        assert isinstance(source, BodySource)
        self._exchange = exchange
        self._transport = transport
        self._chunked = source.length is None
        self._pieces = StreamProducer(source)
        self.done = False
        self._transport.registerProducer(self._pieces, True)
        writing = self._pieces.startProducing(self)
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
            self._pieces.stopProducing()
            self._transport.unregisterProducer()


class _Connector:
    """Opens one server's connections through Twisted's endpoints (TLS wrapped around TCP for
    ``https``)."""

    def __init__(self, backend: HttptoolsBackend, origin: Address) -> None:
        self.origin = origin
        self._connect_timeout = backend.options.connect_timeout
        kwargs: dict[str, Any] = {"attemptDelay": ATTEMPT_DELAY}
        if self._connect_timeout is not None:
            kwargs["timeout"] = self._connect_timeout
        endpoint: Any = HostnameEndpoint(backend.reactor, origin.host, origin.port, **kwargs)
        if origin.scheme == "https":
            host = origin.host.encode("idna")
            endpoint = wrapClientTLS(backend.tls.creatorForNetloc(host, origin.port), endpoint)
        self._endpoint = endpoint

    def connect(self, conn: Connection, request: Request, connected: Callable[[_Link], None],
                failed: Callable[[CouchError], None]) -> Cancel:
        def made(link: _Link) -> None:
            set_no_delay = getattr(link.transport, "setTcpNoDelay", None)
            if set_no_delay is not None:
                # A streamed body's pieces go out as they come: Nagle's algorithm would hold
                # a small one back until the server acknowledged the head (40 ms on Linux).
                set_no_delay(True)
            connected(link)

        def not_made(failure: Failure) -> None:
            failed(self._connect_error(failure, request))

        connecting: defer.Deferred[_Link] = self._endpoint.connect(_OneLink(_Link(conn)))
        connecting.addCallbacks(made, not_made)
        return connecting

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


class _OneLink(Factory):
    """Builds the one protocol given (``connectProtocol``'s factory, made quiet): a noisy
    factory logs "Starting factory" and "Stopping factory" for every connection, and until
    an application begins logging, Twisted keeps its recent log events, and with each its
    source, so a connection's objects would outlive it."""

    noisy = False

    def __init__(self, link: _Link) -> None:
        self._link = link

    def buildProtocol(self, addr: Any) -> _Link:  # noqa: N802 (Twisted's name)
        return self._link


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
        self._pools: dict[Address, Pool] = {}
        self._silences: SilenceWatch | None = None

    def send(self, request: Request, sink: Sink) -> Transfer:
        silences = self._silences
        if silences is None:
            silences = self._silences = SilenceWatch(self.call_later)
        options = self.options
        try:
            origin, target = address_and_target(request.url)
            if origin.scheme == "https":
                twisted_ssl()  # without TLS support, a clear error now
            head = request_head(request, origin, target)
        except (ValueError, MissingTLS) as exc:
            refused = Exchange(request, sink, None, None, None, silences)
            refused.fail(refusal(exc, request))
            return refused
        exchange = Exchange(request, sink, self.call_later,
                            request.timeout or options.request_timeout,
                            request.idle_timeout or options.idle_timeout, silences)
        exchange.head = head
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = Pool(origin, options.max_connections,
                                              _Connector(self, origin))
        pool.assign(exchange, fresh=isinstance(request.body, BodySource))
        return exchange

    def close(self) -> defer.Deferred[None]:
        """Close idle connections; the Deferred fires when they are closed."""
        if self._silences is not None:
            self._silences.close()
            self._silences = None
        pools, self._pools = self._pools, {}
        closing = [conn.link.closing() for pool in pools.values() for conn in pool.close()
                   if isinstance(conn.link, _Link)]
        return defer.gatherResults(closing).addCallback(lambda _: None)
