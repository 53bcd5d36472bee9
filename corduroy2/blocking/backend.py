"""The blocking transport: stdlib ``http.client`` with a small keep-alive pool, no event loop.

Thread safe: each request takes a connection from the pool for its duration.
"""

from __future__ import annotations

import collections
import functools
import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..backend import (
    Backend, Cancel, Collector, Outcome, Reply, Sink, Start, StopTransfer, Transfer, TransportOptions,
    ssl_context, tls_meaning,
)
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.requests import Request, check_headers
from ..protocol.responses import Headers

__all__ = ["BlockingBackend"]

T = TypeVar("T")

log = logging.getLogger("corduroy2")

# Errors that mean "the idle keep-alive connection was closed by the server before it read our
# request": safe to send again once on a fresh connection.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_READ_SIZE = 256 * 1024


class _StreamResponse(http.client.HTTPResponse):
    """For streamed replies: a 64 KiB read buffer instead of 8 KiB. ``read1`` returns at most
    the rest of one HTTP chunk, and also stops where the buffer ends: with a small buffer a
    busy feed's chunks are split in two every few chunks, each piece costing a parser pass."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()  # nothing has been read from it yet; the socket stays open
        self.fp = sock.makefile("rb", 64 * 1024)  # type: ignore[assignment]  # a BufferedReader


class _Done:
    """The handle of a call that has already finished when ``send`` returns (one instance,
    :data:`_DONE`, serves all). There is nothing left to cancel, and no need to pause: the sink
    ran inline with the reads, so a slow sink already slowed them down."""

    def cancel(self) -> None:
        return None

    def pause(self) -> None:
        return None

    def resume(self) -> None:
        return None


_DONE = _Done()


class BlockingBackend(Backend):
    """Performs each request synchronously inside :meth:`send`.

    Timeouts are socket timeouts, recomputed before every read: each wait on the socket is
    bounded by ``idle_timeout`` (silence) and by what is left of ``request_timeout`` (the whole
    exchange, checked again between pieces); the connect by ``connect_timeout`` and both of
    those. Time spent in the sink is not silence: the socket is not being waited on then.
    """

    def __init__(self, options: TransportOptions | None = None) -> None:
        super().__init__(options)
        # Idle keep-alive connections per server. No lock: a deque's append and pop are atomic
        # (a lock taken twice per request made 32 threads queue on it).
        self._idle: dict[tuple[str, str, int], collections.deque[http.client.HTTPConnection]] = {}
        # Custom TLS settings are checked now (bad files fail when the Couch is made); the
        # default context costs ~25 ms, so it waits for the first HTTPS connection.
        self._ssl = ssl_context(self.options) if self.options.custom_tls else None
        # The last server parsed: (URL up to the path, pool key, netloc). A Couch talks to one
        # server, so this spares a urlsplit per request. One tuple, replaced whole: thread safe.
        self._origin: tuple[str, tuple[str, str, int], str] = ("", ("", "", 0), "")
        # The last request header set, and its lines, checked and encoded once (a putheader()
        # call runs two regexes each time): a Couch sends the same headers again and again.
        # One tuple, replaced whole: thread safe.
        self._last_headers: tuple[tuple[tuple[str, str], ...], bytes] = ((), b"")

    def _connect(self, key: tuple[str, str, int], budget: _Budget) -> http.client.HTTPConnection:
        scheme, host, port = key
        timeout = budget.wait(self.options.connect_timeout)
        conn: http.client.HTTPConnection
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl_context(self.options)
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _checkout(self, key: tuple[str, str, int],
                  budget: _Budget) -> tuple[http.client.HTTPConnection, bool]:
        try:
            return self._idle[key].pop(), True
        except (KeyError, IndexError):  # none kept for this server yet, or none idle now
            return self._connect(key, budget), False

    def _checkin(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle.setdefault(key, collections.deque())
        # Threads checking in at once may keep a few more than the limit for a while: the
        # limit bounds idle sockets, it is not a count that must be exact.
        if len(idle) < self.options.max_connections:
            idle.append(conn)
        else:
            conn.close()

    def _split(self, url: str) -> tuple[tuple[str, str, int], str, str]:
        """The pool key, the request target (path and query) and the netloc of ``url``, whose
        origin is not the last one seen (send() handles that case itself); remembered."""
        # Our URLs are built from a base URL that urlsplit accepted and quoted paths and
        # queries (no fragment, no whitespace), so the target is all that follows the origin.
        slash = url.find("/", url.find("//") + 2)
        origin, target = (url, "") if slash < 0 else (url[:slash], url[slash:])
        parts = urlsplit(origin)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname or "", port)
        self._origin = (origin, key, parts.netloc)
        return key, target, parts.netloc

    def send(self, request: Request, sink: Sink) -> Transfer:
        return self._exchange(request, None, sink)

    def _exchange(self, request: Request, reply: Reply | None, sink: Sink | None = None) -> Transfer:
        """One request: its reply whole to ``reply`` (fetch), or piece by piece to ``sink``
        (send). All in one method: a frame fewer on every request."""
        if reply is not None and request.stream:  # fetched whole all the same
            sink, reply = Collector(reply), None
        status: int | None = None
        headers: Headers | None = None
        try:
            url = request.url
            # Usually the origin of the last request (a Couch talks to one server).
            origin, key, netloc = self._origin
            if url.startswith(origin) and url.startswith("/", len(origin)):
                target = url[len(origin):]
            else:
                key, target, netloc = self._split(url)
            fields = request.headers
            last, lines = self._last_headers
            if fields != last:
                try:
                    lines = _header_lines(fields)
                except ValueError as exc:
                    raise TransportError(f"request not sent: {exc}", **_where(request)) from exc
                self._last_headers = (fields, lines)
            total = request.timeout or self.options.request_timeout
            idle = request.idle_timeout or self.options.idle_timeout
            # No limits (the default): one shared budget, as it has nothing to count.
            budget = _Budget(total, idle) if total or idle else _UNLIMITED
            for attempt in (1, 2):
                try:
                    conn, reused = self._checkout(key, budget)
                except (TimeoutError, socket.timeout) as exc:
                    raise Timeout(budget.expired(f"connecting to {netloc}"),
                                  **_where(request)) from exc
                except ssl.SSLError as exc:
                    raise ConnectError(_tls_problem(exc), **_where(request)) from exc
                except OSError as exc:
                    raise ConnectError(f"cannot connect to {netloc}: {exc}",
                                       **_where(request)) from exc
                try:
                    budget.apply(conn)
                    # What conn.request() sends (Host, Accept-Encoding: identity,
                    # Content-Length), without its checks for headers we never set and a dict
                    # of our header pairs; then our lines, checked and encoded above.
                    conn.putrequest(request.method, target)
                    payload = request.body
                    if payload is not None:
                        conn.putheader("Content-Length", str(len(payload)))
                    if lines:
                        conn._output(lines)  # type: ignore[attr-defined]  # as putheader() does
                    conn.endheaders(payload)
                    if budget.deadline is not None:  # else the socket's timeout stays as it is
                        budget.apply(conn)
                    conn.response_class = (_StreamResponse if request.stream
                                           else http.client.HTTPResponse)
                    response = conn.getresponse()
                    break
                except _STALE as exc:
                    conn.close()
                    if reused and attempt == 1:
                        continue
                    raise ResponseCut(f"connection closed before a response: {exc}",
                                      **_where(request)) from exc
                except (TimeoutError, socket.timeout) as exc:
                    conn.close()
                    raise Timeout(budget.expired("waiting for the response"),
                                  **_where(request)) from exc
                except ssl.SSLError as exc:
                    conn.close()
                    if reused:
                        raise ResponseCut(f"TLS connection failed before a response: {exc}",
                                          **_where(request)) from exc
                    # A fresh TLS 1.3 connection that the server refuses after the handshake (no
                    # or a rejected client certificate): the alert arrives with the first read.
                    raise ConnectError(_tls_problem(exc), **_where(request)) from exc
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    raise TransportError(f"invalid or failed HTTP exchange: {exc!r}",
                                         **_where(request)) from exc
            status = response.status
            # raw_items(): the same pairs as getheaders(), without the email package's
            # per-field policy pass (http.client decodes as latin-1: nothing for it to do).
            headers = Headers(list(response.msg.raw_items()))
            try:
                if sink is not None:
                    sink.on_start(status, headers)
                if request.stream or budget.deadline is not None:
                    body = _read_pieces(request.stream, response, conn, budget, sink)
                else:
                    # In one call; each wait on the socket is bounded all the same.
                    body = response.read()
                if body and sink is not None:
                    sink.on_data(body)
                if response.length:  # Content-Length promised more than arrived
                    raise http.client.IncompleteRead(b"", response.length)
            except StopTransfer:
                # The rest of the body is unwanted: the connection cannot be reused.
                conn.close()
                return _DONE
            except (TimeoutError, socket.timeout) as exc:
                conn.close()
                raise Timeout(budget.expired("reading the response"), **_where(request)) from exc
            except (http.client.IncompleteRead, OSError, http.client.HTTPException) as exc:
                conn.close()
                raise ResponseCut(f"response body ended early: {exc!r}",
                                  **_where(request)) from exc
            except BaseException:
                conn.close()  # the sink failed: the body is unread, so drop the socket
                raise
            if response.will_close:
                conn.close()
            else:
                self._checkin(key, conn)
            if reply is not None:
                reply(status, headers, body, None)
            else:
                assert sink is not None
                sink.on_end()
        except CouchError as exc:
            if reply is not None:
                reply(status, headers, b"", exc)
            else:
                assert sink is not None
                sink.on_error(exc)
        return _DONE

    # fetch(request, reply) is _exchange itself: a frame fewer on every call.
    fetch = _exchange

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
        return _DONE

    def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            while conns:
                conns.pop().close()


class _Budget:
    """The time limits of one exchange: a deadline for the whole of it and a bound on each
    silence. ``apply`` sets the socket timeout for the next wait; after a socket timeout,
    ``expired`` says which limit it was."""

    __slots__ = ("deadline", "_total", "_idle", "_last", "_applied")

    def __init__(self, total: float | None, idle: float | None) -> None:
        self._total, self._idle = total, idle
        self.deadline = None if total is None else time.monotonic() + total
        self._last = "idle"

    def wait(self, limit: float | None = None) -> float | None:
        """How long the next wait on the socket may last (None: forever); remembers which
        limit binds. Raises TimeoutError if the deadline has passed."""
        candidates: list[tuple[float, str]] = []
        if limit is not None:
            candidates.append((limit, "connect"))
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

    def apply(self, conn: http.client.HTTPConnection) -> None:
        sock = conn.sock  # None once http.client has closed a will_close reply
        if self.deadline is None:
            # Without a deadline each wait is bounded by idle_timeout alone. Set it only when
            # the socket has another: settimeout() is a system call, on every request.
            self._last = "idle"
            if sock is not None and sock.gettimeout() != self._idle:
                sock.settimeout(self._idle)
            return
        timeout = self.wait()
        if sock is not None:
            sock.settimeout(timeout)

    def expired(self, doing: str) -> str:
        if self._last == "idle" and self._idle is not None:
            return f"no data for {self._idle:g} s while {doing} (idle_timeout)"
        if self._last == "request" and self._total is not None:
            return f"request timed out after {self._total:g} s while {doing}"
        return f"timed out {doing}"


# The budget of an exchange with no time limits. Shared: it only ever records which limit
# bound last, and with no limits its messages do not depend on that.
_UNLIMITED = _Budget(None, None)


def _header_lines(fields: tuple[tuple[str, str], ...]) -> bytes:
    """The header lines of ``fields`` as one piece, as ``putheader`` writes them (ValueError
    if one cannot be sent: :func:`~corduroy2.protocol.requests.check_headers`)."""
    check_headers(fields)
    return b"\r\n".join(f"{name}: {value}".encode("latin-1") for name, value in fields)


def _where(request: Request) -> dict[str, str]:
    """The request an error is about (built only when there is an error)."""
    return {"method": request.method, "url": request.url}


def _read_pieces(stream: bool, response: http.client.HTTPResponse,
                 conn: http.client.HTTPConnection, budget: _Budget, sink: Sink | None) -> bytes:
    """Read a body piece by piece: a stream goes to ``sink`` as it arrives; a buffered body
    with a deadline is checked against it between pieces. Returns what is left to deliver."""
    body: list[bytes] = []
    while True:
        budget.apply(conn)
        chunk = response.read1(_READ_SIZE)
        if not chunk:
            break
        if stream:
            assert sink is not None
            sink.on_data(chunk)
        else:
            body.append(chunk)
    # read1() can report the end without finishing the response; read() does, and only then
    # may the connection carry another request.
    budget.apply(conn)
    if rest := response.read():
        body.append(rest)
    return b"".join(body)


def _tls_problem(exc: ssl.SSLError) -> str:
    detail = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else str(exc)
    return f"{tls_meaning(detail)}: {detail}"


