"""The blocking backend at the adapter contract: ``BlockingBackend.send(request, sink)`` called
directly (the sink has had everything when it returns, unless it paused), against the fault
server.

What the other backends' tests do not pin down for this one: a reply that is not streamed
arrives as one ``on_data`` (none when empty), a streamed one piece by piece; a sink that pauses
makes ``send`` return and ``resume()`` read on; a timeout's message says which limit it hit; a
sink's StopTransfer or failure drops the connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from corduroy2.backend import PauseTransfer, StopTransfer, TransportOptions
from corduroy2.blocking import BlockingBackend
from corduroy2.errors import CouchError, Timeout
from corduroy2.protocol.requests import Request
from corduroy2.protocol.responses import Headers

from ..support.faultserver import FullBacklog, Reply
from .conftest import WatchedFaultServer

BODY = json.dumps({"rows": [{"id": f"d{i}"} for i in range(40)]}).encode()


class Recorder:
    """A sink that records what it is given; it can raise at a chosen call."""

    def __init__(self, raise_at: str | None = None,
                 error: BaseException | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.raise_at, self.error = raise_at, error

    def _record(self, kind: str, value: Any) -> None:
        self.events.append((kind, value))
        if kind == self.raise_at:
            assert self.error is not None
            raise self.error

    def on_start(self, status: int, headers: Headers) -> None:
        self._record("start", status)

    def on_data(self, chunk: bytes) -> None:
        self._record("data", chunk)

    def on_end(self) -> None:
        self._record("end", None)

    def on_error(self, exc: CouchError) -> None:
        self._record("error", exc)

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    @property
    def body(self) -> bytes:
        return b"".join(value for kind, value in self.events if kind == "data")


@pytest.fixture
def backend() -> Iterator[BlockingBackend]:
    backend = BlockingBackend(TransportOptions(connect_timeout=2.0, idle_timeout=2.0))
    yield backend
    backend.close()


def test_blocking_reply_not_streamed_is_one_piece(backend: BlockingBackend,
                                                  fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply(body=BODY, writes=[10, 100, 200], delay=0.02))
    sink = Recorder()
    backend.send(Request("GET", fault.url + "/"), sink)
    assert sink.events == [("start", 200), ("data", BODY), ("end", None)]


def test_blocking_empty_reply_has_no_data(backend: BlockingBackend,
                                          fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply(status=200, body=b""))
    fault.add("HEAD", "/db", Reply(status=200, headers={"Content-Length": "120"}))
    for method, path in (("GET", "/"), ("HEAD", "/db")):
        sink = Recorder()
        backend.send(Request(method, fault.url + path), sink)
        assert sink.events == [("start", 200), ("end", None)], method


def test_blocking_streamed_reply_comes_in_pieces(backend: BlockingBackend,
                                                 fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply(body=BODY, chunked=True, writes=[10, 100, 200], delay=0.05))
    sink = Recorder()
    backend.send(Request("GET", fault.url + "/", stream=True), sink)
    assert sink.kinds[0] == "start" and sink.kinds[-1] == "end"
    assert sink.kinds.count("data") >= 4 and sink.body == BODY


@pytest.mark.parametrize("limit", ["idle_timeout", "request_timeout", "connect_timeout"])
def test_blocking_timeout_says_which_limit(fault: WatchedFaultServer, limit: str) -> None:
    fault.add("GET", "/", Reply(body=BODY, stall_before_headers=3.0))
    options = {"connect_timeout": 2.0, "idle_timeout": 2.0, "request_timeout": None}
    options[limit] = 0.2
    backend = BlockingBackend(TransportOptions(**options))  # type: ignore[arg-type]
    sink = Recorder()
    with FullBacklog() as unreachable:
        url = unreachable.url if limit == "connect_timeout" else fault.url
        backend.send(Request("GET", url + "/"), sink)
    backend.close()
    ((kind, exc),) = sink.events
    assert kind == "error" and type(exc) is Timeout, sink.events
    doing = "connecting to" if limit == "connect_timeout" else "waiting for the response"
    assert "0.2 s" in str(exc) and limit in str(exc) and doing in str(exc), str(exc)


def test_blocking_stop_transfer_drops_the_connection(backend: BlockingBackend,
                                                     fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply(body=BODY, chunked=True, writes=[10, 100], delay=0.05))
    sink = Recorder(raise_at="data", error=StopTransfer())
    backend.send(Request("GET", fault.url + "/", stream=True), sink)
    assert sink.kinds == ["start", "data"]  # nothing after the sink gave up
    backend.send(Request("GET", fault.url + "/"), Recorder())
    assert [r.connection for r in fault.requests] == [1, 2]


def test_blocking_sink_failure_propagates_and_drops_the_connection(
        backend: BlockingBackend, fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply(body=BODY))
    sink = Recorder(raise_at="start", error=RuntimeError("the sink's own bug"))
    with pytest.raises(RuntimeError, match="own bug"):
        backend.send(Request("GET", fault.url + "/"), sink)
    assert sink.kinds == ["start"]
    backend.send(Request("GET", fault.url + "/"), Recorder())
    assert [r.connection for r in fault.requests] == [1, 2]


def test_blocking_connection_kept_after_a_whole_reply(backend: BlockingBackend,
                                                      fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply(body=BODY, chunked=True, writes=[100]))
    for stream in (False, True, False):
        sink = Recorder()
        backend.send(Request("GET", fault.url + "/", stream=stream), sink)
        assert sink.kinds[-1] == "end" and sink.body == BODY
    assert [r.connection for r in fault.requests] == [1, 1, 1]


def _request_head(send: Any) -> bytes:
    """The head of the request ``send(url)`` makes, as a listening socket receives it (its
    port shown as PORT)."""
    import socket
    import threading

    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/db/doc?rev=1-a"
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                got.append(data)
                conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=serve)
        thread.start()
        send(url)
        thread.join(5)
        port = str(listener.getsockname()[1]).encode()
    return got[0].replace(b":" + port, b":PORT")


def test_blocking_sends_the_head_http_client_sends(backend: BlockingBackend) -> None:
    """Host and Accept-Encoding come with our cached header lines rather than from
    ``putrequest()``: the bytes are the same as ``HTTPConnection.request()``'s."""
    import http.client
    from urllib.parse import urlsplit

    headers = (("Accept", "application/json"), ("User-Agent", "corduroy2/test"))

    def ours(url: str) -> None:
        sink = Recorder()
        backend.send(Request("GET", url, headers), sink)
        assert sink.kinds == ["start", "end"], sink.events

    def http_client(url: str) -> None:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
        conn.request("GET", f"{parts.path}?{parts.query}", headers=dict(headers))
        conn.getresponse().read()
        conn.close()

    assert _request_head(ours).replace(b"\r\n", b"\n") == \
        _request_head(http_client).replace(b"\r\n", b"\n")


