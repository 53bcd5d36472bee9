"""The blocking transport: stdlib ``http.client`` with a small keep-alive pool, no event loop.

:meth:`BlockingBackend.send` performs the whole exchange before it returns, in four steps:

1. take a connection: an idle one from the pool, else a new one
   (:meth:`~BlockingBackend._checkout`);
2. write the request (:func:`_write`);
3. read the response head (:func:`_read_head`);
4. read the body into the sink (:class:`_Reading`): a streamed reply piece by piece as it
   arrives (:func:`_read_piece`), any other whole (:func:`_read_whole`), in one ``on_data``.
   A sink that pauses the transfer between two pieces makes ``send`` return; the transfer's
   ``resume()`` reads on, in the thread that calls it.

Each step's native exceptions (socket, ssl, http.client) become corduroy2's transport errors in
one place, :func:`_mapped`, told which phase they come from (httpcore's ``map_exceptions``). A
connection that failed is closed, never put back. One failure is sent again, once, on a fresh
connection: a reused connection that the server had closed before reading the request (its
keep-alive timeout raced our request).

Thread safe: a request holds its connection for its duration, and the pool takes no lock.
Under gevent's monkey-patching the sockets and sleeps are gevent's, so requests from several
greenlets interleave.

The few fast paths were measured with ``python -m bench get --only blocking --instructions``
(callgrind; a document GET from nginx at c=1: ~500,000 instructions per request in all, 455,000
for raw http.client); each one's comment gives what going without it costs.
"""

from __future__ import annotations

import collections
import functools
import http.client
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..backend import (
    Backend, Cancel, Outcome, PauseTransfer, Sink, Start, StopTransfer, Transfer, TransportOptions,
    ssl_context, tls_meaning,
)
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.bodies import BodySource
from ..protocol.requests import Request, check_headers
from ..protocol.responses import Headers
from ..protocol.urls import Address, address_and_target
from ._repairs import HeadCut, Response, StreamResponse, TimedReader, put_header_lines

__all__ = ["BlockingBackend"]

# What one read of a streamed body asks for. A read returns what the buffer holds (at most one
# HTTP chunk), so this only caps a long unchunked body's pieces.
_READ_SIZE = 256 * 1024


class _FinishedTransfer:
    """The handle of a transfer that failed before its response began (one instance,
    :data:`_FINISHED_TRANSFER`, serves all), and of a ``call_later`` that has already run:
    there is nothing left to cancel, pause or resume."""

    def cancel(self) -> None:
        return None

    def pause(self) -> None:
        return None

    def resume(self) -> None:
        return None


_FINISHED_TRANSFER = _FinishedTransfer()


