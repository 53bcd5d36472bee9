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
