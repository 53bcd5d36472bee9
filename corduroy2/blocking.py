"""Blocking front door: the same API, returning values and raising. For scripts and the REPL.

No event loop and no framework: stdlib ``http.client`` with a small keep-alive pool. Thread
safe: each call takes a connection from the pool for its duration.
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

from . import api
from .backend import (
    Backend, Cancel, Collector, Outcome, Reply, Sink, Start, StopTransfer, Transfer, TransportOptions,
    ssl_context, tls_meaning,
)
from .errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from .protocol.requests import Request, check_headers
from .protocol.responses import Headers
from .api.views import MakeSink

__all__ = ["Couch", "Database", "relax", "BlockingBackend"]

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


class RowReader:
    """``for row in db.iter_view(...)`` in blocking mode.

    A worker thread reads the response and parses it; it blocks (and so stops reading the
    socket) while ``high_water`` rows wait for the reader. ``close()``, or leaving a ``with``
    block, aborts the request. ``fields`` holds the top-level members once the body has ended.
    """

    def __init__(self, backend: Backend, request: Request,
                 wrap: Callable[[Any], Any], high_water: int,
                 make_sink: MakeSink = api.calls.RowSink) -> None:
        if high_water < 1:
            raise ValueError("high_water must be at least 1")
        self._make_sink = make_sink
        self._backend, self._request, self._wrap, self._high = backend, request, wrap, high_water
        self._rows: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._ended = False
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.fields: dict[str, Any] = {}

    # consumer side, on the worker thread
    def header(self, fields: dict[str, Any]) -> None:
        return None

    def rows(self, rows: list[Any]) -> None:
        wrapped = list(map(self._wrap, rows))
        with self._cond:
            while len(self._rows) >= self._high and not self._closed:
                self._cond.wait()
            if self._closed:
                raise StopTransfer()
            self._rows.extend(wrapped)
            self._cond.notify_all()

    def end(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def _finished(self, value: Any, error: BaseException | None, *_: Any) -> None:
        with self._cond:
            self._ended = True
            if not isinstance(error, StopTransfer):
                self._error = error
            self._cond.notify_all()

    def _work(self) -> None:
        sink = self._make_sink(self._request, self, self._finished)
        self._backend.send(self._request, sink)

    # reader side
    def __iter__(self) -> RowReader:
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, daemon=True,
                                            name="corduroy2-rows")
            self._thread.start()
        with self._cond:
            while not self._rows and not self._ended:
                self._cond.wait()
            if self._rows:
                row = self._rows.popleft()
                self._cond.notify_all()
                return row
            if self._error is not None and not self._closed:
                raise self._error
            raise StopIteration

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._ended = True
            self._rows.clear()
            self._cond.notify_all()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadedChangesFeed(api.changes.ChangesFeed):
    """corduroy's callback feed in blocking mode: it reads on a daemon thread, and ``latency``
    batches are flushed by a timer thread, so ``callback(seq, changes)`` runs on those threads.
    ``stop()`` takes effect when the next bytes arrive: ask for a ``heartbeat`` to bound that."""

    def start(self) -> ThreadedChangesFeed:
        self._lock = threading.RLock()
        self.listening = True
        thread = threading.Thread(target=self._read, daemon=True, name="corduroy2-changes")
        thread.start()
        return self

    def _read(self) -> None:
        sink = api.changes.ChangesSink(self._request, self, self._finished, self._feed,
                                       beat=self._beat)
        self.db.couch._sender.send(self._request, sink)

    def _beat(self) -> None:
        if self._stopped:
            raise StopTransfer()

    def rows(self, changes: list[dict[str, Any]]) -> None:
        self._beat()
        if self._latency <= 0:  # no timer thread: this reader is the feed's only thread
            super().rows(changes)
            return
        with self._lock:
            super().rows(changes)

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
            super()._finished(value, None if isinstance(error, StopTransfer) else error, *rest)


class BlockingFollower(api.follower.ChangesFollower):
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


class Couch(api.Couch):
    """A CouchDB server whose methods block and return values (or raise)."""

    backend_name = "blocking"

    def _make_backend(self, options: TransportOptions) -> Backend:
        return BlockingBackend(options)

    def _feed(self, db: api.Database, request: Request, feed: str,
              callback: Callable[[Any, list[dict[str, Any]]], Any],
              latency: float, max_batch: int, since: Any,
              on_error: Callable[[BaseException], Any] | None) -> Any:
        return ThreadedChangesFeed(db, request, feed, callback, latency, max_batch, since,
                                   on_error).start()

    def _follower(self, db: api.Database, handler: Callable[[dict[str, Any]], Any],
                  **kwargs: Any) -> Any:
        return BlockingFollower(db, handler, **kwargs)

    def _iterate(self, request: Request, wrap: Callable[[Any], Any], high_water: int,
                 make_sink: MakeSink = api.calls.RowSink) -> Any:
        return RowReader(self._sender, request, wrap, high_water, make_sink)


class Database(api.Database):
    couch_class = Couch


Couch.database_class = Database


def relax(func: Callable[..., Generator[Any, Any, T]]) -> Callable[..., T]:
    """Run a ``@relax`` generator synchronously, so code written for the async front doors
    (``doc = yield db.get(x)``) also runs in a script. Errors raise at the ``yield``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        gen: Any = func(*args, **kwargs)
        if not isinstance(gen, Generator):
            return gen  # type: ignore[no-any-return]  # a plain function: its value as is
        try:
            value = next(gen)
            while True:
                value = gen.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    return wrapper
