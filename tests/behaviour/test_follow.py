"""The changes follower against the real server, through a proxy that cuts and stalls.

Every backend: the follower must deliver every change exactly once across 20+ cuts at random
points (mid-line included), a resumed feed never going back, restart from its checkpoint without
going back further, see through a stalled connection, and stop on errors it cannot recover from.

A sharded CouchDB 3 interleaves its shards' changes, so a feed does not follow write order across
documents (reference/couchdb3.md, "Ordering on a sharded database"): these tests compare which
changes arrived, as multisets, and treat seqs as opaque (compared with seqs seen, never parsed).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from corduroy2 import NotFound, Retry

from ..conftest import LOOP, Server
from ..support.wait import until
from ..support.proxy import Proxy
from .conftest import BACKENDS, SLACK, make_couch

FAST = {"heartbeat": 0.05, "backoff_base": 0.01, "backoff_cap": 0.1}
#: The pipeline's retries of a cut request, as quick as the follower's own backoff (FAST): the
#: default policy's delays (up to 0.1 s, then 0.2 s) would make each cut cost far more than
#: the reconnect it tests.
FAST_RETRY = Retry(base=0.01, cap=0.1)


@pytest.fixture
def proxy(server: Server) -> Any:
    parts = urlsplit(server.url)
    with Proxy((parts.hostname or "127.0.0.1", parts.port or 80)) as p:
        yield p


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Following:
    """Runs a follower the backend's way: started on the loop, or ``run()`` in a thread."""

    def __init__(self, backend: str, couch: Any, dbname: str) -> None:
        self.backend, self.couch = backend, couch
        self.db = couch.database(dbname)
        self.thread: threading.Thread | None = None
        self.follower: Any = None

    def start(self, handler: Callable[[dict[str, Any]], Any], **kwargs: Any) -> Any:
        self.follower = self.db.follow(handler, **kwargs)
        if self.backend == "blocking":
            self.thread = threading.Thread(target=self.follower.run, daemon=True)
            self.thread.start()
        return self.follower

    async def stop(self) -> Any:
        if self.backend == "blocking":
            seq = await LOOP.run_in_executor(None, self.follower.stop)
            assert self.thread is not None
            await LOOP.run_in_executor(None, self.thread.join, 10)
            assert not self.thread.is_alive()
            return seq
        result = self.follower.stop()
        if self.backend.startswith("twisted"):
            return await result.asFuture(LOOP)
        return await result


def ids_in_changes(admin: Any, dbname: str) -> list[str]:
    """The ids the server's own (one-shot) changes feed lists, in the server's order."""
    return [c["id"] for c in admin.database(dbname).changes()["results"]]


async def test_every_change_in_order_across_cuts(backend: str, server: Server, admin: Any,
                                                 dbname: str, proxy: Proxy) -> None:
    couch = make_couch(backend, proxy.url, server.auth, retry=FAST_RETRY)
    run = Following(backend, couch, dbname)
    seen: list[dict[str, Any]] = []
    connection_of: list[int] = []  # the follower's connection count when each change came

    def handler(change: dict[str, Any]) -> None:
        seen.append(change)
        connection_of.append(run.follower.connections)

    # Reconnects as fast as the cuts come (a cut before any heartbeat backs off anew).
    run.start(handler, checkpoint="cuts", checkpoint_every=10, **{**FAST, "backoff_cap": 0.02})
    total = 120
    writer_done = threading.Event()

    def write() -> None:
        wdb = admin.database(dbname)
        for i in range(total):
            wdb.save({"_id": f"doc{i:04d}", "n": i})
            time.sleep(0.004)
        writer_done.set()

    rng = random.Random(1234)
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    # Cut again and again until the feed was cut and reopened 20+ times and everything was
    # written: while changes flow, at random byte offsets (most land mid-line); once the feed
    # is quiet it carries only heartbeats, one byte each, so at once (between two heartbeats,
    # where a byte count would land too, without waiting for that many heartbeats).
    deadline = time.monotonic() + 30
    while run.follower.connections <= 21 or not writer_done.is_set():
        assert time.monotonic() < deadline, f"only {run.follower.connections} connections"
        proxy.cut_after(0 if writer_done.is_set() else rng.randint(0, 120))
        await asyncio.sleep(rng.uniform(0.005, 0.03))
    await until(lambda: len(seen) >= total)
    await asyncio.sleep(0.05)  # anything extra (a duplicate) would show up now
    last = await run.stop()

    assert proxy.cuts >= 20 and run.follower.connections > 21
    # Every change, exactly once: nothing lost, nothing twice (the order across documents is
    # the shards' interleaving, not write order, so only the multiset is promised).
    written = [f"doc{i:04d}" for i in range(total)]
    delivered = Counter(c["id"] for c in seen)
    assert len(seen) == total and delivered == Counter(written)
    assert delivered == Counter(ids_in_changes(admin, dbname))
    # A resumed feed never goes back: each seq delivered (after a cut too) is none of the seqs
    # delivered before it. Seqs are opaque: compared for equality, never parsed.
    assert len(set(connection_of)) > 1  # changes did arrive on resumed connections
    earlier: list[Any] = []
    for change, connection in zip(seen, connection_of):
        assert change.get("seq") is not None
        assert change["seq"] not in earlier, f"connection {connection} went back: {change}"
        earlier.append(change["seq"])
    assert last == seen[-1]["seq"] == run.follower.seq
    checkpoint = admin.database(dbname).get("_local/cuts")
    assert checkpoint["seq"] == last  # stop() wrote the last delivered seq
    couch.close()