def test_blocking_head_cut_short_is_a_cut_never_sent_again(backend: BlockingBackend) -> None:
    """A reply whose connection ends inside its head: ResponseCut (http.client alone would
    make it a 201 with no body), and the request is not sent again (the server answered)."""
    import socket
    import threading

    from corduroy2.errors import ResponseCut

    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/db/doc"
        requests = []

        def serve() -> None:
            listener.settimeout(0.5)
            try:
                while True:
                    conn, _ = listener.accept()
                    with conn:
                        requests.append(conn.recv(65536))
                        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: applic")
            except TimeoutError:
                return

        thread = threading.Thread(target=serve)
        thread.start()
        sink = Recorder()
        backend.send(Request("PUT", url, body=b"{}"), sink)
        thread.join(5)
    assert sink.kinds == ["error"], sink.events
    assert isinstance(sink.events[0][1], ResponseCut)
    assert len(requests) == 1


class Pausing(Recorder):
    """A sink that pauses its transfer after each piece: by raising PauseTransfer while
    ``send`` has not returned the handle yet (as the pipeline does), then by ``pause()``."""

    transfer: Any = None

    def on_data(self, chunk: bytes) -> None:
        self._record("data", chunk)
        if self.transfer is None:
            raise PauseTransfer()
        self.transfer.pause()


def test_blocking_paused_transfer_reads_only_when_resumed(backend: BlockingBackend,
                                                          fault: WatchedFaultServer) -> None:
    """One piece per ``resume()``, then the end; the connection is kept for the next
    request."""
    fault.add("GET", "/", Reply(body=BODY, chunked=True, writes=[10, 100, 200], delay=0.02))
    sink = Pausing()
    sink.transfer = backend.send(Request("GET", fault.url + "/", stream=True), sink)
    assert sink.kinds == ["start", "data"]
    while sink.kinds[-1] != "end":
        seen = len(sink.events)
        sink.transfer.resume()
        assert len(sink.events) == seen + 1, sink.kinds  # one piece, or the end
    sink.transfer.resume()  # ended: nothing more
    assert sink.kinds.count("end") == 1
    assert sink.kinds.count("data") >= 4 and sink.body == BODY
    backend.send(Request("GET", fault.url + "/"), Recorder())
    assert [r.connection for r in fault.requests] == [1, 1]


def test_blocking_paused_transfer_cancelled_drops_the_connection(
        backend: BlockingBackend, fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply(body=BODY, chunked=True, writes=[10, 100], delay=0.02))
    sink = Pausing()
    transfer = backend.send(Request("GET", fault.url + "/", stream=True), sink)
    transfer.cancel()
    transfer.resume()  # cancelled: nothing more is read or delivered
    assert sink.kinds == ["start", "data"]
    backend.send(Request("GET", fault.url + "/"), Recorder())
    assert [r.connection for r in fault.requests] == [1, 2]
