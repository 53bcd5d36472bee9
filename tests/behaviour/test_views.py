"""Map/reduce views and ``_all_docs`` on every backend and calling style: rows and their
attributes, the query options (keys, ranges, descending, limit/skip, include_docs, reduce,
group), CouchDB collation, ``on_row``/``on_rows`` streaming, errors, and design doc info.

Each test arranges its (tiny) data with the blocking ``admin`` client in one ``_bulk_docs``;
pouchdb-server builds each view's index on its first query, so the data stays small.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corduroy2 import BadRequest, Document, NotFound, Status
from corduroy2.api.views import Row

from ..conftest import LOOP, Server
from .conftest import Client, record_requests

N = 10
DDOC = {
    "_id": "_design/t",
    "views": {
        # key n, value 10 * n
        "by_n": {"map": "function (d) { if (d.n !== undefined) emit(d.n, d.n * 10); }"},
        # key [type, n], value n, summed
        "by_type": {
            "map": "function (d) { if (d.type) emit([d.type, d.n], d.n); }",
            "reduce": "_sum",
        },
        # key [type, n % 3], counted
        "count": {
            "map": "function (d) { if (d.type) emit([d.type, d.n % 3], 1); }",
            "reduce": "_count",
        },
        # any JSON value under "k": the collation data sets
        "by_k": {"map": "function (d) { if ('k' in d) emit(d.k, null); }"},
    },
}


def numbered(n: int = N) -> list[dict[str, Any]]:
    return [{"_id": f"d{i}", "n": i, "type": "odd" if i % 2 else "even"} for i in range(n)]


@pytest.fixture
def adb(admin: Any, dbname: str) -> Any:
    return admin.database(dbname)


@pytest.fixture
def seeded(adb: Any) -> Any:
    """The fresh database holding ``d0``..``d9`` and the design doc ``t``."""
    result = adb.save([*numbered(), dict(DDOC)])
    assert not result.pending
    return adb




def keys(result: Any) -> list[Any]:
    return [row.key for row in result.rows]


def ids(result: Any) -> list[Any]:
    return [row.id for row in result.rows]


# -- map views ---------------------------------------------------------------------------------


async def test_map_rows_in_key_order(c: Client, db: Any, seeded: Any, server: Server) -> None:
    result = await c.call(db.view, "t/by_n")
    assert result.total_rows == N
    assert result.offset == 0
    assert len(result) == N
    assert keys(result) == list(range(N))
    row = result[3]
    assert isinstance(row, Row)
    assert (row.id, row.key, row.value) == ("d3", 3, 30)
    assert row.doc is None and row.error is None
    assert row["id"] == "d3"
    assert [r.id for r in result] == [f"d{i}" for i in range(N)]
    assert [r.value for r in result.rows] == [10 * i for i in range(N)]

    page = await c.call(db.view, "t/by_n", skip=3, limit=2)
    assert keys(page) == [3, 4]
    assert page.total_rows == N and page.offset == 3

    ranged = await c.call(db.view, "t/by_n", startkey=4, limit=2)
    assert keys(ranged) == [4, 5]
    # pouchdb-server.md, Views: "offset equals skip, not the row's position in the index"
    assert ranged.offset == (0 if server.pouchdb else 4)

    assert keys(await c.call(db.view, "t/by_n", limit=0)) == []


async def test_key_and_keys(c: Client, db: Any, seeded: Any) -> None:
    one = await c.call(db.view, "t/by_n", key=3)
    assert [(r.id, r.key, r.value) for r in one.rows] == [("d3", 3, 30)]
    assert one.total_rows == N

    assert keys(await c.call(db.view, "t/by_n", key=42)) == []

    sent = record_requests(c.couch)
    # keys travel in a POST body; each key's rows come back, a repeated key's rows twice, a key
    # with no rows gives none. In no promised order: a sharded CouchDB 3 answers in shard-merge
    # order, not the caller's (_all_docs does keep it: test_all_docs_keys_with_a_missing_key)
    many = await c.call(db.view, "t/by_n", keys=[7, 1, 42, 7, 0])
    assert sorted((r.id, r.key) for r in many.rows) == [("d0", 0), ("d1", 1), ("d7", 7), ("d7", 7)]
    assert [r.method for r in sent] == ["POST"]
    assert "keys" not in sent[0].url

    with pytest.raises(TypeError):
        db.view("t/by_n", keys=7)


async def test_ranges(c: Client, db: Any, seeded: Any) -> None:
    assert keys(await c.call(db.view, "t/by_n", startkey=3, endkey=6)) == [3, 4, 5, 6]
    assert keys(await c.call(db.view, "t/by_n", start_key=3, end_key=6)) == [3, 4, 5, 6]
    assert keys(await c.call(db.view, "t/by_n", startkey=3, endkey=6, inclusive_end=False)) == [
        3, 4, 5,
    ]
    assert keys(await c.call(db.view, "t/by_n", endkey=2)) == [0, 1, 2]
    # descending walks the index backwards: the range is given high to low
    assert keys(await c.call(db.view, "t/by_n", descending=True)) == list(range(N))[::-1]
    assert keys(await c.call(db.view, "t/by_n", descending=True, startkey=6, endkey=3)) == [
        6, 5, 4, 3,
    ]
    assert keys(
        await c.call(db.view, "t/by_n", descending=True, startkey=6, endkey=3, inclusive_end=False)
    ) == [6, 5, 4]
    assert keys(await c.call(db.view, "t/by_n", descending=True, limit=2, skip=1)) == [8, 7]
    # array keys and the {} "high" sentinel
    odd = await c.call(db.view, "t/by_type", reduce=False, startkey=["odd"], endkey=["odd", {}])
    assert ids(odd) == ["d1", "d3", "d5", "d7", "d9"]


async def test_include_docs(c: Client, db: Any, seeded: Any) -> None:
    result = await c.call(db.view, "t/by_n", startkey=2, endkey=4, include_docs=True)
    assert ids(result) == ["d2", "d3", "d4"]
    for row in result.rows:
        assert isinstance(row.doc, Document)
        assert row.doc == seeded.get(row.id)
        assert row.doc.n == row.key

    alldocs = await c.call(db.all_docs, include_docs=True, startkey="d7")
    assert ids(alldocs) == ["d7", "d8", "d9"]
    assert alldocs.total_rows == N + 1  # the design doc is a row of _all_docs too
    for row in alldocs.rows:
        assert row.key == row.id and row.value["rev"] == row.doc["_rev"]
        assert isinstance(row.doc, Document) and row.doc == seeded.get(row.id)

    everything = await c.call(db.all_docs)
    assert ids(everything) == ["_design/t", *sorted(f"d{i}" for i in range(N))]
    assert all(row.doc is None for row in everything.rows)


async def test_reduce_and_group(c: Client, db: Any, seeded: Any) -> None:
    total = await c.call(db.view, "t/by_type")
    assert [(r.key, r.value) for r in total.rows] == [(None, sum(range(N)))]
    assert total.rows[0].id is None

    mapped = await c.call(db.view, "t/by_type", reduce=False)
    assert len(mapped) == N and mapped.total_rows == N
    assert mapped.rows[0].id == "d0" and mapped.rows[0].key == ["even", 0]

    grouped = await c.call(db.view, "t/by_type", group=True)
    assert [(r.key, r.value) for r in grouped.rows] == (
        [(["even", i], i) for i in range(0, N, 2)] + [(["odd", i], i) for i in range(1, N, 2)]
    )

    level1 = await c.call(db.view, "t/by_type", group_level=1)
    assert [(r.key, r.value) for r in level1.rows] == [(["even"], 20), (["odd"], 25)]

    counted = await c.call(db.view, "t/count", group=True)
    assert [(r.key, r.value) for r in counted.rows] == [
        (["even", 0], 2), (["even", 1], 1), (["even", 2], 2),
        (["odd", 0], 2), (["odd", 1], 2), (["odd", 2], 1),
    ]
    counted1 = await c.call(db.view, "t/count", group_level=1, startkey=["odd"])
    assert [(r.key, r.value) for r in counted1.rows] == [(["odd"], 5)]
    assert [r.value for r in (await c.call(db.view, "t/count")).rows] == [N]


# -- collation -----------------------------------------------------------------------------------

# CouchDB's order: null < false < true < numbers < strings (ICU: "a" < "A" < "b" < "B") < arrays
# < objects.
COLLATED = [
    None, False, True, -2, 1, 2, 3.5, "a", "A", "aa", "b", "B", "ba",
    [], ["a"], ["b"], ["b", 1], ["b", "c"], {}, {"a": 1}, {"b": 2},
]


def collation_docs(values: list[Any]) -> list[dict[str, Any]]:
    # saved in an order unrelated to the collation
    return [{"_id": f"k{i:02d}", "k": v} for i, v in reversed(list(enumerate(values)))]


async def test_collation(c: Client, db: Any, adb: Any, server: Server) -> None:
    adb.save([*collation_docs(COLLATED), dict(DDOC)])
    expected = list(COLLATED)
    if server.pouchdb:
        # Not in pouchdb-server.md: pouchdb compares strings by code point, so capitals sort
        # before all lower-case letters ("A" < "B" < "a" < "aa" < "b" < "ba"); CouchDB uses ICU.
        strings = [v for v in COLLATED if isinstance(v, str)]
        start = COLLATED.index(strings[0])
        expected[start:start + len(strings)] = sorted(strings)
    result = await c.call(db.view, "t/by_k")
    assert keys(result) == expected
    assert keys(await c.call(db.view, "t/by_k", descending=True)) == expected[::-1]

    # key=<value> matches exactly that value, for every JSON type (not None: see below)
    for i, value in enumerate(COLLATED):
        if value is None:
            continue
        got = await c.call(db.view, "t/by_k", key=value)
        assert [(r.id, r.key) for r in got.rows] == [(f"k{i:02d}", value)], value

    # a range across types
    assert keys(await c.call(db.view, "t/by_k", startkey=True, endkey=2)) == [True, -2, 1, 2]
    assert keys(await c.call(db.view, "t/by_k", startkey=[], endkey=["b"])) == [[], ["a"], ["b"]]


async def test_null_key(c: Client, db: Any, adb: Any) -> None:
    adb.save([*collation_docs(COLLATED), dict(DDOC)])
    got = await c.call(db.view, "t/by_k", key=None)
    assert [(r.id, r.key) for r in got.rows] == [("k00", None)]
    assert keys(await c.call(db.view, "t/by_k", endkey=None)) == [None]
    assert keys(await c.call(db.view, "t/by_k", descending=True, startkey=None)) == [None]


UNICODE = ["a", "b", "é", "ø", "Ω", "日本", "日本語"]


async def test_unicode_keys(c: Client, db: Any, adb: Any) -> None:
    # (orders on which ICU and code-point comparison agree)
    docs = collation_docs(UNICODE) + [{"_id": "astral", "k": "😀"}, dict(DDOC)]
    adb.save(docs)
    result = await c.call(db.view, "t/by_k")
    assert [k for k in keys(result) if k != "😀"] == UNICODE
    for value in ["é", "日本", "😀", "Ω"]:
        got = await c.call(db.view, "t/by_k", key=value)
        assert keys(got) == [value]
    assert keys(await c.call(db.view, "t/by_k", startkey="é", endkey="Ω")) == ["é", "ø", "Ω"]
    # with keys, each key's rows come in shard-merge order, not the caller's (couchdb3.md)
    assert sorted(keys(await c.call(db.view, "t/by_k", keys=["日本語", "ø"]))) == ["ø", "日本語"]


async def test_update_seq(c: Client, db: Any, seeded: Any, server: Server) -> None:
    result = await c.call(db.view, "t/by_n", update_seq=True, limit=1)
    assert result.update_seq is not None
    assert result.fields["update_seq"] == result.update_seq
    if not server.deviates("seq_integers"):
        assert isinstance(result.update_seq, str)
    assert (await c.call(db.view, "t/by_n", limit=1)).update_seq is None


# -- _all_docs -----------------------------------------------------------------------------------


async def test_all_docs_keys_with_a_missing_key(c: Client, db: Any, seeded: Any) -> None:
    result = await c.call(db.all_docs, keys=["d1", "nope", "d2", "d1"])
    assert [r.key for r in result.rows] == ["d1", "nope", "d2", "d1"]
    first, missing, second, again = result.rows
    assert first.id == "d1" and first.error is None
    assert first.value == {"rev": seeded.get("d1")["_rev"]}
    assert missing.error == "not_found"
    assert missing.id is None and missing.value is None and missing.doc is None
    assert "not_found" in repr(missing)
    assert second.id == "d2" and again == first
    assert result.total_rows == N + 1

    with_docs = await c.call(db.all_docs, keys=["nope", "d4"], include_docs=True)
    assert [r.error for r in with_docs.rows] == ["not_found", None]
    assert with_docs.rows[1].doc == seeded.get("d4")


# -- streaming -------------------------------------------------------------------------------------


async def test_on_row_and_on_rows(c: Client, db: Any, seeded: Any) -> None:
    full = await c.call(db.view, "t/by_n")

    seen: list[Any] = []
    result = await c.call(db.view, "t/by_n", on_row=seen.append)
    assert seen == full.rows
    assert all(isinstance(row, Row) for row in seen)
    assert result.rows == [] and len(result) == 0
    assert result.total_rows == N and result.offset == 0

    batches: list[Any] = []
    result = await c.call(db.view, "t/by_n", startkey=2, on_rows=batches.append)
    assert batches and all(isinstance(b, list) and b for b in batches)
    assert [row for batch in batches for row in batch] == full.rows[2:]
    assert result.rows == [] and result.total_rows == N

    docs: list[Any] = []
    result = await c.call(db.all_docs, include_docs=True, keys=["d5", "d6"], on_row=docs.append)
    assert [r.doc for r in docs] == [seeded.get("d5"), seeded.get("d6")]
    assert result.rows == []


class Boom(Exception):
    pass


async def test_on_row_exception_fails_the_call(c: Client, db: Any, seeded: Any) -> None:
    seen: list[Any] = []

    def on_row(row: Any) -> None:
        seen.append(row)
        if len(seen) == 3:
            raise Boom(row.key)

    if c.style == "callback":
        # (not through c.call: its callback check expects a CouchError)
        calls: list[tuple[Any, Status]] = []
        if c.blocking:
            returned = await c.in_thread(
                lambda: db.view("t/by_n", on_row=on_row, callback=lambda *a: calls.append(a))
            )
        else:
            done = LOOP.create_future()

            def callback(data: Any, status: Status) -> None:
                calls.append((data, status))
                done.set_result(None)

            returned = db.view("t/by_n", on_row=on_row, callback=callback)
            await done
            await asyncio.sleep(0.02)  # a second call would show up now
        assert returned is None and len(calls) == 1
        data, status = calls[0]
        assert data is None and not status.ok
        assert isinstance(status.exception, Boom) and status.exception.args == (2,)
        assert status.error is Boom
    else:
        with pytest.raises(Boom) as info:
            await c.call(db.view, "t/by_n", on_row=on_row)
        assert info.value.args == (2,)
    assert len(seen) == 3  # no row after the failing one

    # the aborted request leaves the Couch usable
    again = await c.call(db.view, "t/by_n", limit=2)
    assert keys(again) == [0, 1]


# -- errors and design doc info -----------------------------------------------------------------


async def test_errors(c: Client, db: Any, seeded: Any) -> None:
    with pytest.raises(NotFound) as info:
        await c.call(db.view, "t/missing")
    assert info.value.status == 404 and info.value.error == "not_found"
    with pytest.raises(NotFound):
        await c.call(db.view, "nope/by_n")
    with pytest.raises(BadRequest) as bad:
        await c.call(db.view, "t/by_type", include_docs=True)
    # pouchdb-server.md, Views: "400 query_parse_error (wording differs)"
    assert bad.value.status == 400 and bad.value.error == "query_parse_error"

    # a malformed view name is refused before anything is sent, in every style
    sent = record_requests(c.couch)
    calls: list[Any] = []
    for name in ["noslash", "a/b/c", "/v", "d/", ""]:
        with pytest.raises(ValueError):
            if c.style == "callback":
                db.view(name, callback=lambda *a: calls.append(a))
            else:
                db.view(name)
    with pytest.raises(TypeError):
        db.view(None)
    await asyncio.sleep(0.01)
    assert sent == [] and calls == []


async def test_design_doc_info(c: Client, db: Any, seeded: Any, server: Server) -> None:
    await c.call(db.view, "t/by_n", limit=1)  # build the index
    info = await c.call(db.info, "t")
    assert "view_index" in info
    if server.pouchdb:
        # pouchdb-server.md, Views: "GET /db/_design/x/_info: stub {"view_index":"Not implemented."}"
        assert info["view_index"] == "Not implemented."
    else:
        assert info["name"] == "t"
        assert isinstance(info["view_index"], dict)
        assert "signature" in info["view_index"]
    again = await c.call(db.info, "_design/t")  # the prefix may be given
    assert again.keys() == info.keys() and again.get("name") == info.get("name")
    with pytest.raises(ValueError):
        db.info("")
