"""Plumbing for the adapter-level tests: every backend against a scriptable loopback server.

``h`` (a :class:`Harness`) makes front-door ``Couch`` objects for the backend under test and
runs their calls on the shared loop, each bounded by ``asyncio.wait_for`` so nothing can hang:
blocking calls go to a worker thread (the loop stays free), Tornado Futures are awaited,
Twisted Deferreds are awaited through ``asFuture``.

``fault`` is a :class:`WatchedFaultServer`: a FaultServer whose stalls watch the socket, so a
client that hangs up during a stall is noticed at once and recorded in ``hangups``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..behaviour.conftest import make_couch
from ..conftest import LOOP
from ..support.faultserver import FaultServer, Reply, _Abort

BACKENDS = ["tornado-curl", "tornado-simple", "tornado-aiohttp", "tornado-httptools", "twisted",
            "twisted-httptools", "blocking"]
#: Backends that keep connections alive. Tornado's simple client opens one per request.
KEEPALIVE = ["tornado-curl", "tornado-aiohttp", "tornado-httptools", "twisted", "twisted-httptools",
             "blocking"]
#: The transports of the Tornado front door (for what only they have: a Future to cancel).
TORNADO = ["tornado-curl", "tornado-simple", "tornado-aiohttp", "tornado-httptools"]

#: Upper bound for any single call in these tests.
CALL_TIMEOUT = 5.0


class WatchedFaultServer(FaultServer):
    """FaultServer whose waits (stalls, delays) end as soon as the client closes the socket.

    ``hangups`` lists the connection numbers (as in ``Received.connection``) whose client went
    away while the server was stalling on them or writing to them.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self.hangups: list[int] = []
        super().__init__()

    def _send(self, conn: socket.socket, req: Any, r: Reply) -> None:
        self._local.conn, self._local.cid = conn, req.connection
        try:
            super()._send(conn, req, r)
        except (BrokenPipeError, ConnectionResetError):
            # The client closed while we were writing: it hung up too.
            self.hangups.append(req.connection)
            raise

    def _wait(self, seconds: float) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return super()._wait(seconds)
        deadline = time.monotonic() + seconds
        while True:
            if self._stopping.is_set():
                raise _Abort
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                ready, _, _ = select.select([conn], [], [], min(remaining, 0.02))
            except (OSError, ValueError):
                ready = [conn]
            if not ready:
                continue
            try:
                data = conn.recv(1, socket.MSG_PEEK)
            except OSError:
                data = b""
            if not data:  # EOF or reset: the client hung up
                self.hangups.append(self._local.cid)
                raise _Abort
            time.sleep(0.01)  # unexpected early bytes (pipelining): keep stalling

    async def hung_up(self, cid: int, timeout: float = 2.0) -> bool:
        """True once the client has closed connection ``cid`` during a stall; polls, so the
        loop (and the client on it) keeps running meanwhile."""
        deadline = time.monotonic() + timeout
        while cid not in self.hangups:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


class Harness:
    """Makes ``Couch`` objects for one backend and runs their calls, bounded in time."""

    def __init__(self, backend: str, server: WatchedFaultServer) -> None:
        self.backend = backend
        self.server = server
        self.url = server.url
        self._couches: list[Any] = []

    @property
    def blocking(self) -> bool:
        return self.backend == "blocking"

    @property
    def keepalive(self) -> bool:
        return self.backend in KEEPALIVE

    def couch(self, url: str | None = None, auth: tuple[str, str] | None = None,
              **kwargs: Any) -> Any:
        # These tests script single faults and count requests: retries are tested in tests/auth.
        kwargs.setdefault("retry", False)
        couch = make_couch(self.backend, url or self.url, auth, **kwargs)
        self._couches.append(couch)
        return couch

    async def resolve(self, result: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """Await a native promise (Future or Deferred) with a time bound."""
        if self.backend.startswith("twisted"):
            from twisted.internet.defer import Deferred

            assert isinstance(result, Deferred), f"expected a Deferred, got {result!r}"
            return await asyncio.wait_for(result.asFuture(LOOP), timeout)
        assert isinstance(result, asyncio.Future), f"expected a Future, got {result!r}"
        return await asyncio.wait_for(result, timeout)

    async def run(self, method: Callable[..., Any], *args: Any,
                  timeout: float = CALL_TIMEOUT, **kwargs: Any) -> Any:
        """Call ``method`` in the backend's promise style (blocking: in a worker thread)."""
        if self.blocking:
            call = functools.partial(method, *args, **kwargs)
            return await asyncio.wait_for(LOOP.run_in_executor(None, call), timeout)
        return await self.resolve(method(*args, **kwargs), timeout)

    async def fails(self, exc_type: type[BaseException], method: Callable[..., Any],
                    *args: Any, **kwargs: Any) -> Any:
        """Run the call and return the exception it raised, which must be ``exc_type``."""
        with pytest.raises(exc_type) as info:
            await self.run(method, *args, **kwargs)
        return info.value

    def close(self) -> None:
        for couch in self._couches:
            closing = couch.close()
            if closing is not None and hasattr(closing, "asFuture"):
                LOOP.run_until_complete(asyncio.wait_for(closing.asFuture(LOOP), CALL_TIMEOUT))


@pytest.fixture(autouse=True)
def _collect_garbage(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect at teardown, so whatever an abandoned Future logs when it is freed ("exception
    was never retrieved") is logged during the test that made it, not in a later one. Only
    Tornado leaves such Futures, and a full collection costs tens of ms."""
    yield
    if "tornado" in request.node.name:
        gc.collect()


@pytest.fixture
def fault() -> Iterator[WatchedFaultServer]:
    server = WatchedFaultServer()
    try:
        yield server
    finally:
        server.stop()
    assert server.errors == [], f"fault server errors: {server.errors!r}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def h(backend: str, fault: WatchedFaultServer) -> Iterator[Harness]:
    harness = Harness(backend, fault)
    yield harness
    harness.close()


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]
