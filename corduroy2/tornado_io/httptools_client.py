"""The lean Tornado transport (``Couch(url, client="httptools")``): HTTP/1.1 on asyncio's own
connections (the loop Tornado runs on), responses parsed by httptools (llhttp, in C).

Why a third client next to curl and aiohttp: a request is one ``transport.write``, and its
response reaches the sink from the connection's ``data_received``, in the loop pass that read
it. Nothing else runs per request: no task (aiohttp runs each request in one, which costs two
more passes of the loop per request), no Future of its own (curl's and the simple client's
fetches each make one), no header object built unless read. The HTTP/1.1 side (connections
kept per server, requests queued, stale connections, the parser's callbacks) is
:mod:`corduroy2.http1.client`, shared with the Twisted door's httptools transport; this module
gives it asyncio's connections (:class:`_Link`), opens them (:class:`_Connector`), sends
streamed request bodies (:class:`_Upload`) and maps connect failures.

The pools belong to the loop they were made on: when the caller moves to another loop, the old
connections are dropped and new ones made. httptools is imported only when this client is
asked for. Only asyncio's public API is used.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from ..backend import SilenceWatch, Sink, Transfer, TransportOptions, ssl_context, tls_meaning
from ..errors import ConnectError, CouchError, Timeout, TransportError
from ..http1.client import Connection, Exchange, Pool, request_head
from ..protocol.bodies import BodySource
from ..protocol.requests import Request
from ..protocol.urls import Address, address_and_target
from .backend import LoopBackend

__all__ = ["HttptoolsBackend"]

#: How long a connect to one address of a server waits before the next address is tried as
#: well (RFC 8305's "happy eyeballs"), as the Twisted door does (ATTEMPT_DELAY there).
_ATTEMPT_DELAY = 0.05


class _Link(asyncio.Protocol):
    """An asyncio connection, as the core's :class:`~corduroy2.http1.client.Link`."""

    transport: asyncio.Transport  # set when connected, before anyone uses it
    loop: asyncio.AbstractEventLoop  # the loop it runs on (set then too)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._writable: asyncio.Future[None] | None = None  # while the send buffer is full
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self._conn.data_received(data)

    def eof_received(self) -> None:
        return None  # the transport closes, and connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.resume_writing()  # an upload waiting for room finds the connection gone
        self._conn.connection_lost(exc, tls=isinstance(exc, ssl.SSLError))

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    async def room(self) -> None:
        """Until the send buffer has room again (at once if it has)."""
        if self._writable is not None:
            await self._writable

    # -- the Link ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def abort(self) -> None:
        self.transport.abort()

    def close(self) -> None:
        self.transport.close()

    def upload(self, exchange: Exchange) -> _Upload:
        return _Upload(exchange, self)


class _Upload:
    """A streamed request body (a :class:`BodySource`) sent by a task of its own: each piece
    taken only once the connection's send buffer has room (asyncio's ``pause_writing``), framed
    in chunks when its length is unknown. Each piece sent counts as hearing from the server:
    the silence watched is the exchange's."""

    def __init__(self, exchange: Exchange, link: _Link) -> None:
        self.done = False
        self._task = link.loop.create_task(self._send(exchange, link))

    async def _send(self, exchange: Exchange, link: _Link) -> None:
        source = exchange.request.body
        assert isinstance(source, BodySource)
        chunked = source.length is None
        try:
            while (piece := await source.anext_piece()) is not None:
                if self.done or link.lost:
                    return  # the exchange is over: it reports how
                exchange.heard_at = time.monotonic()
                if chunked:
                    link.transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
                else:
                    link.transport.write(piece)
                await link.room()
            if not (self.done or link.lost):
                if chunked:
                    link.transport.write(b"0\r\n\r\n")
                self.done = True
        except CouchError as exc:  # the source's own failure (BodySource maps it)
            self.done = True
            exchange.fail(exc)
        except Exception as exc:
            self.done = True
            request = exchange.request
            exchange.fail(TransportError(f"sending the request body failed: {exc!r}",
                                         method=request.method, url=request.url))

    def stop(self) -> None:
        if not self.done:
            self.done = True
            self._task.cancel()


