"""Attachment bodies through each adapter: streamed both ways in bounded memory, framed right
(Content-Length when known, chunked otherwise), never sent twice once read, and a failing
source failing the call.

The memory tests use loopback servers that read (or are read) slowly: if an adapter read the
upload's source ahead of the socket, or kept reading a download nobody consumes, the bytes
taken (or sent) would run far past what the socket buffers hold.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from corduroy2 import Retry, ServerError, TransportError

from ..conftest import LOOP
from ..support.faultserver import Reply
from .conftest import Harness, WatchedFaultServer

MB = 1 << 20
PIECE = 64 * 1024
TOTAL = 48 * MB  # far more than socket buffers (a few MB each way on loopback)
BOUND = 12 * MB  # what may be in flight: socket buffers both sides (see SlowReader), a piece or two


@pytest.fixture
def harness(backend: str) -> Iterator[Any]:
    """``harness(server)``: a Harness of the backend for a server with a ``url`` (closed after
    the test, off the loop)."""
    made: list[Harness] = []

    def make(server: Any) -> Harness:
        made.append(Harness(backend, server))
        return made[-1]

    yield make
    for h in made:
        h.close()


def put_reply(rev: str = "2-x") -> Reply:
    return Reply.json({"ok": True, "id": "d", "rev": rev}, status=201)


async def test_framing(h: Harness, fault: WatchedFaultServer, tmp_path: Any) -> None:
    fault.add("PUT", "/db/d/a", [put_reply("2-a"), put_reply("3-b"), put_reply("4-c")])
    db = h.couch().database("db")
    doc: dict[str, Any] = {"_id": "d", "_rev": "1-x"}
    path = tmp_path / "f"
    path.write_bytes(b"0123456789" * 30000)
    with open(path, "rb") as f:
        await h.run(db.put_attachment, doc, "a", f, "application/x-test")
    await h.run(db.put_attachment, doc, "a", iter([b"ab", b"", b"cd"]))
    await h.run(db.put_attachment, doc, "a", b"whole")
    file_put, gen_put, bytes_put = fault.received("PUT", "/db/d/a")
    assert file_put.body == path.read_bytes() and file_put.query == "rev=1-x"
    assert file_put.headers["content-length"] == "300000"
    assert file_put.headers["content-type"] == "application/x-test"
    assert gen_put.body == b"abcd" and gen_put.query == "rev=2-a"
    assert gen_put.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in gen_put.headers
    assert bytes_put.headers["content-length"] == "5" and doc["_rev"] == "4-c"


async def test_a_streamed_body_is_never_sent_twice(h: Harness,
                                                   fault: WatchedFaultServer) -> None:
    """A 503 is retried for bytes (a PUT with a rev is safe to repeat), not for a streamed
    body that has been read."""
    fault.add("PUT", "/db/d/a", [Reply.json({"error": "x"}, status=503), put_reply(),
                                 Reply.json({"error": "x"}, status=503), put_reply()])
    db = h.couch(retry=Retry(attempts=3, base=0.01)).database("db")
    await h.run(db.put_attachment, {"_id": "d", "_rev": "1-x"}, "a", b"bytes")
    assert len(fault.received("PUT")) == 2
    await h.fails(ServerError, db.put_attachment, {"_id": "d", "_rev": "1-x"}, "a",
                  iter([b"streamed"]))
    assert len(fault.received("PUT")) == 3


async def test_a_failing_source_fails_the_call(h: Harness, fault: WatchedFaultServer) -> None:
    fault.add("PUT", "/db/d/a", put_reply())
    db = h.couch().database("db")

    def pieces() -> Iterator[bytes]:
        yield b"x" * PIECE
        raise OSError("the disk went away")

    error = await h.fails(TransportError, db.put_attachment, {"_id": "d", "_rev": "1-x"}, "a",
                          pieces())
    assert "the disk went away" in str(error) and isinstance(error.__cause__, OSError)
    fault.errors.clear()  # the server saw the request body end early: expected here


class SlowReader:
    """Accepts one PUT and reads its body slowly: ``TOTAL`` bytes expected; it reads ``MB``,
    then stops reading until ``go`` is set, then reads the rest and answers 201."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        # A fixed receive buffer, set before the connection is made: the kernel would grow it
        # (up to tcp_rmem's maximum, 32 MB here) and what it holds would count as taken.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 * MB)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received = 0
        self.stalled = threading.Event()
        self.go = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            head, _, tail = head.partition(b"\r\n\r\n")
            chunked = b"chunked" in head.lower()
            self.received = len(tail)  # chunk framing counted too: close enough
            while True:
                if self.received >= MB and not self.stalled.is_set():
                    self.stalled.set()
                    self.go.wait(30)
                if (tail.endswith(b"\r\n0\r\n\r\n") if chunked
                        else self.received >= TOTAL):
                    break
                data = conn.recv(1 << 20)
                if not data:
                    return
                self.received += len(data)
                tail = (tail + data)[-16:]
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 35\r\n\r\n"
                         b'{"ok":true,"id":"d","rev":"2-abcd"}')


