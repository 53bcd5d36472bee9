"""A consumer slower than the server bounds memory: the transport is paused, not buffered.

A loopback server streams a large view in CouchDB 3's framing (chunked, rows joined by
``,\\r\\n``), generating it as it goes and counting the bytes it manages to hand to the kernel.
The test reads a few rows through ``iter_view(high_water=...)``, then stops reading for a while:
if the client kept reading into its own buffers, the server would push the whole body; paused,
it blocks once the socket buffers are full. Then the rest is read to the end, every row checked.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from ..behaviour.conftest import make_couch
from .conftest import BACKENDS
from ..conftest import LOOP

ROWS = 400_000  # about 31 MB of JSON: far more than socket buffers plus high_water rows
ROW = b'{"id":"doc-%07d","key":%d,"value":"%s"}'
PAD = "x" * 40


class ViewStreamer:
    """Serves one endless-looking view per connection; ``sent`` counts body bytes written."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent = 0
        self.total = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(30)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            pending = bytearray(b'{"total_rows":%d,"offset":0,"rows":[\r\n' % ROWS)
            try:
                for i in range(ROWS):
                    pending += ROW % (i, i, PAD.encode())
                    pending += b",\r\n" if i < ROWS - 1 else b"\r\n]}\n"
                    if len(pending) >= 1490 or i == ROWS - 1:
                        conn.sendall(b"%x\r\n%s\r\n" % (len(pending), bytes(pending)))
                        self.sent += len(pending)
                        pending.clear()
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass
        self.total = self.sent
        self.done.set()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_slow_reader_pauses_the_transport(backend: str) -> None:
    server = ViewStreamer()
    couch = make_couch(backend, server.url, None, retry=False)
    db = couch.database("db")
    it = db.iter_view("d/v", high_water=200)
    header = len(b'{"total_rows":%d,"offset":0,"rows":[\r\n' % ROWS)
    body_size = (header + sum(len(ROW % (i, i, PAD.encode())) for i in range(ROWS))
                 + 3 * (ROWS - 1) + len(b"\r\n]}\n"))
    seen: list[int] = []

    # n=None reads to the end of the iteration (fields are set once the body has ended).
    def read(n: int | None) -> None:  # blocking: a plain iterator, read in a worker thread
        for row in it:
            seen.append(row.key)
            if len(seen) == n:
                return

    async def aread(n: int | None) -> None:
        async for row in it:
            seen.append(row.key)
            if len(seen) == n:
                return

    async def take(n: int | None) -> None:
        if backend == "blocking":
            await LOOP.run_in_executor(None, read, n)
        elif backend.startswith("twisted"):
            from twisted.internet.defer import Deferred

            await Deferred.fromCoroutine(aread(n)).asFuture(LOOP)
        else:
            await aread(n)

    await asyncio.wait_for(take(10), 10)
    await asyncio.sleep(1.5)  # the reader stops; a client that did not pause would read on
    stalled_at = server.sent
    await asyncio.sleep(0.5)
    # Paused: the server is blocked on full socket buffers, far short of the body.
    assert server.sent == stalled_at, "the server kept sending while nobody read"
    assert stalled_at < 16 * 1024 * 1024 < body_size, (stalled_at, body_size)

    started = time.monotonic()
    await asyncio.wait_for(take(None), 120)  # resume: everything arrives, in order
    assert seen == list(range(ROWS))
    assert server.done.wait(10) and server.total == body_size
    assert it.fields["total_rows"] == ROWS
    assert time.monotonic() - started < 120
    close = couch.close()
    if close is not None and hasattr(close, "asFuture"):
        await close.asFuture(LOOP)
    server.close()


