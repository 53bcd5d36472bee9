"""Document CRUD on every backend and calling style: save/get/delete, revisions, conflicts and
their resolution, id quoting, unicode, large documents, COPY, multi-get, database info.

State is arranged and checked with the blocking ``admin`` client, and where the check must not
share corduroy2's own quoting code, with plain ``urllib`` (:func:`raw_get`).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from corduroy2 import Conflict, Document, NotFound

from ..conftest import LOOP, Server
from .conftest import Client

# ids that need quoting in a URL path, or are special to CouchDB
SPECIAL_IDS = [
    "foo/bar",
    "what?x=1",
    "hash#tag",
    "100%",
    "a+b",
    "with space",
    "føø",
    "astral-\U0001f600",
    "_design/x",
    "_design/with space/and/slash",
    "_local/x",
]


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def adb(admin: Any, dbname: str) -> Any:
    """The test's database, as a blocking admin handle."""
    return admin.database(dbname)


def raw_get(server: Server, path: str) -> Any:
    """GET ``path`` (already quoted) with plain urllib: an independent check of what the server
    stored, not sharing corduroy2's quoting."""
    request = urllib.request.Request(server.url + path, headers={"Accept": "application/json"})
    if server.auth:
        token = base64.b64encode(":".join(server.auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def raw_doc_path(dbname: str, doc_id: str) -> str:
    db = "/" + quote(dbname, safe="")
    for prefix in ("_design/", "_local/"):
        if doc_id.startswith(prefix):
            return f"{db}/{prefix}{quote(doc_id[len(prefix):], safe='')}"
    return f"{db}/{quote(doc_id, safe='')}"


def body(doc: dict[str, Any]) -> dict[str, Any]:
    """A doc without its ``_id``/``_rev``: what COPY and merges carry over."""
    return {k: v for k, v in doc.items() if k not in ("_id", "_rev")}


def conflict_rev(n: int = 1, fill: str = "b") -> str:
    return f"{n}-{fill * 32}"


async def close(couch: Any) -> None:
    closing = couch.close()
    if closing is not None and hasattr(closing, "asFuture"):
        await closing.asFuture(LOOP)




# -- save / get ----------------------------------------------------------------------------------


async def test_save_new_without_id(c: Client, db: Any, adb: Any) -> None:
    doc: dict[str, Any] = {"type": "new", "n": 1}
    saved = await c.call(db.save, doc)
    assert saved is doc
    assert isinstance(doc["_id"], str) and doc["_id"]
    assert doc["_rev"].startswith("1-")
    assert adb.get(doc["_id"])["_rev"] == doc["_rev"]

    got = await c.call(db.get, doc["_id"])
    assert isinstance(got, Document)
    assert got == doc
    assert got.type == "new" and got.n == 1
    assert got.id == doc["_id"] and got.rev == doc["_rev"]
    with pytest.raises(AttributeError):
        got.nope  # noqa: B018

    other = {"type": "new"}
    await c.call(db.save, other)
    assert other["_id"] != doc["_id"]


async def test_save_with_id_then_update(c: Client, db: Any, adb: Any) -> None:
    doc: dict[str, Any] = {"_id": "foo", "n": 1}
    await c.call(db.save, doc)
    assert doc["_id"] == "foo"
    server = adb.get("foo")
    assert doc["_rev"] == server["_rev"] and doc["_rev"].startswith("1-")
    assert server["n"] == 1

    first = doc["_rev"]
    doc["n"] = 2
    await c.call(db.save, doc)
    assert doc["_rev"] != first and doc["_rev"].startswith("2-")
    server = adb.get("foo")
    assert server["_rev"] == doc["_rev"] and server["n"] == 2


async def test_stale_or_missing_rev_conflicts(c: Client, db: Any, adb: Any) -> None:
    doc: dict[str, Any] = {"_id": "d", "n": 1}
    await c.call(db.save, doc)
    stale = dict(doc)
    doc["n"] = 2
    await c.call(db.save, doc)

    stale["n"] = 3
    before = dict(stale)
    with pytest.raises(Conflict) as info:
        await c.call(db.save, stale)
    assert info.value.status == 409 and info.value.error == "conflict"
    assert stale == before  # the caller's doc is left as it was

    norev = {"_id": "d", "n": 4}
    with pytest.raises(Conflict):
        await c.call(db.save, norev)
    assert "_rev" not in norev

    server = adb.get("d")
    assert server["n"] == 2 and server["_rev"] == doc["_rev"]


async def test_save_force_overwrites(c: Client, db: Any, adb: Any) -> None:
    doc = {"_id": "d", "who": "me"}
    await c.call(db.save, doc)
    theirs = adb.get("d")
    theirs["who"] = "them"
    adb.save(theirs)  # a concurrent change: doc["_rev"] is now stale

    doc["who"] = "me again"
    saved = await c.call(db.save, doc, force=True)
    assert saved is doc
    server = adb.get("d")
    assert server["who"] == "me again"
    assert server["_rev"] == doc["_rev"] and doc["_rev"].startswith("3-")


async def test_save_force_after_a_concurrent_delete(c: Client, db: Any, adb: Any) -> None:
    # force means "the local doc wins": a concurrent delete must not stop it (the bulk path
    # already recreates such docs, see test_bulk.py)
    doc: dict[str, Any] = {"_id": "d", "n": 1}
    await c.call(db.save, doc)
    adb.delete(adb.get("d"))
    doc["n"] = 2
    await c.call(db.save, doc, force=True)
    server = adb.get("d")
    assert server["n"] == 2 and server["_rev"] == doc["_rev"]


async def test_save_merge(c: Client, db: Any, adb: Any) -> None:
    doc = {"_id": "d", "mine": 0, "theirs": 0}
    await c.call(db.save, doc)
    theirs = adb.get("d")
    theirs["theirs"] = 1
    adb.save(theirs)

    doc["mine"] = 1
    seen: list[tuple[Any, Any]] = []

    def merge(local: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
        seen.append((dict(local), server))
        local["theirs"] = server["theirs"]
        return local

    saved = await c.call(db.save, doc, merge=merge)
    assert saved is doc
    assert len(seen) == 1
    local, server = seen[0]
    assert local["mine"] == 1 and local["theirs"] == 0
    assert isinstance(server, Document) and server.theirs == 1 and server.mine == 0
    assert server["_rev"] == theirs["_rev"]

    stored = adb.get("d")
    assert body(stored) == {"mine": 1, "theirs": 1}
    assert stored["_rev"] == doc["_rev"] and doc["_rev"].startswith("3-")


async def test_save_merge_returning_a_new_dict(c: Client, db: Any, adb: Any) -> None:
    # corduroy 0.9 crashed when merge built a new dict (reference/corduroy.md §7, bug 9)
    doc = {"_id": "d", "a": 1}
    await c.call(db.save, doc)
    theirs = adb.get("d")
    theirs["b"] = 2
    adb.save(theirs)

    def merge(local: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
        return {"a": local["a"] + 10, "b": server["b"]}

    doc["a"] = 5
    await c.call(db.save, doc, merge=merge)
    stored = adb.get("d")
    assert body(stored) == {"a": 15, "b": 2}
    assert doc["_id"] == "d" and doc["_rev"] == stored["_rev"]
    assert body(doc) == {"a": 15, "b": 2}


async def test_save_merge_none_gives_conflict(c: Client, db: Any, adb: Any) -> None:
    doc: dict[str, Any] = {"_id": "d", "n": 1}
    await c.call(db.save, doc)
    theirs = adb.get("d")
    theirs["n"] = 2
    adb.save(theirs)

    calls = []

    def merge(local: dict[str, Any], server: dict[str, Any]) -> None:
        calls.append(server["n"])
        return None

    doc["n"] = 3
    with pytest.raises(Conflict):
        await c.call(db.save, doc, merge=merge)
    assert calls == [2]
    assert adb.get("d")["n"] == 2


async def test_get_missing(c: Client, db: Any) -> None:
    with pytest.raises(NotFound) as info:
        await c.call(db.get, "missing")
    exc = info.value
    assert exc.status == 404 and exc.error == "not_found"
    assert isinstance(exc.body, dict) and exc.body["error"] == "not_found"
    assert exc.method == "GET" and exc.url is not None and "missing" in exc.url


async def test_get_revisions(c: Client, db: Any) -> None:
    doc: dict[str, Any] = {"_id": "d", "n": 1}
    await c.call(db.save, doc)
    old = doc["_rev"]
    doc["n"] = 2
    await c.call(db.save, doc)
    new = doc["_rev"]

    at_old = await c.call(db.get, "d", rev=old)
    at_new = await c.call(db.get, "d", rev=new)
    assert isinstance(at_old, Document)
    assert (at_old.n, at_old.rev) == (1, old)
    assert (at_new.n, at_new.rev) == (2, new)

    with_revs = await c.call(db.get, "d", revs=True)
    assert with_revs["_revisions"] == {
        "start": 2,
        "ids": [new.split("-", 1)[1], old.split("-", 1)[1]],
    }


async def test_conflicts_and_open_revs(c: Client, db: Any, adb: Any) -> None:
    doc = {"_id": "d", "side": "a"}
    await c.call(db.save, doc)
    # A second leaf at the same depth, as replication would leave it.
    sibling = {"_id": "d", "_rev": conflict_rev(), "side": "b"}
    adb.save(sibling, new_edits=False)
    revs = {doc["_rev"], sibling["_rev"]}

    got = await c.call(db.get, "d", conflicts=True)
    assert isinstance(got, Document)
    assert len(got["_conflicts"]) == 1
    assert {got.rev, *got["_conflicts"]} == revs

    every = await c.call(db.get, "d", open_revs="all")
    assert isinstance(every, list) and len(every) == 2
    assert all(set(item) == {"ok"} and isinstance(item["ok"], Document) for item in every)
    assert {item["ok"].rev for item in every} == revs
    assert {item["ok"]["side"] for item in every} == {"a", "b"}

    one = await c.call(db.get, "d", open_revs=[sibling["_rev"]])
    assert len(one) == 1 and set(one[0]) == {"ok"}
    assert one[0]["ok"].rev == sibling["_rev"] and one[0]["ok"].side == "b"

    unknown = conflict_rev(1, "e")
    assert await c.call(db.get, "d", open_revs=[unknown]) == [{"missing": unknown}]


async def test_delete(c: Client, db: Any, adb: Any) -> None:
    doc: dict[str, Any] = {"_id": "d", "n": 1}
    await c.call(db.save, doc)
    stale = dict(doc)
    doc["n"] = 2
    await c.call(db.save, doc)
    with pytest.raises(Conflict):
        await c.call(db.delete, stale)
    assert adb.get("d")["n"] == 2

    reply = await c.call(db.delete, doc)
    assert reply["ok"] is True and reply["id"] == "d" and reply["rev"].startswith("3-")
    with pytest.raises(NotFound):
        await c.call(db.get, "d")
    with pytest.raises(NotFound):
        adb.get("d")

    await c.call(db.save, {"_id": "e"})
    got = await c.call(db.get, "e")
    await c.call(db.delete, got)  # a Document works as well
    with pytest.raises(NotFound):
        adb.get("e")


# -- ids, unicode, size ------------------------------------------------------------------------


async def test_special_ids_round_trip(c: Client, db: Any, adb: Any, server: Server) -> None:
    for doc_id in SPECIAL_IDS:
        doc = {"_id": doc_id, "v": doc_id}
        await c.call(db.save, doc)
        got = await c.call(db.get, doc_id)
        assert got.id == doc_id and got.v == doc_id and got.rev == doc["_rev"]
        assert adb.get(doc_id)["_rev"] == doc["_rev"]
        # checked without corduroy2's quoting
        raw = raw_get(server, raw_doc_path(db.name, doc_id))
        assert raw["_id"] == doc_id and raw["v"] == doc_id

    ids = {row["id"] for row in raw_get(server, f"/{quote(db.name, safe='')}/_all_docs")["rows"]}
    assert ids == {i for i in SPECIAL_IDS if not i.startswith("_local/")}
    found = await c.call(db.get, [i for i in SPECIAL_IDS if not i.startswith("_local/")])
    assert [d.id for d in found] == [i for i in SPECIAL_IDS if not i.startswith("_local/")]

    for doc_id in SPECIAL_IDS:
        current = await c.call(db.get, doc_id)
        await c.call(db.delete, current)
        with pytest.raises(NotFound):
            await c.call(db.get, doc_id)
        with pytest.raises(NotFound):
            adb.get(doc_id)


async def test_unicode_values(c: Client, db: Any, adb: Any, server: Server) -> None:
    values = {
        "_id": "u",
        "latin": "føø bår ünïcødé",
        "cjk": "日本語のテキスト",
        "astral": "\U0001f600 \U0001d11e",
        "rtl": "مرحبا",
        "ключ": ["é", {"ß": "ø"}],
        "escapes": "quote\" backslash\\ nul\x00 tab\t",
    }
    doc = dict(values)
    await c.call(db.save, doc)
    got = await c.call(db.get, "u")
    assert body(got) == body(values)
    assert body(adb.get("u")) == body(values)
    assert body(raw_get(server, raw_doc_path(db.name, "u"))) == body(values)


async def test_large_doc(c: Client, db: Any, adb: Any) -> None:
    text = ("0123456789abcdef-é" * 65000)[:1_100_000]
    doc = {"_id": "big", "text": text, "list": list(range(1000))}
    await c.call(db.save, doc)
    got = await c.call(db.get, "big")
    assert got["text"] == text and got["list"] == list(range(1000))
    assert got.rev == doc["_rev"]


# -- copy ------------------------------------------------------------------------------------------


async def test_copy(c: Client, db: Any, adb: Any, server: Server) -> None:
    src = {"_id": "src", "n": 1, "nested": {"a": [1, 2]}}
    await c.call(db.save, src)
    rev = await c.call(db.copy, "src", "dst")
    dst = adb.get("dst")
    assert body(dst) == body(src)
    if server.deviates("copy_reply_no_rev"):
        assert rev is None
    else:
        assert rev == dst["_rev"]
    assert dst["_rev"].startswith("1-")
    assert adb.get("src")["_rev"] == src["_rev"]  # the source is untouched


async def test_copy_onto_existing(c: Client, db: Any, adb: Any, server: Server) -> None:
    await c.call(db.save, {"_id": "src", "n": 1})
    dest = {"_id": "dst", "n": 2, "only_in_dst": True}
    await c.call(db.save, dest)
    with pytest.raises(Conflict):
        await c.call(db.copy, "src", "dst")
    with pytest.raises(Conflict):
        await c.call(db.copy, "src", {"_id": "dst"})
    assert adb.get("dst")["n"] == 2

    rev = await c.call(db.copy, "src", dest)  # dest carries _rev: overwrite
    stored = adb.get("dst")
    assert body(stored) == {"n": 1}
    assert stored["_rev"].startswith("2-")
    if not server.deviates("copy_reply_no_rev"):
        assert rev == stored["_rev"]


async def test_copy_sources(c: Client, db: Any, adb: Any) -> None:
    await c.call(db.save, {"_id": "src", "n": 1})
    src = await c.call(db.get, "src")
    await c.call(db.copy, src, "from-document")
    assert body(adb.get("from-document")) == {"n": 1}

    class DictLike:
        def __init__(self, **items: Any) -> None:
            self._items = items

        def items(self) -> Any:
            return self._items.items()

    await c.call(db.copy, DictLike(_id="src"), DictLike(_id="from-dict-like"))
    assert body(adb.get("from-dict-like")) == {"n": 1}

    # The source travels quoted in the path; the destination here needs no quoting (pouchdb-
    # server does not percent-decode the Destination header; CouchDB >= 2.2 does).
    quoted = {"_id": "src/with space?#%", "n": 2}
    await c.call(db.save, quoted)
    await c.call(db.copy, quoted["_id"], "from-quoted")
    assert body(adb.get("from-quoted")) == {"n": 2}

    # a doc as the source names its revision: an old one can be copied
    old = quoted["_rev"]
    quoted["n"] = 3
    await c.call(db.save, quoted)
    await c.call(db.copy, {"_id": quoted["_id"], "_rev": old}, "from-old-rev")
    assert body(adb.get("from-old-rev")) == {"n": 2}
    with pytest.raises(NotFound):
        await c.call(db.copy, {"_id": "src", "_rev": conflict_rev(1, "f")}, "from-no-rev")


# -- multi-get, database -------------------------------------------------------------------------


async def test_get_many(c: Client, db: Any, adb: Any) -> None:
    for doc_id in ("a", "b", "c"):
        adb.save({"_id": doc_id, "v": doc_id.upper()})
    adb.delete(adb.get("b"))
    docs = await c.call(db.get, ["c", "missing", "a", "b"])
    assert isinstance(docs, list) and len(docs) == 4
    assert docs[1] is None and docs[3] is None
    assert all(isinstance(d, Document) for d in (docs[0], docs[2]))
    assert (docs[0].id, docs[0].v, docs[2].id, docs[2].v) == ("c", "C", "a", "A")
    assert docs[0].rev == adb.get("c")["_rev"]
    assert await c.call(db.get, []) == []


async def test_info_and_exists(c: Client, db: Any, adb: Any) -> None:
    info = await c.call(db.info)
    assert info["db_name"] == db.name and info["doc_count"] == 0
    adb.save({"_id": "x"})
    assert (await c.call(db.info))["doc_count"] == 1
    assert await c.call(db.exists) is True
    missing = c.couch.database(f"c2test-missing-{uuid.uuid4().hex[:8]}")
    assert await c.call(missing.exists) is False
    with pytest.raises(NotFound):
        await c.call(missing.info)


async def test_database_from_url(c: Client, admin: Any, server: Server) -> None:
    # "$()+" must travel percent-encoded. (Not "/": pouchdb-server drops it from db names.)
    name = f"c2test-url-{uuid.uuid4().hex[:8]}-$(x)+y"
    admin.create(name)
    try:
        url = f"{server.url}/{quote(name, safe='')}"
        database = c.couch.database_class(url, auth=server.auth)
        try:
            assert database.name == name
            assert type(database.couch) is type(c.couch)
            info = await c.call(database.info)
            assert info["db_name"] == name
            doc = {"_id": "d", "via": "url"}
            await c.call(database.save, doc)
            assert admin.database(name).get("d")["_rev"] == doc["_rev"]
            assert (await c.call(database.get, "d")).via == "url"
        finally:
            await close(database.couch)
        if server.auth:
            user, password = (quote(part, safe="") for part in server.auth)
            with_creds = url.replace("://", f"://{user}:{password}@", 1)
            database = c.couch.database_class(with_creds)
            try:
                assert password not in repr(database) and password not in database.couch.url
                assert (await c.call(database.get, "d")).via == "url"
            finally:
                await close(database.couch)
    finally:
        admin.delete(name)


async def test_batch_ok(c: Client, db: Any, adb: Any, server: Server) -> None:
    doc = {"_id": "b", "n": 1}
    saved = await c.call(db.save, doc, batch="ok")
    assert saved is doc
    if server.deviates("batch_ok_has_rev"):
        assert doc["_rev"].startswith("1-")
    else:
        assert "_rev" not in doc  # 202 Accepted: no revision yet
    # The write lands eventually.
    deadline = time.monotonic() + 5
    while True:
        try:
            stored = adb.get("b")
            break
        except NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    assert stored["n"] == 1

    if not server.deviates("batch_ok_has_rev"):
        existing = {"_id": "e", "n": 1}
        await c.call(db.save, existing)
        rev = existing["_rev"]
        existing["n"] = 2
        await c.call(db.save, existing, batch="ok")
        assert existing["_rev"] == rev  # unchanged: the server did not report the new one
