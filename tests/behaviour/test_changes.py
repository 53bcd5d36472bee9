"""The ``_changes`` feed against the real server.

* ``db.changes()`` in its normal and longpoll modes is a single call: it runs on every backend x
  calling style (``c.call``) with the query options (``since``, ``limit``, ``descending``,
  ``include_docs``, ``conflicts``/``style``, ``doc_ids``, design-doc and ``_view`` filters,
  ``selector``, ``seq_interval``).
* corduroy's continuous ``ChangesFeed`` (``callback(seq, changes)``, ``latency`` batching) and
  ``iter_changes()`` are not calling styles: they run once per backend.

CouchDB 3 behaviour is asserted; pouchdb-server's documented deviations
(../shared/reference/pouchdb-server.md) are branched on explicitly with ``server.pouchdb``.
Seqs are opaque: they are only compared with seqs the server returned elsewhere, or passed back
as ``since``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from corduroy2 import NotFound
from corduroy2.api.changes import ChangesFeed

from ..conftest import LOOP, Server
from ..support.wait import until
from .conftest import SLACK, Client, fresh_database

REV_A = "1-" + "a" * 32
REV_B = "1-" + "b" * 32  # the winner: same generation, greater rev id
DDOC = {
    "_id": "_design/f",
    "filters": {"by_type": "function (doc, req) { return doc.type === req.query.type; }"},
    "views": {"v": {"map": "function (doc) { if (doc.type === 'b') emit(doc._id, null); }"}},
}


@pytest.fixture
def dbname(admin: Any) -> Any:
    """A fresh database with one shard (``q=1``): on CouchDB 3 a feed merges the shards' changes
    in no particular order, so only a single shard makes "write order" a property to assert.
    (pouchdb-server ignores ``q``.) Overrides the conftest fixture of the same name."""
    yield from fresh_database(admin, q=1)


@pytest.fixture
def adb(admin: Any, dbname: str) -> Any:
    return admin.database(dbname)


def write_in_order(adb: Any, ids: list[str], **fields: Any) -> list[dict[str, Any]]:
    """One PUT per doc, so the feed's order is the write order."""
    docs = []
    for doc_id in ids:
        doc = {"_id": doc_id, **fields}
        adb.save(doc)
        docs.append(doc)
    return docs


def ids_of(changes: list[dict[str, Any]]) -> list[str]:
    return [change["id"] for change in changes]


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await LOOP.run_in_executor(None, fn, *args)


#: Continuous feeds' heartbeat (ms): short, since a blocking feed's reader sees ``stop()`` only
#: when bytes arrive, and the tests wait a few heartbeats to see that nothing comes after it.
HEARTBEAT = 25
#: The ``latency`` of the batching tests (s): long enough for one ``_bulk_docs``'s changes to
#: reach the feed together, over a network too; the tests wait a few of it.
LATENCY = 0.05
#: How long a request may take to reach the server.
REACH = 0.04 * SLACK


def write_later(delay: float, fn: Callable[[], Any]) -> None:
    """Run the blocking ``fn`` in a worker thread ``delay`` seconds from now."""
    LOOP.call_later(delay, lambda: LOOP.run_in_executor(None, fn))


def listening(feed: Any) -> bool:
    """``feed.listening``, read anew (it changes under the type checker's feet)."""
    return bool(feed.listening)


# -- normal feed, every backend x style -----------------------------------------------------------


async def test_normal_feed_since_and_last_seq(c: Client, db: Any, adb: Any,
                                              server: Server) -> None:
    write_in_order(adb, ["a", "b", "c"])
    res = await c.call(db.changes)
    results = res["results"]
    assert ids_of(results) == ["a", "b", "c"]
    assert res["last_seq"] == results[-1]["seq"]
    assert all(change["changes"][0]["rev"].startswith("1-") for change in results)
    # CouchDB 3 tells how many changes are left; pouchdb-server has no `pending`
    # (pouchdb-server.md, Pitfall 7).
    if server.pouchdb:
        assert "pending" not in res
    else:
        assert res["pending"] == 0

    later = await c.call(db.changes, since=results[0]["seq"])
    assert ids_of(later["results"]) == ["b", "c"]
    assert [ch["seq"] for ch in later["results"]] == [ch["seq"] for ch in results[1:]]
    assert (await c.call(db.changes, since=res["last_seq"]))["results"] == []
    every = await c.call(db.changes, since=0)
    assert ids_of(every["results"]) == ["a", "b", "c"]


