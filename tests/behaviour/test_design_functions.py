"""Design-document functions on every backend and calling style: ``show``, ``list`` and
``update`` (whose answers are whole responses: ``.body``, ``.headers``, ``.json()``), and
``view_queries`` (several queries of one view in one request)."""

from __future__ import annotations

from typing import Any

import pytest

from corduroy2 import BadRequest, NotFound
from corduroy2.api.views import ViewResult
from corduroy2.protocol.responses import Response

from ..conftest import Server
from .conftest import Client

DDOC = {
    "_id": "_design/f",
    "views": {"by_n": {"map": "function (d) { if (d.n !== undefined) emit(d.n, d.n * 10); }"}},
    "shows": {
        "who": """function (doc, req) {
            return {headers: {"X-Show": "yes", "Content-Type": "application/json"},
                    body: JSON.stringify({id: doc ? doc._id : null, q: req.query.q || null})};
        }""",
    },
    "lists": {
        "keys": """function (head, req) {
            var row, keys = [];
            while ((row = getRow())) { keys.push(row.key); }
            return JSON.stringify(keys);
        }""",
    },
    "updates": {
        "stamp": """function (doc, req) {
            if (!doc) { return [{_id: req.uuid, body: req.body}, "created"]; }
            doc.body = req.body;
            return [doc, "stamped " + doc._id];
        }""",
    },
}
OTHER = {"_id": "_design/g", "views": {"neg": {"map": "function (d) { emit(-d.n, null); }"}}}


@pytest.fixture
def adb(admin: Any, dbname: str) -> Any:
    db = admin.database(dbname)
    assert not db.save([dict(DDOC), dict(OTHER)] + [{"_id": f"d{n}", "n": n}
                                                    for n in range(4)]).pending
    return db


async def test_show(c: Client, db: Any, adb: Any) -> None:
    response = await c.call(db.show, "f/who", "d1", q="hi")
    assert isinstance(response, Response) and response.status == 200
    assert response.json() == {"id": "d1", "q": "hi"}
    assert response.headers["x-show"] == "yes"
    nodoc = await c.call(db.show, "_design/f/who")
    assert nodoc.json() == {"id": None, "q": None}
    with pytest.raises(NotFound):
        await c.call(db.show, "nope/who")


async def test_list(c: Client, db: Any, adb: Any) -> None:
    same = await c.call(db.list, "f/keys", "by_n", descending=True)
    assert same.json() == [3, 2, 1, 0]
    other = await c.call(db.list, "f/keys", "g/neg", limit=2)
    assert other.json() == [-3, -2]
    picked = await c.call(db.list, "f/keys", "by_n", keys=[2, 0])
    assert sorted(picked.json()) == [0, 2]  # a sharded view's keys come in shard order


async def test_update(c: Client, db: Any, adb: Any) -> None:
    created = await c.call(db.update, "f/stamp", body="first")
    assert created.status in (201, 202) and created.body == b"created"
    new_id = created.headers["X-Couch-Id"]
    assert adb.get(new_id)["body"] == "first"
    assert adb.get(new_id)["_rev"] == created.headers["X-Couch-Update-NewRev"]

    stamped = await c.call(db.update, "f/stamp", "d2", body={"json": True})
    assert stamped.body == b"stamped d2"
    assert adb.get("d2")["body"] == '{"json":true}'


async def test_view_queries(c: Client, db: Any, adb: Any, server: Server) -> None:
    queries = [{"keys": [3]}, {"startkey": 1, "limit": 2}, {"skip": 3}]
    if server.deviates("no_view_queries"):
        with pytest.raises(BadRequest):
            await c.call(db.view_queries, "f/by_n", queries)
        return
    results = await c.call(db.view_queries, "f/by_n", queries)
    assert all(isinstance(r, ViewResult) for r in results)
    assert [[row.key for row in r.rows] for r in results] == [[3], [1, 2], [3]]
    assert results[1].rows[0].value == 10 and results[1].total_rows == 4
    docs = await c.call(db.view_queries, "_all_docs", [{"key": "d0", "include_docs": True}])
    assert docs[0].rows[0].doc["n"] == 0
