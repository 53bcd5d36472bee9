"""_changes on the fake: opaque seqs, normal/longpoll/continuous/eventsource, the filters."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson

from corduroy2.testing import FakeCouch, FakeServer

from .conftest import Http


def ids(body: dict[str, Any]) -> list[str]:
    return [c["id"] for c in body["results"]]


def later(seconds: float, fn: Any) -> None:
    timer = threading.Timer(seconds, fn)
    timer.daemon = True
    timer.start()


def test_normal_feed_seqs_limit_descending(couch: Http, db: str) -> None:
    for doc_id in "abc":
        couch("PUT", f"{db}/{doc_id}", {})
    body = couch("GET", f"{db}/_changes")[2]
    assert ids(body) == ["a", "b", "c"] and body["pending"] == 0
    seqs = [c["seq"] for c in body["results"]]
    assert all(isinstance(s, str) and "-" in s for s in seqs) and body["last_seq"] == seqs[-1]
    assert couch("GET", f"{db}")[2]["update_seq"] == seqs[-1]
    first = couch("GET", f"{db}/_changes?limit=1")[2]
    assert ids(first) == ["a"] and first["pending"] == 2
    assert ids(couch("GET", f"{db}/_changes?since={first['last_seq']}")[2]) == ["b", "c"]
    assert ids(couch("GET", f"{db}/_changes?descending=true")[2]) == ["c", "b", "a"]
    assert couch("GET", f"{db}/_changes?since=garbage")[0] == 400
    # an update moves the doc to the end, once
    rev = couch("GET", f"{db}/a")[2]["_rev"]
    couch("DELETE", f"{db}/a?rev={rev}")
    body = couch("GET", f"{db}/_changes?include_docs=true")[2]
    assert ids(body) == ["b", "c", "a"] and body["results"][-1]["deleted"] is True
    assert body["results"][-1]["doc"]["_deleted"] is True


def test_filters(server: FakeServer, couch: Http, db: str) -> None:
    server.couch.functions.register("by_type", lambda doc, req: doc.get("t") == req["query"]["t"])
    server.couch.functions.register("map_b", lambda doc, emit: doc.get("t") == "b" and emit(1))
    couch("POST", f"{db}/_bulk_docs", {"docs": [
        {"_id": "a1", "t": "a"}, {"_id": "b1", "t": "b"}, {"_id": "a2", "t": "a"},
        {"_id": "_design/f", "filters": {"by_type": "by_type"},
         "views": {"v": {"map": "map_b"}}}]})
    assert ids(couch("POST", f"{db}/_changes?filter=_doc_ids",
                     {"doc_ids": ["a2", "b1"]})[2]) == ["b1", "a2"]
    assert ids(couch("GET", f'{db}/_changes?filter=_doc_ids&doc_ids=["a1"]')[2]) == ["a1"]
    assert ids(couch("POST", f"{db}/_changes?filter=_selector",
                     {"selector": {"t": "a"}})[2]) == ["a1", "a2"]
    assert ids(couch("GET", f"{db}/_changes?filter=_design")[2]) == ["_design/f"]
    assert ids(couch("GET", f"{db}/_changes?filter=f/by_type&t=b")[2]) == ["b1"]
    assert ids(couch("GET", f"{db}/_changes?filter=_view&view=f/v")[2]) == ["b1"]
    assert couch("GET", f"{db}/_changes?filter=nope/x")[0] == 404
    assert couch("GET", f"{db}/_changes?filter=_selector")[0] == 400


def test_longpoll_waits_then_times_out(server: FakeServer, couch: Http, db: str) -> None:
    now = couch("GET", f"{db}/_changes")[2]["last_seq"]
    later(0.2, lambda: server.couch.save("db", {"_id": "late"}))
    started = time.monotonic()
    body = couch("GET", f"{db}/_changes?feed=longpoll&since={now}&timeout=5000")[2]
    assert ids(body) == ["late"] and time.monotonic() - started >= 0.15
    started = time.monotonic()
    empty = couch("GET", f"{db}/_changes?feed=longpoll&since=now&timeout=200")[2]
    assert empty["results"] == [] and 0.15 <= time.monotonic() - started < 3


def test_continuous_live_heartbeat_limit(server: FakeServer, couch: Http, db: str) -> None:
    couch("PUT", f"{db}/a", {})
    later(0.3, lambda: server.couch.save("db", {"_id": "b"}))
    status, head, raw = couch.raw("GET", f"{db}/_changes?feed=continuous&limit=2&heartbeat=100")
    lines = raw.split(b"\n")
    changes = [orjson.loads(line) for line in lines if line.strip()]
    assert [c.get("id") for c in changes] == ["a", "b", None]
    assert changes[-1]["last_seq"] == changes[1]["seq"] and changes[-1]["pending"] == 0
    assert b"\n\n" in raw  # a heartbeat (a bare LF) while it waited


def test_eventsource(couch: Http, db: str) -> None:
    couch("PUT", f"{db}/a", {})
    status, head, raw = couch.raw("GET", f"{db}/_changes?feed=eventsource&timeout=50")
    assert head["content-type"] == "text/event-stream"
    change = raw.split(b"\n\n")[0].split(b"\n")
    assert change[0].startswith(b"data: ") and orjson.loads(change[0][6:])["id"] == "a"
    assert change[1] == b"id: " + orjson.dumps(orjson.loads(change[0][6:])["seq"])


def test_deleting_the_database_ends_a_feed(server: FakeServer, couch: Http, db: str) -> None:
    later(0.2, lambda: server.couch.delete_db("db"))
    status, _, raw = couch.raw("GET", f"{db}/_changes?feed=continuous&heartbeat=50")
    assert status == 200 and raw.strip() == b""
    assert couch("GET", f"{db}/_changes")[0] == 404


def test_stop_ends_open_feeds() -> None:
    server = FakeCouch().serve()
    client = Http(server)
    client("PUT", "/db")
    later(0.2, server.stop)
    started = time.monotonic()
    try:
        client.raw("GET", "/db/_changes?feed=continuous&heartbeat=60000")
    except Exception:
        pass  # the server closed the connection mid-feed: that is the point
    assert time.monotonic() - started < 3
