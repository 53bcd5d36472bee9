"""Tests of the fault-injection server itself, using only stdlib clients."""
from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Iterator

import pytest

from .faultserver import FaultServer, Received, Reply


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s
        assert s.errors == []


def _client(server: FaultServer, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(server.host, server.port, timeout=timeout)


def _get(server: FaultServer, path: str) -> tuple[int, bytes]:
    c = _client(server)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _raw(server: FaultServer, path: str) -> tuple[bytes, bytes]:
    """GET with Connection: close on a raw socket; (head, body bytes on the wire)."""
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_json_reply(server: FaultServer) -> None:
    server.add("GET", "/db", Reply.json({"db_name": "db"}, headers={"X-Couch": "1"}))
    c = _client(server)
    c.request("GET", "/db?x=1")
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type") == "application/json"
    assert r.getheader("X-Couch") == "1"
    assert json.loads(r.read()) == {"db_name": "db"}
    c.close()


def test_no_route_is_404_json(server: FaultServer) -> None:
    server.add("GET", "/db", Reply())
    status, body = _get(server, "/other")
    assert status == 404
    assert json.loads(body) == {"error": "not_found", "reason": "no route"}
    server.add("PUT", "/db", Reply(status=201))
    assert _get(server, "/db")[0] == 200  # method matters


def test_chunked_reply_reassembled(server: FaultServer) -> None:
    chunks = [b"abc", b"0123456789abcdefg", b"z"]
    server.add("GET", "/c", Reply(chunks=chunks))
    assert _get(server, "/c") == (200, b"".join(chunks))
    head, wire = _raw(server, "/c")
    assert b"transfer-encoding: chunked" in head.lower()
    assert wire == b"3\r\nabc\r\n11\r\n0123456789abcdefg\r\n1\r\nz\r\n0\r\n\r\n"


def test_chunks_are_flushed_separately(server: FaultServer) -> None:
    server.add("GET", "/c", Reply(chunks=[b"first", b"second"], delay=0.3))
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"5\r\nfirst\r\n"):
            data += s.recv(65536)
        t0 = time.monotonic()
        while not data.endswith(b"0\r\n\r\n"):
            data += s.recv(65536)
        assert time.monotonic() - t0 > 0.2
    assert data.endswith(b"\r\n\r\n5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n")


def test_writes_split_content_length_body(server: FaultServer) -> None:
    server.add("GET", "/w", Reply(body=b"0123456789", writes=[3, 7], delay=0.1))
    t0 = time.monotonic()
    assert _get(server, "/w") == (200, b"0123456789")
    assert time.monotonic() - t0 >= 0.2


def test_cut_after_content_length(server: FaultServer) -> None:
    server.add("GET", "/cut", Reply(body=b"x" * 100, cut_after=40))
    c = _client(server)
    c.request("GET", "/cut")
    r = c.getresponse()
    assert r.getheader("Content-Length") == "100"
    with pytest.raises(http.client.IncompleteRead) as e:
        r.read()
    assert len(e.value.partial) == 40 and e.value.expected == 60
    c.close()


def test_cut_after_chunked_counts_payload(server: FaultServer) -> None:
    server.add("GET", "/cut", Reply(chunks=[b"a" * 10, b"b" * 10], cut_after=15))
    _, wire = _raw(server, "/cut")
    assert wire == b"a\r\n" + b"a" * 10 + b"\r\na\r\n" + b"b" * 5


def test_cut_with_reset(server: FaultServer) -> None:
    server.add("GET", "/rst", Reply(body=b"x" * 100, cut_after=10, reset=True))
    c = _client(server)
    c.request("GET", "/rst")
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        c.getresponse().read()
    c.close()


def test_drop_without_reply(server: FaultServer) -> None:
    server.add("GET", "/drop", Reply(drop=True))
    c = _client(server)
    c.request("GET", "/drop")
    with pytest.raises(http.client.RemoteDisconnected):
        c.getresponse()
    c.close()
    assert len(server.received("GET", "/drop")) == 1


def test_reply_list_in_turn_last_repeats(server: FaultServer) -> None:
    busy = Reply.json({"error": "busy"}, 503, headers={"Retry-After": "1"})
    server.add("GET", "/db", [busy, Reply.json({}, 429), Reply.json({"ok": True})])
    assert [_get(server, "/db")[0] for _ in range(5)] == [503, 429, 200, 200, 200]


