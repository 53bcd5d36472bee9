"""The Twisted adapter's repairs (``corduroy2/twisted_io/_repairs.py``), checked against the
installed Twisted.

Each repair reaches a private Twisted name and falls back to public behaviour without it. The
fallback keeps things working, so without these tests a Twisted upgrade that removes or changes
the name would go unnoticed: they assert that the private name is still there and still does
what the repair assumes, and that the repair makes the difference it exists for. A failure
here after upgrading Twisted means: look at the repair again (it may have become unnecessary).
"""

from __future__ import annotations

import ast
import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("twisted")

from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.interfaces import ITCPTransport  # noqa: E402
from twisted.internet.protocol import Protocol  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.web import _newclient  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone  # noqa: E402
from twisted.web.http_headers import Headers as TwistedHeaders  # noqa: E402

import corduroy2.twisted_io as twisted_io  # noqa: E402
from corduroy2.errors import CouchError, TransportError  # noqa: E402
from corduroy2.protocol.requests import Request  # noqa: E402
from corduroy2.protocol.responses import Headers  # noqa: E402
from corduroy2.twisted_io import _repairs  # noqa: E402
from corduroy2.twisted_io.backend import TwistedBackend, _map_failure  # noqa: E402

from ..conftest import LOOP  # noqa: E402
from ..support.faultserver import Reply  # noqa: E402
from ..support.wait import until  # noqa: E402
from .conftest import WatchedFaultServer  # noqa: E402


async def _wait(deferred: Deferred[Any]) -> Any:
    """The result of a Deferred, awaited on the shared asyncio loop (bounded in time)."""
    return await asyncio.wait_for(deferred.asFuture(LOOP), 10.0)


# -- not_sent_errors: twisted.web._newclient.RequestNotSent ----------------------------------


def test_twisted_request_not_sent_is_still_where_the_repair_looks() -> None:
    assert _repairs.not_sent_errors() == (_newclient.RequestNotSent,)


def test_twisted_still_refuses_a_request_on_a_busy_connection_with_it() -> None:
    """What RequestNotSent means: Twisted wrote nothing of the request. The adapter reports
    that as "could not be sent", not as an unexpected failure."""
    protocol = _newclient.HTTP11ClientProtocol()
    protocol.makeConnection(StringTransport())
    first = protocol.request(_newclient.Request(b"GET", b"/", TwistedHeaders(), None))
    failures: list[Failure] = []
    protocol.request(_newclient.Request(b"GET", b"/", TwistedHeaders(), None)).addErrback(
        failures.append)
    first.addErrback(lambda _: None)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert len(failures) == 1 and failures[0].check(_newclient.RequestNotSent), failures
    error = _map_failure(failures[0], Request("GET", "http://127.0.0.1:5984/"))
    assert type(error) is TransportError
    assert str(error).startswith("request could not be sent")


# -- body_connection / abort_body: TransportProxyProducer._producer --------------------------


class _Body(Protocol):
    """Keeps a response body's transport, and how the body ended."""

    def __init__(self) -> None:
        self.data = b""
        self.started: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.started.called:
            self.started.callback(None)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        self.reason = reason
        self.ended.callback(None)


async def test_twisted_body_transport_still_wraps_its_connection(
        fault: WatchedFaultServer) -> None:
    """The transport a body protocol gets is still a TransportProxyProducer whose private
    ``_producer`` is the TCP connection, and aborting it fails the body with
    ConnectionAborted at once (stopProducing would end it as a clean ConnectionDone)."""
    from twisted.internet import reactor
    from twisted.internet.error import ConnectionAborted

    fault.add("GET", "/slow", Reply(body=b"x" * 100, stall_after_bytes=(10, 5.0)))
    pool = HTTPConnectionPool(reactor, persistent=True)
    try:
        url = (fault.url + "/slow").encode()
        response = await _wait(Agent(reactor, pool=pool).request(b"GET", url))
        body = _Body()
        response.deliverBody(body)
        await _wait(body.started)
        assert isinstance(body.transport, _newclient.TransportProxyProducer)
        connection = _repairs.body_connection(body.transport)
        assert connection is not None, "TransportProxyProducer._producer is gone"
        assert ITCPTransport.providedBy(connection)
        _repairs.abort_body(body.transport)
        await _wait(body.ended)
        reason = body.reason
        assert reason is not None
        assert reason.check(_newclient.ResponseFailed), reason
        assert any(r.check(ConnectionAborted) for r in reason.value.reasons), reason.value.reasons
        assert await fault.hung_up(fault.requests[0].connection)
    finally:
        await _wait(pool.closeCachedConnections())


