"""Documents on the fake, over HTTP: revs, MVCC, conflicts, tombstones, local docs,
attachments, bulk calls."""

from __future__ import annotations

import base64
import re

from .conftest import Http

REV = re.compile(r"^[1-9][0-9]*-[0-9a-f]{32}$")
REV_A, REV_B = "1-" + "a" * 32, "1-" + "b" * 32


def test_revs_and_mvcc(couch: Http, db: str) -> None:
    status, head, body = couch("PUT", f"{db}/a", {"n": 1})
    assert status == 201 and REV.match(body["rev"]) and body["rev"].startswith("1-")
    assert head["etag"] == f'"{body["rev"]}"'
    first = body["rev"]
    # no rev, or a stale one: 409
    assert couch("PUT", f"{db}/a", {"n": 2})[:3:2] == (409, {"error": "conflict",
                                                            "reason": "Document update conflict."})
    second = couch("PUT", f"{db}/a", {"_rev": first, "n": 2})[2]["rev"]
    assert second.startswith("2-")
    assert couch("PUT", f"{db}/a", {"_rev": first, "n": 3})[0] == 409
    # the rev may come as ?rev= or If-Match
    assert couch("PUT", f"{db}/a?rev={second}", {"n": 3})[0] == 201
    status, head, doc = couch("GET", f"{db}/a")
    assert status == 200 and doc["n"] == 3 and head["etag"] == f'"{doc["_rev"]}"'
    assert couch("GET", f"{db}/a", headers={"If-None-Match": head["etag"]})[0] == 304
    assert couch("GET", f"{db}/a?rev={first}")[2]["n"] == 1
    revisions = couch("GET", f"{db}/a?revs=true")[2]["_revisions"]
    assert revisions["start"] == 3 and len(revisions["ids"]) == 3
    # the same edit of the same parent has the same rev (md5 of the edit)
    couch("PUT", "/other")
    assert couch("PUT", "/other/a", {"n": 1})[2]["rev"] == first


def test_tombstones(couch: Http, db: str) -> None:
    rev = couch("PUT", f"{db}/a", {"n": 1})[2]["rev"]
    assert couch("DELETE", f"{db}/a")[0] == 409  # no rev
    status, _, body = couch("DELETE", f"{db}/a?rev={rev}")
    assert status == 200 and body["rev"].startswith("2-")
    assert couch("GET", f"{db}/a")[2] == {"error": "not_found", "reason": "deleted"}
    assert couch("GET", f"{db}/nope")[2] == {"error": "not_found", "reason": "missing"}
    assert couch("DELETE", f"{db}/a?rev={body['rev']}")[0] == 404
    tomb = couch("GET", f"{db}/a?rev={body['rev']}")[2]
    assert tomb == {"_id": "a", "_rev": body["rev"], "_deleted": True}
    # recreating extends the deleted branch
    assert couch("PUT", f"{db}/a", {"n": 2})[2]["rev"].startswith("3-")
    info = couch("GET", db)[2]
    assert info["doc_count"] == 1 and info["doc_del_count"] == 0


def test_new_edits_false_conflicts(couch: Http, db: str) -> None:
    docs = [{"_id": "x", "_rev": REV_A, "v": 1}, {"_id": "x", "_rev": REV_B, "v": 2}]
    status, _, body = couch("POST", f"{db}/_bulk_docs", {"docs": docs, "new_edits": False})
    assert status == 201 and body == []
    doc = couch("GET", f"{db}/x?conflicts=true")[2]
    assert doc["_rev"] == REV_B and doc["v"] == 2 and doc["_conflicts"] == [REV_A]
    # resolving: delete the loser
    assert couch("DELETE", f"{db}/x?rev={REV_A}")[0] == 200
    doc = couch("GET", f"{db}/x?conflicts=true&deleted_conflicts=true")[2]
    assert "_conflicts" not in doc and len(doc["_deleted_conflicts"]) == 1
    # a history with _revisions puts the rev on the right branch
    couch("PUT", f"{db}/y?new_edits=false",
          {"_rev": "2-" + "c" * 32, "_revisions": {"start": 2, "ids": ["c" * 32, "a" * 32]}})
    assert couch("GET", f"{db}/y")[2]["_rev"] == "2-" + "c" * 32
    all_revs = couch("GET", f"{db}/y?open_revs=all", headers={"Accept": "application/json"})[2]
    assert [r["ok"]["_rev"] for r in all_revs] == ["2-" + "c" * 32]


def test_bulk_docs_per_doc_outcomes(couch: Http, db: str) -> None:
    rev = couch("PUT", f"{db}/a", {})[2]["rev"]
    status, _, body = couch("POST", f"{db}/_bulk_docs", {"docs": [
        {"_id": "a"}, {"_id": "a", "_rev": rev, "n": 1}, {"n": 2}, {"_id": "_bad"}]})
    assert status == 201
    assert body[0] == {"id": "a", "error": "conflict", "reason": "Document update conflict."}
    assert body[1]["ok"] is True and body[1]["rev"].startswith("2-")
    assert len(body[2]["id"]) == 32 and body[2]["ok"] is True  # a server uuid
    assert body[3]["error"] == "illegal_docid"
    assert couch("POST", f"{db}/_bulk_docs", {"docs": []}, headers={
        "Content-Type": "text/plain"})[0] == 415