async def test_limit_and_descending(c: Client, db: Any, adb: Any, server: Server) -> None:
    write_in_order(adb, ["a", "b", "c", "d"])
    first = await c.call(db.changes, limit=2)
    assert ids_of(first["results"]) == ["a", "b"]
    if not server.pouchdb:  # pouchdb-server.md, Pitfall 7: no `pending`
        assert isinstance(first["pending"], int) and first["pending"] > 0
    rest = await c.call(db.changes, since=first["last_seq"])
    assert ids_of(rest["results"]) == ["c", "d"]

    down = await c.call(db.changes, descending=True)
    assert ids_of(down["results"]) == ["d", "c", "b", "a"]
    top = await c.call(db.changes, descending=True, limit=1)
    assert ids_of(top["results"]) == ["d"]


async def test_include_docs_and_deleted(c: Client, db: Any, adb: Any) -> None:
    docs = write_in_order(adb, ["a", "b", "c"], n=1, nested={"x": [1, "é"]})
    res = await c.call(db.changes, include_docs=True)
    assert ids_of(res["results"]) == ["a", "b", "c"]
    for change, doc in zip(res["results"], docs):
        assert dict(change["doc"]) == doc  # _id, _rev and the fields, as written
        assert "deleted" not in change

    await in_thread(adb.delete, docs[1])
    res = await c.call(db.changes, include_docs=True)
    # the deletion is b's newest change, so b moves to the end of the feed
    assert ids_of(res["results"]) == ["a", "c", "b"]
    gone = res["results"][-1]
    assert gone["deleted"] is True
    assert gone["changes"][0]["rev"].startswith("2-")
    assert gone["doc"]["_deleted"] is True and gone["doc"]["_id"] == "b"
    assert all("deleted" not in change for change in res["results"][:2])


async def test_conflicts_and_all_docs_style(c: Client, db: Any, adb: Any) -> None:
    adb.save({"_id": "plain"})
    adb.save([{"_id": "x", "_rev": REV_A, "v": 1}, {"_id": "x", "_rev": REV_B, "v": 2}],
             new_edits=False)
    assert adb.get("x")["_rev"] == REV_B

    res = await c.call(db.changes)
    assert ids_of(res["results"]) == ["plain", "x"]
    assert res["results"][1]["changes"] == [{"rev": REV_B}]  # the winner only

    res = await c.call(db.changes, style="all_docs")
    x = res["results"][1]
    assert {change["rev"] for change in x["changes"]} == {REV_A, REV_B}
    assert len(res["results"][0]["changes"]) == 1

    res = await c.call(db.changes, include_docs=True, conflicts=True, style="all_docs")
    x = res["results"][1]
    assert x["doc"]["_rev"] == REV_B and x["doc"]["v"] == 2
    assert x["doc"]["_conflicts"] == [REV_A]
    assert "_conflicts" not in res["results"][0]["doc"]


async def test_doc_ids_filter(c: Client, db: Any, adb: Any) -> None:
    write_in_order(adb, ["a", "b", "c", "d"])
    res = await c.call(db.changes, doc_ids=["d", "b", "nope"])
    assert ids_of(res["results"]) == ["b", "d"]  # seq order, whatever the order asked
    again = await c.call(db.changes, doc_ids=["d", "b"], since=res["results"][0]["seq"])
    assert ids_of(again["results"]) == ["d"]
    with pytest.raises(TypeError):
        db.changes(doc_ids="a")


