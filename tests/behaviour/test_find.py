"""Mango on every backend and calling style: ``find`` (docs, fields, sort, limit, skip, and the
``warning``/``bookmark``/``execution_stats`` CouchDB sends after the docs), indexes
(``create_index``, ``indexes``, ``explain``, ``delete_index``), ``on_row``/``on_rows``, and
``find_pages`` (per backend: it is an iterator, not a calling style).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corduroy2 import BadRequest, Document
from corduroy2.api.views import FindResult

from ..conftest import LOOP, Server
from .conftest import Client, record_requests

N = 8
# n is a permutation of 0..7 unrelated to the ids
DOCS = [{"_id": f"f{i}", "type": "x", "n": (i * 3) % N, "name": f"name{i}"} for i in range(N)]
OTHER = {"_id": "other", "type": "y"}
ALL_X = {f"f{i}" for i in range(N)}


@pytest.fixture
def adb(admin: Any, dbname: str) -> Any:
    result = admin.database(dbname).save([dict(d) for d in DOCS] + [dict(OTHER)])
    assert not result.pending
    return admin.database(dbname)




def ns(result: Any) -> list[Any]:
    return [doc["n"] for doc in result.docs]


async def test_find_docs_fields_and_trailing_members(
    c: Client, db: Any, adb: Any, server: Server
) -> None:
    result = await c.call(db.find, {"type": "x"})
    assert isinstance(result, FindResult)
    assert len(result) == N and {d["_id"] for d in result} == ALL_X
    for doc in result.docs:
        assert isinstance(doc, Document)
        assert doc == adb.get(doc.id)
    # no index: CouchDB 3 still answers, with a warning (pouchdb-server.md, Mango: "warning
    # appears when no index is used")
    assert isinstance(result.warning, str) and result.warning
    if server.pouchdb:
        # pouchdb-server.md, Mango: "No bookmark (so no bookmark paging), no execution_stats"
        assert result.bookmark is None
    else:
        assert isinstance(result.bookmark, str) and result.bookmark

    picked = await c.call(db.find, {"type": "x", "n": {"$gte": 5}}, fields=["_id", "n"])
    assert sorted(d["n"] for d in picked) == [5, 6, 7]
    assert all(set(d) == {"_id", "n"} for d in picked.docs)

    assert len(await c.call(db.find, {"type": "x"}, limit=3)) == 3
    assert len(await c.call(db.find, {"type": "x"}, skip=6)) == 2
    assert len(await c.call(db.find, {"type": "nope"})) == 0

    stats = await c.call(db.find, {"type": "x"}, execution_stats=True)
    assert len(stats) == N
    if server.pouchdb:
        assert stats.execution_stats is None  # pouchdb-server.md, Mango: no execution_stats
    else:
        assert stats.execution_stats["results_returned"] == N
        assert stats.execution_stats["total_docs_examined"] >= N

    with pytest.raises(TypeError):
        db.find(["type"])


async def test_index_sort_explain_delete(c: Client, db: Any, adb: Any) -> None:
    created = await c.call(db.create_index, ["n"], ddoc="idx", name="by-n")
    assert created == {"result": "created", "id": "_design/idx", "name": "by-n"}
    again = await c.call(db.create_index, ["n"], ddoc="idx", name="by-n")
    assert again["result"] == "exists"

    indexes = await c.call(db.indexes)
    by_name = {index["name"]: index for index in indexes}
    assert "_all_docs" in by_name and by_name["_all_docs"]["type"] == "special"
    assert by_name["by-n"]["ddoc"] == "_design/idx" and by_name["by-n"]["type"] == "json"
    assert by_name["by-n"]["def"]["fields"] == [{"n": "asc"}]

    # ($gte: pouchdb-server ignores skip with a $gt range on an index; not in pouchdb-server.md)
    everything = {"n": {"$gte": 0}}
    assert ns(await c.call(db.find, everything, sort=["n"])) == list(range(N))
    assert ns(await c.call(db.find, everything, sort=[{"n": "desc"}])) == list(range(N))[::-1]
    assert ns(await c.call(db.find, everything, sort=["n"], limit=3)) == [0, 1, 2]
    assert ns(await c.call(db.find, everything, sort=["n"], skip=2, limit=3)) == [2, 3, 4]
    assert ns(await c.call(db.find, {"n": {"$gte": 6}}, sort=["n"])) == [6, 7]

    plan = await c.call(db.explain, everything, sort=["n"])
    assert plan["index"]["name"] == "by-n" and plan["index"]["ddoc"] == "_design/idx"

    with pytest.raises(BadRequest) as info:  # no index can sort on "name"
        await c.call(db.find, {"type": "x"}, sort=["name"])
    assert info.value.status == 400

    assert (await c.call(db.delete_index, "idx", "by-n"))["ok"] is True
    names = {index["name"] for index in await c.call(db.indexes)}
    assert "by-n" not in names and "_all_docs" in names
    plan = await c.call(db.explain, everything)
    assert plan["index"]["name"] == "_all_docs"

    # "_design/" may be given or not
    await c.call(db.create_index, [{"name": "asc"}], ddoc="_design/idx2", name="by-name")
    assert "by-name" in {index["name"] for index in await c.call(db.indexes)}
    await c.call(db.delete_index, "_design/idx2", "by-name")
    assert "by-name" not in {index["name"] for index in await c.call(db.indexes)}


async def test_find_on_row_and_on_rows(c: Client, db: Any, adb: Any) -> None:
    await c.call(db.create_index, ["n"], ddoc="idx", name="by-n")
    full = await c.call(db.find, {"n": {"$gte": 0}}, sort=["n"])

    seen: list[Any] = []
    result = await c.call(db.find, {"n": {"$gte": 0}}, sort=["n"], on_row=seen.append)
    assert seen == full.docs and ns(full) == list(range(N))
    assert all(isinstance(doc, Document) for doc in seen)
    assert result.docs == [] and len(result) == 0
    assert result.bookmark == full.bookmark

    batches: list[Any] = []
    result = await c.call(db.find, {"type": "x"}, on_rows=batches.append)
    assert batches and all(isinstance(batch, list) and batch for batch in batches)
    assert {doc["_id"] for batch in batches for doc in batch} == ALL_X
    assert sum(map(len, batches)) == N
    assert result.docs == []
    assert isinstance(result.warning, str)  # the members after the docs still arrive


# -- find_pages: per backend ------------------------------------------------------------------




async def collect(couch: Any, pages: Any, stop_after: int | None = None) -> list[Any]:
    """Iterate ``pages`` the backend's way (``for`` in a thread, or ``async for``)."""
    if couch.backend_name == "blocking":
        def run() -> list[Any]:
            out = []
            for page in pages:
                out.append(page)
                if stop_after is not None and len(out) >= stop_after:
                    break
            return out

        return await LOOP.run_in_executor(None, run)

    async def body() -> list[Any]:
        out = []
        async for page in pages:
            out.append(page)
            if stop_after is not None and len(out) >= stop_after:
                break
        return out

    if couch.backend_name == "twisted":
        from twisted.internet.defer import Deferred

        return await Deferred.fromCoroutine(body()).asFuture(LOOP)
    return await body()


