"""The fake as an HTTP server: CouchDB's errors, malformed requests, faults, lifecycle, and its
streamed answers parsed at every byte split by corduroy2's own parsers."""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson
import pytest

from corduroy2.protocol.changes import Change, ChangesStream, FeedEnd, Heartbeat
from corduroy2.protocol.rows import NEED_DATA, End, Header, RowEvent, RowStream
from corduroy2.testing import FakeCouch, FakeServer

from .conftest import Http


def raw_exchange(server: FakeServer, data: bytes) -> bytes:
    """Send ``data`` as is; everything the server answers until it closes (or 2 s pass)."""
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def test_couchdb_errors(couch: Http, db: str) -> None:
    assert couch("GET", "/nope")[::2] == (404, {"error": "not_found",
                                                "reason": "Database does not exist."})
    assert couch("GET", "/Bad")[2]["error"] == "illegal_database_name"
    assert couch("PUT", db)[::2] == (412, {"error": "file_exists", "reason":
                                           "The database could not be created, the file "
                                           "already exists."})
    status, head, body = couch("PATCH", db)
    assert status == 405 and body["error"] == "method_not_allowed" and "GET" in head["allow"]
    assert couch("GET", f"{db}/_design/x/_view/v")[2] == {"error": "not_found",
                                                          "reason": "missing"}
    assert couch("POST", f"{db}/_find", b"{not json", headers={
        "Content-Type": "application/json"})[2]["error"] == "bad_request"
    status, head, body = couch("GET", "/")
    assert body["couchdb"] == "Welcome" and body["version"].startswith("3.")
    assert head["server"].startswith("CouchDB/3") and head["x-couch-request-id"]


@pytest.mark.parametrize("garbage", [
    b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9\r\n\r\n", b"get / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nno colon\r\n\r\n", b"GET nopath HTTP/1.1\r\n\r\n",
    b"PUT /db/x HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    b"PUT /db/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"\xff\xfe\x00garbage\r\n\r\n",
])
def test_malformed_requests_get_400_and_the_server_lives(server: FakeServer, couch: Http,
                                                         garbage: bytes) -> None:
    answer = raw_exchange(server, garbage)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert orjson.loads(body)["error"] in ("bad_request", "not_found")
    assert b"Traceback" not in answer
    assert couch("GET", "/")[0] == 200


def test_keep_alive_chunked_upload_and_expect(server: FakeServer, db: str) -> None:
    request = (b"PUT /db/a HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46c2VjcmV0\r\n"
               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
               b"Expect: 100-continue\r\n\r\n4\r\n{\"n\"\r\n3\r\n:1}\r\n0\r\n\r\n")
    closing = b"GET /db/a HTTP/1.1\r\nAuthorization: Basic YWRtaW46c2VjcmV0\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(server, request + closing)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created")
    assert answer.count(b"HTTP/1.1 ") == 3 and answer.endswith(b'"n":1}\n')


def test_fault_status_with_retry_after(server: FakeServer, couch: Http, db: str) -> None:
    server.faults.answer(503, method="GET", path="/db", retry_after=2, times=2)
    for _ in range(2):
        status, head, body = couch("GET", db)
        assert (status, head["retry-after"], body["error"]) == (503, "2", "service_unavailable")
    assert couch("GET", db)[0] == 200  # used up
    server.faults.answer(429, path="/db/*")
    assert couch("PUT", f"{db}/x", {})[0] == 429
    assert couch("GET", db)[0] == 200  # the pattern did not match /db
    assert len(server.faults) == 0


def test_fault_stall(server: FakeServer, couch: Http, db: str) -> None:
    server.faults.stall(0.3, path="/db")
    started = time.monotonic()
    assert couch("GET", db)[0] == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("path", ["/db", "/db/_all_docs"])
def test_fault_cut(server: FakeServer, db: str, path: str) -> None:
    server.faults.cut(5, path=path)
    answer = raw_exchange(server, f"GET {path} HTTP/1.1\r\nAuthorization: Basic "
                                  "YWRtaW46c2VjcmV0\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    payload = body.split(b"\r\n", 1)[1] if b"chunked" in head else body
    assert len(payload) == 5 and payload.startswith(b'{"')  # then the connection closed


def test_start_fast_and_stop_cleanly() -> None:
    started = time.perf_counter()
    server = FakeCouch().serve()
    elapsed = time.perf_counter() - started
    port = server.port
    with socket.create_connection(("127.0.0.1", port)):
        pass
    server.stop()
    assert elapsed < 1.0  # (the target, < 50 ms, is measured by `bench fake`)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert "secret" not in repr(server)


# -- streamed answers, at every byte split -----------------------------------------------------


def rows_events(body: bytes, pieces: list[bytes]) -> list[Any]:
    stream = RowStream()
    events: list[Any] = []
    for piece in [*pieces, b""]:
        stream.receive_data(piece)
        while (event := stream.next_event()) is not NEED_DATA:
            events.append(event)
    return events


def every_split(body: bytes) -> list[list[bytes]]:
    return [[body[:i], body[i:]] for i in range(1, len(body))] + [
        [body[i:i + 1] for i in range(len(body))]]


def expected_rows(body: bytes, key: str) -> list[Any]:
    obj = orjson.loads(body)
    names = list(obj)
    before = {k: obj[k] for k in names[:names.index(key)]}
    return [Header(before), *map(RowEvent, obj[key]), End({k: v for k, v in obj.items()
                                                           if k != key})]


@pytest.fixture
def seeded(couch: Http, db: str) -> str:
    couch("POST", f"{db}/_bulk_docs", {"docs": [
        {"_id": f"d{i}", "n": i, "s": "é\"\\\n😀"} for i in range(4)]})
    return db


@pytest.mark.parametrize("method,path,body,key", [
    ("GET", "/db/_all_docs?include_docs=true", None, "rows"),
    ("POST", "/db/_all_docs", {"keys": ["d1", "nope"]}, "rows"),
    ("POST", "/db/_find", {"selector": {"n": {"$gt": 0}}, "execution_stats": True}, "docs"),
    ("GET", "/db/_changes?include_docs=true", None, "results"),
])
def test_row_answers_at_every_split(couch: Http, seeded: str, method: str, path: str,
                                    body: Any, key: str) -> None:
    status, head, raw = couch.raw(method, path, body)
    assert status == 200 and head["transfer-encoding"] == "chunked"
    want = expected_rows(raw, key)
    for pieces in every_split(raw):
        assert rows_events(raw, pieces) == want


def test_continuous_feed_at_every_split(couch: Http, seeded: str) -> None:
    status, _, raw = couch.raw("GET", "/db/_changes?feed=continuous&timeout=1&heartbeat=400"
                                      "&since=2")
    assert status == 200 and raw.endswith(b"\n")
    lines = raw.split(b"\n")
    want = [orjson.loads(line) for line in lines if line.strip()]
    assert [w.get("id") for w in want] == ["d2", "d3", None]
    for pieces in every_split(raw):
        stream = ChangesStream("continuous")
        events: list[Any] = []
        for piece in [*pieces, b""]:
            stream.receive_data(piece)
            while (event := stream.next_event()) is not NEED_DATA:
                events.append(event)
        changes = [e.value for e in events if isinstance(e, Change)]
        assert changes == want[:-1]
        assert events[-1] == FeedEnd(want[-1]["last_seq"], want[-1]["pending"])
        assert all(isinstance(e, (Change, Heartbeat, FeedEnd)) for e in events)