@pytest.mark.parametrize("source", ["sync", "async"])
async def test_upload_takes_pieces_only_as_the_socket_takes_them(backend: str, source: str,
                                                                 harness: Any) -> None:
    if source == "async" and backend == "blocking":
        pytest.skip("blocking mode takes no async iterator")
    server = SlowReader()
    h = harness(server)
    taken = [0]

    def pieces() -> Iterator[bytes]:
        for _ in range(TOTAL // PIECE):
            taken[0] += PIECE
            yield b"x" * PIECE

    async def apieces() -> Any:
        for piece in pieces():
            yield piece

    try:
        db = h.couch().database("db")
        doc = {"_id": "d", "_rev": "1-x"}
        data = pieces() if source == "sync" else apieces()
        call = asyncio.ensure_future(h.run(db.put_attachment, doc, "a", data, timeout=30))
        while not server.stalled.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the client fills what buffers it can meanwhile
        assert taken[0] < BOUND, f"{taken[0] / MB:.0f} MB taken while the server read 1 MB"
        server.go.set()
        await call
        assert taken[0] == TOTAL and doc["_rev"] == "2-abcd"
    finally:
        server.go.set()


class SlowWriter:
    """Serves one attachment GET of ``TOTAL`` bytes (with its Content-Length) as fast as the
    client reads it; ``sent`` counts what the kernel has taken."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        # A fixed receive buffer, set before the connection is made: the kernel would grow it
        # (up to tcp_rmem's maximum, 32 MB here) and what it holds would count as taken.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 * MB)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent = 0
        self.cut = threading.Event()  # the client closed the connection before the end
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(30)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"ETag: \"x\"\r\nContent-Length: %d\r\n\r\n" % TOTAL)
            piece = b"y" * PIECE
            try:
                for _ in range(TOTAL // PIECE):
                    conn.sendall(piece)
                    self.sent += PIECE
            except OSError:
                self.cut.set()


async def test_iter_attachment_pauses_the_download(backend: str, harness: Any) -> None:
    server = SlowWriter()
    h = harness(server)
    db = h.couch().database("db")
    if backend == "blocking":
        def read() -> int:
            it = db.iter_attachment("d", "a", high_water=4)
            size = len(next(it))
            time.sleep(0.5)
            sent_meanwhile = server.sent
            size += sum(len(chunk) for chunk in it)
            assert sent_meanwhile < BOUND, f"{sent_meanwhile / MB:.0f} MB sent"
            return size

        size = await asyncio.wait_for(LOOP.run_in_executor(None, read), 30)
    else:
        async def read_async() -> int:
            it = db.iter_attachment("d", "a", high_water=4)
            size = len(await it.__anext__())
            await asleep(backend, 0.5)
            assert server.sent < BOUND, f"{server.sent / MB:.0f} MB sent"
            async for chunk in it:
                size += len(chunk)
            return size

        size = await h.run(lambda: as_promise(backend, read_async()), timeout=30)
    assert size == TOTAL


def as_promise(backend: str, coro: Any) -> Any:
    if backend.startswith("twisted"):
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(coro)
    return asyncio.ensure_future(coro)


async def asleep(backend: str, seconds: float) -> None:
    if backend.startswith("twisted"):
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        await deferLater(reactor, seconds, lambda: None)
    else:
        await asyncio.sleep(seconds)


def test_file_length_is_what_is_left_of_a_seekable_binary_file() -> None:
    from corduroy2.api.attachments import upload_body
    from corduroy2.protocol.bodies import BodySource

    f = io.BytesIO(b"0123456789")
    f.seek(4)
    body, content_type = upload_body(f, "x.png", None)
    assert isinstance(body, BodySource) and body.length == 6 and content_type == "image/png"
    assert b"".join(body) == b"456789"
    text, _ = upload_body(io.StringIO("h\u00e9"), "x.txt", None)
    assert isinstance(text, BodySource) and text.length is None  # its encoded size: unknown
    assert b"".join(text) == "h\u00e9".encode()


async def test_closing_ends_a_pending_next(h: Harness, fault: WatchedFaultServer) -> None:
    """An attachment handler closes the download when its browser leaves, maybe while it waits
    for the next chunk: that wait ends (StopAsyncIteration) instead of hanging forever."""
    if h.blocking:
        pytest.skip("a blocking iterator's next() runs on the caller's thread")
    fault.add("GET", "/db/d/a", Reply(body=b"late", stall_before_headers=5.0))
    it = h.couch().database("db").iter_attachment("d", "a")
    pending = it.__anext__()
    await asyncio.sleep(0.1)
    it.close()
    with pytest.raises(StopAsyncIteration):
        await h.resolve(pending, timeout=2)