async def test_restart_from_checkpoint(backend: str, server: Server, admin: Any,
                                       dbname: str) -> None:
    wdb = admin.database(dbname)
    wdb.save([{"_id": f"a{i}"} for i in range(5)])
    couch = make_couch(backend, server.url, server.auth)
    first = Following(backend, couch, dbname)
    seen: list[str] = []
    first.start(lambda c: seen.append(c["id"]), checkpoint="ck", **FAST)
    await until(lambda: len(seen) == 5)
    assert sorted(seen) == [f"a{i}" for i in range(5)]
    stopped_at = await first.stop()
    assert wdb.get("_local/ck")["seq"] == stopped_at

    wdb.save([{"_id": f"b{i}"} for i in range(3)])
    second = Following(backend, couch, dbname)
    again: list[dict[str, Any]] = []
    second.start(again.append, checkpoint="ck", since=0, **FAST)  # the checkpoint wins
    await until(lambda: len(again) == 3)
    await asyncio.sleep(0.05)  # anything extra would show up now
    await second.stop()
    # Nothing before the checkpoint, each change once (in shard order on a sharded CouchDB).
    assert sorted(c["id"] for c in again) == ["b0", "b1", "b2"]
    couch.close()


async def test_stalled_connection_is_replaced(backend: str, server: Server, admin: Any,
                                              dbname: str, proxy: Proxy) -> None:
    couch = make_couch(backend, proxy.url, server.auth)
    run = Following(backend, couch, dbname)
    seen: list[str] = []
    run.start(lambda c: seen.append(c["id"]), heartbeat=0.05, stall_timeout=0.15 * SLACK,
              backoff_base=0.01, backoff_cap=0.1)
    wdb = admin.database(dbname)
    wdb.save({"_id": "before"})
    await until(lambda: seen == ["before"])
    assert proxy.stall() >= 1  # the feed's connection goes silent, without closing
    connections = run.follower.connections
    wdb.save({"_id": "during"})
    # No heartbeat for stall_timeout: the follower gives up on it and reconnects.
    await until(lambda: run.follower.connections > connections, timeout=10)
    await until(lambda: seen == ["before", "during"], timeout=10)
    await run.stop()
    couch.close()


async def test_deleted_database_stops_with_error(backend: str, server: Server, admin: Any,
                                                 dbname: str, proxy: Proxy) -> None:
    couch = make_couch(backend, proxy.url, server.auth)
    run = Following(backend, couch, dbname)
    errors: list[BaseException] = []
    seen: list[str] = []
    run.start(lambda c: seen.append(c["id"]), on_error=errors.append, **FAST)
    admin.database(dbname).save({"_id": "x"})
    await until(lambda: seen == ["x"])
    admin.delete(dbname)
    # CouchDB 3 ends the feed of a deleted database; pouchdb-server keeps it open with
    # heartbeats (seen here, not in pouchdb-server.md). Cutting it makes the follower reconnect
    # on both, and the reconnect meets the 404.
    proxy.cut_after(0)
    await until(lambda: bool(errors), timeout=10)
    assert isinstance(errors[0], NotFound)
    await until(lambda: not run.follower.running, timeout=10)
    connections = run.follower.connections
    await asyncio.sleep(0.15)  # > backoff_cap
    assert run.follower.connections == connections  # it does not loop on a 404
    admin.create(dbname)  # for the fixture's cleanup
    if run.thread is not None:
        run.thread.join(5)
    couch.close()


@pytest.mark.parametrize("backend", ["tornado-curl", "twisted"])
async def test_handler_promise_is_awaited_in_order(backend: str, server: Server, admin: Any,
                                                   dbname: str) -> None:
    """A handler returning a Future/Deferred holds the next change back until it settles.

    That is serial, awaited delivery; which change comes first is the feed's order, which a
    sharded CouchDB 3 does not tie to write order."""
    couch = make_couch(backend, server.url, server.auth)
    run = Following(backend, couch, dbname)
    events: list[tuple[str, str]] = []  # ("start" | "settled", id), as they happen

    if backend.startswith("twisted"):
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        def later(seconds: float) -> Any:
            return deferLater(reactor, seconds, lambda: None)
    else:
        def later(seconds: float) -> Any:
            return asyncio.ensure_future(asyncio.sleep(seconds))

    def handler(change: dict[str, Any]) -> Any:
        events.append(("start", change["id"]))
        promise = later(0.005)

        def finished(_: Any) -> None:
            events.append(("settled", change["id"]))

        if backend.startswith("twisted"):
            promise.addCallback(finished)
        else:
            promise.add_done_callback(finished)
        return promise

    written = [f"p{i}" for i in range(10)]
    admin.database(dbname).save([{"_id": i} for i in written])
    run.start(handler, **FAST)
    await until(lambda: sum(what == "settled" for what, _ in events) >= 10)
    await asyncio.sleep(0.05)  # anything extra (a duplicate) would show up now
    await run.stop()
    started = [i for what, i in events if what == "start"]
    assert Counter(started) == Counter(written)  # every change, once
    # Each handler starts only after the previous handler's promise settled.
    assert events == [(what, i) for i in started for what in ("start", "settled")]
    couch.close()
