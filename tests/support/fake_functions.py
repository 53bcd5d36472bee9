"""The design-doc functions the test suite sends, in Python, for ``COUCHDB_SERVER=fake``.

corduroy2.testing.FakeCouch runs Python in place of JavaScript: each source a test puts in a
design doc is listed here with what it does (map: ``fn(doc, emit)``; filter, show: ``fn(doc, req)``; list: ``fn(head, req, get_row,
send, start)``; update: ``fn(doc, req)`` -> ``[doc, response]``).
A test that adds a function adds its line here; an unlisted source answers 400
``compilation_error`` on the fake.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

Emit = Callable[[Any, Any], None]


def _truthy(value: Any) -> bool:
    """JavaScript's truthiness of a JSON value."""
    return value not in (None, False, 0, "") and not (isinstance(value, float)
                                                       and math.isnan(value))


def _by_n(d: dict[str, Any], emit: Emit) -> None:
    if "n" in d:
        emit(d["n"], d["n"] * 10)


def _by_g(d: dict[str, Any], emit: Emit) -> None:
    if "n" in d:
        emit(math.floor(d["n"] / 4), d["n"])


def _by_m(d: dict[str, Any], emit: Emit) -> None:
    if "n" in d:
        emit(d["n"] if _truthy(d["n"]) else None, d["n"])


def _type_n(d: dict[str, Any], emit: Emit) -> None:
    if _truthy(d.get("type")):
        emit([d["type"], d.get("n")], d.get("n"))


def _type_mod(d: dict[str, Any], emit: Emit) -> None:
    if _truthy(d.get("type")):
        n = d.get("n")
        emit([d["type"], math.fmod(n, 3) if isinstance(n, float) else n % 3
              if isinstance(n, int) else None], 1)


def _by_k(d: dict[str, Any], emit: Emit) -> None:
    if "k" in d:
        emit(d["k"], None)


def _type_b(doc: dict[str, Any], emit: Emit) -> None:
    if doc.get("type") == "b":
        emit(doc["_id"], None)


def _stringify(value: Any) -> str:
    """JavaScript's ``JSON.stringify``."""
    return orjson.dumps(value).decode()


def _show_who(doc: dict[str, Any] | None, req: dict[str, Any]) -> dict[str, Any]:
    return {"headers": {"X-Show": "yes", "Content-Type": "application/json"},
            "body": _stringify({"id": doc["_id"] if doc else None,
                                "q": req["query"].get("q") or None})}


def _list_keys(head: dict[str, Any], req: dict[str, Any], get_row: Callable[[], Any],
               send: Callable[[str], None], start: Callable[..., None]) -> str:
    keys = []
    while (row := get_row()) is not None:
        keys.append(row["key"])
    return _stringify(keys)


def _update_stamp(doc: dict[str, Any] | None, req: dict[str, Any]) -> list[Any]:
    if doc is None:
        return [{"_id": req["uuid"], "body": req["body"]}, "created"]
    doc["body"] = req["body"]
    return [doc, "stamped " + doc["_id"]]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # tests/behaviour/test_design_functions.py (white space runs compare as one space)
    ('function (doc, req) { return {headers: {"X-Show": "yes", "Content-Type": '
     '"application/json"}, body: JSON.stringify({id: doc ? doc._id : null, q: '
     'req.query.q || null})}; }'):
        _show_who,
    ('function (head, req) { var row, keys = []; while ((row = getRow())) { '
     'keys.push(row.key); } return JSON.stringify(keys); }'):
        _list_keys,
    ('function (doc, req) { if (!doc) { return [{_id: req.uuid, body: req.body}, '
     '"created"]; } doc.body = req.body; return [doc, "stamped " + doc._id]; }'):
        _update_stamp,
    "function (d) { emit(-d.n, null); }":
        lambda d, emit: emit(-d["n"] if "n" in d else None, None),
    "function (d) { emit(d.n, null); }": lambda d, emit: emit(d.get("n"), None),
    "function (d) { emit(d._id); }": lambda d, emit: emit(d["_id"]),
    "function (doc, req) { return doc.type === req.query.type; }":
        lambda doc, req: doc.get("type") == req["query"].get("type"),
    "function (doc) { if (doc.type === 'b') emit(doc._id, null); }": _type_b,
    "function (d) { if (d.n !== undefined) emit(d.n, d.n * 10); }": _by_n,
    "function (d) { if (d.n !== undefined) emit(Math.floor(d.n / 4), d.n); }": _by_g,
    "function (d) { if (d.n !== undefined) emit(d.n || null, d.n); }": _by_m,
    "function (d) { if (d.type) emit([d.type, d.n], d.n); }": _type_n,
    "function (d) { if (d.type) emit([d.type, d.n % 3], 1); }": _type_mod,
    "function (d) { if ('k' in d) emit(d.k, null); }": _by_k,
}