async def test_design_doc_and_view_filters(c: Client, db: Any, adb: Any) -> None:
    adb.save(dict(DDOC))
    for doc_id, kind in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")]:
        adb.save({"_id": doc_id, "type": kind})

    res = await c.call(db.changes, filter="f/by_type", type="a")  # read as req.query.type
    assert ids_of(res["results"]) == ["a1", "a2"]
    res = await c.call(db.changes, filter="f/by_type", type="b", include_docs=True)
    assert ids_of(res["results"]) == ["b1", "b2"]
    assert [change["doc"]["type"] for change in res["results"]] == ["b", "b"]

    res = await c.call(db.changes, filter="_view", view="f/v")
    assert ids_of(res["results"]) == ["b1", "b2"]


async def test_selector_filter(c: Client, db: Any, adb: Any, server: Server) -> None:
    for doc_id, kind in [("a1", "a"), ("b1", "b"), ("a2", "a")]:
        adb.save({"_id": doc_id, "type": kind})
    if server.pouchdb:
        # pouchdb-server.md, Pitfall 1: filter=_selector is not implemented; with
        # NODE_OPTIONS=--unhandled-rejections=warn (set by the test server) it answers 404.
        with pytest.raises(NotFound):
            await c.call(db.changes, selector={"type": "a"})
        return
    res = await c.call(db.changes, selector={"type": "a"})
    assert ids_of(res["results"]) == ["a1", "a2"]
    res = await c.call(db.changes, selector={"type": "a"}, since=res["results"][0]["seq"])
    assert ids_of(res["results"]) == ["a2"]


async def test_seq_interval_accepted(c: Client, db: Any, adb: Any) -> None:
    write_in_order(adb, ["a", "b", "c", "d", "e"])
    res = await c.call(db.changes, seq_interval=2)
    # CouchDB 3 computes only every Nth row's seq (the others may be null); pouchdb-server
    # ignores the option (pouchdb-server.md, `_changes` table). last_seq is always there.
    assert ids_of(res["results"]) == ["a", "b", "c", "d", "e"]
    assert res["last_seq"] is not None
    assert (await c.call(db.changes, since=res["last_seq"]))["results"] == []


# -- longpoll, every backend x style ---------------------------------------------------------


async def test_longpoll_waits_for_a_write(c: Client, db: Any, adb: Any) -> None:
    write_in_order(adb, ["a", "b"])
    current = (await c.call(db.changes))["last_seq"]
    write_later(0.02, lambda: adb.save({"_id": "late"}))
    started = time.monotonic()
    # timeout bounds CouchDB 3; pouchdb-server ignores it (pouchdb-server.md, Pitfall 5)
    res = await c.call(db.changes, feed="longpoll", since=current, timeout=10000)
    assert time.monotonic() - started >= 0.015  # it waited for the write
    assert ids_of(res["results"]) == ["late"]
    assert res["last_seq"] == res["results"][-1]["seq"]
    assert (await c.call(db.changes, since=current))["results"] == res["results"]


async def test_longpoll_since_now(c: Client, db: Any, adb: Any) -> None:
    write_in_order(adb, ["a", "b"])
    # "now" is when the server takes the request: the write must come after that
    write_later(REACH, lambda: adb.save({"_id": "late"}))
    started = time.monotonic()
    res = await c.call(db.changes, feed="longpoll", since="now", timeout=10000)
    assert time.monotonic() - started >= 0.8 * REACH
    assert ids_of(res["results"]) == ["late"]
    assert res["last_seq"] == res["results"][-1]["seq"]


async def test_longpoll_timeout_returns_empty(c: Client, db: Any, adb: Any,
                                              server: Server) -> None:
    if server.pouchdb:
        pytest.skip("pouchdb-server ignores timeout on longpoll and hangs "
                    "(pouchdb-server.md, Pitfall 5)")
    write_in_order(adb, ["a"])
    res = await c.call(db.changes, feed="longpoll", since="now", timeout=20)
    assert res["results"] == [] and res["last_seq"] is not None
    assert (await c.call(db.changes, since=res["last_seq"]))["results"] == []


