"""aiohttp as a transport of the Tornado front door: ``Couch(url, client="aiohttp")``.

Tornado's Futures are asyncio Futures (Tornado >= 5), so aiohttp runs on the loop the
application's Tornado code runs on, and a call's result is the same Future the other Tornado
clients give (:class:`~corduroy2.tornado_io.backend.LoopBackend`). aiohttp's public API is
used (but for one switch, ``_repairs.without_retries``): one ``ClientSession`` per ``Couch``
and loop, over a ``TCPConnector`` limited to the Couch's ``max_connections``; a request is one
task that awaits ``session.request`` and reads ``response.content``. This module is imported
only when ``client="aiohttp"`` is asked for.

Why a second keep-alive client next to curl: for many small requests it is the fastest
Python HTTP client on asyncio (issue 19: GET one document, aiohttp 1.0x, Tornado's curl client
0.6x, its simple client 0.4x), and a Tornado application could otherwise get faster GETs by
running a peer client on the same loop.

What the session is told, and why:

* no cookie jar (``DummyCookieJar``): sessions and their cookies are the pipeline's business;
* no ``Accept-Encoding`` (and no decompression), like the other backends: a compressing
  server holds a live feed back until its gzip buffer fills;
* no retries of its own: aiohttp would send an idempotent request again after a new
  connection closed unanswered too; the transport does it after a kept-alive one only
  (:meth:`_Exchange._may_send_again`), as curl, Twisted and ``http.client`` do;
* no redirects followed; URLs sent exactly as built (``yarl.URL(url, encoded=True)``), since
  aiohttp would otherwise re-quote an id's ``%2F``;
* timeouts: ``connect_timeout`` as aiohttp's ``sock_connect`` (the TCP connect and the TLS
  handshake), ``request_timeout`` as ``total``. ``idle_timeout`` is counted by the backend's
  :class:`~corduroy2.backend.SilenceWatch` as on the other backends (aiohttp's ``sock_read``
  would go on counting while the consumer pauses the transfer, and arms a loop timer per
  read).

Back-pressure: a paused transfer stops reading ``response.content``; aiohttp's stream reader
then stops reading the socket once about two read buffers (128 KiB) wait in it, so a slow
consumer bounds memory. Uploads (a :class:`~corduroy2.protocol.bodies.BodySource`) are an
async generator that aiohttp reads as its writer drains, so a piece is taken only when the
socket has room.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import aiohttp
from yarl import URL

from ..backend import SilenceWatch, Sink, StopTransfer, TransportOptions, ssl_context, tls_meaning
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.bodies import BodySource
from ..protocol.requests import Request, check_headers
from ..protocol.responses import Headers
from ._repairs import without_retries
from .backend import LoopBackend

__all__ = ["AiohttpBackend"]

# Not sent unless a request sets them: no compression (see the module's docstring), and
# corduroy2's own User-Agent comes with every request.
_SKIP_AUTO_HEADERS = ("Accept-Encoding", "User-Agent")


#: What aiohttp (and RFC 9110) count as idempotent: sent again after a kept-alive connection
#: closed without an answer.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

#: The exchange whose task is running (each runs in a task of its own, with its own context).
_running: ContextVar[_Exchange | None] = ContextVar("corduroy2_aiohttp_exchange", default=None)


def _new_socket(addr_info: Any) -> socket.socket:
    """The connector's ``socket_factory``, called for each new connection only: it tells the
    exchange it connects for that its connection is a new one, at no cost to requests on
    kept-alive connections."""
    exchange = _running.get()
    if exchange is not None:
        exchange.new_connection = True
    family, type_, proto, _, _ = addr_info
    return socket.socket(family=family, type=type_, proto=proto)


class _Exchange:
    """One request: the task that runs it, its delivery to the sink, and its handle for the
    caller (cancel, pause, resume).

    A plain request's reply is delivered whole once its body has been read: ``on_start``,
    one ``on_data`` if the body is not empty, ``on_end``. A streamed one is delivered as it
    comes, one ``on_data`` per read. Cancelling stops delivery at once and cancels the task,
    which closes the connection (aiohttp never reuses one whose reply was not read to its
    end); a request cancelled while it waits for a free connection is never sent.
    """

    __slots__ = ("_request", "_sink", "_silences", "idle_timeout", "heard_at", "cancelled",
                 "_paused", "_waiter", "task", "upload_error", "new_connection")

    def __init__(self, request: Request, sink: Sink, idle: float | None,
                 silences: SilenceWatch) -> None:
        self._request = request
        self._sink = sink
        self._silences = silences
        self.idle_timeout = idle
        self.heard_at = 0.0
        self.cancelled = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None  # while paused
        self.task: asyncio.Task[None] | None = None
        #: Why a streamed request body failed (the source's own error, which aiohttp wraps).
        self.upload_error: CouchError | None = None
        #: Whether the connection of the last attempt was a new one (_new_socket).
        self.new_connection = False
        if idle:
            silences.watch(self)

    async def run(self, session: aiohttp.ClientSession, options: dict[str, Any]) -> None:
        request = self._request
        response: aiohttp.ClientResponse | None = None
        _running.set(self)
        try:
            url = URL(request.url, encoded=True)
            self.new_connection = False
            try:
                response = await session.request(request.method, url, **options)
            except aiohttp.ClientConnectorError:
                raise
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                if not self._may_send_again():
                    raise
                if isinstance(request.body, BodySource):
                    options = {**options, "data": self.pieces(request.body)}
                response = await session.request(request.method, url, **options)
            content = response.content
            if request.stream:
                self.heard_at = time.monotonic()
                self._sink.on_start(response.status, Headers(response.headers.items()))
                while not self.cancelled:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    self.heard_at = time.monotonic()
                    self._sink.on_data(chunk)
                    if self._paused and not self.cancelled:
                        self._waiter = asyncio.get_running_loop().create_future()
                        await self._waiter
                if self.cancelled:
                    return  # the finally drops the connection
            else:
                chunks = []
                while chunk := await content.readany():
                    self.heard_at = time.monotonic()
                    chunks.append(chunk)
                self._sink.on_start(response.status, Headers(response.headers.items()))
                if chunks:
                    self._sink.on_data(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            response.release()
            response = None
        except StopTransfer:
            self._finish()
            return
        except asyncio.CancelledError:
            if not self.cancelled:  # not the caller: the loop is shutting down, or close()
                self._finish()
                self._sink.on_error(TransportError(
                    "request abandoned: its task was cancelled (the loop stopped or the Couch "
                    "was closed)", method=request.method, url=request.url))
            raise
        except Exception as exc:  # aiohttp's, or a sink's: the exchange failed
            if not self.cancelled:
                self._finish()
                self._sink.on_error(self.upload_error or _map_error(exc, request))
            return
        finally:
            if response is not None:
                response.close()  # an unfinished reply: its connection is dropped
        if not self.cancelled:
            # Outside the try: a sink that raises here has had its ending, and asyncio logs
            # the error as the task's.
            self._finish()
            self._sink.on_end()

    def _may_send_again(self) -> bool:
        """After the connection closed without an answer: the request is sent once more if it
        is idempotent, can be sent again, and its connection was a kept-alive one (the server
        may close one while it sits in the pool). Not after a new connection closed so: the
        server took the request and dropped it, may have acted on it, and whether to send it
        again is the pipeline's decision. aiohttp's own retry, which does not tell the two
        apart, is off (``_repairs.without_retries``). (The sending stays inline in ``run``:
        a coroutine of its own in the await chain, resumed at every wake-up, cost 0.7% of a
        GET's instructions at c=32, bench get --instructions.)"""
        request = self._request
        return (not self.new_connection and not self.cancelled
                and request.method in _IDEMPOTENT and request.replayable)

    def _finish(self) -> None:
        """Nothing more is delivered after the one ending the sink is about to get."""
        self.cancelled = True
        if self.idle_timeout:
            self._silences.unwatch(self)

    async def pieces(self, source: BodySource) -> AsyncIterator[bytes]:
        """A streamed request body for aiohttp, which reads it as its writer drains."""
        while True:
            try:
                piece = await source.anext_piece()
            except CouchError as exc:
                self.upload_error = exc
                raise
            if piece is None:
                return
            self.heard_at = time.monotonic()
            yield piece

    # -- from the backend's silence watch ----------------------------------------------------

    def silence_expired(self) -> None:
        request = self._request
        self.fail(Timeout(f"no data for {self.idle_timeout:g} s (idle_timeout)",
                          method=request.method, url=request.url))

    def fail(self, error: CouchError) -> None:
        """Fail from outside the task: the transfer is cancelled first."""
        self.cancel()
        self._sink.on_error(error)

    # -- for the caller (Transfer) -----------------------------------------------------------

    def cancel(self) -> None:
        if self.cancelled:
            return
        self._finish()
        if self.task is not None:
            self.task.cancel()

    def pause(self) -> None:
        if self._paused or self.cancelled:
            return
        self._paused = True
        if self.idle_timeout:
            self._silences.unwatch(self)

    def resume(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self.idle_timeout and not self.cancelled:
            self._silences.watch(self)  # the silence starts now
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AiohttpBackend(LoopBackend):
    """aiohttp's ``ClientSession``, one per ``Couch`` and event loop (made on the first
    request, on the loop current then, and again if the caller moves to another loop)."""

    client = "aiohttp"

    def __init__(self, options: TransportOptions | None = None) -> None:
        super().__init__(options)
        opts = self.options
        # Custom TLS settings are checked now, so that bad certificate files fail when the
        # Couch is made; else aiohttp's default context, which verifies the same way.
        self._ssl: ssl.SSLContext | bool = ssl_context(opts) if opts.custom_tls else True
        self._timeout = aiohttp.ClientTimeout(total=opts.request_timeout,
                                              sock_connect=opts.connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop _session is bound to
        self._silences = SilenceWatch(self.call_later)  # its timer runs on that loop too
        self._checked: tuple[tuple[str, str], ...] | None = None  # the headers checked last

    def _session_on(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        """This Couch's session for ``loop`` (made again when the loop changes)."""
        session = self._session
        if session is None or self._loop is not loop:
            if session is not None:
                _close_now(session)
                self._silences.close()
                self._silences = SilenceWatch(self.call_later)
            # The resolver is getaddrinfo in a thread, as for the other transports (aiohttp
            # would take aiodns if it is installed, and one more thing to close).
            connector = aiohttp.TCPConnector(
                limit=self.options.max_connections, ssl=self._ssl, socket_factory=_new_socket,
                resolver=aiohttp.ThreadedResolver(loop=loop), loop=loop)
            session = self._session = aiohttp.ClientSession(
                connector=connector, loop=loop, timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(loop=loop),
                skip_auto_headers=_SKIP_AUTO_HEADERS, auto_decompress=False)
            without_retries(session)
            self._loop = loop
        return session

    def send(self, request: Request, sink: Sink) -> _Exchange:
        exchange = None
        try:
            loop = asyncio.get_event_loop()
            session = self._session_on(loop)  # first: the silence watch belongs to its loop
            exchange = _Exchange(request, sink, request.idle_timeout or self.options.idle_timeout,
                                 self._silences)
            options = self._options(request, exchange)
            exchange.task = loop.create_task(exchange.run(session, options))
        except (ValueError, RuntimeError) as exc:
            # Refused before sending: a bad header, no loop.
            if exchange is None:
                exchange = _Exchange(request, sink, None, self._silences)
            exchange.fail(TransportError(f"request not sent: {exc}", method=request.method,
                                         url=request.url))
        return exchange

    def _options(self, request: Request, exchange: _Exchange) -> dict[str, Any]:
        """``session.request``'s arguments for ``request``, but its method and URL."""
        headers = request.headers
        if headers != self._checked:
            # ValueError, which does not show the value. Checked once per header set: a handle
            # sends the same one again and again.
            check_headers(headers)
            self._checked = headers
        body: Any = request.body
        if isinstance(body, BodySource):
            if body.length is not None:  # else aiohttp sends it chunked
                headers = (*headers, ("Content-Length", str(body.length)))
            body = exchange.pieces(body)
        options: dict[str, Any] = {"headers": headers, "data": body, "allow_redirects": False}
        if request.timeout:
            options["timeout"] = aiohttp.ClientTimeout(
                total=request.timeout, sock_connect=self.options.connect_timeout)
        return options

    def close(self) -> asyncio.Future[Any] | None:
        """Close the connections now. Returns None, or a Future that is done once the loop
        has seen them closed (awaiting it is optional: asyncio warns about a pending task if
        the loop is thrown away before it has run once more)."""
        closing = None
        if self._session is not None:
            closing = _close_now(self._session)
            self._session = None
        self._silences.close()
        return closing


def _close_now(session: aiohttp.ClientSession) -> asyncio.Future[Any] | None:
    """Close every connection of ``session`` now, requests under way included (they fail with
    a TransportError), whether its loop is running, stopped or closed. Returns what is left
    to wait for, if anything: a Future of the loop's, done once the connections are gone.

    ``ClientSession.close()`` is a coroutine, but what it does first is synchronous: it
    closes the transports and marks the session closed. Only then does it wait, for the
    connections' ``connection_lost`` callbacks, which run on the loop on their own. So the
    coroutine is run by hand to that first wait and left there, the wait handed to the
    caller: ``close()`` does its work at once, like the other Tornado transports', also for a
    session whose loop is gone (the caller moved to a new one)."""
    closing = session.close()
    try:
        waiting = closing.send(None)
    except StopIteration:  # nothing to wait for
        return None
    closing.close()
    if not isinstance(waiting, asyncio.Future):
        return None
    # A Future of our own: the one the coroutine yielded counts as awaited already.
    gone: asyncio.Future[Any] = waiting.get_loop().create_future()

    def closed(_: object) -> None:
        if not gone.done():
            gone.set_result(None)

    waiting.add_done_callback(closed)
    return gone


def _map_error(exc: BaseException, request: Request) -> CouchError:
    """One map from aiohttp's errors to corduroy2's transport errors."""
    where: dict[str, str] = {"method": request.method, "url": request.url}
    err: CouchError
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        detail = (cert_error.verify_message if isinstance(cert_error, ssl.SSLCertVerificationError)
                  else cert_error)
        err = ConnectError(f"{tls_meaning(str(cert_error))}: {detail}", **where)
    elif isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)) or (
            isinstance(exc, aiohttp.ClientOSError) and isinstance(exc.__cause__, ssl.SSLError)):
        err = ConnectError(f"{tls_meaning(str(exc))}: {exc}", **where)
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        err = Timeout(f"cannot connect in time (connect_timeout): {exc}", **where)
    elif isinstance(exc, asyncio.TimeoutError):  # aiohttp's total: the request_timeout
        err = Timeout(f"no complete reply in time (request_timeout): {exc!r}", **where)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        err = ConnectError(f"cannot connect: {exc}", **where)
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        err = ResponseCut(f"connection closed before the response was complete: {exc!r}",
                          **where)
    elif isinstance(exc, socket.gaierror):
        err = ConnectError(f"cannot connect: {exc!r}", **where)
    elif isinstance(exc, OSError):
        # A reset or broken pipe during the exchange: the request may have been sent, so
        # this is not "cannot connect" (that would tell callers it is safe to send again).
        err = ResponseCut(f"connection failed during the exchange: {exc!r}", **where)
    elif isinstance(exc, aiohttp.ClientError):
        err = TransportError(f"HTTP client error: {exc!r}", **where)
    else:
        err = TransportError(f"unexpected transport failure: {exc!r}", **where)
    err.__cause__ = exc
    return err
