"""A database's revisions and maintenance on every backend and calling style: ``head``,
``revisions``, ``bulk_get``, ``revs_diff``/``missing_revs``, ``purge``, ``security``,
``compact``/``cleanup``, ``revs_limit``/``purged_infos_limit``, ``shards``/``sync_shards``,
``local_docs``/``design_docs`` (buffered, streamed and iterated).

pouchdb-server lacks several of these endpoints; each test asserts CouchDB 3's documented
behaviour and branches on the named deviation (tests/conftest.py) for what pouchdb-server does.
"""

from __future__ import annotations

from typing import Any

import pytest

from corduroy2 import BadRequest, DecodeError, Document, HTTPError, NotFound
from corduroy2.api.views import Row, ViewResult

from ..conftest import Server
from .conftest import Client
from .test_iterate import drain


@pytest.fixture
def adb(admin: Any, dbname: str) -> Any:
    return admin.database(dbname)


def three_revs(adb: Any) -> list[str]:
    """Write doc "a" three times; its revs, oldest first."""
    doc: dict[str, Any] = {"_id": "a", "n": 0}
    revs = []
    for n in range(3):
        doc["n"] = n
        adb.save(doc)
        revs.append(doc["_rev"])
    return revs


async def test_head_and_revisions(c: Client, db: Any, adb: Any, server: Server) -> None:
    revs = three_revs(adb)
    assert await c.call(db.head, "missing") is None
    if server.deviates("head_etag_not_rev"):
        with pytest.raises(DecodeError, match="no rev in its ETag"):
            await c.call(db.head, "a")
    else:
        assert await c.call(db.head, "a") == revs[-1]
    assert await c.call(db.revisions, "a") == revs[::-1]
    assert await c.call(db.revisions, "a", rev=revs[1]) == revs[1::-1]
    with pytest.raises(NotFound):
        await c.call(db.revisions, "missing")


async def test_bulk_get(c: Client, db: Any, adb: Any, server: Server) -> None:
    revs = three_revs(adb)
    adb.save({"_id": "b"})
    results = await c.call(db.bulk_get, ["b", {"id": "a", "rev": revs[0]}, "nope"], revs=True)
    assert [r["id"] for r in results] == ["b", "a", "nope"]
    b, a, nope = (r["docs"] for r in results)
    assert isinstance(b[0]["ok"], Document) and b[0]["ok"].id == "b"
    assert a[0]["ok"]["_rev"] == revs[0] and a[0]["ok"]["_revisions"]["start"] == 1
    if server.deviates("bulk_get_missing_empty"):
        assert nope == [{}]
    else:
        assert nope[0]["error"]["error"] == "not_found"


async def test_revs_diff_missing_revs_and_purge(c: Client, db: Any, adb: Any,
                                                server: Server) -> None:
    revs = three_revs(adb)
    unknown = "9-" + "f" * 32
    diff = await c.call(db.revs_diff, {"a": [revs[-1], unknown]})
    assert diff["a"]["missing"] == [unknown]

    if server.deviates("no_missing_revs"):
        with pytest.raises(BadRequest):
            await c.call(db.missing_revs, {"a": [unknown]})
    else:
        assert await c.call(db.missing_revs, {"a": [revs[-1], unknown]}) == {"a": [unknown]}

    if server.deviates("no_purge"):
        with pytest.raises(BadRequest):
            await c.call(db.purge, {"a": [revs[-1]]})
        return
    reply = await c.call(db.purge, {"a": [revs[-1]]})
    assert reply["purged"] == {"a": [revs[-1]]}
    with pytest.raises(NotFound):
        adb.get("a")


async def test_security_get_and_set(c: Client, db: Any, adb: Any) -> None:
    security = {"admins": {"names": [], "roles": ["boss"]},
                "members": {"names": [], "roles": ["_admin", "staff"]}}
    # A new database's: {} on pouchdb-server, admin-only on CouchDB 3 (default_security).
    assert "staff" not in str(await c.call(db.security))
    assert await c.call(db.security, security) == {"ok": True}
    assert adb.security() == security
    assert await c.call(db.security) == security


