"""Bulk saves (``db.save([docs])`` → ``_bulk_docs``) on every backend and calling style: the
per-document outcome in a :class:`ConflictResolution`, written back revs, deletions, and the
``force``/``merge`` resolution of pending conflicts. Conflicts are reported, never raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corduroy2 import ConflictResolution, Document, NotFound

from ..conftest import LOOP, Server
from .conftest import BACKENDS, Client, make_couch


@pytest.fixture
def adb(admin: Any, dbname: str) -> Any:
    return admin.database(dbname)


def body(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("_id", "_rev")}


async def saved_three(c: Client, db: Any) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [{"_id": f"d{i}", "n": i} for i in range(3)]
    await c.call(db.save, docs)
    return docs


async def test_bulk_save(c: Client, db: Any, adb: Any) -> None:
    docs: list[dict[str, Any]] = [{"_id": f"d{i}", "n": i} for i in range(3)]
    res = await c.call(db.save, docs)
    assert isinstance(res, ConflictResolution)
    assert res.ok and res.pending == {}
    assert list(res.resolved) == ["d0", "d1", "d2"]
    assert repr(res) == "<Success: 3 docs updated>"
    for doc in docs:
        assert doc["_rev"].startswith("1-")
        assert res.resolved[doc["_id"]] is doc
        assert adb.get(doc["_id"])["_rev"] == doc["_rev"]
    assert [r["id"] for r in res.results] == ["d0", "d1", "d2"]

    for doc in docs:
        doc["n"] += 10
    again = await c.call(db.save, docs)
    assert again.ok and all(d["_rev"].startswith("2-") for d in docs)
    assert [adb.get(d["_id"])["n"] for d in docs] == [10, 11, 12]

    empty = await c.call(db.save, [])
    assert empty.ok and empty.resolved == {} and repr(empty) == "<Success: 0 docs updated>"


async def test_bulk_conflict_is_pending_not_raised(c: Client, db: Any, adb: Any) -> None:
    docs = await saved_three(c, db)
    theirs = adb.get("d1")
    theirs["n"] = "theirs"
    adb.save(theirs)  # docs[1] is now stale
    stale_rev = docs[1]["_rev"]
    for doc in docs:
        doc["n"] = "mine"
    original = dict(docs[1])

    res = await c.call(db.save, docs)  # callback style: status.ok (checked by Client.call)
    assert isinstance(res, ConflictResolution) and not res.ok
    assert list(res.pending) == ["d1"]
    pending = res.pending["d1"]
    assert pending.error == "conflict"
    assert pending.doc is docs[1] and pending.doc == original
    assert docs[1]["_rev"] == stale_rev
    assert sorted(res.resolved) == ["d0", "d2"]
    assert repr(res) == "<Conflicts: d1>"
    assert adb.get("d1")["n"] == "theirs"
    assert adb.get("d0")["n"] == adb.get("d2")["n"] == "mine"
    assert docs[0]["_rev"].startswith("2-") and docs[2]["_rev"].startswith("2-")


async def test_bulk_missing_ids_are_filled(c: Client, db: Any, adb: Any) -> None:
    docs: list[dict[str, Any]] = [{"n": i} for i in range(3)]
    res = await c.call(db.save, docs)
    assert res.ok
    ids = [d["_id"] for d in docs]
    assert len(set(ids)) == 3 and all(isinstance(i, str) and i for i in ids)
    assert sorted(res.resolved) == sorted(ids)
    for doc in docs:
        assert adb.get(doc["_id"]) == doc


async def test_bulk_delete(c: Client, db: Any, adb: Any) -> None:
    docs = await saved_three(c, db)
    docs[1]["_deleted"] = True
    docs[2]["n"] = 20
    res = await c.call(db.save, docs[1:])
    assert res.ok and sorted(res.resolved) == ["d1", "d2"]
    assert docs[1]["_rev"].startswith("2-")
    with pytest.raises(NotFound):
        adb.get("d1")
    with pytest.raises(NotFound):
        await c.call(db.get, "d1")
    assert adb.get("d2")["n"] == 20
    assert adb.get("d0")["n"] == 0


async def test_bulk_force(c: Client, db: Any, adb: Any) -> None:
    docs = await saved_three(c, db)
    for name in ("d0", "d2"):
        theirs = adb.get(name)
        theirs["n"] = "theirs"
        adb.save(theirs)
    for doc in docs:
        doc["n"] = "mine"

    res = await c.call(db.save, docs, force=True)
    assert res.ok and res.pending == {}
    assert sorted(res.resolved) == ["d0", "d1", "d2"]
    for doc in docs:
        server = adb.get(doc["_id"])
        assert server["n"] == "mine" and server["_rev"] == doc["_rev"]
    assert docs[0]["_rev"].startswith("3-") and docs[1]["_rev"].startswith("2-")


async def test_bulk_force_after_a_concurrent_delete(c: Client, db: Any, adb: Any) -> None:
    docs = await saved_three(c, db)
    adb.delete(adb.get("d1"))
    for doc in docs:
        doc["n"] = "mine"
    res = await c.call(db.save, docs, force=True)
    assert res.ok and sorted(res.resolved) == ["d0", "d1", "d2"]
    server = adb.get("d1")
    assert server["n"] == "mine" and server["_rev"] == docs[1]["_rev"]


async def test_bulk_merge(c: Client, db: Any, adb: Any) -> None:
    docs = [{"_id": f"d{i}", "mine": 0, "theirs": 0} for i in range(3)]
    await c.call(db.save, docs)
    for name in ("d0", "d1"):
        theirs = adb.get(name)
        theirs["theirs"] = 1
        adb.save(theirs)
    for doc in docs:
        doc["mine"] = 1

    seen: list[tuple[str, Any]] = []

    def merge(local: dict[str, Any], server: dict[str, Any]) -> dict[str, Any] | None:
        seen.append((local["_id"], server))
        if local["_id"] == "d1":
            return None  # give up on this one: it stays pending
        local["theirs"] = server["theirs"]
        return local

    res = await c.call(db.save, docs, merge=merge)
    assert sorted(name for name, _ in seen) == ["d0", "d1"]
    assert all(isinstance(server, Document) and server.theirs == 1 for _, server in seen)
    assert sorted(res.resolved) == ["d0", "d2"]
    assert list(res.pending) == ["d1"] and res.pending["d1"].error == "conflict"

    assert body(adb.get("d0")) == {"mine": 1, "theirs": 1}
    assert adb.get("d0")["_rev"] == docs[0]["_rev"]
    assert body(adb.get("d1")) == {"mine": 0, "theirs": 1}
    assert body(adb.get("d2")) == {"mine": 1, "theirs": 0}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_bulk_bad_doc_raises_at_once(backend: str, server: Server, adb: Any) -> None:
    # The same for every calling style, so once per backend rather than over the matrix.
    couch = make_couch(backend, server.url, server.auth)
    db = couch.database(adb.name)
    good = {"_id": "good"}
    calls: list[Any] = []
    try:
        with pytest.raises(TypeError):
            db.save([good, object()])
        with pytest.raises(TypeError):
            db.save([good, object()], callback=lambda *a: calls.append(a))
        await asyncio.sleep(0.01)  # a late callback would show up here
        assert calls == []
        assert good == {"_id": "good"}
        with pytest.raises(NotFound):
            adb.get("good")
    finally:
        closing = couch.close()
        if closing is not None and hasattr(closing, "asFuture"):
            await closing.asFuture(LOOP)


async def test_bulk_new_edits_false(c: Client, db: Any, adb: Any) -> None:
    rev = "1-" + "c" * 32
    docs = [{"_id": "r", "_rev": rev, "from": "replication"},
            {"_id": "s", "_rev": rev, "from": "replication"}]
    res = await c.call(db.save, docs, new_edits=False)
    # CouchDB 3 answers only for the docs it refused (here: none, an empty list).
    assert res.pending == {}
    assert set(res.resolved) == {"r", "s"}
    assert adb.get("r")["_rev"] == rev