def test_bulk_get(couch: Http, db: str) -> None:
    rev = couch("PUT", f"{db}/a", {"n": 1})[2]["rev"]
    body = couch("POST", f"{db}/_bulk_get?revs=true", {"docs": [
        {"id": "a"}, {"id": "nope"}, {"id": "a", "rev": "9-" + "f" * 32}]})[2]
    a, nope, bad = body["results"]
    assert a["docs"][0]["ok"]["_rev"] == rev and "_revisions" in a["docs"][0]["ok"]
    assert nope["docs"][0]["error"] == {"id": "nope", "rev": "undefined",
                                        "error": "not_found", "reason": "missing"}
    assert bad["docs"][0]["error"]["reason"] == "missing"


def test_local_docs(couch: Http, db: str) -> None:
    status, _, body = couch("PUT", f"{db}/_local/cp", {"seq": 1})
    assert status == 201 and body["rev"] == "0-1"
    assert couch("PUT", f"{db}/_local/cp", {"seq": 2})[0] == 409
    assert couch("PUT", f"{db}/_local/cp", {"seq": 2, "_rev": "0-1"})[2]["rev"] == "0-2"
    assert couch("GET", f"{db}/_local/cp")[2] == {"_id": "_local/cp", "_rev": "0-2", "seq": 2}
    # not in _all_docs nor _changes; listed by _local_docs
    assert couch("GET", f"{db}/_all_docs")[2]["rows"] == []
    assert couch("GET", f"{db}/_changes")[2]["results"] == []
    listed = couch("GET", f"{db}/_local_docs")[2]
    assert listed["total_rows"] is None and [r["id"] for r in listed["rows"]] == ["_local/cp"]
    assert couch("DELETE", f"{db}/_local/cp?rev=0-2")[0] == 200
    assert couch("GET", f"{db}/_local/cp")[0] == 404


def test_attachments(couch: Http, db: str) -> None:
    rev = couch("PUT", f"{db}/a", {"n": 1})[2]["rev"]
    status, _, body = couch.raw("PUT", f"{db}/a/photo.jpg?rev={rev}", b"\x00\x01binary",
                                headers={"Content-Type": "image/jpeg"})
    assert status == 201
    doc = couch("GET", f"{db}/a")[2]
    stub = doc["_attachments"]["photo.jpg"]
    assert stub["stub"] is True and stub["length"] == 8 and stub["content_type"] == "image/jpeg"
    assert stub["digest"].startswith("md5-") and stub["revpos"] == 2
    status, head, data = couch.raw("GET", f"{db}/a/photo.jpg")
    assert (status, data, head["content-type"]) == (200, b"\x00\x01binary", "image/jpeg")
    assert couch.raw("GET", f"{db}/a/photo.jpg", headers={"Range": "bytes=2-4"})[::2] == (
        206, b"bin")
    assert couch.raw("GET", f"{db}/a/photo.jpg", headers={"Range": "bytes=50-"})[0] == 416
    assert couch.raw("GET", f"{db}/a/photo.jpg", headers={"If-None-Match": head["etag"]})[
        0] == 304
    inline = couch("GET", f"{db}/a?attachments=true")[2]["_attachments"]["photo.jpg"]
    assert base64.b64decode(inline["data"]) == b"\x00\x01binary"
    # a stub keeps the attachment across an edit; leaving it out drops it
    doc["n"] = 2
    rev = couch("PUT", f"{db}/a", doc)[2]["rev"]
    assert "photo.jpg" in couch("GET", f"{db}/a")[2]["_attachments"]
    assert couch("DELETE", f"{db}/a/photo.jpg?rev={rev}")[0] == 200
    assert "_attachments" not in couch("GET", f"{db}/a")[2]
    # inline base64 on write
    couch("PUT", f"{db}/b", {"_attachments": {"t.txt": {
        "content_type": "text/plain", "data": base64.b64encode(b"hi").decode()}}})
    assert couch.raw("GET", f"{db}/b/t.txt")[2] == b"hi"


def test_copy_and_special_ids(couch: Http, db: str) -> None:
    couch("PUT", f"{db}/a%2Fb", {"n": 1})
    assert couch("GET", f"{db}/a%2Fb")[2]["_id"] == "a/b"
    status, _, body = couch("COPY", f"{db}/a%2Fb", headers={"Destination": "c"})
    assert status == 201 and body["id"] == "c" and couch("GET", f"{db}/c")[2]["n"] == 1
    assert couch("PUT", f"{db}/_design/d", {"views": {}})[0] == 201
    assert couch("GET", f"{db}/_design/d")[2]["_id"] == "_design/d"
    assert couch("PUT", f"{db}/_other", {})[2]["error"] == "illegal_docid"
    assert couch("PUT", f"{db}/x", {"_weird": 1})[2]["error"] == "doc_validation"
