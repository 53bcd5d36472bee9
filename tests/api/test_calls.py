"""The API layer over a recording backend: exact requests, multi-request operations, calling
styles. No IO and no framework: every reply is scripted and delivered synchronously."""

from __future__ import annotations

import base64
import datetime
import logging
from typing import Any

import pytest

from corduroy2 import errors
from corduroy2.api import ConflictResolution, Couch, Database, Document, PendingDoc, Status
from corduroy2.api.calls import Call
from corduroy2.api.database import UUID_BATCH
from corduroy2.pipeline.exchange import Sender
from corduroy2.pipeline.retry import Retry
from corduroy2.backend import Outcome
from corduroy2.protocol.requests import Request

from corduroy2.testing import RecordingBackend, Reply

URL = "http://127.0.0.1:5984"
PASSWORD = "s3cr3t-p@ss"
UUIDS = [f"uuid{i:02d}" for i in range(UUID_BATCH)]


def make(*script: Any, url: str = URL, auth: tuple[str, str] | None = None
         ) -> tuple[Couch, RecordingBackend]:
    backend = RecordingBackend(script)
    # retry=False: a scripted transport error must reach the caller, not be retried (the
    # recording backend records call_later without running it).
    return Couch(url, auth=auth, backend=backend, retry=False), backend


