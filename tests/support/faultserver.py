"""A controllable HTTP/1.1 server on loopback, for fault-injection tests.

It produces on demand what no real CouchDB will: bodies split at chosen byte
offsets, connections cut mid-body, stalls, throttling replies, slow chunks.
It uses blocking stdlib sockets and one daemon thread per connection, so it
keeps serving while the test's asyncio loop (Tornado and Twisted share it) is
busy or blocked, and while blocking clients run in worker threads.
"""
from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, BinaryIO, Callable, Sequence

__all__ = ["FaultServer", "Handler", "Received", "Reply", "FullBacklog"]

_MAX_LINE = 65536


@dataclass
class Reply:
    """What the server sends for one request, including framing and faults."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Transfer-Encoding: chunked. Without `chunks`, each `writes` piece of
    #: `body` becomes one chunk.
    chunked: bool = False
    #: Explicit chunk payloads, each sent (and flushed) separately; implies
    #: chunked. Empty entries are skipped: a zero-size chunk ends the body.
    chunks: list[bytes] | None = None
    #: Byte offsets at which `body` is split into separately flushed sends.
    writes: list[int] | None = None
    #: Seconds to wait between chunks / writes.
    delay: float = 0.0
    #: Abort the connection after this many payload bytes; the declared
    #: framing still promises the whole body, so the client sees it short.
    cut_after: int | None = None
    #: On a cut (or `drop`), send a TCP RST instead of a FIN.
    reset: bool = False
    #: Wait this long (or until stop) before sending anything.
    stall_before_headers: float | None = None
    #: (n, seconds): send n payload bytes, wait, then go on.
    stall_after_bytes: tuple[int, float] | None = None
    #: Send `Connection: close` and close after the reply.
    close: bool = False
    #: Read the request, then close without replying (a stale keep-alive).
    drop: bool = False

    @classmethod
    def json(cls, obj: Any, status: int = 200, **kw: Any) -> Reply:
        """A reply whose body is `obj` as JSON, with Content-Type set."""
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return cls(status=status, headers=headers, body=json.dumps(obj).encode(), **kw)


@dataclass
class Received:
    """One request as the server parsed it."""

    method: str
    path: str  # without the query string
    query: str  # raw, without the "?"
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes  # de-chunked
    version: str
    connection: int  # 1-based number of the TCP connection it arrived on


Handler = Callable[[Received], Reply]


class _Abort(Exception):
    """End this connection now (a scripted cut or drop, or server stop)."""


class _Progress:
    """Payload bytes sent so far, against the reply's stall and cut marks."""

    def __init__(self, reply: Reply) -> None:
        self.sent = 0
        self.stall = reply.stall_after_bytes
        self.cut = reply.cut_after


