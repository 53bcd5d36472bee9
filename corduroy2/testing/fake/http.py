"""The fake on a loopback port: HTTP/1.1 with keep-alive, chunked answers, in its own thread.

Stdlib only (asyncio on a private loop in a daemon thread), so it serves Tornado, Twisted,
blocking clients and ``curl`` alike, and keeps serving while the test's own loop is busy or a
blocking client waits in the test's thread. A malformed request gets a 400 and a closed
connection; an unexpected failure inside the fake answers 500 with CouchDB's error body and is
kept in :attr:`FakeServer.errors` for the test to look at, never a traceback on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import socket
import threading
import time
import urllib.parse
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from .couch import VERSION, User
from .endpoints import (SERVER_ADMIN, Context, Reply, Request, Streamed, check_access,
                        session_cookie)
from .routes import match_route
from .errors import Refusal, bad_request
from .faults import Faults
from .store import validate_db_name

if TYPE_CHECKING:
    from .couch import FakeCouch

__all__ = ["FakeServer"]

_MAX_HEAD = 65536
_SERVER = f"CouchDB/{VERSION} (Erlang OTP/25)"


class _Cut(Exception):
    """A fault cut the answer: close the connection without finishing it."""


class FakeServer:
    """A :class:`FakeCouch` served on ``host:port``; made by :meth:`FakeCouch.serve`.

    ``url`` (no credentials), ``admin`` and ``url_with_credentials`` match
    :class:`~corduroy2.testing.PouchDBServer`; ``faults`` injects failures; ``stop()`` (or
    leaving the ``with`` block) closes every connection and the port.
    """

    def __init__(self, couch: FakeCouch, host: str = "127.0.0.1", port: int = 0) -> None:
        self.couch = couch
        self.host = host
        self.faults = Faults()
        self.errors: list[BaseException] = []
        self.requests = 0
        self._sock = socket.create_server((host, port), reuse_port=False)
        self.port: int = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None

    # -- the public face ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin(self) -> tuple[str, str] | None:
        return self.couch.admin

    @property
    def url_with_credentials(self) -> str:
        if self.couch.admin is None:
            return self.url
        user, password = (urllib.parse.quote(p, safe="") for p in self.couch.admin)
        return f"http://{user}:{password}@{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = self.url if self._thread is not None else "stopped"
        return f"<FakeServer {state}>"

    def __enter__(self) -> FakeServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,),
                                        name=f"FakeCouch:{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        self.couch.addresses.add((self.host, self.port))

    def stop(self) -> None:
        """Close the port and every connection; returns when the server's thread has ended."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._shutdown()))
        thread.join(5)
        self._thread = None
        self.couch.remove_listener(self._on_change)
        self.couch.addresses.discard((self.host, self.port))

    # -- the loop thread ---------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, sock=self._sock, limit=_MAX_HEAD))
            self.couch.add_listener(self._on_change)
            ready.set()
            loop.run_forever()
        finally:
            ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        asyncio.get_running_loop().stop()

    def _on_change(self, db_name: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake, db_name)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _wake(self, db_name: str) -> None:
        event = self._events.pop(db_name, None)
        if event is not None:
            event.set()

    async def _wait(self, db_name: str, seconds: float) -> bool:
        event = self._events.get(db_name)
        if event is None:
            event = self._events[db_name] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    # -- one connection ---------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    request = await self._read(reader, writer)
                except Refusal as refusal:
                    await self._send(writer, "GET", Reply(refusal.status, refusal.body()),
                                     close=True)
                    return
                if request is None:
                    return
                keep_alive = request.headers.get("connection", "").lower() != "close"
                await self._answer(request, writer, keep_alive)
                if not keep_alive:
                    return
        except (_Cut, ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a bug in the fake: keep it for the test, answer nothing more
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _read(self, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise bad_request("Malformed request") from None
            return None
        except asyncio.LimitOverrunError:
            raise Refusal(431, "bad_request", "Request headers too large") from None
        lines = head[:-4].split(b"\r\n")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
        except (ValueError, UnicodeDecodeError):
            raise bad_request("Malformed request line") from None
        if not version.startswith("HTTP/1.") or not method.isalpha() or not method.isupper():
            raise bad_request("Malformed request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise bad_request("Malformed header")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers and \
                key != "cookie" else value.strip()
        if version == "HTTP/1.0" and "connection" not in headers:
            headers["connection"] = "close"
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._body(reader, headers)
        path, _, query_string = target.partition("?")
        if not path.startswith("/"):
            raise bad_request("Malformed request target")
        parts = path.split("/")[1:]
        while parts and parts[-1] == "":
            parts.pop()
        segments = [urllib.parse.unquote(p, errors="strict") if "%" in p else p for p in parts]
        query = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True))
        return Request(method, path, segments, query, headers, body)

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise bad_request("Malformed chunked body") from None
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return bytes(out)
                out += await reader.readexactly(size)
                await reader.readexactly(2)
        length = headers.get("content-length")
        if length is None:
            return b""
        if not length.isdigit():
            raise bad_request("Malformed Content-Length")
        return await reader.readexactly(int(length))

    # -- answering ----------------------------------------------------------------------------------

    async def _answer(self, req: Request, writer: asyncio.StreamWriter,
                      keep_alive: bool) -> None:
        self.requests += 1
        fault = self.faults.take(req.method, "/" + "/".join(req.segments))
        if fault is not None and fault.stall is not None:
            await asyncio.sleep(fault.stall)
        if fault is not None and fault.status is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            reply: Reply | Streamed = Reply(fault.status, fault.error_body(), headers)
        else:
            started = time.monotonic()
            reply = self._dispatch(req)
            self.couch.node.record(req.method, reply.status, time.monotonic() - started)
        cut = fault.cut_after if fault is not None else None
        if isinstance(reply, Streamed):
            await self._stream(writer, req, reply, keep_alive, cut)
        else:
            await self._send(writer, req.method, reply, close=not keep_alive, cut=cut,
                             extra=self._session_headers(req))

    def _dispatch(self, req: Request) -> Reply | Streamed:
        try:
            req.user = self._user(req)
            found = match_route(req.segments)
            if found is None:
                raise Refusal(404, "not_found", "Resource not found")
            route, params = found
            method = req.method
            entry = route.methods.get(method)
            if entry is None:
                allowed = ",".join(sorted(route.methods))
                return Reply(405, {"error": "method_not_allowed",
                                   "reason": f"Only {allowed} allowed"}, {"Allow": allowed})
            handler, access = entry
            db_name = params.get("db")
            with self.couch.lock:
                if db_name is not None:
                    validate_db_name(db_name)
                if access == SERVER_ADMIN or db_name is None:
                    check_access(self.couch, req.user, access, None)
                else:
                    self.couch.db(db_name)  # 404 before 401, as CouchDB
                    check_access(self.couch, req.user, access, db_name)
                ctx = Context(self.couch, self._wait)
                return handler(ctx, req, **params)
        except Refusal as refusal:
            return Reply(refusal.status, refusal.body())
        except Exception as exc:
            self.errors.append(exc)
            return Reply(500, {"error": "unknown_error", "reason": type(exc).__name__})

    def _user(self, req: Request) -> User:
        if self.couch.admin is None:
            return User(None, ("_admin",))
        authorization = req.headers.get("authorization", "")
        if authorization[:6].lower() == "basic ":
            try:
                name, sep, password = base64.b64decode(
                    authorization[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise Refusal(401, "unauthorized", "Malformed Basic credentials") from None
            user = self.couch.authenticate(name, password) if sep else None
            if user is None:
                raise Refusal(401, "unauthorized", "Name or password is incorrect.")
            return User(user.name, user.roles, "default")
        cookie = _cookie(req.headers.get("cookie", ""), "AuthSession")
        if cookie:
            return self.couch.check_cookie(cookie) or User()
        return User()

    def _session_headers(self, req: Request) -> dict[str, str]:
        """CouchDB refreshes a session cookie once 10% of its lifetime has passed."""
        if req.user.via != "cookie" or req.segments[:1] == ["_session"]:
            return {}
        cookie = _cookie(req.headers.get("cookie", ""), "AuthSession")
        issued = _cookie_time(cookie)
        timeout = self.couch.session_timeout
        if issued is None or time.time() - issued < timeout * 0.1 or req.user.name is None:
            return {}
        return {"Set-Cookie": session_cookie(self.couch.make_cookie(req.user.name), timeout)}

    def _headers(self, status: int, extra: dict[str, str]) -> list[str]:
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "?"
        lines = [f"HTTP/1.1 {status} {reason}", f"Server: {_SERVER}",
                 f"Date: {formatdate(usegmt=True)}",
                 f"X-Couch-Request-ID: {os.urandom(5).hex()}", "X-CouchDB-Body-Time: 0",
                 "Cache-Control: must-revalidate"]
        names = {k.lower() for k in extra}
        if "content-type" not in names:
            lines.append("Content-Type: application/json")
        lines.extend(f"{k}: {v}" for k, v in extra.items())
        return lines

    async def _send(self, writer: asyncio.StreamWriter, method: str, reply: Reply,
                    close: bool = False, cut: int | None = None,
                    extra: dict[str, str] | None = None) -> None:
        if isinstance(reply.body, bytes):
            body = reply.body
        else:
            body = orjson.dumps(reply.body) + b"\n"
        headers = self._headers(reply.status, {**(extra or {}), **reply.headers})
        no_body = method == "HEAD" or reply.status == 304
        headers.append(f"Content-Length: {len(body) if reply.status != 304 else 0}")
        if close:
            headers.append("Connection: close")
        head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
        if no_body:
            body = b""
        elif cut is not None and cut < len(body):
            writer.write(head + body[:cut])
            await writer.drain()
            raise _Cut()
        # one write: a head and a body sent apart cost a delayed ACK (40 ms) per request
        writer.write(head + body)
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, req: Request, reply: Streamed,
                      keep_alive: bool, cut: int | None) -> None:
        headers = self._headers(reply.status, {**self._session_headers(req), **reply.headers})
        headers.append("Transfer-Encoding: chunked")
        if not keep_alive:
            headers.append("Connection: close")
        # the head goes out with the first chunk, the last chunk with the terminator: writes
        # that could be one cost a delayed ACK each
        pending = bytearray(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
        chunks = reply.chunks
        sent = 0
        try:
            if req.method == "HEAD":  # the head only: no body, not even the last chunk
                writer.write(bytes(pending))
                await writer.drain()
                return
            async for chunk in chunks:
                if not chunk:
                    continue
                if cut is not None and sent + len(chunk) > cut:
                    writer.write(bytes(pending) + b"%x\r\n" % len(chunk) + chunk[:cut - sent])
                    await writer.drain()
                    raise _Cut()
                sent += len(chunk)
                pending += b"%x\r\n%s\r\n" % (len(chunk), chunk)
                writer.write(bytes(pending))
                pending.clear()
                await writer.drain()
        except Refusal as refusal:  # CouchDB's send_chunked_error: the error, then the end
            error = b"\n" + orjson.dumps(refusal.body()) + b"\n"
            pending += b"%x\r\n%s\r\n" % (len(error), error)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        writer.write(bytes(pending) + b"0\r\n\r\n")
        await writer.drain()


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def _cookie_time(cookie: str | None) -> float | None:
    if not cookie:
        return None
    try:
        raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
        return int(raw.split(b":", 2)[1], 16)
    except (ValueError, IndexError, binascii.Error):
        return None

