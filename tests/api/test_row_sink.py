"""RowSink and the consumers' ``GATHER``: a buffered result's body is parsed a fixed number of
bytes at a time, whatever the chunks the transport hands over; streamed consumers still get
rows as each chunk arrives. No IO: chunks are fed to the sink directly."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from corduroy2 import errors
from corduroy2.api.sinks import RowSink
from corduroy2.backend import StopTransfer
from corduroy2.api.views import Each, Keep, Row, RowIterator, build_view, wrap_row
from corduroy2.protocol.requests import Request

REQUEST = Request("GET", "http://127.0.0.1:5984/db/_design/d/_view/v", stream=True)
ROWS = [{"id": f"doc-{i:04d}", "key": ["k", i], "value": {"n": i}} for i in range(200)]
# CouchDB 3's framing (protocol/rows.py's fast path)
BODY = (b'{"total_rows":200,"offset":0,"rows":[\r\n' + b",\r\n".join(map(orjson.dumps, ROWS))
        + b"\r\n]}\n")


class Recorder:
    """A consumer that records each batch of rows it is handed, and when."""

    def __init__(self, gather: int | None) -> None:
        if gather is not None:
            self.GATHER = gather
        self.batches: list[list[Any]] = []

    def header(self, fields: dict[str, Any]) -> None:
        pass

    def rows(self, rows: list[Any]) -> None:
        self.batches.append(rows)

    def end(self, fields: dict[str, Any]) -> Any:
        return fields


def feed(consumer: Any, chunks: list[bytes]) -> tuple[Any, BaseException | None]:
    done: list[tuple[Any, BaseException | None]] = []
    sink = RowSink(REQUEST, consumer, lambda value, error, *_: done.append((value, error)))
    sink.on_start(200, {})
    try:
        for chunk in chunks:
            sink.on_data(chunk)
    except StopTransfer:  # what a synchronous transport is told when the sink fails
        assert done
    else:
        sink.on_end()
    assert len(done) == 1
    return done[0]


def pieces(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


def test_a_gathering_consumer_gets_rows_per_gather_bytes_from_small_chunks() -> None:
    gathering, plain = Recorder(gather=1024), Recorder(gather=None)
    for consumer in (gathering, plain):
        value, error = feed(consumer, pieces(BODY, 50))
        assert error is None and value == {"total_rows": 200, "offset": 0}
        assert [row for batch in consumer.batches for row in batch] == ROWS
    # per chunk: about one row per 50-byte chunk; gathered: one batch per 1 kB or so
    assert len(plain.batches) > 100
    assert len(BODY) // 1024 - 1 <= len(gathering.batches) <= len(BODY) // 1024 + 1


def test_a_big_chunk_is_parsed_gather_bytes_at_a_time() -> None:
    gathering, plain = Recorder(gather=1024), Recorder(gather=None)
    for consumer in (gathering, plain):
        value, error = feed(consumer, [BODY])
        assert error is None
        assert [row for batch in consumer.batches for row in batch] == ROWS
    assert len(plain.batches) == 1
    assert len(gathering.batches) >= len(BODY) // 1024 - 1
    assert max(map(len, gathering.batches)) < 30  # ~1 kB of ~60-byte rows


def test_a_chunk_bigger_than_parse_at_most_reaches_a_plain_consumer_in_slices() -> None:
    # (aiohttp hands over up to 256 KiB at a time: only a slice's rows are alive at once)
    rows = [{"id": f"doc-{i:05d}", "key": ["k", i], "value": {"n": i}} for i in range(3000)]
    body = (b'{"total_rows":3000,"offset":0,"rows":[\r\n' + b",\r\n".join(map(orjson.dumps, rows))
            + b"\r\n]}\n")
    assert len(body) > 4 * RowSink.PARSE_AT_MOST
    consumer = Recorder(gather=None)
    value, error = feed(consumer, [body])
    assert error is None and value == {"total_rows": 3000, "offset": 0}
    assert [row for batch in consumer.batches for row in batch] == rows
    shortest = min(len(orjson.dumps(row)) for row in rows) + 3  # with ",\r\n"
    assert len(consumer.batches) >= len(body) // RowSink.PARSE_AT_MOST
    assert max(map(len, consumer.batches)) <= RowSink.PARSE_AT_MOST // shortest + 1


@pytest.mark.parametrize("size", [1, 7, 100, len(BODY)])
def test_every_split_gives_the_same_rows_gathered(size: int) -> None:
    consumer = Recorder(gather=256)
    value, error = feed(consumer, pieces(BODY, size))
    assert error is None and value == {"total_rows": 200, "offset": 0}
    assert [row for batch in consumer.batches for row in batch] == ROWS


def test_bad_json_in_a_gathered_body_fails_the_call_after_the_rows_before_it() -> None:
    body = BODY.replace(b'"doc-0150"', b'"doc-0150', 1)
    consumer = Recorder(gather=256)
    value, error = feed(consumer, pieces(body, 100))
    assert value is None and isinstance(error, errors.DecodeError)
    assert [row for batch in consumer.batches for row in batch] == ROWS[:150]


def test_an_error_couchdb_appends_mid_stream_fails_a_gathered_body() -> None:
    cut = BODY.index(b",\r\n", len(BODY) // 2)
    body = BODY[:cut] + b'\n{"code":500,"error":"badarith","reason":"timeout"}\n'
    value, error = feed(Recorder(gather=256), pieces(body, 100))
    assert value is None and isinstance(error, errors.HTTPError)
    assert error.status == 500 and error.error == "badarith"


def test_a_cut_body_is_a_cut_when_gathered() -> None:
    done: list[tuple[Any, BaseException | None]] = []
    consumer = Recorder(gather=1024)
    sink = RowSink(REQUEST, consumer, lambda value, error, *_: done.append((value, error)))
    sink.on_start(200, {})
    sink.on_data(BODY[:5000])
    sink.on_error(errors.ResponseCut("connection closed"))
    assert done and isinstance(done[0][1], errors.ResponseCut)


def test_only_the_buffered_result_gathers() -> None:
    """A buffered result sees its rows only at the end; on_row/on_rows and iterators get rows
    as each chunk arrives."""
    assert Keep.GATHER >= 4096
    assert not hasattr(Each, "GATHER") and not hasattr(RowIterator, "GATHER")
    seen: list[Any] = []
    each = Each(wrap_row, build_view, None, seen.extend)
    done: list[Any] = []
    sink = RowSink(REQUEST, each, lambda *args: done.append(args))
    sink.on_start(200, {})
    sink.on_data(BODY[:BODY.index(b",\r\n", 200) + 3])
    assert seen and all(type(row) is Row for row in seen)  # before the body has ended


def test_a_buffered_view_of_a_big_body_in_small_chunks() -> None:
    rows = [{"id": f"doc-{i:05d}", "key": ["k", i], "value": {"n": i}} for i in range(3000)]
    body = (b'{"total_rows":3000,"offset":0,"rows":[\r\n'
            + b",\r\n".join(map(orjson.dumps, rows)) + b"\r\n]}\n")
    keep = Keep(wrap_row, build_view)
    result, error = feed(keep, pieces(body, 1490))
    assert error is None and len(body) > 5 * Keep.GATHER
    assert result.rows == rows and all(type(row) is Row for row in result.rows)
    assert result.total_rows == 3000 and result.rows[7].key == ["k", 7]