# -- corduroy's continuous ChangesFeed, once per backend -----------------------------------------




class Calls:
    """Records ``callback(seq, changes)`` calls (from the loop, or from the blocking feed's
    reader and timer threads)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[dict[str, Any]]]] = []
        self.lock = threading.Lock()

    def __call__(self, seq: Any, changes: list[dict[str, Any]]) -> None:
        assert isinstance(changes, list) and changes
        with self.lock:
            self.calls.append((seq, list(changes)))

    def changes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [change for _, batch in self.calls for change in batch]

    def ids(self) -> list[str]:
        return ids_of(self.changes())

    def live(self) -> list[tuple[Any, list[dict[str, Any]]]]:
        """The calls after the feed was seen live (the ping docs left out)."""
        with self.lock:
            calls = list(self.calls)
        out = []
        for seq, batch in calls:
            batch = [ch for ch in batch if not ch["id"].startswith("ping")]
            if batch:
                out.append((seq, batch))
        return out


async def wait_live(adb: Any, calls: Calls) -> None:
    """A feed started ``since="now"`` misses writes made before the server set it up: write
    a ping doc every REACH until one is delivered (those written after the server set the feed
    up come too, before anything the test writes next: ``Calls.live`` leaves them out)."""
    give_up = time.monotonic() + 5
    for i in itertools.count():
        await in_thread(adb.save, {"_id": f"ping{i:02d}"})
        deadline = time.monotonic() + REACH
        while time.monotonic() < deadline:
            if any(doc_id.startswith("ping") for doc_id in calls.ids()):
                return
            await asyncio.sleep(0.005)
        if time.monotonic() > give_up:
            raise AssertionError("the feed never delivered a change")


async def test_continuous_callback_one_call_per_change(couch: Any, dbname: str,
                                                       adb: Any) -> None:
    db = couch.database(dbname)
    calls = Calls()
    errors: list[BaseException] = []
    feed = db.changes(feed="continuous", callback=calls, since="now", heartbeat=HEARTBEAT,
                      on_error=errors.append)
    try:
        assert isinstance(feed, ChangesFeed)  # the one callback-style call returning something
        assert feed.listening
        await wait_live(adb, calls)
        names = [f"d{i}" for i in range(5)]
        for name in names:
            await in_thread(adb.save, {"_id": name})
        await until(lambda: ids_of([ch for _, b in calls.live() for ch in b]) == names)
        live = calls.live()
        assert all(len(batch) == 1 for _, batch in live)  # latency=0: one call per change
        assert [batch[0]["id"] for _, batch in live] == names
        assert all(seq == batch[-1]["seq"] for seq, batch in live)
        assert feed.seq == live[-1][0]
        assert feed.listening
        # the same changes, in the same order, as the database's own feed
        delivered_ids = calls.ids()
        everything = ids_of((await in_thread(adb.changes))["results"])
        assert delivered_ids == [doc_id for doc_id in everything if doc_id in delivered_ids]
        assert everything[-5:] == names
    finally:
        feed.stop()
    assert not listening(feed)
    delivered = len(calls.calls)
    seq = feed.seq
    await in_thread(adb.save, {"_id": "after-stop"})
    await asyncio.sleep(3 * HEARTBEAT / 1000)  # the blocking feed's reader has seen bytes since
    assert len(calls.calls) == delivered  # nothing after stop()
    assert feed.seq == seq and not listening(feed)
    assert errors == []  # stopping is not an error


async def test_continuous_callback_latency_batches(couch: Any, dbname: str, adb: Any) -> None:
    db = couch.database(dbname)
    calls = Calls()
    feed = db.changes(feed="continuous", callback=calls, since="now", heartbeat=HEARTBEAT,
                      latency=LATENCY)
    try:
        await wait_live(adb, calls)
        names = [f"d{i}" for i in range(6)]
        # one _bulk_docs: all six changes reach the feed well within the latency
        await in_thread(adb.save, [{"_id": name} for name in names])
        await until(lambda: [ch["id"] for _, b in calls.live() for ch in b] == names)
        await asyncio.sleep(1.5 * LATENCY)  # a late extra call would show up now
        live = calls.live()
        assert [ch["id"] for _, batch in live for ch in batch] == names  # all, in order, once
        assert len(live) < len(names)  # batched: fewer calls than changes
        assert all(seq == batch[-1]["seq"] for seq, batch in live)
        assert feed.seq == live[-1][0]
        assert feed.listening
    finally:
        feed.stop()
    assert not listening(feed)
    delivered = len(calls.calls)
    await in_thread(adb.save, {"_id": "after-stop"})
    # > latency: the write's change is bytes for the blocking feed's reader to see stop() by
    await asyncio.sleep(LATENCY + HEARTBEAT / 1000)
    assert len(calls.calls) == delivered


async def test_continuous_burst_in_batches_of_max_batch(couch: Any, dbname: str,
                                                        adb: Any) -> None:
    """A burst does not wait for ``latency``, nor pile up: full batches of ``max_batch`` are
    handed over at once, the rest waits for its latency (here never reached)."""
    await in_thread(adb.save, [{"_id": f"b{i:02d}"} for i in range(25)])
    db = couch.database(dbname)
    calls = Calls()
    with pytest.raises(ValueError):
        db.changes(feed="continuous", callback=calls, since=0, max_batch=0)
    feed = db.changes(feed="continuous", callback=calls, since=0, heartbeat=HEARTBEAT,
                      latency=60, max_batch=10)
    try:
        await until(lambda: len(calls.calls) >= 2)
        await asyncio.sleep(LATENCY)  # the last 5 changes are in too, waiting for their batch
    finally:
        feed.stop()
    assert [len(batch) for _, batch in calls.calls] == [10, 10]
    assert calls.ids() == [f"b{i:02d}" for i in range(20)]
    assert feed.seq == calls.calls[-1][1][-1]["seq"]


async def test_continuous_feed_stopped_before_its_batch_is_due(couch: Any, dbname: str,
                                                               adb: Any) -> None:
    db = couch.database(dbname)
    calls = Calls()
    feed = db.changes(feed="continuous", callback=calls, since=0, heartbeat=HEARTBEAT,
                      latency=2.5 * REACH)
    try:
        await in_thread(adb.save, {"_id": "x"})
        # x reached the feed's batch, which is due 2.5 REACH after it arrived; stop before
        await asyncio.sleep(REACH)
    finally:
        feed.stop()
    await asyncio.sleep(2.5 * REACH)  # the batch would have been due by now
    assert calls.calls == []  # stop() drops the pending batch: nothing after stop()


async def test_continuous_without_callback_is_a_type_error(couch: Any, dbname: str) -> None:
    db = couch.database(dbname)
    for feed in ("continuous", "eventsource"):
        with pytest.raises(TypeError):
            db.changes(feed=feed)
        with pytest.raises(TypeError):
            db.changes(feed=feed, since="now", heartbeat=HEARTBEAT)
    with pytest.raises(ValueError):
        db.changes(feed="bogus")
    with pytest.raises(TypeError):
        db.changes(since=1.5)  # a seq is what the server sent: str or int
    with pytest.raises(TypeError):
        db.changes(selector="type")
    with pytest.raises(ValueError):
        db.iter_changes(feed="longpoll")


async def test_continuous_feed_ended_by_server(couch: Any, dbname: str, adb: Any,
                                               server: Server) -> None:
    if server.pouchdb:
        pytest.skip("pouchdb-server ignores limit and timeout on a continuous feed and never "
                    "ends it (pouchdb-server.md, Pitfall 5)")
    write_in_order(adb, ["a", "b", "c"])
    db = couch.database(dbname)
    calls = Calls()
    errors: list[BaseException] = []
    feed = db.changes(feed="continuous", callback=calls, since=0, limit=2, heartbeat=HEARTBEAT,
                      on_error=errors.append)
    try:
        await until(lambda: not listening(feed), timeout=10)
        assert calls.ids() == ["a", "b"]  # the last_seq line is not a change
        assert feed.seq == calls.changes()[-1]["seq"]
        assert feed.last_seq is not None
        rest = await in_thread(lambda: adb.changes(since=feed.last_seq))
        assert ids_of(rest["results"]) == ["c"]
        assert errors == []
    finally:
        feed.stop()


async def test_continuous_feed_on_missing_db_reports_not_found(couch: Any) -> None:
    db = couch.database(f"c2test-missing-{uuid.uuid4().hex[:12]}")
    calls = Calls()
    errors: list[BaseException] = []
    feed = db.changes(feed="continuous", callback=calls, on_error=errors.append, heartbeat=HEARTBEAT)
    try:
        await until(lambda: bool(errors), timeout=10)
        assert isinstance(errors[0], NotFound)
        await until(lambda: not listening(feed), timeout=5)
        await asyncio.sleep(LATENCY)  # a second error would show up now
        assert len(errors) == 1 and calls.calls == []
    finally:
        feed.stop()


# -- iter_changes, once per backend ----------------------------------------------------------


def is_blocking(couch: Any) -> bool:
    return couch.backend_name == "blocking"  # type: ignore[no-any-return]


Drained = tuple[list[Any], dict[str, Any], list[Any]]


async def drain(couch: Any, make: Callable[[], Any], stop: int | None = None,
                after_start: Callable[[], Any] | None = None) -> Drained:
    """Iterate ``make()`` (``for`` in a worker thread on the blocking backend, ``async for``
    otherwise) until it ends, or close it after ``stop`` items. Returns the items, the
    iterator's ``fields``, and what iterating it again after the end yields."""

    def sync() -> Any:
        it = make()
        watchdog = threading.Timer(20, it.close)  # a hang fails the test instead of a thread
        watchdog.daemon = True
        watchdog.start()
        try:
            out = []
            if after_start is not None:
                LOOP.call_soon_threadsafe(after_start)
            for item in it:
                out.append(item)
                if stop is not None and len(out) >= stop:
                    it.close()
                    break
            return out, it.fields, list(it)
        finally:
            watchdog.cancel()

    async def coro() -> Any:
        it = make()
        out = []
        if after_start is not None:
            after_start()
        async for item in it:
            out.append(item)
            if stop is not None and len(out) >= stop:
                it.close()
                break
        more = [item async for item in it]
        return out, it.fields, more

    if is_blocking(couch):
        return await LOOP.run_in_executor(None, sync)
    if couch.backend_name == "twisted":
        from twisted.internet.defer import Deferred

        return await Deferred.fromCoroutine(coro()).asFuture(LOOP)  # type: ignore[no-any-return]
    return await coro()  # type: ignore[no-any-return]