def test_handler_and_any_method(server: FaultServer) -> None:
    def echo(req: Received) -> Reply:
        return Reply(body=req.method.encode() + b" " + req.body)

    server.add_handler("*", "/echo", echo)
    c = _client(server)
    c.request("PUT", "/echo", body=b"hi")
    assert c.getresponse().read() == b"PUT hi"
    c.request("DELETE", "/echo")
    assert c.getresponse().read() == b"DELETE "
    c.close()


def test_head_sends_no_body(server: FaultServer) -> None:
    server.add("*", "/doc", Reply.json({"_id": "doc"}, headers={"ETag": '"1-a"'}))
    c = _client(server)
    c.request("HEAD", "/doc")
    r = c.getresponse()
    assert r.read() == b"" and r.getheader("ETag") == '"1-a"'
    c.request("GET", "/doc")  # the connection is still in sync
    assert json.loads(c.getresponse().read()) == {"_id": "doc"}
    c.close()
    assert server.connections_accepted == 1


def test_keep_alive_serves_two_requests_on_one_connection(server: FaultServer) -> None:
    server.add("GET", "/a", Reply(body=b"A"))
    server.add("GET", "/b", Reply(chunks=[b"B"]))
    c = _client(server)
    for path, body in (("/a", b"A"), ("/b", b"B"), ("/a", b"A")):
        c.request("GET", path)
        assert c.getresponse().read() == body
    c.close()
    assert server.connections_accepted == 1
    assert {r.connection for r in server.requests} == {1}


def test_close_reply_closes_connection(server: FaultServer) -> None:
    server.add("GET", "/a", Reply(body=b"A", close=True))
    c = _client(server)
    for _ in range(2):
        c.request("GET", "/a")
        r = c.getresponse()
        assert r.getheader("Connection") == "close" and r.read() == b"A"
    c.close()
    assert server.connections_accepted == 2


def test_stall_before_headers_times_out_and_stop_is_prompt() -> None:
    server = FaultServer()
    try:
        server.add("GET", "/slow", Reply(stall_before_headers=60))
        c = _client(server, timeout=0.2)
        c.request("GET", "/slow")
        with pytest.raises(socket.timeout):
            c.getresponse()
        c.close()
        assert len(server.requests) == 1  # the handler is really stalled
    finally:
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 2
    assert not any(t.is_alive() for t in server._threads)


def test_stop_is_prompt_with_open_idle_and_mid_body_connections() -> None:
    server = FaultServer()
    server.add("GET", "/part", Reply(body=b"x" * 10, stall_after_bytes=(4, 60)))
    idle = socket.create_connection((server.host, server.port))
    part = socket.create_connection((server.host, server.port))
    part.sendall(b"GET /part HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"xxxx"):
        data += part.recv(65536)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 2
    assert not any(t.is_alive() for t in server._threads)
    idle.close()
    part.close()


def test_stall_after_bytes_then_resumes(server: FaultServer) -> None:
    server.add("GET", "/s", Reply(body=b"0123456789", stall_after_bytes=(4, 0.3)))
    t0 = time.monotonic()
    assert _get(server, "/s") == (200, b"0123456789")
    assert time.monotonic() - t0 >= 0.25


def test_requests_recorded_with_bodies(server: FaultServer) -> None:
    server.add("POST", "/db/_bulk_docs", Reply.json([], 201))
    c = _client(server)
    c.request("POST", "/db/_bulk_docs?new_edits=false", body=b'{"docs":[]}',
              headers={"Content-Type": "application/json"})
    assert c.getresponse().read() == b"[]"
    # An iterable body without a length makes http.client send it chunked.
    c.request("POST", "/db/_bulk_docs", body=iter([b'{"docs"', b":[1]}"]))
    assert c.getresponse().status == 201
    c.close()
    first, second = server.received("POST", "/db/_bulk_docs")
    assert first.query == "new_edits=false" and first.body == b'{"docs":[]}'
    assert first.headers["content-type"] == "application/json"
    assert first.headers["content-length"] == "11"
    assert second.headers["transfer-encoding"] == "chunked"
    assert second.body == b'{"docs":[1]}' and second.query == ""
    assert len(server.requests) == 2
