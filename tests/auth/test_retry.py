"""Retries through the fault server, on every backend: what is retried, how often, how long."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from corduroy2 import (ConnectError, ResponseCut, Retry, ServerError, TooManyRequests)
from corduroy2.pipeline.retry import is_idempotent, retry_after
from corduroy2.protocol.requests import Request

from ..support.faultserver import FaultServer, Reply
from .conftest import Runner

FAST = Retry(attempts=5, base=0.01, cap=0.05, deadline=5.0)
UNAVAILABLE = Reply.json({"error": "unavailable", "reason": "try later"}, 503,
                         headers={"Retry-After": "0"})
THROTTLED = Reply.json({"error": "too_many_requests", "reason": "slow down"}, 429,
                       headers={"Retry-After": "0"})
OK = Reply.json({"ok": True})


async def test_storm_then_success_for_gets(run: Runner, fault: FaultServer) -> None:
    fault.add("GET", "/", [UNAVAILABLE, THROTTLED, UNAVAILABLE, THROTTLED, OK])
    couch = run.couch(fault.url, retry=FAST)
    assert await run.call(couch.info) == {"ok": True}
    assert len(fault.received("GET", "/")) == 5


async def test_default_policy_gives_up_after_three_attempts(run: Runner, fault: FaultServer) -> None:
    fault.add("GET", "/", [UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, OK])
    couch = run.couch(fault.url)
    with pytest.raises(ServerError) as info:
        await run.call(couch.info)
    assert info.value.status == 503 and info.value.headers["retry-after"] == "0"
    assert len(fault.received("GET", "/")) == 3


async def test_retry_after_is_honoured_up_to_the_cap(run: Runner, fault: FaultServer) -> None:
    fault.add("GET", "/", [Reply.json({}, 429, headers={"Retry-After": "0.2"}),
                           Reply.json({}, 429, headers={"Retry-After": "30"}), OK])
    couch = run.couch(fault.url, retry=Retry(attempts=3, base=0.0, cap=0.3, deadline=5))
    began = time.monotonic()
    assert await run.call(couch.info) == {"ok": True}
    elapsed = time.monotonic() - began
    assert 0.45 <= elapsed < 2.0, elapsed  # 0.2 s asked, then 30 s asked but capped at 0.3 s
    first, second, third = fault.received("GET", "/")


async def test_http_date_retry_after(run: Runner, fault: FaultServer) -> None:
    fault.add("GET", "/", [Reply.json({}, 503, headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}),
                           OK])
    couch = run.couch(fault.url, retry=FAST)
    assert await run.call(couch.info) == {"ok": True}


async def test_a_post_answered_503_is_sent_once(run: Runner, fault: FaultServer) -> None:
    fault.add("POST", "/db/_bulk_docs", [UNAVAILABLE, Reply.json([{"id": "a", "rev": "1-a"}], 201)])
    couch = run.couch(fault.url, retry=FAST)
    with pytest.raises(ServerError):
        await run.call(couch.database("db").save, [{"_id": "a"}])
    assert len(fault.received("POST")) == 1


async def test_a_post_is_retried_when_the_caller_opts_in(run: Runner, fault: FaultServer) -> None:
    fault.add("POST", "/db/_bulk_docs", [THROTTLED, Reply.json([{"id": "a", "rev": "1-a"}], 201)])
    couch = run.couch(fault.url, retry=FAST).with_options(
        retry=Retry(attempts=3, base=0.01, methods={"post"}))
    result = await run.call(couch.database("db").save, [{"_id": "a"}])
    assert result.resolved["a"]["_rev"] == "1-a"
    assert len(fault.received("POST")) == 2


async def test_put_with_rev_is_retried_put_without_rev_is_not(run: Runner, fault: FaultServer) -> None:
    fault.add("PUT", "/db/a", [UNAVAILABLE, Reply.json({"ok": True, "id": "a", "rev": "2-b"}, 201)])
    db = run.couch(fault.url, retry=FAST).database("db")
    doc = {"_id": "a", "_rev": "1-a"}
    await run.call(db.save, doc)
    assert doc["_rev"] == "2-b" and len(fault.received("PUT", "/db/a")) == 2

    fault.add("PUT", "/db/new", [UNAVAILABLE, Reply.json({"ok": True, "id": "new", "rev": "1-c"}, 201)])
    with pytest.raises(ServerError):
        await run.call(db.save, {"_id": "new"})
    assert len(fault.received("PUT", "/db/new")) == 1


async def test_delete_with_rev_is_retried(run: Runner, fault: FaultServer) -> None:
    fault.add("DELETE", "/db/a", [THROTTLED, Reply.json({"ok": True, "id": "a", "rev": "2-d"})])
    db = run.couch(fault.url, retry=FAST).database("db")
    assert (await run.call(db.delete, {"_id": "a", "_rev": "1-a"}))["rev"] == "2-d"
    assert [r.query for r in fault.received("DELETE")] == ["rev=1-a", "rev=1-a"]


async def test_retry_false_sends_once(run: Runner, fault: FaultServer) -> None:
    fault.add("GET", "/", [UNAVAILABLE, OK])
    couch = run.couch(fault.url, retry=False)
    with pytest.raises(ServerError):
        await run.call(couch.info)
    assert len(fault.requests) == 1
    # and per call, on a handle that retries
    fault.add("GET", "/", [THROTTLED, OK])
    retrying = run.couch(fault.url, retry=FAST)
    with pytest.raises(TooManyRequests):
        await run.call(retrying.with_options(retry=False).info)
    assert await run.call(retrying.info) == {"ok": True}


async def test_deadline_is_respected(run: Runner, fault: FaultServer) -> None:
    fault.add("GET", "/", Reply.json({}, 503))
    couch = run.couch(fault.url, retry=Retry(attempts=1000, base=0.05, cap=0.05, deadline=0.5))
    began = time.monotonic()
    with pytest.raises(ServerError):
        await run.call(couch.info)
    elapsed = time.monotonic() - began
    assert elapsed < 1.2, elapsed
    assert 3 < len(fault.requests) < 200


async def test_not_retried_statuses_fail_at_once(run: Runner, fault: FaultServer) -> None:
    fault.add("GET", "/", [Reply.json({"error": "internal"}, 500), OK])
    couch = run.couch(fault.url, retry=FAST)
    with pytest.raises(ServerError):
        await run.call(couch.info)
    assert len(fault.requests) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Late:
    """An HTTP server that starts listening on ``port`` only after ``delay`` seconds."""

    def __init__(self, port: int, delay: float) -> None:
        self.port = port
        self.server: http.server.ThreadingHTTPServer | None = None
        self.hits: list[str] = []
        self._timer = threading.Timer(delay, self._start)
        self._timer.start()

    def _start(self) -> None:
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self) -> None:
                hits.append(self.command)
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                reply = [{"id": "x", "rev": "1-x"}] if self.command == "POST" else {"ok": True}
                body = json.dumps(reply).encode()
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _reply

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._timer.cancel()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def late() -> Iterator[_Late]:
    server = _Late(_free_port(), 0.3)
    yield server
    server.stop()


async def test_connect_error_is_retried_even_for_a_post(run: Runner, late: _Late,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens for the first 0.3 s: connections are refused, so the requests were never
    # sent, and even a POST may be tried again.
    couch = run.couch(f"http://127.0.0.1:{late.port}",
                      retry=Retry(attempts=50, base=0.05, cap=0.1, deadline=5))
    with caplog.at_level(logging.INFO, logger="corduroy2"):
        result = await run.call(couch.database("db").save, [{"_id": "x"}])
        assert await run.call(couch.info) == {"ok": True}
    assert result.resolved["x"]["_rev"] == "1-x"
    assert late.hits == ["POST", "GET"]
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert retries and all("ConnectError" in r.getMessage() for r in retries)


async def test_connect_error_gives_up_within_the_policy(run: Runner,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    couch = run.couch(f"http://127.0.0.1:{_free_port()}", retry=Retry(attempts=3, base=0.01))
    with caplog.at_level(logging.INFO, logger="corduroy2"):
        with pytest.raises(ConnectError):
            await run.call(couch.info)
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2


STREAM_HEAD = b'{"total_rows":2,"offset":0,"rows":[\r\n{"id":"a","key":1,"value":null},\r\n'
STREAM_TAIL = b'{"id":"b","key":2,"value":null}\r\n]}\n'


async def test_stream_is_retried_before_any_byte(run: Runner, fault: FaultServer) -> None:
    path = "/db/_design/d/_view/v"
    fault.add("GET", path, [UNAVAILABLE, Reply(chunks=[STREAM_HEAD, STREAM_TAIL])])
    db = run.couch(fault.url, retry=FAST).database("db")
    rows: list[Any] = []
    await run.call(db.view, "d/v", on_row=rows.append)
    assert [r.id for r in rows] == ["a", "b"]
    assert len(fault.received("GET", path)) == 2


async def test_stream_is_not_retried_once_rows_were_delivered(run: Runner,
                                                              fault: FaultServer) -> None:
    path = "/db/_design/d/_view/v"
    fault.add("GET", path, [Reply(chunks=[STREAM_HEAD, STREAM_TAIL], delay=0.05,
                                  cut_after=len(STREAM_HEAD) + 10), Reply(chunks=[STREAM_HEAD, STREAM_TAIL])])
    db = run.couch(fault.url, retry=FAST).database("db")
    rows: list[Any] = []
    with pytest.raises(ResponseCut):
        await run.call(db.view, "d/v", on_row=rows.append)
    assert [r.id for r in rows] == ["a"]
    assert len(fault.received("GET", path)) == 1


async def test_lost_reply_to_an_idempotent_request_is_retried(run: Runner,
                                                              fault: FaultServer) -> None:
    fault.add("GET", "/", [Reply(body=b'{"ok": true, "padding": "xxxxxxxx"}', cut_after=5), OK])
    couch = run.couch(fault.url, retry=FAST)
    assert await run.call(couch.info) == {"ok": True}
    assert len(fault.received("GET", "/")) == 2


async def test_lost_reply_to_a_post_is_not_retried(run: Runner, fault: FaultServer) -> None:
    fault.add("POST", "/db/_bulk_docs", [Reply(body=b'[{"id": "a", "rev": "1-a"}]', status=201,
                                               cut_after=5), Reply.json([], 201)])
    db = run.couch(fault.url, retry=FAST).database("db")
    with pytest.raises(ResponseCut):
        await run.call(db.save, [{"_id": "a"}])
    assert len(fault.received("POST")) == 1


# -- the rules, without IO --------------------------------------------------------------------


@pytest.mark.parametrize("request_, expected", [
    (Request("GET", "http://h/db/x"), True),
    (Request("HEAD", "http://h/db"), True),
    (Request("PUT", "http://h/db/x?rev=1-a", body=b"{}"), True),
    (Request("PUT", "http://h/db/x/att?rev=1-a&batch=ok", body=b"data"), True),
    (Request("PUT", "http://h/db/x", body=b'{"_id":"x","_rev":"1-a"}'), True),
    (Request("PUT", "http://h/db/x", body=b'{"_id":"x","n":{"_rev":"1-a"}}'), False),
    (Request("PUT", "http://h/db/x", body=b'{"_id":"x"}'), False),
    (Request("PUT", "http://h/db", body=b""), False),
    (Request("DELETE", "http://h/db/x?rev=1-a"), True),
    (Request("DELETE", "http://h/db"), False),
    (Request("POST", "http://h/db/_find", body=b"{}"), False),
    (Request("POST", "http://h/db/_find", body=b"{}", idempotent=True), True),
    (Request("GET", "http://h/db/x", idempotent=False), False),
    (Request("COPY", "http://h/db/x"), False),
])
def test_idempotence_rule(request_: Request, expected: bool) -> None:
    assert is_idempotent(request_) is expected


def test_retry_after_parsing() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": " 0 "}) == 0.0
    assert retry_after({"retry-after": "-5"}) == 0.0
    assert retry_after({"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 0.0
    future = retry_after({"retry-after": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert future is not None and future > 1e9
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = Retry(base=1.0, cap=4.0)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        delays = [policy.backoff(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the whole range


def test_retry_validation() -> None:
    with pytest.raises(ValueError):
        Retry(attempts=0)
    with pytest.raises(ValueError):
        Retry(deadline=-1)
    # Only error replies are retried (a success is final without looking at the policy).
    with pytest.raises(ValueError, match="error statuses"):
        Retry(statuses={503, 204})
    assert Retry(methods={"post"}).methods == frozenset({"POST"})
    assert Retry(statuses=[500]).statuses == frozenset({500})