async def test_iter_changes_in_order_then_live_then_close(couch: Any, dbname: str,
                                                           adb: Any) -> None:
    write_in_order(adb, ["a", "b", "c", "d", "e"])
    db = couch.database(dbname)
    expected = (await in_thread(adb.changes))["results"]

    # the five already there, then two written while the feed is open
    def later() -> None:
        write_later(0.05, lambda: write_in_order(adb, ["f", "g"]))

    items, fields, more = await drain(couch, lambda: db.iter_changes(since=0, heartbeat=HEARTBEAT),
                                      stop=7, after_start=later)
    assert ids_of(items) == ["a", "b", "c", "d", "e", "f", "g"]
    assert [ch["seq"] for ch in items[:5]] == [ch["seq"] for ch in expected]
    assert all(isinstance(ch["changes"], list) for ch in items)
    assert more == []  # closed: nothing more comes out

    # closed early, with a tiny queue
    items, _, more = await drain(
        couch, lambda: db.iter_changes(since=0, heartbeat=HEARTBEAT, high_water=1), stop=2)
    assert ids_of(items) == ["a", "b"] and more == []

    # from a seq the server gave, with include_docs
    items, _, _ = await drain(
        couch, lambda: db.iter_changes(since=expected[2]["seq"], include_docs=True,
                                       heartbeat=HEARTBEAT), stop=4)
    assert ids_of(items) == ["d", "e", "f", "g"]
    assert [ch["doc"]["_id"] for ch in items] == ["d", "e", "f", "g"]

    # doc_ids travel in a POST body, on a continuous feed too
    items, _, _ = await drain(
        couch, lambda: db.iter_changes(since=0, doc_ids=["g", "b"], heartbeat=HEARTBEAT), stop=2)
    assert ids_of(items) == ["b", "g"]

    with pytest.raises(ValueError):
        db.iter_changes(feed="normal")


