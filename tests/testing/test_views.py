"""Views and _all_docs on the fake: collation, the query options, Python map functions and the
built-in reduces."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from corduroy2.testing import FakeCouch, FakeServer
from corduroy2.testing.fake.collation import sort_key

from .conftest import Http

# CouchDB 3's view collation (couchdb3.md): null < false < true < numbers < strings (ICU) <
# arrays < objects
COLLATED: list[Any] = [
    None, False, True, -2, 1, 2, 3.5, " ", "_", "1", "a", "A", "á", "Á", "aa", "ab", "b", "B",
    "ba", "é", "ø", "Ω", "日本", "日本語",
    [], ["a"], ["b"], ["b", 1], ["b", "c"], {}, {"a": 1}, {"b": 2},
]


def test_collation_table() -> None:
    shuffled = COLLATED[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=sort_key) == COLLATED
    assert sort_key(1) == sort_key(1.0)


def by_k(doc: dict[str, Any], emit: Any) -> None:
    if "k" in doc:
        emit(doc["k"], None)


def by_type(doc: dict[str, Any], emit: Any) -> None:
    if "type" in doc:
        emit([doc["type"], doc["n"]], doc["n"])


MAP_K = "function (d) { if ('k' in d) emit(d.k, null); }"
MAP_TYPE = "function (d) { emit([d.type, d.n], d.n); }"


@pytest.fixture
def viewed() -> Any:
    with FakeCouch(functions={MAP_K: by_k, MAP_TYPE: by_type}).serve() as server:
        client = Http(server)
        client("PUT", "/db")
        docs = [{"_id": f"k{i:02d}", "k": v} for i, v in enumerate(COLLATED)]
        docs += [{"_id": f"t{i}", "type": "odd" if i % 2 else "even", "n": i} for i in range(6)]
        docs.append({"_id": "_design/t", "views": {
            "k": {"map": MAP_K}, "sum": {"map": MAP_TYPE, "reduce": "_sum"},
            "count": {"map": MAP_TYPE, "reduce": "_count"},
            "stats": {"map": MAP_TYPE, "reduce": "_stats"},
            "js": {"map": "function (d) { emit(1, 1); }"}}})
        client("POST", "/db/_bulk_docs", {"docs": docs})
        yield client
        client.close()
        assert server.errors == []


def q(value: Any) -> str:
    from urllib.parse import quote

    return quote(orjson.dumps(value).decode())


def keys(result: dict[str, Any]) -> list[Any]:
    return [row["key"] for row in result["rows"]]


def test_view_order_and_ranges(viewed: Http) -> None:
    result = viewed("GET", "/db/_design/t/_view/k")[2]
    assert keys(result) == COLLATED and result["total_rows"] == len(COLLATED)
    assert keys(viewed("GET", "/db/_design/t/_view/k?descending=true")[2]) == COLLATED[::-1]
    ranged = viewed("GET", f"/db/_design/t/_view/k?startkey={q(True)}&endkey={q(2)}")[2]
    assert keys(ranged) == [True, -2, 1, 2] and ranged["offset"] == 2
    assert keys(viewed("GET", f"/db/_design/t/_view/k?startkey={q(True)}&endkey={q(2)}"
                              "&inclusive_end=false")[2]) == [True, -2, 1]
    down = viewed("GET", f"/db/_design/t/_view/k?descending=true&startkey={q(2)}&endkey={q(1)}")
    assert keys(down[2]) == [2, 1]
    page = viewed("GET", "/db/_design/t/_view/k?skip=2&limit=3")[2]
    assert keys(page) == COLLATED[2:5] and page["offset"] == 2
    for value in (None, "A", ["b", 1], {"a": 1}):
        assert keys(viewed("GET", f"/db/_design/t/_view/k?key={q(value)}")[2]) == [value]
    many = viewed("POST", "/db/_design/t/_view/k", {"keys": ["b", None, "zz"]})[2]
    assert keys(many) == ["b", None]
    # startkey_docid narrows among equal keys
    docid = viewed("GET", f"/db/_design/t/_view/sum?reduce=false&startkey={q(['odd', 3])}"
                          "&startkey_docid=t3&limit=1")[2]
    assert [r["id"] for r in docid["rows"]] == ["t3"]
    assert viewed("GET", "/db/_design/t/_view/k?limit=1&update_seq=true")[2]["update_seq"]


def test_reduces_and_grouping(viewed: Http) -> None:
    base = "/db/_design/t/_view/"
    assert viewed("GET", base + "sum")[2]["rows"] == [{"key": None, "value": 15}]
    assert viewed("GET", base + "count")[2]["rows"] == [{"key": None, "value": 6}]
    stats = viewed("GET", base + "stats")[2]["rows"][0]["value"]
    assert stats == {"sum": 15, "count": 6, "min": 0, "max": 5, "sumsqr": 55}
    level1 = viewed("GET", base + "sum?group_level=1")[2]["rows"]
    assert level1 == [{"key": ["even"], "value": 6}, {"key": ["odd"], "value": 9}]
    grouped = viewed("GET", base + "count?group=true&limit=2")[2]["rows"]
    assert grouped == [{"key": ["even", 0], "value": 1}, {"key": ["even", 2], "value": 1}]
    assert viewed("GET", base + f"sum?startkey={q(['odd'])}")[2]["rows"][0]["value"] == 9
    assert "total_rows" not in viewed("GET", base + "sum")[2]
    assert len(viewed("GET", base + "sum?reduce=false")[2]["rows"]) == 6


def test_view_errors(viewed: Http) -> None:
    base = "/db/_design/t/_view/"
    assert viewed("GET", base + "sum?include_docs=true")[2]["error"] == "query_parse_error"
    assert viewed("GET", base + "k?group=true")[2]["error"] == "query_parse_error"
    assert viewed("GET", base + "nope")[2] == {"error": "not_found",
                                               "reason": "missing_named_view"}
    assert viewed("GET", base + "k?limit=x")[2]["error"] == "query_parse_error"
    # an unregistered JavaScript function: a clear error, not a crash
    status, _, body = viewed("GET", base + "js")
    assert status == 400 and body["error"] == "compilation_error"


def test_all_docs_raw_order_and_keys(couch: Http, db: str) -> None:
    ids = ["b", "B", "a", "é", "_design/x", "Z", "10", "9"]
    couch("POST", f"{db}/_bulk_docs", {"docs": [{"_id": i} for i in ids]})
    result = couch("GET", f"{db}/_all_docs")[2]
    assert [r["id"] for r in result["rows"]] == sorted(ids)  # code points, not ICU
    assert result["total_rows"] == len(ids)
    ranged = couch("GET", f'{db}/_all_docs?startkey="B"&endkey="a"')[2]
    assert [r["id"] for r in ranged["rows"]] == ["B", "Z", "_design/x", "a"]
    rev = couch("GET", f"{db}/b")[2]["_rev"]
    couch("DELETE", f"{db}/b?rev={rev}")
    picked = couch("POST", f"{db}/_all_docs?include_docs=true", {"keys": ["a", "nope", "b"]})[2]
    a, nope, b = picked["rows"]
    assert a["doc"]["_id"] == "a" and nope == {"key": "nope", "error": "not_found"}
    assert b["value"]["deleted"] is True and b["doc"] is None
    designs = couch("GET", f"{db}/_design_docs")[2]
    assert [r["id"] for r in designs["rows"]] == ["_design/x"]


def test_python_map_sees_a_copy(server: FakeServer) -> None:
    def greedy(doc: dict[str, Any], emit: Any) -> None:
        doc["changed"] = True
        emit(doc["_id"], [1, 2])

    server.couch.functions.register("function (d) { greedy }", greedy)
    server.couch.save("db", {"_id": "a"})
    server.couch.save("db", {"_id": "_design/g", "views": {"v": {
        "map": "function (d)   { greedy }"}}})  # white space differences do not matter
    client = Http(server)
    assert client("GET", "/db/_design/g/_view/v")[2]["rows"] == [
        {"id": "a", "key": "a", "value": [1, 2]}]
    assert "changed" not in server.couch.get("db", "a")
    client.close()
