"""Server administration on every backend and style: ``up``, ``dbs_info``, ``tasks``,
``membership``, a node's config, stats and system figures, the replication scheduler, users,
and ``_db_updates`` (normal feed here; the continuous one, which pouchdb-server lacks, against a
loopback server answering like CouchDB 3).

CouchDB 3's documented behaviour is asserted; pouchdb-server's gaps are the named deviations in
tests/conftest.py."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest

from corduroy2 import BadRequest, Conflict, NotFound

from ..conftest import LOOP, Server
from ..support.faultserver import FaultServer, Reply
from .conftest import BACKENDS, Client, make_couch
from .test_iterate import drain, run


async def close_async(couch: Any) -> None:
    """Close ``couch`` from inside a test, waiting for Twisted's pool to let go."""
    closing = couch.close()
    if closing is not None and hasattr(closing, "asFuture"):
        await closing.asFuture(LOOP)


async def node_of(c: Client, server: Server) -> str:
    """``_local`` (the node answering), or where that is missing a node named by
    ``_membership``, which pouchdb-server does serve."""
    if server.deviates("node_local_missing"):
        with pytest.raises(NotFound):
            await c.call(c.couch.config, "couchdb")
        return (await c.call(c.couch.membership))["all_nodes"][0]  # type: ignore[no-any-return]
    return "_local"


async def test_up(c: Client, server: Server) -> None:
    if server.deviates("no_up"):
        with pytest.raises(NotFound):
            await c.call(c.couch.up)
        return
    assert (await c.call(c.couch.up))["status"] == "ok"


async def test_membership_and_a_config_value_round_trip(c: Client, server: Server) -> None:
    membership = await c.call(c.couch.membership)
    assert membership["all_nodes"] and set(membership["cluster_nodes"]) >= set(
        membership["all_nodes"])
    node = await node_of(c, server)
    assert isinstance(await c.call(c.couch.config, node=node), dict)
    assert isinstance(await c.call(c.couch.config, "couchdb", node=node), dict)
    key = f"k-{c.backend}-{c.style}"
    assert await c.call(c.couch.set_config, "corduroy2_test", key, "v1", node=node) == ""
    try:
        assert await c.call(c.couch.set_config, "corduroy2_test", key, "v/2 ü",
                            node=node) == "v1"
        assert await c.call(c.couch.config, "corduroy2_test", key, node=node) == "v/2 ü"
    finally:
        assert await c.call(c.couch.delete_config, "corduroy2_test", key, node=node) == "v/2 ü"
    with pytest.raises(NotFound):
        await c.call(c.couch.config, "corduroy2_test", key, node=node)


async def test_stats_system_and_tasks(c: Client, server: Server) -> None:
    node = await node_of(c, server)
    stats = await c.call(c.couch.stats, node=node)
    if not server.deviates("stats_stub"):
        assert "couchdb" in stats
        metric = await c.call(c.couch.stats, "couchdb/request_time", node=node)
        assert metric["type"] == "histogram" and "value" in metric
    if server.deviates("no_system"):
        with pytest.raises(NotFound):
            await c.call(c.couch.system, node=node)
    else:
        system = await c.call(c.couch.system, node=node)
        assert "memory" in system and "uptime" in system
    assert isinstance(await c.call(c.couch.tasks), list)


async def test_dbs_info(c: Client, server: Server, dbname: str) -> None:
    if server.deviates("no_dbs_info"):
        with pytest.raises(NotFound):
            await c.call(c.couch.dbs_info, [dbname])
        return
    found, missing = await c.call(c.couch.dbs_info, [dbname, "c2test-never-created"])
    assert found["key"] == dbname and found["info"]["db_name"] == dbname
    assert missing["key"] == "c2test-never-created" and missing["error"] == "not_found"