async def test_iter_changes_limit_ends_with_last_seq(couch: Any, dbname: str, adb: Any,
                                                     server: Server) -> None:
    if server.pouchdb:
        pytest.skip("pouchdb-server ignores limit on a continuous feed and never ends it "
                    "(pouchdb-server.md, Pitfall 5)")
    write_in_order(adb, ["a", "b", "c", "d", "e"])
    db = couch.database(dbname)
    items, fields, more = await drain(couch, lambda: db.iter_changes(since=0, limit=3,
                                                                     heartbeat=HEARTBEAT))
    assert ids_of(items) == ["a", "b", "c"]  # it ended by itself
    assert more == []
    assert fields["last_seq"] is not None
    assert isinstance(fields["pending"], int)
    rest = await in_thread(lambda: adb.changes(since=fields["last_seq"]))
    assert ids_of(rest["results"]) == ["d", "e"]

    # timeout ends a quiet feed the same way
    items, fields, _ = await drain(couch, lambda: db.iter_changes(since="now", timeout=20))
    assert items == [] and fields["last_seq"] is not None


async def test_iter_changes_eventsource(couch: Any, dbname: str, adb: Any,
                                        server: Server) -> None:
    if server.pouchdb:
        pytest.skip("pouchdb-server has no feed=eventsource: it answers with the normal feed "
                    "(pouchdb-server.md, `_changes` table and Pitfall 8)")
    write_in_order(adb, ["a", "b", "c"])
    db = couch.database(dbname)
    expected = (await in_thread(adb.changes))["results"]
    items, _, more = await drain(
        couch, lambda: db.iter_changes(feed="eventsource", since=0, heartbeat=HEARTBEAT), stop=3)
    assert ids_of(items) == ["a", "b", "c"]
    assert [ch["seq"] for ch in items] == [ch["seq"] for ch in expected]
    assert more == []


