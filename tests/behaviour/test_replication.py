"""Replication on every backend and style: ``replicate`` (``POST /_replicate``), ``push`` and
``pull``, and ``start_replication``'s handle (``state``, ``wait``, ``cancel``), against the real
server; then ``wait`` following ``_scheduler/docs`` through CouchDB 3's states (which
pouchdb-server has no scheduler to show) against a loopback server answering like CouchDB 3.

CouchDB 3 is given each side as ``{"url", "auth": {"basic": ...}}`` (the handles carry the
admin's credentials). pouchdb-server fails on that form (deviation
``replication_endpoint_objects``); its databases are open to anonymous users, so there the
replication runs through an anonymous handle, whose sides are plain URLs.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from corduroy2 import NotFound, Replication, ReplicationFailed, ReplicationState, Timeout

from ..conftest import Server
from ..support.faultserver import FaultServer, Reply
from ..support.wait import until
from .conftest import BACKENDS, Client, fresh_database, make_couch
from .test_server_admin import close_async

DOCS = [{"_id": f"d{i}", "n": i} for i in range(3)]
#: A URL with userinfo: what must never be sent, logged or shown.
USERINFO = re.compile(r"https?://[^/\"'\s]*@")


@pytest.fixture
def rc(c: Client, server: Server) -> Iterator[Client]:
    """The client that replicates: ``c`` itself, or on pouchdb-server the same backend and
    style without credentials (see the module docstring)."""
    if not server.deviates("replication_endpoint_objects"):
        yield c
        return
    anonymous = make_couch(c.backend, server.url, None)
    yield Client(c.backend, c.style, anonymous)
    closing = anonymous.close()
    if closing is not None and hasattr(closing, "asFuture"):
        from ..conftest import LOOP

        LOOP.run_until_complete(closing.asFuture(LOOP))


@pytest.fixture
def source(admin: Any) -> Iterator[str]:
    for name in fresh_database(admin):
        assert not admin.database(name).save([dict(d) for d in DOCS]).pending
        yield name


@pytest.fixture
def target(admin: Any) -> Iterator[str]:
    yield from fresh_database(admin)


def ids(admin: Any, name: str) -> list[str]:
    return [row.id for row in admin.database(name).all_docs()]


async def test_replicate_push_and_pull(rc: Client, server: Server, admin: Any, source: str,
                                       target: str) -> None:
    src, tgt = rc.couch.database(source), rc.couch.database(target)
    reply = await rc.call(src.push, tgt, doc_ids=["d1"])
    assert reply["ok"] is True
    if server.deviates("replicate_ignores_doc_ids"):
        assert ids(admin, target) == ["d0", "d1", "d2"]
    else:
        assert ids(admin, target) == ["d1"]
    reply = await rc.call(tgt.pull, src)
    assert reply["ok"] is True and ids(admin, target) == ["d0", "d1", "d2"]
    admin.database(source).save({"_id": "d9"})
    assert (await rc.call(rc.couch.replicate, source, target))["ok"] is True  # by name
    assert ids(admin, target) == ["d0", "d1", "d2", "d9"]


async def test_a_continuous_replicate_is_cancelled_by_the_same_call(
        c: Client, server: Server, admin: Any, source: str, target: str) -> None:
    if server.deviates("replicate_continuous_uncancellable"):
        pytest.skip("pouchdb-server cannot cancel a continuous _replicate")
    src, tgt = c.couch.database(source), c.couch.database(target)
    started = await c.call(src.push, tgt, continuous=True)
    assert started["ok"] is True and started["_local_id"]
    try:
        admin.database(source).save({"_id": "live"})
        await until(lambda: "live" in ids(admin, target), timeout=30)
    finally:
        stopped = await c.call(src.push, tgt, continuous=True, cancel=True)
    assert stopped["ok"] is True and stopped["_local_id"] == started["_local_id"]
    jobs = await c.call(c.couch.scheduler_jobs)
    assert started["_local_id"] not in [job["id"] for job in jobs["jobs"]]


# _replicator documents are written by ``c`` (an admin: pouchdb-server wants one too); the
# sides are ``rc``'s handles.

async def test_start_replication_wait_state_and_cancel(c: Client, rc: Client, admin: Any,
                                                       source: str, target: str) -> None:
    replication = await c.call(c.couch.start_replication, rc.couch.database(source),
                               rc.couch.database(target), f"c2rep-{uuid.uuid4().hex[:8]}")
    assert isinstance(replication, Replication) and replication.couch is c.couch
    seen: list[ReplicationState] = []
    final = await c.call(replication.wait, on_progress=seen.append, interval=0.05)
    assert isinstance(final, ReplicationState)
    assert final.state == "completed" and final.info["docs_written"] == 3
    assert seen[-1] == final and all(s.state != "failed" for s in seen)
    assert ids(admin, target) == ["d0", "d1", "d2"]
    assert (await c.call(replication.state)).state == "completed"
    assert (await c.call(replication.cancel))["ok"] is True
    with pytest.raises(NotFound):
        await c.call(replication.state)


async def test_a_continuous_replication_runs_until_cancelled(c: Client, rc: Client, admin: Any,
                                                             source: str, target: str) -> None:
    replication = await c.call(c.couch.start_replication, rc.couch.database(source),
                               rc.couch.database(target), continuous=True)
    try:
        running = await c.call(replication.wait, until="running", interval=0.05, timeout=30)
        assert running.state == "running"
        admin.database(source).save({"_id": "live"})
        await until(lambda: "live" in ids(admin, target), timeout=30)
    finally:
        await c.call(replication.cancel)
    with pytest.raises(NotFound):
        await c.call(replication.state)


async def test_a_crashing_replication_fails_with_couchdbs_reason(c: Client, server: Server,
                                                                 target: str) -> None:
    if server.deviates("replicate_creates_missing_source"):
        # pouchdb-server would try to create the source as an anonymous user, which hangs it.
        pytest.skip("pouchdb-server creates a missing source")
    replication = await c.call(c.couch.start_replication, "c2test-missing-source", target)
    try:
        with pytest.raises(ReplicationFailed) as failure:
            await c.call(replication.wait, interval=0.02, timeout=30)
        assert failure.value.state in ("crashing", "error")
        assert "db_not_found" in (failure.value.reason or "")
        assert failure.value.doc_id == replication.id
    finally:
        await c.call(replication.cancel)


# -- wait() through CouchDB 3's scheduler states, from a loopback server --------------------------

SECRET = "pw-Rq5-replication"
SCHEDULER = "/_scheduler/docs/_replicator/rep1"


def entry(state: str, written: int | None = None, error: str | None = None) -> Reply:
    """A ``_scheduler/docs`` entry as CouchDB 3 writes it."""
    info: Any = {"error": error} if error else (
        None if written is None else {"docs_read": written, "docs_written": written,
                                      "doc_write_failures": 0, "changes_pending": 0})
    return Reply.json({"database": "_replicator", "doc_id": "rep1", "id": "a1b2+continuous",
                       "info": info, "state": state, "node": "node1@127.0.0.1",
                       "source": "http://127.0.0.1/src/", "target": "http://127.0.0.1/tgt/",
                       "error_count": 1 if error else 0, "start_time": "2026-12-04T10:00:00Z",
                       "last_updated": "2026-12-04T10:00:00Z"})


NOT_YET = Reply.json({"error": "not_found", "reason": "missing"}, 404)


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        server.add("PUT", "/_replicator/rep1",
                   Reply.json({"ok": True, "id": "rep1", "rev": "1-a"}, 201))
        server.add("GET", "/_replicator/rep1",
                   Reply.json({"_id": "rep1", "_rev": "1-a", "source": "x", "target": "y"}))
        yield server
        assert server.errors == []


@pytest.fixture
def remote(c: Client, fault: FaultServer) -> Iterator[Client]:
    """``c``'s backend and style, on the loopback server, with a password to keep secret."""
    couch = make_couch(c.backend, fault.url, ("ann", SECRET))
    yield Client(c.backend, c.style, couch)
    closing = couch.close()
    if closing is not None and hasattr(closing, "asFuture"):
        from ..conftest import LOOP

        LOOP.run_until_complete(closing.asFuture(LOOP))