async def test_scheduler(c: Client, server: Server) -> None:
    if server.deviates("no_scheduler"):
        for method in (c.couch.scheduler_jobs, c.couch.scheduler_docs):
            with pytest.raises(NotFound):
                await c.call(method)
        return
    jobs = await c.call(c.couch.scheduler_jobs, limit=5)
    assert isinstance(jobs["jobs"], list) and "total_rows" in jobs
    docs = await c.call(c.couch.scheduler_docs)
    assert isinstance(docs["docs"], list)
    with pytest.raises(NotFound):
        await c.call(c.couch.scheduler_docs, "_replicator", "c2test-no-such-replication")


async def test_create_user(c: Client, admin: Any) -> None:
    name = f"c2user-{uuid.uuid4().hex[:10]}"
    reply = await c.call(c.couch.create_user, name, "pw-c2test", ["c2role"])
    try:
        assert reply["ok"] and reply["id"] == f"org.couchdb.user:{name}"
        user = await c.call(c.couch.users.get, reply["id"])
        assert (user.name, user.roles, user.type) == (name, ["c2role"], "user")
        assert "password" not in user  # the server keeps only a derived key
        with pytest.raises(Conflict):
            await c.call(c.couch.create_user, name, "other")
    finally:
        admin.users.delete(admin.users.get(f"org.couchdb.user:{name}"))


async def test_db_updates(c: Client, server: Server, admin: Any) -> None:
    if server.deviates("no_db_updates"):
        with pytest.raises(BadRequest):
            await c.call(c.couch.db_updates)
        return
    if "_global_changes" not in admin.all_dbs():
        # CouchDB 3 answers 404 on a node set up without the _global_changes database.
        with pytest.raises(NotFound):
            await c.call(c.couch.db_updates)
        return
    updates = await c.call(c.couch.db_updates, limit=5)
    assert isinstance(updates["results"], list) and "last_seq" in updates
    for update in updates["results"]:
        assert {"db_name", "type", "seq"} <= set(update)


# -- the continuous _db_updates feed, from a server answering like CouchDB 3 ----------------

UPDATES = [{"db_name": "a", "type": "created", "seq": "1-g1"},
           {"db_name": "a", "type": "updated", "seq": "2-g1"},
           {"db_name": "b/c", "type": "deleted", "seq": "3-g1"}]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_iter_db_updates_streams_the_feed_like_changes(backend: str) -> None:
    # CouchDB 3's framing: one event per line, blank-line heartbeats, and with limit a last
    # line holding last_seq. The chunks split a line and a heartbeat arrives between events.
    lines = [orjson.dumps(u) + b"\n" for u in UPDATES]
    chunks = [lines[0] + b"\n", lines[1][:9], lines[1][9:], b"\n",
              lines[2] + b'{"last_seq":"3-g1","pending":0}\n']
    # The normal feed, framed as CouchDB 3 frames _changes: mixed LF and CRLF.
    normal = (b'{"results":[\n' + b",\r\n".join(orjson.dumps(u) for u in UPDATES)
              + b'\n],\n"last_seq":"3-g1"}\n')
    with FaultServer() as fault:
        fault.add("GET", "/_db_updates", [
            Reply(headers={"Content-Type": "application/json"}, chunks=chunks),
            Reply(headers={"Content-Type": "application/json"}, body=normal, writes=[5, 40])])
        remote = make_couch(backend, fault.url, None)
        try:
            items, fields = await drain(remote, lambda: remote.iter_db_updates(since="0"))
            def longpoll() -> Any:
                return remote.db_updates(since="0", feed="longpoll")

            async def longpoll_awaited() -> Any:
                return await longpoll()

            page = await run(remote, longpoll, longpoll_awaited)
        finally:
            await close_async(remote)
        continuous, longpoll = fault.received("GET", "/_db_updates")
        assert fault.errors == []
    assert items == UPDATES
    assert fields["last_seq"] == "3-g1"
    assert page == {"results": UPDATES, "last_seq": "3-g1"}
    query = parse_qs(continuous.query)
    assert query["feed"] == ["continuous"] and query["since"] == ["0"]
    assert "heartbeat" in query  # a quiet feed must not be taken for a dead one
    assert parse_qs(longpoll.query)["feed"] == ["longpoll"]
    with pytest.raises(ValueError):
        remote.db_updates(feed="continuous")  # that is iter_db_updates()