class BlockingBackend(Backend):
    """Performs each request synchronously inside :meth:`send`.

    Each wait on a socket is bounded by ``idle_timeout`` (silence) and by what is left of
    ``request_timeout`` (the whole exchange, checked again between pieces), the connect by
    ``connect_timeout`` and both of those: by the kernel's socket timeouts on a plain
    connection, else by Python's (see :class:`_Connection`). Time spent in the sink is not
    silence: the socket is not being waited on then.
    """

    # No event loop to await an async iterator's pieces on.
    async_bodies = False

    def __init__(self, options: TransportOptions | None = None) -> None:
        super().__init__(options)
        # Idle keep-alive connections per server. No lock: a deque's append and pop are atomic
        # (a lock taken twice per request made 32 threads queue on it).
        self._idle: dict[Address, collections.deque[_Connection]] = {}
        # Custom TLS settings are checked now (bad files fail when the Couch is made); the
        # default context costs ~25 ms, so it waits for the first HTTPS connection.
        self._ssl = ssl_context(self.options) if self.options.custom_tls else None

    def send(self, request: Request, sink: Sink) -> Transfer:
        """Perform ``request`` in this thread. The sink has had the response, or the error,
        when this returns, unless it paused the transfer while reading a streamed body: the
        returned transfer's ``resume()`` then reads on (:class:`_Reading`). A sink that raises
        :class:`StopTransfer` ends the transfer: the connection is dropped and the sink hears
        nothing more. Whatever else a sink raises propagates once the connection is dropped,
        except a CouchError, which goes to its ``on_error`` as the transport's own do."""
        options = self.options
        budget = _Budget(request.timeout or options.request_timeout,
                         request.idle_timeout or options.idle_timeout, options.connect_timeout)
        try:
            origin, target, lines = _prepare(request)
            conn, response = self._ask(request, origin, target, lines, budget)
        except CouchError as exc:
            sink.on_error(exc)
            return _FINISHED_TRANSFER
        reading = _Reading(self, origin, request, conn, response, budget, sink)
        reading.read()
        return reading

    def _ask(self, request: Request, origin: Address, target: str, lines: bytes,
             budget: _Budget) -> tuple[_Connection, http.client.HTTPResponse]:
        """Send ``request`` and read the response head, on an idle connection if there is one.
        A failed connection is closed."""
        if isinstance(request.body, BodySource):
            # A fresh connection: a stale reused one would be found out only once the body
            # had been read, and a streamed body cannot be sent again.
            conn, reused = self._connect(request, origin, budget), False
        else:
            conn, reused = self._checkout(request, origin, budget)
        while True:
            try:
                _write(conn, reused, request, target, lines, budget)
                return conn, _read_head(conn, reused, request, budget)
            except _Stale:
                # The server had closed the idle connection before it read the request: send
                # it again, once, on a fresh connection (which cannot be stale).
                conn.close()
                conn, reused = self._connect(request, origin, budget), False
            except BaseException:
                conn.close()
                raise

    def _checkout(self, request: Request, origin: Address,
                  budget: _Budget) -> tuple[_Connection, bool]:
        """An idle connection to ``origin`` (reused: True), else a new one (False)."""
        idle = self._idle.get(origin)
        if idle:
            try:
                return idle.pop(), True
            except IndexError:  # another thread took the last one since
                pass
        return self._connect(request, origin, budget), False

    def _connect(self, request: Request, origin: Address, budget: _Budget) -> _Connection:
        try:
            timeout = budget.connect_wait()
            conn: http.client.HTTPConnection
            if origin.scheme == "https":
                if self._ssl is None:
                    self._ssl = ssl_context(self.options)
                conn = http.client.HTTPSConnection(origin.host, origin.port, timeout=timeout,
                                                   context=self._ssl)
            else:
                conn = http.client.HTTPConnection(origin.host, origin.port, timeout=timeout)
            try:
                conn.connect()
                assert conn.sock is not None
                # http.client writes a request's head and body in two sends: with Nagle's
                # algorithm the body would wait for the ACK of the head, which the server may
                # delay (by 40 ms on Linux).
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return _Connection(conn)
            except BaseException:
                conn.close()
                raise
        except _NATIVE as exc:
            raise _mapped(_CONNECTING, exc, request, budget, netloc=origin.netloc) from exc

    def _checkin(self, origin: Address, conn: _Connection,
                 response: http.client.HTTPResponse) -> None:
        """Keep ``conn`` for the next request to ``origin``, unless the response ended it
        or enough connections are idle already."""
        if response.will_close:  # Connection: close, or an HTTP/1.0 reply
            conn.close()
            return
        idle = self._idle.get(origin)
        if idle is None:
            idle = self._idle.setdefault(origin, collections.deque())
        # Threads checking in at once may keep a few more than the limit for a while: the
        # limit bounds idle sockets, it is not a count that must be exact.
        if len(idle) < self.options.max_connections:
            idle.append(conn)
        else:
            conn.close()

    def run(self, start: Start) -> Any:
        box: list[Outcome] = []
        start(box.append)
        if not box:
            raise RuntimeError("a blocking operation ended without a result")
        if box[0].error is not None:
            raise box[0].error
        return box[0].value

    def when_done(self, value: Any, done: Callable[[Outcome], None]) -> bool:
        # Nothing is pending in blocking mode: a handler's return value is already its result.
        return False

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        time.sleep(delay)
        fn()
        return _FINISHED_TRANSFER

    def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            while conns:
                conns.pop().close()


