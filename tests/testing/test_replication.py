"""The fake's replicator: ``_replicate`` one-shot (checkpoints, conflicts, filters, auth) and
continuous (cancel), and ``_replicator`` documents through ``_scheduler``'s states."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from corduroy2.testing import FakeCouch, FakeServer
from corduroy2.testing.fake import Refusal, User

from .conftest import Http


def side(server: FakeServer, db: str, auth: tuple[str, str] | None = None) -> dict[str, Any]:
    name, password = auth or server.admin  # type: ignore[misc]
    return {"url": f"{server.url}/{db}",
            "auth": {"basic": {"username": name, "password": password}}}


def ids(couch: Http, db: str) -> list[str]:
    return [r["id"] for r in couch("GET", f"/{db}/_all_docs")[2]["rows"]]


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


def test_one_shot_copies_revisions_conflicts_and_resumes(server: FakeServer, couch: Http) -> None:
    couch("PUT", "/src")
    rev = couch("PUT", "/src/a", {"n": 1})[2]["rev"]
    couch("PUT", "/src/a", {"n": 2, "_rev": rev})
    couch("POST", "/src/_bulk_docs", {"new_edits": False, "docs": [
        {"_id": "a", "_rev": "2-" + "f" * 32, "_revisions": {"start": 2, "ids": [
            "f" * 32, rev[2:]]}, "n": "other"}]})
    couch("PUT", "/src/gone", {})
    gone = couch("GET", "/src/gone")[2]["_rev"]
    couch("DELETE", f"/src/gone?rev={gone}")
    body = {"source": side(server, "src"), "target": side(server, "tgt"), "create_target": True}
    reply = couch("POST", "/_replicate", body)[2]
    assert reply["ok"] and reply["history"][0]["docs_written"] == 3
    doc = couch("GET", "/tgt/a?conflicts=true&revs=true")[2]
    assert doc == couch("GET", "/src/a?conflicts=true&revs=true")[2]
    assert couch("GET", "/tgt/gone")[2]["reason"] == "deleted"
    assert couch("POST", "/_replicate", body)[2] == {"ok": True, "no_changes": True}
    couch("PUT", "/src/b", {})
    again = couch("POST", "/_replicate", body)[2]
    assert again["history"][0]["docs_written"] == 1  # from the checkpoint on
    local = couch("GET", "/tgt/_local_docs")[2]["rows"]
    assert len(local) == 1 and local[0]["id"].startswith("_local/")


def test_filters_and_errors(server: FakeServer, couch: Http) -> None:
    couch("PUT", "/src")
    couch("PUT", "/tgt")
    couch("POST", "/src/_bulk_docs", {"docs": [{"_id": f"d{i}", "n": i} for i in range(4)]})
    post = lambda **more: couch("POST", "/_replicate", {  # noqa: E731
        "source": side(server, "src"), "target": side(server, "tgt"), **more})
    post(doc_ids=["d1"])
    assert ids(couch, "tgt") == ["d1"]
    post(selector={"n": {"$gte": 3}})
    assert ids(couch, "tgt") == ["d1", "d3"]
    assert post(source=side(server, "nope"))[::2] == (404, {
        "error": "db_not_found", "reason": f"could not open {server.url}/nope/"})
    assert post(target=side(server, "new"))[2]["error"] == "db_not_found"
    assert post(source=side(server, "src", ("admin", "wrong")))[2]["error"] == "unauthorized"
    assert post(source=f"{server.url}/src")[2]["error"] == "unauthorized"  # anonymous
    assert post(source="src")[0] == 400  # CouchDB 3: no local endpoints
    assert post(doc_ids=["d1"], selector={})[0] == 400


def test_continuous_replicate_until_cancelled(server: FakeServer, couch: Http) -> None:
    couch("PUT", "/src")
    body = {"source": side(server, "src"), "target": side(server, "tgt"),
            "create_target": True, "continuous": True}
    started = couch("POST", "/_replicate", body)
    assert started[0] == 202 and started[2]["_local_id"].endswith("+continuous+create_target")
    couch("PUT", "/src/live", {})
    eventually(lambda: ids(couch, "tgt") == ["live"])
    jobs = couch("GET", "/_scheduler/jobs")[2]["jobs"]
    assert [j["id"] for j in jobs] == [started[2]["_local_id"]]
    assert couch("GET", "/_active_tasks")[2][0]["type"] == "replication"
    stopped = couch("POST", "/_replicate", {**body, "cancel": True})[2]
    assert stopped == {"ok": True, "_local_id": started[2]["_local_id"]}
    assert couch("GET", "/_scheduler/jobs")[2]["jobs"] == []
    assert couch("POST", "/_replicate", {**body, "cancel": True})[0] == 404


def test_replicator_documents_through_the_scheduler(server: FakeServer, couch: Http) -> None:
    couch("PUT", "/src")
    couch("PUT", "/src/d", {})
    couch("PUT", "/_replicator/once", {"source": side(server, "src"),
                                       "target": side(server, "tgt"), "create_target": True})
    entry = eventually(lambda: (e := couch("GET", "/_scheduler/docs/_replicator/once")[2])
                       ["state"] == "completed" and e)
    assert entry["info"]["docs_written"] == 1 and entry["source"] == f"{server.url}/src/"
    doc = couch("GET", "/_replicator/once")[2]
    assert doc["_replication_state"] == "completed" and doc["_rev"].startswith("2-")
    couch("PUT", "/_replicator/broken", {"source": side(server, "missing"),
                                         "target": side(server, "tgt")})
    crash = eventually(lambda: (e := couch("GET", "/_scheduler/docs/_replicator/broken")[2])
                       ["state"] == "crashing" and e)
    assert crash["info"]["error"].startswith("db_not_found: could not open")
    assert crash["error_count"] == 1
    couch("PUT", "/_replicator/bad", {"source": 42})
    failed = eventually(lambda: (e := couch("GET", "/_scheduler/docs/_replicator/bad")[2])
                        ["state"] == "failed" and e)
    assert failed["info"]["error"]
    docs = couch("GET", "/_scheduler/docs")[2]
    assert docs["total_rows"] == 3 and {d["doc_id"] for d in docs["docs"]} == {
        "once", "broken", "bad"}
    rev = couch("GET", "/_replicator/broken")[2]["_rev"]
    couch("DELETE", f"/_replicator/broken?rev={rev}")
    assert couch("GET", "/_scheduler/docs/_replicator/broken")[0] == 404


def test_without_a_server_no_url_is_this_fake() -> None:
    couch = FakeCouch()
    couch.save("src", {"_id": "a"})
    with couch.lock, pytest.raises(Refusal) as info:
        couch.replicator.replicate({"source": "http://127.0.0.1:5984/src",
                                    "target": "http://127.0.0.1:5984/tgt"}, User())
    assert info.value.error == "db_not_found"
