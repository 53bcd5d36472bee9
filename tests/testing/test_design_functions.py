"""Show, list and update functions (Python standing for JavaScript), ``.../queries``, and
partitioned databases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from corduroy2.testing import FakeCouch, FakeServer

from .conftest import Http


def _show(doc: Any, req: dict[str, Any]) -> Any:
    if doc is None:
        return {"code": 404, "json": {"id": req["id"], "body": req["body"]}}
    return f"<p>{doc['_id']} {req['query'].get('q')}</p>"


def _list(head: dict[str, Any], req: dict[str, Any], get_row: Any, send: Any,
          start: Any) -> str:
    start({"headers": {"Content-Type": "text/csv"}})
    send(f"{head['total_rows']}\n")
    while (row := get_row()) is not None:
        send(f"{row['key']},{row['id']}\n")
    return "end"


def _update(doc: Any, req: dict[str, Any]) -> list[Any]:
    if doc is None:
        return [None, {"code": 400, "body": "no doc"}]
    doc["seen"] = req["body"]
    return [doc, {"json": {"ok": doc["_id"]}}]


DDOC = {"views": {"v": {"map": "by n"}, "count": {"map": "by n", "reduce": "_count"}},
        "shows": {"s": "show"}, "lists": {"l": "list"}, "updates": {"u": "update"}}
FUNCTIONS = {"by n": lambda d, emit: emit(d["n"], None) if "n" in d else None,
             "show": _show, "list": _list, "update": _update}


@pytest.fixture
def served() -> Iterator[FakeServer]:
    with FakeCouch(functions=FUNCTIONS).serve() as server:
        yield server
        assert server.errors == []


@pytest.fixture
def web(served: FakeServer) -> Iterator[Http]:
    client = Http(served)
    client("PUT", "/db")
    client("PUT", "/db/_design/d", DDOC)
    client("POST", "/db/_bulk_docs", {"docs": [{"_id": f"d{n}", "n": n} for n in range(3)]})
    yield client
    client.close()


def test_show(web: Http) -> None:
    status, head, body = web.raw("GET", "/db/_design/d/_show/s/d1?q=x")
    assert (status, body) == (200, b"<p>d1 x</p>")
    assert head["content-type"] == "text/html; charset=utf-8"
    status, head, body = web("POST", "/db/_design/d/_show/s/none", b"hi")
    assert (status, body) == (404, {"id": "none", "body": "hi"})
    assert web("GET", "/db/_design/d/_show/nope")[2]["error"] == "not_found"


def test_list_over_a_view(web: Http) -> None:
    status, head, body = web.raw("GET", "/db/_design/d/_list/l/v?descending=true&limit=2")
    assert (status, head["content-type"]) == (200, "text/csv")
    assert head["transfer-encoding"] == "chunked"
    assert body == b"3\n2,d2\n1,d1\nend"
    assert web.raw("POST", "/db/_design/d/_list/l/d/v", {"keys": [0]})[2] == b"3\n0,d0\nend"


def test_update(web: Http) -> None:
    status, head, body = web("PUT", "/db/_design/d/_update/u/d0", b"text")
    assert (status, body) == (201, {"ok": "d0"})
    saved = web("GET", "/db/d0")[2]
    assert saved["seen"] == "text" and saved["_rev"] == head["x-couch-update-newrev"]
    assert web("POST", "/db/_design/d/_update/u")[::2] == (400, b"no doc")


def test_view_queries(web: Http) -> None:
    results = web("POST", "/db/_design/d/_view/v/queries", {"queries": [
        {"keys": [2]}, {"skip": 1, "limit": 1}]})[2]["results"]
    assert [[r["id"] for r in result["rows"]] for result in results] == [["d2"], ["d1"]]
    assert results[1]["offset"] == 1 and results[1]["total_rows"] == 3
    reduced = web("POST", "/db/_design/d/_view/count/queries", {"queries": [{}]})[2]
    assert reduced == {"results": [{"rows": [{"key": None, "value": 3}]}]}
    docs = web("POST", "/db/_all_docs/queries", {"queries": [{"key": "d1"}]})[2]
    assert docs["results"][0]["rows"][0]["id"] == "d1"


def test_partitions(served: FakeServer, web: Http) -> None:
    assert web("PUT", "/p?partitioned=true")[0] == 201
    assert web("PUT", "/p/nopartition", {})[2]["error"] == "illegal_docid"
    assert web("PUT", "/p/_x:y", {})[2]["error"] == "illegal_docid"
    web("PUT", "/p/_design/d", DDOC)
    web("POST", "/p/_bulk_docs", {"docs": [{"_id": f"{p}:{n}", "n": n}
                                          for n, p in enumerate("aab")]})
    info = web("GET", "/p/_partition/a")[2]
    assert (info["partition"], info["doc_count"], info["doc_del_count"]) == ("a", 2, 0)
    assert [r["id"] for r in web("GET", "/p/_partition/a/_all_docs")[2]["rows"]] == [
        "a:0", "a:1"]
    view = web("GET", "/p/_partition/b/_design/d/_view/v")[2]
    assert [r["id"] for r in view["rows"]] == ["b:2"] and view["total_rows"] == 1
    assert web("GET", "/p/_design/d/_view/v")[2]["error"] == "query_parse_error"
    found = web("POST", "/p/_partition/a/_find", {"selector": {"n": {"$gt": 0}}})[2]
    assert [d["_id"] for d in found["docs"]] == ["a:1"]
    assert web("POST", "/p/_partition/a/_explain", {"selector": {}})[2]["partitioned"] is True
    assert web("GET", "/db/_partition/a")[2] == {"error": "bad_request",
                                                  "reason": "database is not partitioned"}
    assert web("GET", "/p/_partition/_a")[0] == 400
    body = orjson.loads(web.raw("GET", "/p/_shards/a:0")[2])
    assert body["range"] == web("GET", "/p/_shards/a:9")[2]["range"]  # by partition