async def test_wait_follows_the_scheduler_to_completion(remote: Client,
                                                        fault: FaultServer) -> None:
    couch = remote.couch
    fault.add("GET", SCHEDULER, [NOT_YET, entry("initializing"), entry("running", 1),
                                 entry("running", 1), entry("running", 2),
                                 entry("completed", 3)])
    replication = await remote.call(couch.start_replication, couch.database("src"),
                                    "http://bob:s3cret@elsewhere:5984/tgt", "rep1",
                                    continuous=False, create_target=True)
    seen: list[Any] = []
    final = await remote.call(replication.wait, on_progress=seen.append, interval=0.002)
    assert final.state == "completed" and final.info["docs_written"] == 3
    # the document's own state while the scheduler had not seen it, then each change once
    assert [(s.state, (s.info or {}).get("docs_written")) for s in seen] == [
        ("initializing", None), ("initializing", None), ("running", 1), ("running", 2),
        ("completed", 3)]
    assert len(fault.received("GET", SCHEDULER)) == 6
    (put,) = fault.received("PUT", "/_replicator/rep1")
    assert orjson.loads(put.body) == {
        "_id": "rep1", "create_target": True,
        "source": {"url": f"{fault.url}/src",
                   "auth": {"basic": {"username": "ann", "password": SECRET}}},
        "target": {"url": "http://elsewhere:5984/tgt",
                   "auth": {"basic": {"username": "bob", "password": "s3cret"}}}}