class PausingSink:
    """A sink that pauses its transfer at the first piece of the body and counts the bytes
    that still reach it while paused."""

    def __init__(self) -> None:
        self.transfer: Any = None
        self.paused = self.resumed = False
        self.received = 0
        self.while_paused = 0
        self.outcome: asyncio.Future[str] = LOOP.create_future()

    def on_start(self, status: int, headers: Any) -> None:
        assert status == 200

    def on_data(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.paused:
            self.while_paused += len(chunk)
        elif self.transfer is not None and not self.resumed:
            self.paused = True
            self.transfer.pause()

    def on_end(self) -> None:
        self.outcome.set_result("end")

    def on_error(self, exc: Exception) -> None:
        self.outcome.set_result(f"error: {exc!r}")


#: What may still reach a sink once its transfer is paused, by backend: where the response is
#: parsed a socket read at a time, the rest of the read being parsed: Twisted reads 64 KiB,
#: asyncio (Tornado's httptools client) 256 KiB; on Tornado's other clients, nothing. (An
#: ``async for`` reader gets no more than a slice of it: api/pacing.py holds the rest.)
AFTER_PAUSE = {"twisted": 65536, "twisted-httptools": 65536, "tornado-httptools": 262144}


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "blocking"])
async def test_paused_transfer_delivers_nothing_more(backend: str) -> None:
    """Once ``pause()`` returns, nothing more of the body reaches the sink until ``resume()``
    (where a socket read is parsed whole, no more than its rest: AFTER_PAUSE). Tornado's curl
    client used to hand over all its own buffer held (up to 1 MiB: thousands of rows parsed
    into the queue of a paused ``async for`` reader, surviving every collection meanwhile)."""
    from corduroy2.protocol.requests import Request

    server = ViewStreamer()
    couch = make_couch(backend, server.url, None, retry=False)
    sink = PausingSink()
    sink.transfer = couch.sender.backend.send(Request("GET", server.url + "/db/_all_docs",
                                                      stream=True), sink)
    deadline = time.monotonic() + 10
    while not sink.paused:  # the first piece, then a while for more to be handed over
        assert time.monotonic() < deadline, "no body"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    assert sink.while_paused <= AFTER_PAUSE.get(backend, 0), (
        f"{sink.while_paused} bytes delivered while paused")
    assert server.sent < 16 * 1024 * 1024, server.sent
    sink.paused, sink.resumed = False, True
    sink.transfer.resume()
    assert await asyncio.wait_for(sink.outcome, 60) == "end"
    assert server.done.wait(10) and sink.received == server.total
    close = couch.close()
    if close is not None and hasattr(close, "asFuture"):
        await close.asFuture(LOOP)
    server.close()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "blocking"])
async def test_resumes_at_once_says_when_an_awaiting_reader_goes_on(backend: str) -> None:
    """``Backend.resumes_at_once`` is true where a coroutine awaiting a promise of ``run`` goes
    on inside the call that settles it (Twisted's ``Deferred.fromCoroutine``), false where it
    goes on at a later pass of the loop (an asyncio Future's task): an ``async for`` reader
    runs unpaced where it is true (api/views.py, RowIterator._start)."""
    from corduroy2.backend import Outcome

    couch = make_couch(backend, "http://127.0.0.1:9", None, retry=False)
    loop_backend = couch.sender.backend
    settle: list[Any] = []

    class NoCancel:
        def cancel(self) -> None:
            pass

    def start(done: Any) -> NoCancel:
        settle.append(done)
        return NoCancel()

    got: list[str] = []

    async def reader() -> None:
        got.append(await loop_backend.run(start))

    if backend.startswith("twisted"):
        from twisted.internet.defer import Deferred

        finished = Deferred.fromCoroutine(reader()).asFuture(LOOP)
    else:
        finished = asyncio.ensure_future(reader())
        await asyncio.sleep(0)  # the task runs up to its await
    settle[0](Outcome(value="row"))
    assert (got == ["row"]) is loop_backend.resumes_at_once
    await asyncio.wait_for(finished, 5)
    assert got == ["row"]
    close = couch.close()
    if close is not None and hasattr(close, "asFuture"):
        await close.asFuture(LOOP)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "blocking"])
async def test_call_later_zero_runs_on_a_later_pass_in_order_and_cancels(backend: str) -> None:
    """What pacing (api/pacing.py) takes a slice per pass with: ``call_later(0, fn)`` runs
    ``fn`` on a later pass of the loop, not inside the call; in the order asked; never once
    cancelled."""
    couch = make_couch(backend, "http://127.0.0.1:9", None, retry=False)
    loop_backend = couch.sender.backend
    ran: list[int] = []
    loop_backend.call_later(0, lambda: ran.append(1))
    loop_backend.call_later(0, lambda: ran.append(2)).cancel()
    loop_backend.call_later(0, lambda: ran.append(3))
    assert ran == []
    deadline = time.monotonic() + 5
    while len(ran) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert ran == [1, 3]
    close = couch.close()
    if close is not None and hasattr(close, "asFuture"):
        await close.asFuture(LOOP)