class _Reading:
    """A response being read into its sink, in the thread that calls :meth:`read` (``send``)
    or :meth:`resume`: the head, then the body, whole in one piece or, streamed, piece by piece
    as it arrives. Between two pieces a sink that paused the transfer gets control back: nothing
    is read until :meth:`resume` (a ``for`` over a feed reads as it asks for changes). Once the
    body has ended the connection goes back to the pool; a transfer cancelled or failed drops
    it."""

    __slots__ = ("_backend", "_origin", "_request", "_conn", "_response", "_budget", "_sink",
                 "_started", "_paused", "_over", "_reading")

    def __init__(self, backend: BlockingBackend, origin: Address, request: Request,
                 conn: _Connection, response: http.client.HTTPResponse, budget: _Budget,
                 sink: Sink) -> None:
        self._backend, self._origin, self._request = backend, origin, request
        self._conn, self._response, self._budget, self._sink = conn, response, budget, sink
        self._started = self._paused = self._over = self._reading = False

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        if self._paused and not self._over:
            self._paused = False
            self.read()

    def cancel(self) -> None:
        """Drop the connection; nothing more is delivered. From another thread too: a read
        under way there is woken, and that thread drops the connection (http.client's
        objects are not to be closed under a read)."""
        if self._over:
            return
        self._over = True
        if self._reading:
            self._conn.wake()
        else:
            self._conn.close()

    def read(self) -> None:
        """Read into the sink until the reply ends or the transfer is paused or cancelled."""
        sink, request, conn, response, budget = (
            self._sink, self._request, self._conn, self._response, self._budget)
        self._reading = True
        try:
            if not self._started:
                self._started = True
                sink.on_start(response.status, Headers(_Fields(response.msg)))
            if not request.stream:  # one piece (b"" once read, should it be resumed)
                if body := _read_whole(request, conn, response, budget):
                    sink.on_data(body)
            else:
                while not (self._paused or self._over):
                    piece = (_read_piece(request, conn, response, budget)
                             or _read_rest(request, conn, response, budget))
                    if not piece:
                        break
                    sink.on_data(piece)
        except PauseTransfer:  # the sink paused inside send(), before it had the handle
            self._paused = True
        except StopTransfer:
            self._over = True  # the rest of the body is unread: the connection cannot go on
        except CouchError as exc:
            if not self._over:  # (a cancelled transfer reports nothing)
                self._over = True
                conn.close()
                sink.on_error(exc)
                return
        except BaseException:
            self._over = True
            conn.close()
            raise
        finally:
            self._reading = False
        if self._over:  # cancelled (here or from another thread), or stopped
            conn.close()
        elif not self._paused:  # the end of the reply
            self._over = True
            self._backend._checkin(self._origin, conn, response)
            sink.on_end()