async def test_wait_fails_with_the_reason_of_a_crash(remote: Client, fault: FaultServer) -> None:
    replication = remote.couch.replication("rep1")
    reason = "db_not_found: could not open http://127.0.0.1/missing/"
    fault.add("GET", SCHEDULER, [entry("running", 0), entry("crashing", error=reason)])
    with pytest.raises(ReplicationFailed) as failure:
        await remote.call(replication.wait, interval=0.002)
    assert (failure.value.state, failure.value.reason, failure.value.doc_id) == (
        "crashing", reason, "rep1")
    assert failure.value.details["error_count"] == 1

    # CouchDB retries a crashing replication: sat out, it can still complete...
    fault.add("GET", SCHEDULER, [entry("crashing", error=reason), entry("running", 1),
                                 entry("completed", 3)])
    final = await remote.call(replication.wait, interval=0.002, sit_out_crashes=True)
    assert final.state == "completed"
    # ...but failed is final, sat out or not
    fault.add("GET", SCHEDULER, [entry("failed", error="duplicate replication")])
    with pytest.raises(ReplicationFailed, match="duplicate replication"):
        await remote.call(replication.wait, interval=0.002, sit_out_crashes=True)
    # and a replication that does not end within the timeout
    fault.add("GET", SCHEDULER, [entry("running", 1)])
    with pytest.raises(Timeout):
        await remote.call(replication.wait, interval=0.002, timeout=0.02)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_no_password_in_a_url_a_log_line_or_a_repr(
        backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    with FaultServer() as fault:
        fault.add("POST", "/_replicate", Reply.json({"error": "unauthorized",
                                                     "reason": "nope"}, 401))
        fault.add("PUT", "/_replicator/rep1", Reply.json({"ok": True, "id": "rep1"}, 201))
        fault.add("GET", SCHEDULER, entry("failed", error="bad"))
        couch = make_couch(backend, f"http://ann:{SECRET}@127.0.0.1:{fault.port}", None)
        from .test_iterate import run

        def sync() -> None:
            for call in (lambda: couch.database("a").push(f"http://ann:{SECRET}@h/b"),
                         lambda: couch.start_replication("a", "b", "rep1").wait()):
                try:
                    call()
                except Exception as exc:
                    shown.extend([str(exc), repr(exc)])

        async def coro() -> None:
            for call in (lambda: couch.database("a").push(f"http://ann:{SECRET}@h/b"),
                         lambda: couch.start_replication("a", "b", "rep1")):
                try:
                    handle = await call()
                    shown.append(repr(handle))
                    await handle.wait()
                except Exception as exc:
                    shown.extend([str(exc), repr(exc)])

        try:
            await run(couch, sync, coro)
        finally:
            await close_async(couch)
        bodies = [r.body.decode() for r in fault.requests]
    shown += [repr(couch), repr(couch.database("a")), repr(couch.replication("rep1"))]
    shown += [record.getMessage() for record in caplog.records]
    assert len(shown) >= 6 and len(bodies) == 3
    assert SECRET in bodies[0]  # in CouchDB's auth member, as it must be: but never in a URL
    for text in bodies:
        assert not USERINFO.search(text), text
    for text in shown:
        assert SECRET not in text and not USERINFO.search(text), text
