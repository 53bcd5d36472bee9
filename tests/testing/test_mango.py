"""Mango on the fake: every operator, index choice, sort, fields, skip/limit, bookmarks."""

from __future__ import annotations

from typing import Any

import pytest

from corduroy2.testing.fake.mango import Selector

from .conftest import Http

DOCS: list[dict[str, Any]] = [
    {"_id": "a", "n": 1, "s": "apple", "tags": ["x", "y"], "o": {"p": 1}, "t": None},
    {"_id": "b", "n": 2, "s": "Banana", "tags": ["y"], "o": {"p": 2}},
    {"_id": "c", "n": 3, "s": "cherry", "tags": [], "f": 1.5},
    {"_id": "d", "n": -4, "s": "date", "tags": ["x", "z"], "o": {"p": [1, 2]}},
    {"_id": "e", "s": 7},
]

OPERATORS = [
    ({"n": 2}, "b"),
    ({"n": {"$eq": 2}}, "b"),
    ({"n": {"$ne": 2}}, "acd"),  # a doc without the field never matches ($ne too)
    ({"n": {"$gt": 1}}, "bc"),
    ({"n": {"$gte": 1}}, "abc"),
    ({"n": {"$lt": 1}}, "d"),
    ({"n": {"$lte": 1}}, "ad"),
    ({"n": {"$gt": 0, "$lt": 3}}, "ab"),
    ({"s": {"$gt": "b"}}, "bcd"),  # ICU collation: "Banana" > "b"
    ({"s": {"$lt": 10}}, "e"),  # collation across types: strings > numbers
    ({"n": {"$in": [1, 3, 9]}}, "ac"),
    ({"n": {"$nin": [1, 3]}}, "bd"),
    ({"t": {"$exists": True}}, "a"),
    ({"n": {"$exists": False}}, "e"),
    ({"s": {"$type": "string"}}, "abcd"),
    ({"t": {"$type": "null"}}, "a"),
    ({"f": {"$type": "number"}}, "c"),
    ({"$and": [{"n": {"$gt": 0}}, {"tags": {"$size": 1}}]}, "b"),
    ({"$or": [{"n": 1}, {"s": 7}]}, "ae"),
    ({"$nor": [{"n": 1}, {"s": 7}]}, "bcd"),
    ({"n": {"$not": {"$gt": 1}}}, "ade"),  # lifted above the field: no field matches
    ({"$not": {"n": 1}}, "bcde"),
    ({"tags": {"$all": ["x", "y"]}}, "a"),
    ({"tags": {"$size": 0}}, "c"),
    ({"s": {"$regex": "^[a-c]"}}, "ac"),
    ({"s": {"$regex": "an"}}, "b"),
    ({"tags": {"$elemMatch": {"$eq": "z"}}}, "d"),
    ({"o": {"$elemMatch": {"$eq": 1}}}, ""),
    ({"o.p": {"$elemMatch": {"$gt": 1}}}, "d"),
    ({"n": {"$mod": [2, 1]}}, "ac"),
    ({"n": {"$mod": [2, 0]}}, "bd"),
    ({"o": {"p": 2}}, "b"),  # a sub-object is a path
    ({"o.p": 1}, "a"),
    ({"tags": "x"}, ""),  # an array equals only an equal array
    ({"tags": ["y"]}, "b"),
    ({"_id": {"$gt": "c"}}, "de"),
]


@pytest.mark.parametrize("selector,ids", OPERATORS, ids=[str(s) for s, _ in OPERATORS])
def test_operator(selector: dict[str, Any], ids: str) -> None:
    compiled = Selector(selector)
    assert "".join(d["_id"] for d in DOCS if compiled.match(d)) == ids


@pytest.mark.parametrize("selector", [
    {"n": {"$bogus": 1}}, {"n": {"$in": 1}}, {"n": {"$mod": [0, 1]}}, {"n": {"$size": "x"}},
    {"$and": {}}, {"n": {"$regex": "("}}, {"n": {"$type": "thing"}}, "nope",
])
def test_bad_selectors(couch: Http, db: str, selector: Any) -> None:
    status, _, body = couch("POST", f"{db}/_find", {"selector": selector})
    assert status == 400 and body["error"] and body["reason"]


@pytest.fixture
def found(couch: Http, db: str) -> Http:
    couch("POST", f"{db}/_bulk_docs", {"docs": DOCS})
    return couch


def test_find_without_index_warns_and_has_bookmark(found: Http) -> None:
    status, _, body = found("POST", "/db/_find", {"selector": {"n": {"$gt": 0}}})
    assert status == 200 and sorted(d["_id"] for d in body["docs"]) == ["a", "b", "c"]
    assert "warning" in body and body["bookmark"]
    stats = found("POST", "/db/_find", {"selector": {}, "execution_stats": True})[2]
    assert stats["execution_stats"]["results_returned"] == 5


def test_sort_needs_an_index(found: Http) -> None:
    query = {"selector": {"n": {"$gt": -10}}, "sort": [{"n": "desc"}], "fields": ["_id", "n"]}
    status, _, body = found("POST", "/db/_find", query)
    assert status == 400 and body["error"] == "no_usable_index"
    created = found("POST", "/db/_index", {"index": {"fields": ["n"]}, "ddoc": "ix",
                                           "name": "by-n"})[2]
    assert created == {"result": "created", "id": "_design/ix", "name": "by-n"}
    assert found("POST", "/db/_index", {"index": {"fields": ["n"]}, "ddoc": "ix",
                                        "name": "by-n"})[2]["result"] == "exists"
    body = found("POST", "/db/_find", query)[2]
    assert body["docs"] == [{"_id": "c", "n": 3}, {"_id": "b", "n": 2}, {"_id": "a", "n": 1},
                            {"_id": "d", "n": -4}]
    assert "warning" not in body
    plan = found("POST", "/db/_explain", query)[2]
    assert plan["index"]["name"] == "by-n" and plan["index"]["ddoc"] == "_design/ix"
    names = [ix["name"] for ix in found("GET", "/db/_index")[2]["indexes"]]
    assert names == ["_all_docs", "by-n"]
    assert found("DELETE", "/db/_index/_design/ix/json/by-n")[2] == {"ok": True}
    assert found("POST", "/db/_find", query)[0] == 400
    # _id sorts without an index
    assert [d["_id"] for d in found("POST", "/db/_find", {
        "selector": {}, "sort": ["_id"]})[2]["docs"]] == list("abcde")


def test_paging_with_bookmarks_skip_limit_and_fields(found: Http) -> None:
    seen, bookmark = [], None
    while True:
        query: dict[str, Any] = {"selector": {}, "limit": 2, "fields": ["_id", "o.p"]}
        if bookmark:
            query["bookmark"] = bookmark
        body = found("POST", "/db/_find", query)[2]
        if not body["docs"]:
            break
        seen += body["docs"]
        bookmark = body["bookmark"]
    assert sorted(d["_id"] for d in seen) == list("abcde")
    assert {"_id": "b", "o": {"p": 2}} in seen and {"_id": "e"} in seen
    skipped = found("POST", "/db/_find", {"selector": {}, "sort": ["_id"], "skip": 3})[2]
    assert [d["_id"] for d in skipped["docs"]] == ["d", "e"]
    assert found("POST", "/db/_find", {"selector": {}, "bookmark": "%%"})[0] == 400