class _Connection:
    """A connection of the pool: http.client's, and the bound on each wait on its socket.

    A plain socket whose file descriptor blocks has its waits bounded by the kernel
    (``SO_RCVTIMEO``, ``SO_SNDTIMEO``): a wait is one system call. Python's socket timeout polls
    before every send and receive, two more system calls per request, each letting go of the
    GIL: with 32 threads, 6 more GIL hand-overs per request (``strace -f``: 23 futex calls per
    request instead of 17). A TLS socket keeps Python's timeout (its ``ssl`` module, when a
    blocking receive times out, waits again without limit), and so does one whose waits a
    cooperative library makes (under gevent the descriptor stays non-blocking).
    """

    __slots__ = ("http", "_socket", "_kernel", "_bound", "_reader", "plain_response",
                 "stream_response")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.http = conn
        sock = conn.sock
        assert sock is not None
        self._socket = sock  # http.client lets go of it when a reply ends the connection
        # Each response reads the socket through this reader, made by one of these:
        # http.client's getresponse() calls its response_class with the socket.
        self._reader = TimedReader(sock)
        self.plain_response = functools.partial(Response, reader=self._reader)
        self.stream_response = functools.partial(StreamResponse, reader=self._reader)
        self._kernel = False
        if _KERNEL_TIMEOUTS and not isinstance(sock, ssl.SSLSocket):
            sock.settimeout(None)  # blocking, unless a cooperative library keeps it not
            self._kernel = os.get_blocking(sock.fileno())
        self._bound: float | None | object = _UNSET

    def bound_waits(self, seconds: float | None) -> None:
        """Bound each wait on the socket by ``seconds`` from now on (None: no bound)."""
        if seconds == self._bound:
            return  # (setting it is a system call; it is the same request after request)
        sock = self.http.sock
        if sock is None:  # closed by http.client: a reply that ended the connection
            return
        self._bound = seconds
        if self._kernel:
            limit = _timeval(seconds)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        else:
            sock.settimeout(seconds)

    def close(self) -> None:
        self.http.close()
        self._reader.release()

    def wake(self) -> None:
        """End the connection under a read waiting on it in another thread: the read returns
        (closing the socket would leave it waiting)."""
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already
            pass


# Windows takes its socket timeouts in milliseconds, and has no os.get_blocking for sockets.
_KERNEL_TIMEOUTS = sys.platform != "win32"
_UNSET = object()


def _timeval(seconds: float | None) -> bytes:
    """``seconds`` as the kernel's ``struct timeval``: zero means no limit, so a positive
    bound is at least a microsecond."""
    micros = 0 if seconds is None else max(1, round(seconds * 1_000_000))
    return struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)


# -- the steps of one request --------------------------------------------------------------


def _prepare(request: Request) -> tuple[Address, str, bytes]:
    """What sending ``request`` takes, before anything is sent: its server, its target (path
    and query) and its header lines (for :func:`~._repairs.put_header_lines`). TransportError
    if a header cannot be sent: the message names it, never its value (it may be a
    credential)."""
    origin, target = address_and_target(request.url)
    try:
        lines = _header_lines(origin.netloc, request.headers)
    except ValueError as exc:
        raise TransportError(f"request not sent: {exc}", **_where(request)) from exc
    return origin, target, lines


@functools.lru_cache(maxsize=32)
def _header_lines(netloc: str, fields: tuple[tuple[str, str], ...]) -> bytes:
    """A request's header lines: the two that ``putrequest()`` would add (Host and
    Accept-Encoding: identity), then ``fields``. Checked and encoded once per server and
    header set: a Couch sends the same few again and again (checking and encoding them on
    every request: +15,500 instructions per request; letting ``putrequest()`` add its two,
    which it checks and encodes each time: +23,600, ``bench get --only blocking
    --instructions``, 4.0 % → 8.5 % of a GET over raw http.client)."""
    check_headers(fields)
    try:
        host = netloc.encode("ascii")
    except UnicodeEncodeError:  # as putrequest() does
        host = netloc.encode("idna")
    own = (f"{name}: {value}".encode("latin-1") for name, value in fields)
    return b"\r\n".join((b"Host: " + host, b"Accept-Encoding: identity", *own))


def _write(conn: _Connection, reused: bool, request: Request, target: str,
           lines: bytes, budget: _Budget) -> None:
    try:
        budget.apply(conn)
        # What conn.request() sends: Host and Accept-Encoding: identity (in our lines), a
        # Content-Length when there is a body; then our headers as they are, repeats included
        # (request() takes a dict).
        http_conn = conn.http
        http_conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
        body = request.body
        if isinstance(body, BodySource):
            # Sent piece by piece as http.client iterates it; chunked when its length is not
            # known. A failing source raises its TransportError out of here.
            if body.length is None:
                http_conn.putheader("Transfer-Encoding", "chunked")
            else:
                http_conn.putheader("Content-Length", str(body.length))
            put_header_lines(http_conn, lines)
            http_conn.endheaders(iter(body), encode_chunked=body.length is None)
            return
        if body is not None:
            http_conn.putheader("Content-Length", str(len(body)))
        put_header_lines(http_conn, lines)
        http_conn.endheaders(body)
    except _NATIVE as exc:
        raise _mapped(_SENDING, exc, request, budget, reused) from exc


