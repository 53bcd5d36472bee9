"""Partitioned databases: ``couch.create(name, partitioned=True)`` and ``db.partition(p)``'s
``info``, ``all_docs``, ``view``, ``find``, ``explain`` in every calling style, and the
``iter_*`` forms on every backend.

pouchdb-server accepts ``partitioned=true`` but ignores it and has no ``_partition``
endpoints (deviation ``no_partitions``): there the GETs fail with ``NotFound`` and the POSTs
(``find``, ``explain``) with ``BadRequest``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from corduroy2 import BadRequest, NotFound
from corduroy2.api.partition import Partition
from corduroy2.api.views import FindResult, ViewResult

from ..conftest import Server
from .conftest import Client, fresh_database, make_couch
from .test_iterate import drain

DOCS = [{"_id": f"{p}:{i}", "n": n} for n, (p, i) in enumerate(
    [("red", "a"), ("red", "b"), ("red", "c"), ("blue", "a")])]
DDOC = {"_id": "_design/p", "views": {"by_n": {"map": "function (d) { emit(d.n, null); }"}}}


@pytest.fixture
def pname(admin: Any) -> Iterator[str]:
    """A fresh partitioned database holding DOCS and DDOC."""
    for name in fresh_database(admin, partitioned=True):
        assert not admin.database(name).save([dict(d) for d in DOCS] + [dict(DDOC)]).pending
        yield name


async def test_create_partitioned(c: Client, admin: Any, server: Server) -> None:
    name = "c2test-partitioned-" + c.backend + "-" + c.style
    if name in admin.all_dbs():
        admin.delete(name)
    db = await c.call(c.couch.create, name, partitioned=True)
    try:
        info = admin.database(name).info()
        if not server.deviates("no_partitions"):
            assert info["props"] == {"partitioned": True}
        assert db.name == name
    finally:
        admin.delete(name)


async def test_partition_queries(c: Client, pname: str, server: Server) -> None:
    red = c.couch.database(pname).partition("red")
    assert isinstance(red, Partition) and red.name == "red"
    if server.deviates("no_partitions"):
        for call, args in ((red.info, ()), (red.all_docs, ()), (red.view, ("p/by_n",))):
            with pytest.raises(NotFound):
                await c.call(call, *args)
        for call in (red.find, red.explain):  # a POST to an unknown path
            with pytest.raises(BadRequest):
                await c.call(call, {"n": {"$gt": 0}})
        return
    info = await c.call(red.info)
    assert (info["partition"], info["doc_count"]) == ("red", 3)

    docs = await c.call(red.all_docs, include_docs=True)
    assert isinstance(docs, ViewResult)
    assert [r.id for r in docs.rows] == ["red:a", "red:b", "red:c"]
    assert [r.doc["n"] for r in docs.rows] == [0, 1, 2]

    view = await c.call(red.view, "p/by_n", startkey=1)
    assert [(r.key, r.id) for r in view.rows] == [(1, "red:b"), (2, "red:c")]
    streamed: list[Any] = []
    await c.call(red.view, "p/by_n", on_row=streamed.append, descending=True, limit=1)
    assert [r.id for r in streamed] == ["red:c"]

    found = await c.call(red.find, {"n": {"$gt": 0}}, fields=["_id"])
    assert isinstance(found, FindResult)
    assert sorted(d["_id"] for d in found.docs) == ["red:b", "red:c"]
    plan = await c.call(red.explain, {"n": {"$gt": 0}})
    assert "partitioned" in plan and "index" in plan


async def test_iter_partition(couch: Any, pname: str, server: Server) -> None:
    blue = couch.database(pname).partition("blue")
    if server.deviates("no_partitions"):
        with pytest.raises(NotFound):
            await drain(couch, lambda: blue.iter_all_docs())
        return
    rows, _ = await drain(couch, lambda: blue.iter_all_docs())
    assert [r.id for r in rows] == ["blue:a"]
    rows, _ = await drain(couch, lambda: blue.iter_view("p/by_n"))
    assert [(r.key, r.id) for r in rows] == [(3, "blue:a")]
    docs, fields = await drain(couch, lambda: blue.iter_find({"n": {"$gte": 0}}))
    assert [d["_id"] for d in docs] == ["blue:a"] and "bookmark" in fields


@pytest.mark.parametrize("name, error", [
    ("a:b", ValueError), ("_p", ValueError), ("", ValueError), (None, TypeError),
])
def test_bad_partition_name_is_refused_before_anything_is_sent(
        server: Server, name: Any, error: type[Exception]) -> None:
    couch = make_couch("blocking", "http://127.0.0.1:1", None)  # nothing listens: no request
    with pytest.raises(error):
        couch.database("db").partition(name)