async def test_compact_and_cleanup(c: Client, db: Any, adb: Any, server: Server) -> None:
    adb.save({"_id": "_design/d", "views": {"v": {"map": "function (d) { emit(d._id); }"}}})
    assert await c.call(db.compact) == {"ok": True}
    assert await c.call(db.cleanup) == {"ok": True}
    if server.deviates("no_compact_ddoc"):
        with pytest.raises(BadRequest):
            await c.call(db.compact, "d")
    else:
        assert await c.call(db.compact, "_design/d") == {"ok": True}
    with pytest.raises(NotFound):
        await c.call(c.couch.database("c2test-never-created").compact)


async def test_revs_limit_and_purged_infos_limit(c: Client, db: Any, adb: Any,
                                                 server: Server) -> None:
    if server.deviates("no_revs_limits"):
        with pytest.raises(NotFound):
            await c.call(db.revs_limit)
        with pytest.raises(BadRequest):
            await c.call(db.revs_limit, 5)
        with pytest.raises(NotFound):
            await c.call(db.purged_infos_limit)
        return
    assert await c.call(db.revs_limit) == 1000  # CouchDB's default
    assert await c.call(db.revs_limit, 5) == {"ok": True}
    assert await c.call(db.revs_limit) == 5
    assert await c.call(db.purged_infos_limit) == 1000
    assert await c.call(db.purged_infos_limit, 200) == {"ok": True}
    assert await c.call(db.purged_infos_limit) == 200


async def test_shards_and_sync_shards(c: Client, db: Any, server: Server) -> None:
    if server.deviates("no_shards"):
        with pytest.raises(NotFound):
            await c.call(db.shards)
        with pytest.raises(BadRequest):
            await c.call(db.sync_shards)
        return
    shards = await c.call(db.shards)
    assert shards and all(isinstance(nodes, list) and nodes for nodes in shards.values())
    holder = await c.call(db.shards, "some/doc")
    assert holder["range"] in shards and holder["nodes"] == shards[holder["range"]]
    assert await c.call(db.sync_shards) == {"ok": True}


LOCAL = [{"_id": f"_local/l{i}", "n": i} for i in range(3)]
DESIGN = [{"_id": f"_design/d{i}", "language": "javascript"} for i in range(2)]


@pytest.fixture
def special(adb: Any) -> Any:
    for doc in LOCAL + DESIGN + [{"_id": "plain"}]:
        adb.save(dict(doc))
    return adb


async def test_local_docs_and_design_docs(c: Client, db: Any, special: Any,
                                          server: Server) -> None:
    if server.deviates("no_local_design_docs"):
        for method in (db.local_docs, db.design_docs):
            with pytest.raises(NotFound):
                await c.call(method)
        return
    local = await c.call(db.local_docs, include_docs=True)
    assert isinstance(local, ViewResult)
    assert [r.id for r in local.rows] == [d["_id"] for d in LOCAL]
    assert [r.doc["n"] for r in local.rows] == [0, 1, 2]
    design = await c.call(db.design_docs, keys=["_design/d1", "_design/none"])
    assert [r.id for r in design.rows] == ["_design/d1", None]
    assert design.rows[1].error == "not_found"
    streamed: list[Row] = []
    result = await c.call(db.design_docs, on_row=streamed.append, descending=True)
    assert [r.id for r in streamed] == ["_design/d1", "_design/d0"] and not result.rows


async def test_iter_local_docs_and_design_docs(couch: Any, dbname: str, special: Any,
                                               server: Server) -> None:
    db = couch.database(dbname)
    if server.deviates("no_local_design_docs"):
        with pytest.raises(NotFound):
            await drain(couch, lambda: db.iter_local_docs())
        return
    rows, _ = await drain(couch, lambda: db.iter_local_docs(high_water=1))
    assert [r.id for r in rows] == [d["_id"] for d in LOCAL]
    rows, _ = await drain(couch, lambda: db.iter_design_docs(limit=1))
    assert [r.id for r in rows] == ["_design/d0"]


async def test_maintenance_of_a_missing_database_is_not_found(c: Client) -> None:
    gone = c.couch.database("c2test-never-created")
    for call in (gone.security, gone.cleanup):
        with pytest.raises(HTTPError) as info:
            await c.call(call)
        assert info.value.status == 404