def _read_head(conn: _Connection, reused: bool, request: Request,
               budget: _Budget) -> http.client.HTTPResponse:
    try:
        if budget.deadline is not None:  # else the socket's timeout stays as it is
            budget.apply(conn)
        # (Any callable will do: getresponse() calls it with the socket.)
        conn.http.response_class = (
            conn.stream_response if request.stream else conn.plain_response)  # type: ignore[assignment]
        return conn.http.getresponse()
    except _NATIVE as exc:
        raise _mapped(_WAITING, exc, request, budget, reused) from exc


def _read_whole(request: Request, conn: _Connection,
                response: http.client.HTTPResponse, budget: _Budget) -> bytes:
    """The body of a reply that is not streamed, in one piece."""
    if budget.deadline is not None:
        # Piece by piece, the deadline checked before each: a slow but steady body cannot
        # outlast it.
        pieces = []
        while piece := _read_piece(request, conn, response, budget):
            pieces.append(piece)
        pieces.append(_read_rest(request, conn, response, budget))
        return b"".join(pieces)
    try:
        # In one call, each wait bounded by idle_timeout all the same; a body shorter than
        # its framing promised raises IncompleteRead.
        return response.read()
    except _NATIVE as exc:
        raise _mapped(_READING, exc, request, budget) from exc


def _read_piece(request: Request, conn: _Connection,
                response: http.client.HTTPResponse, budget: _Budget) -> bytes:
    """What has arrived of the body, waiting for some if nothing has; b"" at its end."""
    try:
        if budget.deadline is not None:
            budget.apply(conn)
        return response.read1(_READ_SIZE)
    except _NATIVE as exc:
        raise _mapped(_READING, exc, request, budget) from exc


def _read_rest(request: Request, conn: _Connection,
               response: http.client.HTTPResponse, budget: _Budget) -> bytes:
    """The rest of the body, to its end: ``read1()`` can report the end without finishing
    the response, ``read()`` finishes it, and only then may the connection carry another
    request."""
    try:
        if budget.deadline is not None:
            budget.apply(conn)
        rest = response.read()
        if response.length:  # Content-Length promised more than arrived (read1 just stops)
            raise http.client.IncompleteRead(rest, response.length)
        return rest
    except _NATIVE as exc:
        raise _mapped(_READING, exc, request, budget) from exc


class _Fields:
    """A response's header fields, taken from http.client's message when first iterated:
    :class:`Headers` reads them on first use, and most responses' headers are never read
    (``getheaders()`` on every response, which runs the email package's header policy over
    each field: +21,200 instructions per request)."""

    __slots__ = ("_message",)

    def __init__(self, message: http.client.HTTPMessage) -> None:
        self._message = message

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._message.items())


# -- native exceptions to corduroy2's -----------------------------------------------------

_CONNECTING = "connecting"
_SENDING = "sending the request"
_WAITING = "waiting for the response"
_READING = "reading the response"

# A wait that outlasted its bound: Python's socket timeout, or the kernel's (a send that
# SO_SNDTIMEO ended: EAGAIN on a blocking socket; a receive: see _repairs.TimedReader).
_TIMED_OUT = (TimeoutError, BlockingIOError)
# What the socket, ssl and http.client raise when the network or the server fails.
_NATIVE = (OSError, http.client.HTTPException)
# Errors that mean "the keep-alive connection was closed by the server before it read our
# request": on a reused connection, safe to send again once on a fresh one.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _Stale(Exception):
    """A reused connection turned out closed before the request was read (see :data:`_STALE`):
    :meth:`BlockingBackend._ask` sends the request again on a fresh one."""


