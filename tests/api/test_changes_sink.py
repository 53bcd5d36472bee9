"""ChangesSink parses a big chunk a slice at a time (``PARSE_AT_MOST`` bytes, cut at line ends),
so that only a slice's changes are alive while the consumer takes them. No IO: chunks are fed
to the sink directly."""

from __future__ import annotations

from typing import Any

import orjson

from corduroy2.api.changes import ChangesSink
from corduroy2.backend import StopTransfer
from corduroy2.protocol.requests import Request
from corduroy2.protocol.responses import Headers

REQUEST = Request("GET", "http://h/db/_changes?feed=continuous", stream=True)
CHANGES = [{"seq": f"{i}-g1AAAA", "id": f"doc-{i:05d}", "changes": [{"rev": f"1-{i:032x}"}]}
           for i in range(3000)]
LINES = b"".join(orjson.dumps(change) + b"\n" for change in CHANGES)
END = b'{"last_seq":"2999-g1AAAA","pending":0}\n'


class Consumer:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.ended: dict[str, Any] | None = None

    def header(self, fields: dict[str, Any]) -> None:
        return None

    def rows(self, rows: list[Any]) -> None:
        self.batches.append(list(rows))

    def end(self, fields: dict[str, Any]) -> Any:
        self.ended = fields
        return fields


def test_a_big_chunk_reaches_the_consumer_a_slice_at_a_time() -> None:
    consumer, done = Consumer(), []
    sink = ChangesSink(REQUEST, consumer, lambda *args: done.append(args), "continuous")
    sink.on_start(200, Headers())
    sink.on_data(LINES + END)  # some 270 kB in one read
    sink.on_end()
    assert [c for batch in consumer.batches for c in batch] == CHANGES
    assert len(consumer.batches) >= len(LINES) // ChangesSink.PARSE_AT_MOST
    shortest = min(map(len, LINES.splitlines(keepends=True)))
    assert max(map(len, consumer.batches)) <= ChangesSink.PARSE_AT_MOST // shortest + 1
    assert consumer.ended == {"last_seq": "2999-g1AAAA", "pending": 0}
    assert len(done) == 1 and done[0][1] is None


def test_a_limit_reached_in_a_big_chunk_parses_no_further() -> None:
    consumer, done = Consumer(), []
    sink = ChangesSink(REQUEST, consumer, lambda *args: done.append(args), "continuous",
                       limit=10)
    sink.on_start(200, Headers())
    try:
        sink.on_data(LINES + END)
    except StopTransfer:  # a synchronous transport is told to stop reading
        pass
    assert [c for batch in consumer.batches for c in batch] == CHANGES[:10]
    assert consumer.ended == {"last_seq": "9-g1AAAA", "pending": None}
    assert len(done) == 1
