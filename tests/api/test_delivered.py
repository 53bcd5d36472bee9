"""Repeated changes dropped: CouchDB's feed is at-least-once, and on a cluster a feed resumed on
another node (or kept on one while others restart) repeats changes it had sent
(reference/couchdb3.md). A cluster's feeds and every follower drop a change whose document id
and rev were delivered already."""

from __future__ import annotations

from typing import Any

import orjson

from corduroy2.api.changes import ChangesSink, Delivered
from corduroy2.protocol.requests import Request
from corduroy2.protocol.responses import Headers


def change(seq: Any, id: str, rev: str) -> dict[str, Any]:
    return {"seq": seq, "id": id, "changes": [{"rev": rev}]}


def test_delivered_drops_repeats_only() -> None:
    memory = Delivered()
    first = [change("1-a", "a", "1-x"), change("2-b", "b", "1-y")]
    assert memory.fresh(first) == first
    # Rewound: a and b again (new opaque seqs), then a's next revision and a new doc.
    again = [change("1-q", "a", "1-x"), change("2-q", "b", "1-y"), change("3-q", "a", "2-z"),
             change("4-q", "c", "1-w")]
    assert memory.fresh(again) == again[2:]
    # Events without a rev (_db_updates) are never taken for repeats.
    update = {"db_name": "d", "type": "updated", "seq": "5"}
    assert memory.fresh([update, dict(update)]) == [update, update]


def test_delivered_forgets_the_oldest() -> None:
    memory = Delivered(size=2)
    memory.fresh([change(1, "a", "1"), change(2, "b", "1"), change(3, "c", "1")])
    assert change(9, "a", "1") not in memory
    assert change(9, "b", "1") in memory and change(9, "c", "1") in memory


class Consumer:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def header(self, fields: dict[str, Any]) -> None:
        return None

    def rows(self, rows: list[Any]) -> None:
        self.got.extend(rows)

    def end(self, fields: dict[str, Any]) -> Any:
        return fields


def feed(remember: bool, lines: list[dict[str, Any]]) -> list[str]:
    consumer = Consumer()
    request = Request("GET", "http://h/db/_changes?feed=continuous", stream=True)
    sink = ChangesSink(request, consumer, lambda *_: None, "continuous", remember=remember)
    sink.on_start(200, Headers())
    sink.on_data(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return [c["id"] for c in consumer.got]


def test_a_cluster_feed_drops_repeats() -> None:
    lines = [change(1, "a", "1-x"), change(2, "b", "1-y"), change(3, "a", "1-x"),
             change(4, "a", "2-z")]
    assert feed(True, lines) == ["a", "b", "a"]
    assert feed(False, lines) == ["a", "b", "a", "a"]  # one server: as the server sent it


def test_resume_goes_on_after_the_last_change_received() -> None:
    consumer = Consumer()
    request = Request("GET", "http://h/db/_changes?feed=continuous&since=0", stream=True)
    sink = ChangesSink(request, consumer, lambda *_: None, "continuous", limit=5)
    assert sink.request_to_resume().url == "http://h/db/_changes?feed=continuous&since=0&limit=5"
    sink.on_start(200, Headers())
    sink.on_data(b'{"seq":"7-x","id":"a","changes":[{"rev":"1-x"}]}\n{"seq":"8-y","id":"b"')
    # The second line is incomplete: it was not received, so the feed goes on after the first.
    assert sink.request_to_resume().url == "http://h/db/_changes?feed=continuous&since=7-x&limit=4"