def _mapped(phase: str, exc: OSError | http.client.HTTPException, request: Request,
            budget: _Budget, reused: bool = False, netloc: str = "") -> Exception:
    """What a native exception (socket, ssl, http.client) means in ``phase`` of the exchange,
    as corduroy2's transport error: the one map, as httpcore's ``map_exceptions``. ``reused``:
    the connection had served a request before; ``netloc``: the server being connected to."""
    where = _where(request)
    if isinstance(exc, _TIMED_OUT):
        doing = f"connecting to {netloc}" if phase is _CONNECTING else phase
        return Timeout(budget.expired(doing), **where)
    if phase is _CONNECTING:
        if isinstance(exc, ssl.SSLError):
            return ConnectError(_tls_problem(exc), **where)
        return ConnectError(f"cannot connect to {netloc}: {exc}", **where)
    if phase is _READING:
        return ResponseCut(f"response body ended early: {exc!r}", **where)
    if isinstance(exc, HeadCut):  # the server has answered: never sent again
        return ResponseCut(f"response cut: {exc}", **where)
    # Sending the request or waiting for the response: no response has begun.
    if isinstance(exc, _STALE):
        if reused:
            return _Stale()
        return ResponseCut(f"connection closed before a response: {exc}", **where)
    if isinstance(exc, ssl.SSLError):
        if reused:
            return ResponseCut(f"TLS connection failed before a response: {exc}", **where)
        # A fresh TLS 1.3 connection that the server refuses after the handshake (no or a
        # rejected client certificate): the alert arrives with the first read.
        return ConnectError(_tls_problem(exc), **where)
    return TransportError(f"invalid or failed HTTP exchange: {exc!r}", **where)


def _where(request: Request) -> dict[str, str]:
    """The request an error is about (built only when there is an error)."""
    return {"method": request.method, "url": request.url}


def _tls_problem(exc: ssl.SSLError) -> str:
    detail = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else str(exc)
    return f"{tls_meaning(detail)}: {detail}"


# -- time limits ---------------------------------------------------------------------------


class _Budget:
    """The time limits of one exchange: a deadline for the whole of it, a bound on each
    silence, and one on the connect. :meth:`apply` sets the socket timeout for the next wait;
    after a socket timeout, :meth:`expired` says which limit it was."""

    __slots__ = ("deadline", "_total", "_idle", "_connect", "_last")

    def __init__(self, total: float | None, idle: float | None,
                 connect: float | None) -> None:
        self._total, self._idle, self._connect = total, idle, connect
        self.deadline = None if total is None else time.monotonic() + total
        self._last = "idle"

    def connect_wait(self) -> float | None:
        """How long the connect may last (None: forever)."""
        return self._wait(self._connect)

    def apply(self, conn: _Connection) -> None:
        """Bound the next wait on ``conn``'s socket. TimeoutError if the deadline has passed.
        Without a deadline every wait has the same bound (``idle_timeout``): the socket keeps
        it from the request's first wait to its last."""
        if self.deadline is None:
            timeout = self._idle
            self._last = "idle"
        else:
            timeout = self._wait(None)
        conn.bound_waits(timeout)

    def _wait(self, connect: float | None) -> float | None:
        """How long the next wait may last (None: forever); remembers which limit binds."""
        candidates: list[tuple[float, str]] = []
        if connect is not None:
            candidates.append((connect, "connect"))
        if self._idle is not None:
            candidates.append((self._idle, "idle"))
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self._last = "request"
                raise TimeoutError("request deadline passed")
            candidates.append((remaining, "request"))
        if not candidates:
            return None
        seconds, self._last = min(candidates)
        return seconds

    def expired(self, doing: str) -> str:
        """What a socket timeout while ``doing`` means: which limit it hit."""
        if self._last == "idle" and self._idle is not None:
            return f"no data for {self._idle:g} s while {doing} (idle_timeout)"
        if self._last == "request" and self._total is not None:
            return f"request timed out after {self._total:g} s while {doing} (request_timeout)"
        if self._last == "connect" and self._connect is not None:
            return f"timed out after {self._connect:g} s {doing} (connect_timeout)"
        return f"timed out {doing}"