def make_db(*script: Any, name: str = "db", **kwargs: Any) -> tuple[Database, RecordingBackend]:
    couch, backend = make(*script, **kwargs)
    return couch.database(name), backend


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Recorder:
    """A callback that records each ``(data, status)`` call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Status]] = []

    def __call__(self, data: Any, status: Status) -> None:
        self.calls.append((data, status))

    @property
    def only(self) -> tuple[Any, Status]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


NOT_FOUND = Reply(404, {"error": "not_found", "reason": "missing"})
CONFLICT = Reply(409, {"error": "conflict", "reason": "Document update conflict."})

# -- requests: method, URL, headers -----------------------------------------------------------


def test_creating_couch_and_database_sends_nothing() -> None:
    couch, backend = make()
    couch.database("db")
    assert backend.requests == []


def test_info_request_and_default_headers() -> None:
    couch, backend = make(Reply(200, {"couchdb": "Welcome", "version": "3.3.3"}))
    assert couch.info() == {"couchdb": "Welcome", "version": "3.3.3"}
    request = backend.last
    assert (request.method, request.url) == ("GET", "http://127.0.0.1:5984/")
    assert backend.header(request, "Accept") == "application/json"
    assert backend.header(request, "User-Agent").startswith("corduroy2/")
    assert backend.header(request, "Authorization") is None
    assert backend.header(request, "Content-Type") is None
    assert request.body is None


def test_version_all_dbs_uuids() -> None:
    couch, backend = make(
        Reply(200, {"version": "3.3.3"}),
        Reply(200, ["_users", "db"]),
        Reply(200, {"uuids": ["a", "b"]}),
    )
    assert couch.version() == "3.3.3"
    assert couch.all_dbs() == ["_users", "db"]
    assert couch.uuids(count=2) == ["a", "b"]
    assert backend.calls() == [
        ("GET", f"{URL}/"),
        ("GET", f"{URL}/_all_dbs"),
        ("GET", f"{URL}/_uuids?count=2"),
    ]


@pytest.mark.parametrize("count", [0, -1, 1.5, "3"])
def test_uuids_bad_count_raises_before_sending(count: Any) -> None:
    couch, backend = make()
    with pytest.raises(ValueError):
        couch.uuids(count=count)
    assert backend.requests == []


def test_auth_tuple_sends_basic_authorization() -> None:
    couch, backend = make(Reply(200, {}), auth=("admin", PASSWORD))
    couch.info()
    assert backend.header(backend.last, "Authorization") == basic("admin", PASSWORD)


def test_url_userinfo_sends_basic_authorization_and_leaves_the_url() -> None:
    couch, backend = make(Reply(200, {}), url="http://admin:s3cr3t-p%40ss@127.0.0.1:5984/")
    couch.database("db").info()
    request = backend.last
    assert backend.header(request, "Authorization") == basic("admin", PASSWORD)
    assert request.url == "http://127.0.0.1:5984/db"
    assert "admin" not in request.url and "s3cr3t" not in request.url
    assert couch.url == URL


def test_explicit_auth_wins_over_url_userinfo() -> None:
    couch, backend = make(Reply(200, {}), url="http://u:p@127.0.0.1:5984", auth=("admin", "x"))
    couch.info()
    assert backend.header(backend.last, "Authorization") == basic("admin", "x")


def test_url_path_prefix_is_kept() -> None:
    couch, backend = make(Reply(200, {}), url="https://proxy.example/couch/")
    couch.database("db").info()
    assert backend.last.url == "https://proxy.example/couch/db"


@pytest.mark.parametrize(
    ("name", "doc_id", "url"),
    [
        ("db", "plain", f"{URL}/db/plain"),
        ("a/b", "x", f"{URL}/a%2Fb/x"),
        ("db", "a/b", f"{URL}/db/a%2Fb"),
        ("db", "a?b#c", f"{URL}/db/a%3Fb%23c"),
        ("db", "100% føø", f"{URL}/db/100%25%20f%C3%B8%C3%B8"),
        ("db", "_design/ddoc", f"{URL}/db/_design/ddoc"),
        ("db", "_design/a/b", f"{URL}/db/_design/a%2Fb"),
        ("db", "_local/x", f"{URL}/db/_local/x"),
    ],
)
def test_get_one_quotes_the_url(name: str, doc_id: str, url: str) -> None:
    db, backend = make_db(Reply(200, {"_id": doc_id, "_rev": "1-a", "v": 1}), name=name)
    doc = db.get(doc_id)
    assert isinstance(doc, Document)
    assert doc.v == 1 and doc.id == doc_id and doc.rev == "1-a"
    assert backend.calls() == [("GET", url)]


def test_get_one_passes_options_as_query() -> None:
    db, backend = make_db(Reply(200, {"_id": "x"}))
    db.get("x", rev="1-abc", revs=True, conflicts=None)
    assert backend.last.url == f"{URL}/db/x?rev=1-abc&revs=true"


def test_get_missing_raises_not_found() -> None:
    db, _ = make_db(NOT_FOUND)
    with pytest.raises(errors.NotFound) as info:
        db.get("x")
    assert info.value.status == 404
    assert info.value.error == "not_found"
    assert info.value.url == f"{URL}/db/x"


def test_get_many_returns_none_for_missing_and_deleted() -> None:
    db, backend = make_db(Reply(200, {"total_rows": 3, "offset": 0, "rows": [
        {"id": "a", "key": "a", "value": {"rev": "1-a"}, "doc": {"_id": "a", "_rev": "1-a"}},
        {"key": "b", "error": "not_found"},
        {"id": "c", "key": "c", "value": {"rev": "2-c", "deleted": True}, "doc": None},
        {"id": "d/e", "key": "d/e", "value": {"rev": "1-d"}, "doc": {"_id": "d/e", "n": 4}},
    ]}))
    docs = db.get(["a", "b", "c", "d/e"])
    assert [d and d["_id"] for d in docs] == ["a", None, None, "d/e"]
    assert isinstance(docs[0], Document) and docs[3].n == 4
    request = backend.last
    assert (request.method, request.url) == ("POST", f"{URL}/db/_all_docs?include_docs=true")
    assert backend.json(request) == {"keys": ["a", "b", "c", "d/e"]}
    assert backend.header(request, "Content-Type") == "application/json"


# -- couch: create / delete / db ----------------------------------------------------------------


def test_create_and_delete_database() -> None:
    couch, backend = make(Reply(201, {"ok": True}), Reply(200, {"ok": True}))
    db = couch.create("new/db", q=2, partitioned=True)
    assert isinstance(db, Database) and db.name == "new/db" and db.couch is couch
    assert couch.delete("new/db") == {"ok": True}
    assert backend.calls() == [
        ("PUT", f"{URL}/new%2Fdb?q=2&partitioned=true"),
        ("DELETE", f"{URL}/new%2Fdb"),
    ]
    assert backend.requests[0].body == b""  # PUT with an empty body, not a missing one


def test_create_existing_raises_precondition_failed() -> None:
    couch, _ = make(Reply(412, {"error": "file_exists", "reason": "The database could not be "
                                "created, the file already exists."}))
    with pytest.raises(errors.PreconditionFailed):
        couch.create("db")


def test_db_existing_makes_one_request() -> None:
    couch, backend = make(Reply(200, {"db_name": "db"}))
    db = couch.db("db", create_if_missing=True)
    assert isinstance(db, Database) and db.name == "db"
    assert backend.calls() == [("GET", f"{URL}/db")]


def test_db_missing_raises_without_create() -> None:
    couch, backend = make(NOT_FOUND)
    with pytest.raises(errors.NotFound):
        couch.db("db")
    assert backend.calls() == [("GET", f"{URL}/db")]


def test_db_create_if_missing_puts_after_404() -> None:
    couch, backend = make(NOT_FOUND, Reply(201, {"ok": True}))
    db = couch.db("db", create_if_missing=True)
    assert db.name == "db"
    assert backend.calls() == [("GET", f"{URL}/db"), ("PUT", f"{URL}/db")]


def test_db_create_if_missing_tolerates_a_412_race() -> None:
    couch, backend = make(NOT_FOUND, Reply(412, {"error": "file_exists"}))
    db = couch.db("db", create_if_missing=True)
    assert db.name == "db"
    assert backend.calls() == [("GET", f"{URL}/db"), ("PUT", f"{URL}/db")]


def test_db_create_if_missing_reports_other_errors() -> None:
    couch, _ = make(NOT_FOUND, Reply(401, {"error": "unauthorized", "reason": "admin only"}))
    with pytest.raises(errors.Unauthorized):
        couch.db("db", create_if_missing=True)


@pytest.mark.parametrize(("status", "body", "result"), [(200, None, True), (404, None, False)])
def test_exists(status: int, body: Any, result: bool) -> None:
    db, backend = make_db(Reply(status, body))
    assert db.exists() is result
    assert backend.calls() == [("HEAD", f"{URL}/db")]


def test_exists_raises_other_errors() -> None:
    db, _ = make_db(Reply(401, None))
    with pytest.raises(errors.Unauthorized):
        db.exists()


# -- save ---------------------------------------------------------------------------------------


def test_save_with_id_puts_and_writes_rev_back() -> None:
    db, backend = make_db(Reply(201, {"ok": True, "id": "a/b", "rev": "1-x"}))
    doc = {"_id": "a/b", "v": "føø"}
    assert db.save(doc) is doc
    assert doc == {"_id": "a/b", "_rev": "1-x", "v": "føø"}
    request = backend.last
    assert (request.method, request.url) == ("PUT", f"{URL}/db/a%2Fb")
    assert backend.json(request) == {"_id": "a/b", "v": "føø"}
    assert backend.header(request, "Content-Type") == "application/json"
    assert backend.header(request, "Accept") == "application/json"


def test_save_options_go_to_the_query_and_batch_reply_without_rev_is_fine() -> None:
    db, backend = make_db(Reply(202, {"ok": True, "id": "x"}))
    doc = {"_id": "x"}
    db.save(doc, batch="ok")
    assert backend.last.url == f"{URL}/db/x?batch=ok"
    assert "_rev" not in doc


def test_save_without_id_fetches_uuids_once_for_several_saves() -> None:
    db, backend = make_db(
        Reply(200, {"uuids": UUIDS}),
        Reply(201, {"ok": True, "id": UUIDS[0], "rev": "1-a"}),
        Reply(201, {"ok": True, "id": UUIDS[1], "rev": "1-b"}),
        Reply(201, {"ok": True, "id": UUIDS[2], "rev": "1-c"}),
    )
    docs = [{"n": i} for i in range(3)]
    for doc in docs:
        db.save(doc)
    assert [d["_id"] for d in docs] == UUIDS[:3]
    assert [d["_rev"] for d in docs] == ["1-a", "1-b", "1-c"]
    assert backend.calls() == [
        ("GET", f"{URL}/_uuids?count={UUID_BATCH}"),
        ("PUT", f"{URL}/db/{UUIDS[0]}"),
        ("PUT", f"{URL}/db/{UUIDS[1]}"),
        ("PUT", f"{URL}/db/{UUIDS[2]}"),
    ]
    assert backend.json(backend.requests[1]) == {"n": 0, "_id": UUIDS[0]}


def test_save_refills_the_uuid_cache_when_empty() -> None:
    db, backend = make_db(
        Reply(200, {"uuids": ["only"]}),
        Reply(201, {"ok": True, "rev": "1-a"}),
        Reply(200, {"uuids": ["next"]}),
        Reply(201, {"ok": True, "rev": "1-b"}),
    )
    first, second = {}, {}
    db.save(first)
    db.save(second)
    assert (first["_id"], second["_id"]) == ("only", "next")
    assert [m for m, _ in backend.calls()] == ["GET", "PUT", "GET", "PUT"]


def test_save_conflict_raises_and_leaves_the_doc() -> None:
    db, backend = make_db(CONFLICT)
    doc = {"_id": "x", "_rev": "1-old", "v": 2}
    with pytest.raises(errors.Conflict) as info:
        db.save(doc)
    assert info.value.reason == "Document update conflict."
    assert doc == {"_id": "x", "_rev": "1-old", "v": 2}
    assert len(backend.requests) == 1


def test_save_force_rereads_and_overwrites() -> None:
    db, backend = make_db(
        CONFLICT,
        Reply(200, {"_id": "x", "_rev": "3-server", "v": "theirs"}),
        Reply(201, {"ok": True, "id": "x", "rev": "4-new"}),
    )
    doc = {"_id": "x", "_rev": "1-old", "v": "mine"}
    assert db.save(doc, force=True) is doc
    assert doc == {"_id": "x", "_rev": "4-new", "v": "mine"}
    assert backend.calls() == [
        ("PUT", f"{URL}/db/x"), ("GET", f"{URL}/db/x"), ("PUT", f"{URL}/db/x"),
    ]
    assert backend.json(backend.requests[2]) == {"_id": "x", "_rev": "3-server", "v": "mine"}


def test_save_merge_writes_what_merge_returns() -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def merge(local: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
        seen.append((dict(local), dict(server)))
        return {"_id": "x", "n": local["n"] + server["n"]}

    db, backend = make_db(
        CONFLICT,
        Reply(200, {"_id": "x", "_rev": "5-s", "n": 10}),
        Reply(201, {"ok": True, "id": "x", "rev": "6-m"}),
    )
    doc = {"_id": "x", "_rev": "4-l", "n": 1}
    assert db.save(doc, merge=merge) is doc
    assert seen == [({"_id": "x", "_rev": "4-l", "n": 1}, {"_id": "x", "_rev": "5-s", "n": 10})]
    assert backend.json(backend.requests[2]) == {"_id": "x", "n": 11, "_rev": "5-s"}
    assert doc == {"_id": "x", "n": 11, "_rev": "6-m"}


def test_save_merge_gets_a_document() -> None:
    kinds: list[type] = []

    def merge(local: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
        kinds.append(type(server))
        local["v"] = server.v  # type: ignore[attr-defined]
        return local

    db, _ = make_db(CONFLICT, Reply(200, {"_id": "x", "_rev": "2-s", "v": 7}),
                    Reply(201, {"rev": "3-m"}))
    doc = {"_id": "x", "v": 0}
    db.save(doc, merge=merge)
    assert kinds == [Document]
    assert doc == {"_id": "x", "v": 7, "_rev": "3-m"}


def test_save_merge_result_without_id_is_saved_under_the_same_id() -> None:
    db, backend = make_db(CONFLICT, Reply(200, {"_id": "x", "_rev": "2-s", "n": 1}),
                          Reply(201, {"rev": "3-m"}))
    doc = {"_id": "x", "n": 5}
    db.save(doc, merge=lambda local, server: {"n": local["n"] + server["n"]})
    assert backend.calls()[-1] == ("PUT", f"{URL}/db/x")
    assert doc["_id"] == "x" and doc["_rev"] == "3-m" and doc["n"] == 6


def test_save_merge_returning_none_reraises_the_conflict() -> None:
    calls: list[int] = []

    def merge(local: dict[str, Any], server: dict[str, Any]) -> None:
        calls.append(1)
        return None

    db, backend = make_db(CONFLICT, Reply(200, {"_id": "x", "_rev": "2-s"}))
    doc = {"_id": "x", "_rev": "1-l", "v": 1}
    with pytest.raises(errors.Conflict):
        db.save(doc, merge=merge)
    assert calls == [1]
    assert [m for m, _ in backend.calls()] == ["PUT", "GET"]
    assert doc == {"_id": "x", "_rev": "1-l", "v": 1}


# -- bulk save ----------------------------------------------------------------------------------


def test_bulk_save_reports_per_doc_outcome() -> None:
    db, backend = make_db(
        Reply(200, {"uuids": UUIDS}),
        Reply(201, [
            {"ok": True, "id": "a", "rev": "1-a"},
            {"id": "b", "error": "conflict", "reason": "Document update conflict."},
            {"ok": True, "id": UUIDS[0], "rev": "1-c"},
            {"id": "d", "error": "forbidden", "reason": "no"},
        ]),
    )
    docs = [{"_id": "a"}, {"_id": "b", "_rev": "1-old"}, {"v": 3}, {"_id": "d"}]
    result = db.save(docs)
    assert isinstance(result, ConflictResolution)
    assert not result.ok
    assert set(result.resolved) == {"a", UUIDS[0]}
    assert result.resolved["a"] is docs[0]
    assert docs[0]["_rev"] == "1-a" and docs[2] == {"v": 3, "_id": UUIDS[0], "_rev": "1-c"}
    assert docs[1]["_rev"] == "1-old"  # not written: rev untouched
    assert result.pending == {
        "b": PendingDoc(docs[1], "conflict", "Document update conflict."),
        "d": PendingDoc(docs[3], "forbidden", "no"),
    }
    assert repr(result) == "<Conflicts: b, d>"
    request = backend.last
    assert (request.method, request.url) == ("POST", f"{URL}/db/_bulk_docs")
    assert backend.json(request) == {"docs": [
        {"_id": "a"}, {"_id": "b", "_rev": "1-old"}, {"v": 3, "_id": UUIDS[0]}, {"_id": "d"},
    ]}


def test_bulk_save_all_written() -> None:
    db, backend = make_db(Reply(201, [{"ok": True, "id": "a", "rev": "1-a"},
                                      {"ok": True, "id": "b", "rev": "2-b"}]))
    result = db.save([{"_id": "a"}, {"_id": "b", "_rev": "1-b"}])
    assert result.ok and result.pending == {}
    assert repr(result) == "<Success: 2 docs updated>"
    assert len(backend.requests) == 1  # no _uuids fetch when every doc has an id


def test_bulk_save_conflicts_do_not_raise_in_callback_style() -> None:
    db, _ = make_db(Reply(201, [{"id": "a", "error": "conflict", "reason": "r"}]))
    cb = Recorder()
    assert db.save([{"_id": "a"}], callback=cb) is None
    data, status = cb.only
    assert status.ok and status.code == 201 and status.error is None
    assert isinstance(data, ConflictResolution) and set(data.pending) == {"a"}


def test_bulk_save_force_refetches_and_rewrites_conflicts() -> None:
    db, backend = make_db(
        Reply(201, [{"ok": True, "id": "a", "rev": "1-a"},
                    {"id": "b", "error": "conflict", "reason": "r"}]),
        Reply(200, {"rows": [{"id": "b", "key": "b", "value": {"rev": "7-s"},
                              "doc": {"_id": "b", "_rev": "7-s", "v": "theirs"}}]}),
        Reply(201, [{"ok": True, "id": "b", "rev": "8-f"}]),
    )
    docs = [{"_id": "a"}, {"_id": "b", "v": "mine"}]
    result = db.save(docs, force=True)
    assert result.ok, result.pending
    assert docs[1] == {"_id": "b", "v": "mine", "_rev": "8-f"}
    assert set(result.resolved) == {"a", "b"}
    assert backend.calls() == [
        ("POST", f"{URL}/db/_bulk_docs"),
        ("POST", f"{URL}/db/_all_docs?include_docs=true"),
        ("POST", f"{URL}/db/_bulk_docs"),
    ]
    assert backend.json(backend.requests[1]) == {"keys": ["b"]}
    assert backend.json(backend.requests[2]) == {"docs": [{"_id": "b", "v": "mine",
                                                           "_rev": "7-s"}]}


def _bulk_conflict_script() -> list[Reply]:
    return [
        Reply(201, [{"id": "b", "error": "conflict", "reason": "r"}]),
        Reply(200, {"rows": [{"id": "b", "key": "b", "value": {"rev": "7-s"},
                              "doc": {"_id": "b", "_rev": "7-s", "n": 10}}]}),
        Reply(201, [{"ok": True, "id": "b", "rev": "8-m"}]),
    ]


def test_bulk_save_merge_rewrites_what_merge_returns() -> None:
    db, backend = make_db(*_bulk_conflict_script())
    docs = [{"_id": "b", "n": 1}]
    result = db.save(docs, merge=lambda local, server: {**server, "n": local["n"] + server["n"]})
    assert result.ok and set(result.resolved) == {"b"}
    assert backend.json(backend.last) == {"docs": [{"_id": "b", "_rev": "7-s", "n": 11}]}
    assert docs[0] == {"_id": "b", "_rev": "8-m", "n": 11}


def test_bulk_save_merge_returning_none_leaves_the_doc_pending() -> None:
    db, backend = make_db(*_bulk_conflict_script()[:2])
    docs = [{"_id": "b", "n": 1}]
    result = db.save(docs, merge=lambda local, server: None)
    assert not result.ok and set(result.pending) == {"b"}
    assert len(backend.requests) == 2  # nothing to write again


def test_bulk_save_merge_result_without_id_updates_the_same_doc() -> None:
    db, backend = make_db(*_bulk_conflict_script())
    docs = [{"_id": "b", "n": 1}]
    db.save(docs, merge=lambda local, server: {"n": local["n"] + server["n"]})
    assert backend.json(backend.last) == {"docs": [{"_id": "b", "_rev": "7-s", "n": 11}]}


# -- delete / copy ------------------------------------------------------------------------------


def test_delete_sends_rev() -> None:
    db, backend = make_db(Reply(200, {"ok": True, "id": "a b", "rev": "2-d"}))
    assert db.delete({"_id": "a b", "_rev": "1-a"}) == {"ok": True, "id": "a b", "rev": "2-d"}
    assert backend.calls() == [("DELETE", f"{URL}/db/a%20b?rev=1-a")]


@pytest.mark.parametrize("doc", [{"_id": "x"}, {"_id": "x", "_rev": None}, {"_id": "x", "_rev": ""}])
def test_delete_without_rev_raises_before_any_request(doc: dict[str, Any]) -> None:
    db, backend = make_db()
    cb = Recorder()
    with pytest.raises(ValueError, match="_rev"):
        db.delete(doc, callback=cb)
    assert backend.requests == [] and cb.calls == []


@pytest.mark.parametrize(
    ("source", "dest", "url", "header"),
    [
        ("a", "b", f"{URL}/db/a", "b"),
        ("a", {"_id": "b", "_rev": "2-b"}, f"{URL}/db/a", "b?rev=2-b"),
        ({"_id": "a", "_rev": "1-a"}, "b", f"{URL}/db/a?rev=1-a", "b"),
        ("a/b", "c d", f"{URL}/db/a%2Fb", "c%20d"),
        ("a", "føø", f"{URL}/db/a", "f%C3%B8%C3%B8"),
        ("a", "x?y#z%", f"{URL}/db/a", "x%3Fy%23z%25"),
        ("_design/src", "_design/dst", f"{URL}/db/_design/src", "_design/dst"),
    ],
)
def test_copy_destination_header(source: Any, dest: Any, url: str, header: str) -> None:
    db, backend = make_db(Reply(201, {"ok": True, "id": "b", "rev": "1-c"}))
    assert db.copy(source, dest) == "1-c"
    request = backend.last
    assert (request.method, request.url) == ("COPY", url)
    assert backend.header(request, "Destination") == header
    assert request.body is None


# -- arguments checked before sending, in every style -------------------------------------------


class Unserialisable:
    pass


BAD_CALLS: list[tuple[str, Any, type[Exception]]] = [
    ("database", lambda couch, db, cb: couch.database("Bad Name"), ValueError),
    ("create", lambda couch, db, cb: couch.create("Bad", callback=cb), ValueError),
    ("delete db", lambda couch, db, cb: couch.delete("_bad", callback=cb), ValueError),
    ("db()", lambda couch, db, cb: couch.db("9db", True, callback=cb), ValueError),
    ("db name type", lambda couch, db, cb: couch.db(1, callback=cb), TypeError),
    ("nan", lambda couch, db, cb: db.save({"x": float("nan")}, callback=cb), ValueError),
    ("inf nested", lambda couch, db, cb: db.save({"a": [{"b": float("inf")}]}, callback=cb),
     ValueError),
    ("datetime", lambda couch, db, cb: db.save({"t": datetime.datetime.now()}, callback=cb),
     TypeError),
    ("object", lambda couch, db, cb: db.save({"o": Unserialisable()}, callback=cb), TypeError),
    ("not a dict", lambda couch, db, cb: db.save("doc", callback=cb), TypeError),
    ("bulk nan", lambda couch, db, cb: db.save([{}, {"x": float("nan")}], callback=cb),
     ValueError),
    ("id int", lambda couch, db, cb: db.save({"_id": 5}, callback=cb), TypeError),
    ("get None", lambda couch, db, cb: db.get(None, callback=cb), ValueError),
    ("get empty", lambda couch, db, cb: db.get("", callback=cb), ValueError),
    ("get many None", lambda couch, db, cb: db.get(["a", None], callback=cb), ValueError),
    ("copy None", lambda couch, db, cb: db.copy("a", None, callback=cb), TypeError),
    ("delete no id", lambda couch, db, cb: db.delete({"_rev": "1-a"}, callback=cb), ValueError),
]


@pytest.mark.parametrize("with_callback", [False, True], ids=["promise", "callback"])
@pytest.mark.parametrize(("what", "call", "exc"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_arguments_raise_synchronously_and_send_nothing(
    what: str, call: Any, exc: type[Exception], with_callback: bool
) -> None:
    couch, backend = make()
    db = couch.database("db")
    cb = Recorder() if with_callback else None
    with pytest.raises(exc):
        call(couch, db, cb)
    assert backend.requests == []
    assert cb is None or cb.calls == []


def test_bad_save_leaves_the_uuid_cache_and_doc_alone() -> None:
    db, backend = make_db()
    doc = {"x": float("nan")}
    with pytest.raises(ValueError):
        db.save(doc)
    assert "_id" not in doc
    assert backend.requests == []


# -- callback style -----------------------------------------------------------------------------


def test_callback_success() -> None:
    db, _ = make_db(Reply(200, {"_id": "x", "_rev": "1-a"}, [("ETag", '"1-a"')]))
    cb = Recorder()
    assert db.get("x", callback=cb) is None
    data, status = cb.only
    assert isinstance(data, Document) and data.id == "x"
    assert status.ok is True and status.code == 200
    assert status.error is None and status.exception is None and status.response is None
    assert status.headers["etag"] == '"1-a"'
    assert repr(status) == "<200/Success>"


def test_callback_http_error() -> None:
    db, _ = make_db(Reply(404, {"error": "not_found", "reason": "deleted"},
                          [("X-Couch-Request-ID", "req42")]))
    cb = Recorder()
    assert db.get("x", callback=cb) is None
    data, status = cb.only
    assert data is None
    assert status.ok is False
    assert status.code == 404
    assert status.error is errors.NotFound
    assert isinstance(status.exception, errors.NotFound)
    assert status.response == {"error": "not_found", "reason": "deleted"}
    assert status.headers["x-couch-request-id"] == "req42"
    assert repr(status) == (
        f"<404/NotFound | 404 not_found: deleted (GET {URL}/db/x) [request req42]>"
    )


def test_callback_error_of_a_later_request_in_an_operation() -> None:
    db, _ = make_db(Reply(200, {"uuids": UUIDS}),
                    Reply(403, {"error": "forbidden", "reason": "validate_doc_update"}))
    cb = Recorder()
    db.save({"v": 1}, callback=cb)
    data, status = cb.only
    assert data is None
    assert status.code == 403 and status.error is errors.Forbidden
    assert status.response == {"error": "forbidden", "reason": "validate_doc_update"}


def test_callback_that_raises_is_logged_not_propagated(caplog: pytest.LogCaptureFixture) -> None:
    db, _ = make_db(Reply(200, {"_id": "x"}))

    def cb(data: Any, status: Status) -> None:
        raise RuntimeError("boom in user code")

    with caplog.at_level(logging.ERROR, logger="corduroy2"):
        assert db.get("x", callback=cb) is None
    records = [r for r in caplog.records if r.name == "corduroy2"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None and records[0].exc_info[0] is RuntimeError
    assert "boom in user code" in caplog.text


@pytest.mark.parametrize("exc", [
    errors.ConnectError("connection refused", method="GET", url=f"{URL}/db/x"),
    errors.Timeout("timed out", method="GET", url=f"{URL}/db/x"),
    errors.ResponseCut("cut", method="GET", url=f"{URL}/db/x"),
])
def test_transport_error_in_callback_style(exc: errors.TransportError) -> None:
    db, _ = make_db(exc)
    cb = Recorder()
    db.get("x", callback=cb)
    data, status = cb.only
    assert data is None
    assert status.ok is False
    assert status.code is None
    assert status.error is type(exc)
    assert status.exception is exc
    assert status.response is None


def test_transport_error_after_a_reply_resets_the_code() -> None:
    db, _ = make_db(Reply(200, {"uuids": UUIDS}), errors.ResponseCut("cut"))
    cb = Recorder()
    db.save({}, callback=cb)
    _, status = cb.only
    assert status.code is None and status.error is errors.ResponseCut


def test_transport_error_raises_in_promise_style() -> None:
    db, _ = make_db(errors.ConnectError("refused"))
    with pytest.raises(errors.ConnectError):
        db.info()


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"not json", b'{"trunc'])
def test_non_json_success_body_is_a_decode_error(body: bytes) -> None:
    db, _ = make_db(Reply(200, body))
    with pytest.raises(errors.DecodeError) as info:
        db.get("x")
    assert isinstance(info.value, ValueError)
    assert f"GET {URL}/db/x" in str(info.value)


def test_non_json_success_body_in_callback_style() -> None:
    db, _ = make_db(Reply(200, b"<html>oops</html>"))
    cb = Recorder()
    db.info(callback=cb)
    data, status = cb.only
    assert data is None and status.ok is False
    assert status.error is errors.DecodeError
    assert status.code == 200
    assert status.response is None


def test_one_api_object_serves_both_styles() -> None:
    db, backend = make_db(Reply(200, {"_id": "x"}), NOT_FOUND)
    assert db.get("x") == {"_id": "x"}
    cb = Recorder()
    db.get("y", callback=cb)
    assert cb.only[1].error is errors.NotFound
    assert len(backend.requests) == 2


# -- a call's retries over a transport that replies at once ------------------------------------


def _started_503_then_200() -> tuple[RecordingBackend, Call, list[Outcome]]:
    """A call answered 503 at once (the recording backend replies inside send()), waiting to
    retry: the backend runs call_later only when told to."""
    backend = RecordingBackend([Reply(503, {"error": "unavailable"}), Reply(200, {"ok": True})])
    sender = Sender(backend, URL, None, Retry(attempts=3, base=0.01, cap=0.01))
    call = Call(sender, Request("GET", f"{URL}/db/x"))
    outcomes: list[Outcome] = []
    call.start(outcomes.append)
    assert outcomes == [] and len(backend.requests) == 1
    return backend, call, outcomes


def test_cancel_during_a_retry_wait_stops_the_wait_after_a_synchronous_reply() -> None:
    # The first attempt ended before start() returned: what cancel() must stop is the wait
    # that followed it, not the finished attempt.
    backend, call, outcomes = _started_503_then_200()
    (_, wake, waiting), = backend.later
    call.cancel()
    assert waiting.cancelled
    wake()  # a timer that fires anyway (cancelled too late) changes nothing
    assert outcomes == [] and len(backend.requests) == 1


def test_a_call_retried_after_a_synchronous_reply_delivers_the_retry() -> None:
    backend, call, outcomes = _started_503_then_200()
    (_, wake, _), = backend.later
    wake()
    assert [(o.value, o.error) for o in outcomes] == [({"ok": True}, None)]
    assert len(backend.requests) == 2


# -- reprs and error text never show the password -----------------------------------------------


def _secrets() -> tuple[str, ...]:
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    return (PASSWORD, "s3cr3t", "p%40ss", token)


@pytest.mark.parametrize("how", ["auth", "url"])
def test_reprs_and_errors_never_contain_the_password(how: str) -> None:
    kwargs: dict[str, Any] = (
        {"auth": ("admin", PASSWORD)} if how == "auth"
        else {"url": "http://admin:s3cr3t-p%40ss@127.0.0.1:5984"}
    )
    couch, backend = make(
        Reply(404, {"error": "not_found", "reason": "missing"}),
        errors.ConnectError("refused", method="GET", url=f"{URL}/db"),
        **kwargs,
    )
    db = couch.database("db")
    cb = Recorder()
    db.get("x", callback=cb)
    db.info(callback=cb)
    texts = [repr(couch), repr(db), repr(backend.requests[0]), repr(backend.requests[1])]
    for _, status in cb.calls:
        texts += [repr(status), str(status.exception), repr(status.exception)]
    assert repr(couch) == f"<corduroy2.api.couch.Couch {URL} as admin>"
    assert repr(db) == f"<Database 'db' on {URL}>"
    for text in texts:
        for secret in _secrets():
            assert secret not in text, text
    # The credentials were really sent, just never shown.
    assert backend.header(backend.requests[0], "Authorization") == basic("admin", PASSWORD)


def test_couch_close_closes_the_backend() -> None:
    couch, backend = make()
    couch.close()
    assert backend.closed


def test_database_from_a_url_string() -> None:
    class RecordingCouch(Couch):
        def _make_backend(self, options: Any) -> RecordingBackend:
            return RecordingBackend([Reply(200, {"db_name": "a/b"})])

    class RecordingDatabase(Database):
        couch_class = RecordingCouch

    RecordingCouch.database_class = RecordingDatabase
    db = RecordingDatabase("http://admin:pw@h:5984/a%2Fb/")
    assert db.name == "a/b"
    assert db.couch.url == "http://h:5984"
    assert "pw" not in repr(db)
    db.info()
    request = db.couch.backend.requests[0]  # type: ignore[attr-defined]
    assert request.url == "http://h:5984/a%2Fb"
    assert RecordingBackend.header(request, "Authorization") == basic("admin", "pw")
    other = RecordingDatabase("http://h:5984/prefix", "mydb")
    assert (other.couch.url, other.name) == ("http://h:5984/prefix", "mydb")


# -- default time limits -----------------------------------------------------------------------


def test_a_couch_has_connect_and_idle_timeouts_by_default() -> None:
    from corduroy2.api.couch import CONNECT_TIMEOUT, IDLE_TIMEOUT
    from corduroy2.blocking import Couch as BlockingCouch

    options = BlockingCouch(URL).backend.options
    assert (options.connect_timeout, options.idle_timeout) == (CONNECT_TIMEOUT, IDLE_TIMEOUT)
    assert CONNECT_TIMEOUT and IDLE_TIMEOUT and options.request_timeout is None


@pytest.mark.parametrize("feed", ["longpoll", "continuous", "eventsource"])
def test_waiting_feeds_ask_for_a_heartbeat_inside_the_idle_timeout(feed: str) -> None:
    from corduroy2.api.changes import HEARTBEAT_MS
    from corduroy2.api.couch import IDLE_TIMEOUT

    assert HEARTBEAT_MS / 1000 < IDLE_TIMEOUT
    db, backend = make_db(Reply(200, {"results": [], "last_seq": "1"}),
                          Reply(200, {"results": [], "last_seq": "1"}))
    if feed == "longpoll":
        db.changes(feed=feed)
    else:
        db.changes(feed=feed, callback=lambda seq, changes: None).stop()
    assert f"heartbeat={HEARTBEAT_MS}" in backend.requests[0].url
    db.changes(feed="normal")
    assert "heartbeat" not in backend.requests[1].url


def test_a_given_heartbeat_is_kept() -> None:
    db, backend = make_db(Reply(200, {"results": [], "last_seq": "1"}))
    db.changes(feed="longpoll", heartbeat=500)
    assert "heartbeat=500" in backend.requests[0].url


@pytest.mark.parametrize("timeout_ms, bound", [(None, 120.0), (100, 60.1), (5000, 65.0)])
def test_a_longpoll_is_bounded_even_if_the_server_ignores_its_timeout(
        timeout_ms: int | None, bound: float) -> None:
    db, backend = make_db(Reply(200, {"results": [], "last_seq": "1"}),
                          Reply(200, {"results": [], "last_seq": "1"}))
    opts = {} if timeout_ms is None else {"timeout": timeout_ms}
    db.changes(feed="longpoll", **opts)
    assert backend.requests[0].timeout == pytest.approx(bound)
    db.with_options(timeout=7.0).changes(feed="longpoll")  # the handle's own bound wins
    assert backend.requests[1].timeout == 7.0


# -- no reference cycles -------------------------------------------------------------------------


def test_calls_leave_no_reference_cycle_behind() -> None:
    """What a call makes is freed by reference counting alone: a cycle per call would make
    the cyclic collector run (and rescan everything the application holds) every few hundred
    calls. (A Call kept its exchange after a synchronous answer: bench get, blocking c=32,
    24.6% overhead with that cycle.)"""
    import gc

    rows = {"total_rows": 1, "offset": 0, "rows": [{"id": "a", "key": 1, "value": None}]}
    script = [Reply(200, {"_id": "x", "_rev": "1-a"}), Reply(404, {"error": "not_found"}),
              Reply(201, {"ok": True, "id": "x", "rev": "2-b"}), Reply(200, rows),
              Reply(200, {"db_name": "db"})]
    db, backend = make_db(*script * 20)

    def calls() -> None:
        db.get("x")
        # An error raised to the caller is another matter: its traceback holds the frames
        # that hold it, a cycle of Python's making.
        db.get("y", callback=lambda data, status: None)
        db.save({"_id": "x", "_rev": "1-a"})
        db.view("d/v")
        db.info(callback=lambda data, status: None)

    calls()  # warm up: first-use caches are not garbage
    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            calls()
        assert gc.collect() == 0
    finally:
        gc.enable()