class _Connecting:
    """The cancel handle of a connect under way (its task)."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    def cancel(self) -> None:
        self.task.cancel()


class _Connector:
    """Opens one server's connections on ``loop`` (TLS for ``https``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Address, timeout: float | None,
                 tls: Callable[[], ssl.SSLContext]) -> None:
        self._loop = loop
        self.origin = origin
        self._timeout = timeout
        self._tls = tls

    def connect(self, conn: Connection, request: Request, connected: Callable[[_Link], None],
                failed: Callable[[CouchError], None]) -> _Connecting:
        loop = self._loop
        task = loop.create_task(self._open(loop, conn, request, connected, failed))

        def ended(task: asyncio.Task[None]) -> None:
            # Cancelled, perhaps before it began (then none of _open ran): the exchange was
            # abandoned, and this frees the pool's slot.
            if task.cancelled():
                failed(ConnectError("connect abandoned", method=request.method,
                                    url=request.url))

        task.add_done_callback(ended)
        return _Connecting(task)

    async def _open(self, loop: asyncio.AbstractEventLoop, conn: Connection, request: Request,
                    connected: Callable[[_Link], None],
                    failed: Callable[[CouchError], None]) -> None:
        origin = self.origin
        where = {"method": request.method, "url": request.url}
        tls = self._tls() if origin.scheme == "https" else None
        try:
            opening = loop.create_connection(
                lambda: _Link(conn), origin.host, origin.port, ssl=tls,
                server_hostname=origin.host if tls is not None else None,
                happy_eyeballs_delay=_ATTEMPT_DELAY)
            if self._timeout is None:
                _, link = await opening
            else:
                _, link = await asyncio.wait_for(opening, self._timeout)
        except asyncio.TimeoutError as exc:
            error: CouchError = Timeout(f"timed out after {self._timeout:g} s connecting to "
                                        f"{origin.netloc} (connect_timeout)", **where)
            error.__cause__ = exc
            failed(error)
            return
        except ssl.SSLError as exc:
            detail = (exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError)
                      else str(exc))
            error = ConnectError(f"{tls_meaning(detail)}: {detail}", **where)
            error.__cause__ = exc
            failed(error)
            return
        except OSError as exc:
            error = ConnectError(f"cannot connect to {origin.netloc}: {exc!r}", **where)
            error.__cause__ = exc
            failed(error)
            return
        connected(link)


class HttptoolsBackend(LoopBackend):
    """``Couch(url, client="httptools")`` on the Tornado front door."""

    client = "httptools"

    def __init__(self, options: TransportOptions | None = None) -> None:
        super().__init__(options)
        # Custom TLS settings are checked now, so that bad certificate files fail when the
        # Couch is made; the default context costs ~25 ms, so it waits for the first HTTPS
        # connection.
        self._ssl = ssl_context(self.options) if self.options.custom_tls else None
        self._pools: dict[Address, Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the pools belong to
        self._silences = SilenceWatch(self.call_later)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl_context(self.options)
        return self._ssl

    def send(self, request: Request, sink: Sink) -> Transfer:
        options = self.options
        try:
            loop = asyncio.get_event_loop()
            if loop is not self._loop:
                self._move_to(loop)
            origin, target = address_and_target(request.url)
            head = request_head(request, origin, target)
        except (ValueError, RuntimeError) as exc:  # a bad header; no loop
            refused = Exchange(request, sink, None, None, None, self._silences)
            refused.fail(TransportError(f"request not sent: {exc}", method=request.method,
                                        url=request.url))
            return refused
        exchange = Exchange(request, sink, self.call_later,
                            request.timeout or options.request_timeout,
                            request.idle_timeout or options.idle_timeout, self._silences)
        exchange.head = head
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = Pool(
                origin, options.max_connections,
                _Connector(loop, origin, options.connect_timeout, self._tls))
        pool.assign(exchange, fresh=isinstance(request.body, BodySource))
        return exchange

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """The caller runs on another loop now: drop the connections of the last one."""
        if self._loop is not None:
            self._drop_pools()
            self._silences.close()
            self._silences = SilenceWatch(self.call_later)
        self._loop = loop

    def _drop_pools(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            for conn in pool.close():
                if conn.open:
                    try:
                        conn.link.close()
                    except RuntimeError:  # its loop is closed: so are its connections' ways out
                        pass

    def close(self) -> None:
        """Close the idle connections now (a busy one once its exchange is over)."""
        self._drop_pools()
        self._silences.close()

    def __repr__(self) -> str:
        return f"<HttptoolsBackend pools={len(self._pools)}>"

