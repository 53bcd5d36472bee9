"""Blocking front door: the same API, returning values and raising. For scripts and the REPL.

No event loop and no framework: stdlib ``http.client`` with a small keep-alive pool. Thread
safe: each call takes a connection from the pool for its duration.
"""

from __future__ import annotations

import collections
import functools
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from . import api
from .backend import Backend, Cancel, Outcome, Sink, Start, StopTransfer, Transfer, TransportOptions
from .errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from .protocol.requests import Request
from .protocol.responses import Headers

__all__ = ["Couch", "Database", "relax", "BlockingBackend"]

T = TypeVar("T")

# Errors that mean "the idle keep-alive connection was closed by the server before it read our
# request": safe to send again once on a fresh connection.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_READ_SIZE = 256 * 1024


class _Done:
    """The handle of a call that has already finished when ``send`` returns. There is nothing
    left to cancel, and no need to pause: the sink ran inline with the reads, so a slow sink
    already slowed them down."""

    def cancel(self) -> None:
        return None

    def pause(self) -> None:
        return None

    def resume(self) -> None:
        return None


class BlockingBackend(Backend):
    """Performs each request synchronously inside :meth:`send`."""

    def __init__(self, options: TransportOptions | None = None) -> None:
        super().__init__(options)
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context(cafile=self.options.ca_file)
        if not self.options.verify_tls:
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE

    def _connect(self, key: tuple[str, str, int]) -> http.client.HTTPConnection:
        scheme, host, port = key
        timeout = self.options.connect_timeout
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.connect()
        # After connecting, reads wait at most request_timeout for each piece of the reply.
        assert conn.sock is not None
        conn.sock.settimeout(self.options.request_timeout)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _checkout(self, key: tuple[str, str, int]) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        return self._connect(key), False

    def _checkin(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.options.max_connections:
                idle.append(conn)
                return
        conn.close()

    def send(self, request: Request, sink: Sink) -> Transfer:
        try:
            self._exchange(request, sink)
        except CouchError as exc:
            sink.on_error(exc)
        return _Done()

    def _exchange(self, request: Request, sink: Sink) -> None:
        parts = urlsplit(request.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname or "", port)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        where = {"method": request.method, "url": request.url}
        for attempt in (1, 2):
            try:
                conn, reused = self._checkout(key)
            except (TimeoutError, socket.timeout) as exc:
                raise Timeout(f"timed out connecting to {parts.netloc}", **where) from exc
            except OSError as exc:
                raise ConnectError(f"cannot connect to {parts.netloc}: {exc}", **where) from exc
            try:
                conn.request(request.method, target, request.body, dict(request.headers))
                response = conn.getresponse()
                break
            except _STALE as exc:
                conn.close()
                if reused and attempt == 1:
                    continue
                raise ResponseCut(f"connection closed before a response: {exc}", **where) from exc
            except (TimeoutError, socket.timeout) as exc:
                conn.close()
                raise Timeout("timed out waiting for the response", **where) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise TransportError(f"invalid or failed HTTP exchange: {exc!r}", **where) from exc
        try:
            sink.on_start(response.status, Headers(response.getheaders()))
            if request.stream:
                while chunk := response.read1(_READ_SIZE):
                    sink.on_data(chunk)
                # read1() can report the end without finishing the response; read() does, and
                # only then may the connection carry another request.
                if rest := response.read():
                    sink.on_data(rest)
            else:
                body = response.read()
                if body:
                    sink.on_data(body)
            if response.length:  # Content-Length promised more than arrived
                raise http.client.IncompleteRead(b"", response.length)
        except StopTransfer:
            conn.close()  # the rest of the body is unwanted: the connection cannot be reused
            return
        except (TimeoutError, socket.timeout) as exc:
            conn.close()
            raise Timeout("timed out reading the response", **where) from exc
        except (http.client.IncompleteRead, OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ResponseCut(f"response body ended early: {exc!r}", **where) from exc
        except BaseException:
            conn.close()  # the sink failed: the rest of the body is unread, so drop the socket
            raise
        if response.will_close:
            conn.close()
        else:
            self._checkin(key, conn)
        sink.on_end()

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
        return _Done()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class RowReader:
    """``for row in db.iter_view(...)`` in blocking mode.

    A worker thread reads the response and parses it; it blocks (and so stops reading the
    socket) while ``high_water`` rows wait for the reader. ``close()``, or leaving a ``with``
    block, aborts the request. ``fields`` holds the top-level members once the body has ended.
    """

    def __init__(self, backend: BlockingBackend, request: Request,
                 wrap: Callable[[Any], Any], high_water: int) -> None:
        if high_water < 1:
            raise ValueError("high_water must be at least 1")
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
        sink = api.calls.RowSink(self._request, self, self._finished)
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


class Couch(api.Couch):
    """A CouchDB server whose methods block and return values (or raise)."""

    backend_name = "blocking"

    def _make_backend(self, options: TransportOptions) -> Backend:
        return BlockingBackend(options)

    def _iterate(self, request: Request, wrap: Callable[[Any], Any], high_water: int) -> Any:
        assert isinstance(self._backend, BlockingBackend)
        return RowReader(self._backend, request, wrap, high_water)


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