class FaultServer:
    """Threaded HTTP/1.1 server on 127.0.0.1 serving scripted replies.

    Starts serving on construction; `stop()` (or leaving the `with` block)
    closes every socket and joins every thread, waking any stalled reply.

    With `tls` (a server-side `ssl.SSLContext`) it speaks HTTPS: each accepted
    connection does its handshake in its own thread, and a failed handshake
    (the client rejected our certificate, or sent none when the context
    requires one) ends that connection quietly; `tls_failures` counts them.
    `url` is then `https://127.0.0.1:PORT`.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._routes: dict[tuple[str, str], list[Reply] | Handler] = {}
        self._turns: dict[tuple[str, str], int] = {}
        self._requests: list[Received] = []
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        #: Unexpected exceptions in connection threads (handler bugs, bad
        #: requests); socket errors are normal in fault tests and not kept.
        self.errors: list[BaseException] = []
        self.connections_accepted = 0
        self.tls_failures = 0
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        # A short accept timeout lets the accept loop notice stop(): closing
        # a listening socket does not portably wake a blocked accept().
        self._listener.settimeout(0.05)
        self.host, self.port = self._listener.getsockname()[:2]
        self.url = f"{'https' if tls else 'http'}://{self.host}:{self.port}"
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"faultserver-{self.port}", daemon=True)
        self._acceptor.start()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, method: str, path: str, reply: Reply | Sequence[Reply]) -> None:
        """Route `method` (or "*" for any) and exact `path` to `reply`.

        A sequence is used in turn, one reply per request; the last repeats.
        """
        replies = [reply] if isinstance(reply, Reply) else list(reply)
        if not replies:
            raise ValueError("need at least one Reply")
        self._set_route(method, path, replies)

    def add_handler(self, method: str, path: str, fn: Handler) -> None:
        """Route to `fn(received) -> Reply`, called in the connection thread."""
        self._set_route(method, path, fn)

    def _set_route(self, method: str, path: str, route: list[Reply] | Handler) -> None:
        key = (method.upper(), path)
        with self._lock:
            self._routes[key] = route
            self._turns[key] = 0

    @property
    def requests(self) -> list[Received]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def received(self, method: str | None = None, path: str | None = None) -> list[Received]:
        """Received requests, filtered by method and/or path."""
        return [r for r in self.requests
                if method in (None, r.method) and path in (None, r.path)]

    @property
    def open_connections(self) -> int:
        """Connections the server holds open now (a client's kept-alive ones, say)."""
        with self._lock:
            return len(self._conns)

    def drop_connections(self) -> None:
        """Close every open connection now (e.g. to stale a client's pool)."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes its thread's recv()/sendall()
            except OSError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        """Close all sockets and join all threads; idempotent."""
        self._stopping.set()
        wake_accept(self._listener)
        self._acceptor.join(timeout)
        self._listener.close()
        # After the acceptor has ended no new connection can be registered.
        # Shutting down wakes threads blocked in recv()/sendall(); the stop
        # event wakes those stalling.
        self.drop_connections()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)  # the listener's timeout must not leak into reads
            # Without Nagle, each separate send really leaves as its own segment.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections_accepted += 1
                cid = self.connections_accepted
                self._conns.add(conn)
                t = threading.Thread(target=self._serve, args=(conn, cid),
                                     name=f"faultserver-{self.port}-conn{cid}", daemon=True)
                self._threads.append(t)
            t.start()

    def _wait(self, seconds: float) -> None:
        """Sleep, but give up at once (ending the connection) on stop()."""
        if self._stopping.wait(seconds):
            raise _Abort

    def _handshake(self, conn: socket.socket) -> socket.socket | None:
        """Wrap `conn` in TLS; None (the connection is over) if the handshake fails."""
        assert self._tls is not None
        try:
            tls = self._tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        except OSError:
            conn.close()
            return None
        with self._lock:  # stop() must reach the wrapped socket now
            self._conns.discard(conn)
            self._conns.add(tls)
        try:
            tls.do_handshake()
            return tls
        except OSError:
            with self._lock:
                self.tls_failures += 1
            _linger_close(tls)
            with self._lock:
                self._conns.discard(tls)
            return None

    def _serve(self, conn: socket.socket, cid: int) -> None:
        if self._tls is not None:
            wrapped = self._handshake(conn)
            if wrapped is None:
                return
            conn = wrapped
        rfile = conn.makefile("rb")
        try:
            while not self._stopping.is_set():
                req = self._read_request(rfile, conn, cid)
                if req is None:
                    return
                with self._lock:
                    self._requests.append(req)
                reply = self._reply_for(req)
                self._send(conn, req, reply)
                if reply.close or not _keep_alive(req):
                    return
        except (OSError, _Abort):
            pass
        except Exception as e:  # noqa: BLE001 - surfaced through .errors
            self.errors.append(e)
        finally:
            with self._lock:
                self._conns.discard(conn)
            rfile.close()
            conn.close()

    def _read_request(self, rfile: BinaryIO, conn: socket.socket, cid: int) -> Received | None:
        """Parse one request; None on a clean EOF between requests."""
        line = rfile.readline(_MAX_LINE)
        while line in (b"\r\n", b"\n"):  # stray CRLFs between requests are allowed
            line = rfile.readline(_MAX_LINE)
        if not line:
            return None
        method, target, version = line.decode("latin-1").split()
        headers: dict[str, str] = {}
        while (h := _line(rfile)) not in (b"\r\n", b"\n"):
            name, _, value = h.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if headers.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while size := int(_line(rfile).split(b";")[0], 16):
                body += _read(rfile, size)
                _line(rfile)
            while _line(rfile) not in (b"\r\n", b"\n"):  # trailers: ignored
                pass
        else:
            body = bytearray(_read(rfile, int(headers.get("content-length", "0"))))
        path, _, query = target.partition("?")
        return Received(method, path, query, headers, bytes(body), version, cid)

    def _reply_for(self, req: Received) -> Reply:
        with self._lock:
            key = next((k for k in ((req.method, req.path), ("*", req.path))
                        if k in self._routes), None)
            if key is None:
                return Reply.json({"error": "not_found", "reason": "no route"}, 404)
            route = self._routes[key]
            if not callable(route):
                turn = self._turns[key]
                self._turns[key] = turn + 1
                return route[min(turn, len(route) - 1)]
        try:  # outside the lock: a handler may be slow or inspect the server
            return route(req)
        except Exception as e:  # noqa: BLE001 - reported as 500 and via .errors
            self.errors.append(e)
            return Reply.json({"error": "handler_failed", "reason": repr(e)}, 500)

    def _send(self, conn: socket.socket, req: Received, r: Reply) -> None:
        try:
            if r.stall_before_headers:
                self._wait(r.stall_before_headers)
            if r.drop:
                raise _Abort
            chunked = r.chunked or r.chunks is not None
            bodiless = r.status in (204, 304) or r.status < 200
            names = {k.lower() for k in r.headers}
            headers = dict(r.headers)
            # Explicit framing headers are left alone, so tests can lie.
            if not bodiless and not names & {"content-length", "transfer-encoding"}:
                if chunked:
                    headers["Transfer-Encoding"] = "chunked"
                else:
                    headers["Content-Length"] = str(len(r.body))
            if r.close and "connection" not in names:
                headers["Connection"] = "close"
            try:
                phrase = HTTPStatus(r.status).phrase
            except ValueError:
                phrase = "Unknown"
            head = f"HTTP/1.1 {r.status} {phrase}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            conn.sendall(head.encode("latin-1"))
            if bodiless or req.method == "HEAD":
                return
            pieces = r.chunks if r.chunks is not None else _split(r.body, r.writes)
            progress = _Progress(r)
            for i, piece in enumerate(pieces):
                if i and r.delay:
                    self._wait(r.delay)
                if chunked and piece:
                    conn.sendall(b"%x\r\n" % len(piece))
                self._payload(conn, piece, progress)
                if chunked and piece:
                    conn.sendall(b"\r\n")
            self._payload(conn, b"", progress)  # a cut at the very end still cuts
            if chunked:
                conn.sendall(b"0\r\n\r\n")
        except _Abort:
            if not self._stopping.is_set():
                _abort(conn, r.reset)
            raise

    def _payload(self, conn: socket.socket, data: bytes, p: _Progress) -> None:
        """Send body bytes, pausing at the stall mark and aborting at the cut."""
        while True:
            if p.stall is not None and p.sent == p.stall[0]:
                self._wait(p.stall[1])
                p.stall = None
            if p.cut is not None and p.sent >= p.cut:
                raise _Abort
            if not data:
                return
            n = len(data)
            for mark in (p.stall[0] if p.stall else None, p.cut):
                if mark is not None and mark > p.sent:
                    n = min(n, mark - p.sent)
            conn.sendall(data[:n])
            p.sent += n
            data = data[n:]


def _line(rfile: BinaryIO) -> bytes:
    line = rfile.readline(_MAX_LINE)
    if not line.endswith(b"\n"):
        raise _Abort  # EOF (or an absurd line) mid-request: the client gave up
    return line


def _read(rfile: BinaryIO, n: int) -> bytes:
    data = rfile.read(n)
    if len(data) < n:
        raise _Abort
    return data


def _split(body: bytes, offsets: list[int] | None) -> list[bytes]:
    bounds = [0, *sorted(o for o in offsets or () if 0 < o < len(body)), len(body)]
    return [body[a:b] for a, b in zip(bounds, bounds[1:])]


def _keep_alive(req: Received) -> bool:
    tokens = {t.strip().lower() for t in req.headers.get("connection", "").split(",")}
    if "close" in tokens:
        return False
    return req.version != "HTTP/1.0" or "keep-alive" in tokens


def wake_accept(listener: socket.socket) -> None:
    """Wake a thread blocked in ``listener.accept()`` now: on Linux, shutting a listening socket
    down makes accept() fail at once (elsewhere the accept timeout does it, a little later)."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _linger_close(conn: socket.socket, timeout: float = 2.0) -> None:
    """Close after a failed handshake without a reset: the alert OpenSSL already queued must
    reach the client, so send FIN, drain what the client still sends (its request, under TLS
    1.3), then close. Closing with unread input would send RST and could lose the alert."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and conn.recv(65536):
            pass
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


class FullBacklog:
    """A loopback port where TCP connects hang: it listens with backlog 0, never accepts, and
    its one queue slot is taken, so Linux drops further SYNs (the client keeps retrying
    until its connect timeout). The local stand-in for an unreachable host."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._fillers: list[socket.socket] = []
        # Fill the accept queue; stop at the first connect that hangs, as the client's will.
        for _ in range(4):
            s = socket.socket()
            s.settimeout(0.05)
            self._fillers.append(s)
            try:
                s.connect(("127.0.0.1", self.port))
            except OSError:
                return
        raise RuntimeError("the listen queue never filled: connects will not hang here")

    def __enter__(self) -> FullBacklog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for s in self._fillers:
            s.close()
        self._listener.close()


def _abort(conn: socket.socket, reset: bool) -> None:
    """End a connection abruptly: RST if asked, else FIN with no more data."""
    try:
        if reset:  # linger 0 makes close() send RST and discard unsent data
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