async def test_iter_changes_limit_holds_even_when_the_server_ignores_it(
        couch: Any, dbname: str, adb: Any) -> None:
    # CouchDB ends the feed after `limit` changes itself; pouchdb-server ignores `limit` on a
    # continuous feed, and corduroy2 ends it there: either way the iteration ends by itself.
    write_in_order(adb, ["a", "b", "c", "d", "e"])
    db = couch.database(dbname)
    items, fields, more = await drain(couch, lambda: db.iter_changes(since=0, limit=3,
                                                                     heartbeat=HEARTBEAT))
    assert len(items) == 3 and len(set(ids_of(items))) == 3
    assert more == []
    assert fields["last_seq"] is not None
    rest = await in_thread(lambda: adb.changes(since=fields["last_seq"]))
    assert sorted(ids_of(items) + ids_of(rest["results"])) == ["a", "b", "c", "d", "e"]


async def test_callback_feed_limit_holds_even_when_the_server_ignores_it(
        couch: Any, dbname: str, adb: Any) -> None:
    write_in_order(adb, ["a", "b", "c"])
    db = couch.database(dbname)
    calls = Calls()
    feed = db.changes(feed="continuous", callback=calls, since=0, limit=2, heartbeat=HEARTBEAT)
    try:
        await until(lambda: not listening(feed), timeout=10)
        assert len(calls.ids()) == 2
        assert feed.seq == calls.changes()[-1]["seq"]
        assert feed.last_seq is not None
    finally:
        feed.stop()