class _EarlyAnswer:
    """A server that answers before reading the request body: it sends the headers and the
    first bytes of a response, waits, then reads the request until the client closes, and
    records how many body bytes it got."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self._listener.getsockname()[1]
        self.received: int | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:  # closed by a test that failed before connecting
            return
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            time.sleep(0.5)  # the client cancels meanwhile
            received = len(data) - data.index(b"\r\n\r\n") - 4
            conn.settimeout(5.0)
            try:
                while chunk := conn.recv(1 << 20):
                    received += len(chunk)
            except OSError:  # reset: aborted
                pass
            self.received = received

    def close(self) -> None:
        self._listener.close()
        self._thread.join(5.0)


class _Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_start(self, status: int, headers: Headers) -> None:
        self.events.append(status)

    def on_data(self, chunk: bytes) -> None:
        self.events.append(chunk)

    def on_end(self) -> None:
        self.events.append("end")

    def on_error(self, exc: CouchError) -> None:
        self.events.append(exc)


async def test_twisted_cancel_mid_body_drops_the_connection_at_once() -> None:
    """Why abort_body exists: cancelled while the server has not read the request yet, an
    exchange stops sending it. With the fallback (stopProducing, a graceful close), Twisted
    would first write all 8 MB of it, and hold the connection until then."""
    from twisted.internet import reactor

    size = 8 << 20
    server = _EarlyAnswer()
    backend = TwistedBackend(None, reactor)
    try:
        sink = _Sink()
        transfer = backend.send(Request("PUT", server.url + "/db/doc", body=b"y" * size), sink)
        await until(lambda: b"x" * 10 in sink.events, timeout=5.0)
        transfer.cancel()
        await until(lambda: server.received is not None, timeout=10.0)
        assert server.received is not None and server.received < size
        assert sink.events == [200, b"x" * 10]
    finally:
        await _wait(backend.close())
        server.close()


# -- public but undocumented: raising from a body protocol drops the connection --------------


class _Refuse(_Body):
    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        raise RuntimeError("cancelled inside the parser")


async def test_twisted_raising_from_data_received_gives_the_connection_up(
        fault: WatchedFaultServer) -> None:
    """A cancel while the sink runs (inside Twisted's parser) raises from ``dataReceived``
    (``_Exchange.abandon``): Twisted's HTTP11ClientProtocol then gives the connection up
    instead of parsing the rest of the response and pooling the connection again."""
    from twisted.internet import reactor

    fault.add("GET", "/rows", [Reply(chunks=[b"a" * 10, b"b" * 10], delay=0.2),
                               Reply(body=b"ok")])
    pool = HTTPConnectionPool(reactor, persistent=True)
    agent = Agent(reactor, pool=pool)
    url = (fault.url + "/rows").encode()
    try:
        # Bodies are taken as soon as the response starts, as _Exchange does: inside the
        # parser, before the rest of the read is parsed.
        body = _Refuse()
        agent.request(b"GET", url).addCallback(lambda response: response.deliverBody(body))
        await _wait(body.ended)
        assert body.reason is not None and body.reason.check(_newclient.ResponseFailed)
        assert body.data == b"a" * 10
        assert await fault.hung_up(fault.requests[0].connection)
        again = _Body()
        agent.request(b"GET", url).addCallback(lambda response: response.deliverBody(again))
        await _wait(again.ended)
        assert again.data == b"ok"
        assert [r.connection for r in fault.requests] == [1, 2]
    finally:
        await _wait(pool.closeCachedConnections())


# -- nothing else touches a private Twisted name ---------------------------------------------


def test_twisted_io_uses_private_twisted_names_only_in_repairs() -> None:
    """Outside _repairs.py: no import from a private Twisted module or of a private name, and
    no ``_name`` attribute (``obj._name`` or ``getattr(obj, "_name")``) but the adapter's own."""
    folder = Path(twisted_io.__file__).parent
    trees = {path.name: ast.parse(path.read_text()) for path in folder.glob("*.py")
             if path.name != "_repairs.py"}
    own = {name for tree in trees.values() for name in _defined_names(tree)}
    problems = [f"{filename}:{getattr(node, 'lineno', '?')}: {what}"
                for filename, tree in trees.items()
                for node in ast.walk(tree)
                for what in _private_uses(node, own)]
    assert problems == []


def _private_uses(node: ast.AST, own: set[str]) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if any(_private(part) for part in node.module.split(".")):
            return [f"from {node.module} import ..."]
        return [f"from {node.module} import {a.name}" for a in node.names if _private(a.name)]
    if isinstance(node, ast.Import):
        return [f"import {a.name}" for a in node.names
                if any(_private(part) for part in a.name.split("."))]
    if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
        return [f".{node.attr}"]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value) and node.args[1].value not in own):
        return [f"{node.func.id}(..., {node.args[1].value!r})"]
    return []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _defined_names(tree: ast.Module) -> set[str]:
    """Names the adapter defines: functions, classes, and attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names
