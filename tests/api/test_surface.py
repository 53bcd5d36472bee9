"""The reply handling of the less common endpoints over a recording backend: the paths a real
server shows only one of (a strong or a weak ETag on HEAD), and what each call makes of its
reply. The requests themselves are tabled in tests/core/test_requests.py."""

from __future__ import annotations

from typing import Any

import pytest

from corduroy2 import DecodeError, Document, NotFound, Unauthorized
from corduroy2.api import Couch, Database
from corduroy2.protocol.responses import Response

from .recording import RecordingBackend, Reply


def make_db(*script: Any) -> tuple[Database, RecordingBackend]:
    backend = RecordingBackend(script)
    return Couch("http://h:5984", backend=backend, retry=False).database("db"), backend


@pytest.mark.parametrize("etag, rev", [('"3-abc"', "3-abc"), ('"0-1"', "0-1")])
def test_head_reads_the_rev_from_a_strong_etag(etag: str, rev: str) -> None:
    db, backend = make_db(Reply(200, None, [("ETag", etag)]))
    assert db.head("a") == rev
    assert backend.calls() == [("HEAD", "http://h:5984/db/a")]


def test_head_of_a_missing_doc_is_none_and_other_errors_raise() -> None:
    db, _ = make_db(Reply(404), Reply(401, {"error": "unauthorized"}))
    assert db.head("a") is None
    with pytest.raises(Unauthorized):
        db.head("a")


@pytest.mark.parametrize("headers", [[("ETag", 'W/"3e-Bm5d8F1"')], []])
def test_head_refuses_an_etag_that_is_no_rev(headers: list[tuple[str, str]]) -> None:
    db, _ = make_db(Reply(200, None, headers))
    with pytest.raises(DecodeError, match="no rev in its ETag"):
        db.head("a")


def test_revisions_newest_first() -> None:
    doc = {"_id": "a", "_rev": "3-c", "_revisions": {"start": 3, "ids": ["c", "b", "a"]}}
    db, _ = make_db(Reply(200, doc), Reply(200, {"_id": "a"}))
    assert db.revisions("a") == ["3-c", "2-b", "1-a"]
    with pytest.raises(DecodeError):
        db.revisions("a")


def test_bulk_get_wraps_the_docs_and_keeps_the_errors() -> None:
    error = {"id": "x", "rev": "undefined", "error": "not_found", "reason": "missing"}
    db, backend = make_db(Reply(200, {"results": [
        {"id": "a", "docs": [{"ok": {"_id": "a", "_rev": "1-a"}}]},
        {"id": "x", "docs": [{"error": error}]},
    ]}))
    a, x = db.bulk_get(["a", "x"], revs=True)
    assert isinstance(a["docs"][0]["ok"], Document) and a["docs"][0]["ok"].rev == "1-a"
    assert x["docs"] == [{"error": error}]
    assert backend.last.url == "http://h:5984/db/_bulk_get?revs=true"


def test_view_queries_give_one_view_result_each() -> None:
    db, _ = make_db(Reply(200, {"results": [
        {"total_rows": 4, "offset": 1, "rows": [{"id": "d1", "key": 1, "value": None}]},
        {"rows": []},
    ]}))
    first, second = db.view_queries("d/v", [{"key": 1}, {"key": 9}])
    assert [r.id for r in first.rows] == ["d1"] and first.total_rows == 4
    assert len(second.rows) == 0 and second.total_rows is None


def test_shards_and_missing_revs_unwrap_their_member() -> None:
    db, _ = make_db(Reply(200, {"shards": {"00-7f": ["n1"]}}),
                    Reply(200, {"range": "00-7f", "nodes": ["n1"]}),
                    Reply(200, {"missing_revs": {"a": ["2-b"]}}))
    assert db.shards() == {"00-7f": ["n1"]}
    assert db.shards("a") == {"range": "00-7f", "nodes": ["n1"]}
    assert db.missing_revs({"a": ["1-a", "2-b"]}) == {"a": ["2-b"]}


def test_design_functions_answer_the_whole_response_and_raise_typed_errors() -> None:
    db, backend = make_db(Reply(200, b"<p>hi</p>", [("Content-Type", "text/html")]),
                          Reply(404, {"error": "not_found", "reason": "missing show"}))
    page = db.show("d/s", "a", q=1)
    assert isinstance(page, Response) and page.body == b"<p>hi</p>"
    assert page.headers["content-type"] == "text/html"
    with pytest.raises(NotFound):
        db.list("d/l", "v")
    assert [r.method for r in backend.requests] == ["GET", "GET"]


def test_couch_request_decodes_json_or_gives_the_response() -> None:
    backend = RecordingBackend([Reply(200, {"a": 1}), Reply(201, b"text", [("X", "1")])])
    couch = Couch("http://h:5984", backend=backend, retry=False)
    assert couch.request("GET", "/_x", {"key": "k"}) == {"a": 1}
    response = couch.request("PUT", "/_y", body=b"raw", headers={"X-Y": "z"}, raw=True)
    assert (response.status, response.body, response.headers["x"]) == (201, b"text", "1")
    assert backend.calls() == [("GET", 'http://h:5984/_x?key=%22k%22'),
                               ("PUT", "http://h:5984/_y")]
    assert backend.header(backend.last, "X-Y") == "z" and backend.last.body == b"raw"


def test_partition_sends_nothing_until_called() -> None:
    db, backend = make_db(Reply(200, {"partition": "p", "doc_count": 0}))
    partition = db.partition("p")
    assert backend.requests == [] and partition.name == "p" and partition.db is db
    assert partition.info()["partition"] == "p"
    assert backend.calls() == [("GET", "http://h:5984/db/_partition/p")]