async def test_find_pages(couch: Any, dbname: str, adb: Any, server: Server) -> None:
    db = couch.database(dbname)
    sent = record_requests(couch)
    pages = db.find_pages({"type": "x"}, page_size=3)
    await asyncio.sleep(0.01)
    assert sent == []  # nothing is fetched before the first page is asked for

    got = await collect(couch, pages)
    assert all(isinstance(page, FindResult) for page in got)
    ids = [doc["_id"] for page in got for doc in page.docs]
    assert len(ids) == len(set(ids))
    if server.pouchdb:
        # pouchdb-server.md, Mango: "No bookmark (so no bookmark paging)": the first page ends it
        assert [len(page) for page in got] == [3]
    else:
        assert [len(page) for page in got] == [3, 3, 2]
        assert set(ids) == ALL_X
    assert len(sent) == len(got)

    # pages are fetched only when asked for: stopping after one costs one request
    del sent[:]
    first = await collect(couch, db.find_pages({"type": "x"}, page_size=3), stop_after=1)
    assert [len(page) for page in first] == [3]
    await asyncio.sleep(0.02)  # a page fetched ahead would have been asked for by now
    assert len(sent) == 1

    with pytest.raises(ValueError):
        db.find_pages({"type": "x"}, page_size=0)
    with pytest.raises(TypeError):
        db.find_pages("type")
