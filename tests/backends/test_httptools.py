"""What only the httptools clients (``client="httptools"`` on the Tornado and Twisted doors,
over one core: corduroy2/http1) have: their choice on the front door, their optional
dependency, and their own connection pool (the shared contract is checked with every backend
in the other files of this folder).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from corduroy2.backend import Collector
from corduroy2.errors import Timeout
from corduroy2.protocol.requests import Request

from ..support.faultserver import Reply
from .conftest import Harness, WatchedFaultServer

HTTPTOOLS = ["tornado-httptools", "twisted-httptools"]

REPO = Path(__file__).resolve().parents[2]
VALUE = {"couchdb": "Welcome"}

_WITHOUT_HTTPTOOLS = textwrap.dedent(
    """
    import importlib.abc, json, sys


    class WithoutHttptools(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "httptools" or name.startswith("httptools."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, WithoutHttptools())
    import corduroy2.tornado_io as tornado_io
    import corduroy2.twisted_io as twisted_io

    found = {"errors": []}
    twisted_io.Couch("http://127.0.0.1:5984")  # Agent, the default: no httptools needed
    twisted_io.Couch("http://127.0.0.1:5984", client="agent")
    tornado_io.Couch("http://127.0.0.1:5984")
    tornado_io.Couch("http://127.0.0.1:5984", client="simple")
    found["imported"] = "httptools" in sys.modules
    for door in (tornado_io, twisted_io):
        try:
            door.Couch("http://127.0.0.1:5984", client="httptools")
        except ImportError as exc:
            found["errors"].append([str(exc), exc.name])
    print(json.dumps(found))
    """
)


def test_without_httptools_only_its_clients_fail_and_say_what_to_install() -> None:
    pytest.importorskip("twisted")
    pytest.importorskip("tornado")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_HTTPTOOLS], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["imported"] is False
    assert len(found["errors"]) == 2  # each door's
    for message, name in found["errors"]:
        assert name == "httptools"
        assert "client='httptools'" in message and "corduroy2[httptools]" in message, message


def test_an_unknown_client_is_refused() -> None:
    pytest.importorskip("twisted")
    from corduroy2.twisted_io import Couch

    with pytest.raises(ValueError, match="'agent' or 'httptools'"):
        Couch("http://127.0.0.1:5984", client="curl")


@pytest.mark.parametrize("backend", HTTPTOOLS)
@pytest.mark.parametrize("limit", [1, 3])
async def test_connections_bounded_and_requests_queued_in_order(
        h: Harness, fault: WatchedFaultServer, limit: int) -> None:
    """At most max_connections connections, each kept alive; requests beyond them wait, and
    go out in the order they were made (on one connection, exactly that order)."""
    fault.add_handler("GET", "/db/slow", lambda received: Reply.json(
        {"_id": received.query}, stall_before_headers=0.1))
    db = h.couch(max_connections=limit).database("db")
    calls = [db.get("slow", rev=str(i)) for i in range(7)]
    docs = await asyncio.gather(*(h.resolve(call) for call in calls))
    assert [doc["_id"] for doc in docs] == [f"rev={i}" for i in range(7)]
    assert fault.connections_accepted == limit
    if limit == 1:
        assert [r.query for r in fault.requests] == [f"rev={i}" for i in range(7)]


@pytest.mark.parametrize("backend", HTTPTOOLS)
async def test_cancelled_and_timed_out_requests_leave_nothing_behind(
        h: Harness, fault: WatchedFaultServer) -> None:
    """Requests cancelled while on a connection or waiting for one, and one timed out: each
    connection is dropped, its slot freed, the queue emptied, and neither an exchange nor a
    connection is kept alive; the next request works on a new connection."""
    import gc

    from corduroy2.http1.client import Connection, Exchange

    def alive() -> list[str]:
        gc.collect()
        return [type(o).__name__ for o in gc.get_objects()
                if isinstance(o, (Exchange, Connection))]

    fault.add("GET", "/db/slow", Reply.json({"_id": "slow"}, stall_before_headers=5.0))
    fault.add("GET", "/db/fast", Reply.json({"_id": "fast"}))
    couch = h.couch(max_connections=2)
    db = couch.database("db")
    calls = [db.get("slow") for _ in range(5)]
    errors: list[Exception] = []
    sink = Collector(lambda status, headers, body, error: errors.append(error))
    # Queued behind the others, then timed out.
    couch.backend.send(Request("GET", fault.url + "/db/slow", timeout=0.2), sink)
    while len(fault.requests) < 2:
        await asyncio.sleep(0.01)
    (pool,) = couch.backend._pools.values()
    assert pool.count == 2 and len(pool._waiting) == 4
    while not errors:
        await asyncio.sleep(0.01)
    assert type(errors[0]) is Timeout and len(pool._waiting) == 3
    for call in calls:  # two on their connections, three waiting (then connecting)
        call.cancel()
        if hasattr(call, "addErrback"):  # a Deferred: its CancelledError, handled
            call.addErrback(lambda failure: None)
    for connection in (1, 2):
        assert await fault.hung_up(connection)
    for _ in range(100):  # an asyncio connect under way ends on the loop's next pass
        if not pool.count:
            break
        await asyncio.sleep(0.01)
    assert (pool.count, list(pool._waiting), pool.idle) == (0, [], [])
    await asyncio.sleep(0.05)  # the loop or reactor lets go of the closed connections
    assert alive() == []
    assert (await h.resolve(db.get("fast")))["_id"] == "fast"
    assert fault.connections_accepted == 3 and len(fault.requests) == 3


class _RawServer:
    """Answers each connection's first request with ``raw`` bytes as they are, then closes."""

    def __init__(self, raw: bytes) -> None:
        import socket
        import threading

        self.raw = raw
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                conn.sendall(self.raw)

    def close(self) -> None:
        self.listener.close()


JSON_BODY = json.dumps(VALUE).encode()
FRAMINGS = {
    # HTTP/1.0 style: no length, no chunks; the body ends with the connection.
    "until-close": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + JSON_BODY,
    # An informational response first (a proxy's 100 Continue), then the answer.
    "after-100": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(JSON_BODY), JSON_BODY)),
}


@pytest.mark.parametrize("backend", ["twisted", *HTTPTOOLS])
@pytest.mark.parametrize("framing", sorted(FRAMINGS))
async def test_framings_the_fault_server_does_not_make(h: Harness, framing: str) -> None:
    server = _RawServer(FRAMINGS[framing])
    try:
        assert await h.run(h.couch(server.url).info) == VALUE
    finally:
        server.close()


@pytest.mark.parametrize("backend", HTTPTOOLS)
async def test_garbage_instead_of_a_response_is_a_transport_error(h: Harness) -> None:
    from corduroy2.errors import TransportError

    server = _RawServer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    try:
        exc = await h.fails(TransportError, h.couch(server.url).info)
        assert "invalid HTTP response" in str(exc)
    finally:
        server.close()
