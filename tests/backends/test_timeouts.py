"""Connect, request and idle timeouts on every backend, through the front door and at the
adapter contract (``Backend.send`` into a recording sink).

What every backend must do: a connect that hangs, an exchange that lasts too long, or a
response that goes silent for ``idle_timeout`` ends in :class:`~corduroy2.errors.Timeout` (also a
``builtins.TimeoutError``) within the limit plus a small margin; the sink then receives exactly
one ``on_error(Timeout)`` and nothing after it; the timed-out connection is closed, never
reused. A slow but steady response longer than ``idle_timeout`` in total does not time out,
nor does a transfer the consumer has paused (that silence is ours). ``Request.timeout`` and
``Request.idle_timeout`` override the backend's settings for one request.

A hanging connect is made locally with :class:`FullBacklog` (a listener whose accept queue is
full, so the kernel drops the SYNs).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from corduroy2.backend import Backend, Transfer
from corduroy2.errors import ConnectError, CouchError, Timeout, TransportError
from corduroy2.protocol.requests import Request
from corduroy2.protocol.responses import Headers

from ..conftest import LOOP
from ..support.faultserver import FullBacklog, Reply
from .conftest import CALL_TIMEOUT, TORNADO, Harness, WatchedFaultServer

JSON = {"Content-Type": "application/json"}
VALUE = {"couchdb": "Welcome", "pad": "x" * 200}
ROWS = [{"id": f"d{i:02}", "key": i, "value": None} for i in range(8)]
ROWS_BODY = json.dumps({"total_rows": 8, "offset": 0, "rows": ROWS}).encode()
SHAPES = ["buffered", "streamed"]

#: The limit used by these tests, and how late a Timeout may come.
LIMIT = 0.3
LATE = 1.2


def _route(shape: str) -> str:
    return "/" if shape == "buffered" else "/db/_all_docs"


def _body(shape: str) -> bytes:
    return json.dumps(VALUE).encode() if shape == "buffered" else ROWS_BODY


async def _fetch(h: Harness, couch: Any, shape: str) -> Any:
    if shape == "buffered":
        return await h.run(couch.info)
    return await h.run(couch.database("db").all_docs)


def _check(shape: str, result: Any) -> None:
    if shape == "buffered":
        assert result == VALUE
    else:
        assert [r.id for r in result.rows] == [r["id"] for r in ROWS]


async def _times_out(h: Harness, couch: Any, shape: str) -> tuple[Timeout, float]:
    began = time.monotonic()
    with pytest.raises(TransportError) as info:
        await _fetch(h, couch, shape)
    took = time.monotonic() - began
    exc = info.value
    assert type(exc) is Timeout, f"{h.backend}: {type(exc).__name__}: {exc}"
    assert isinstance(exc, TimeoutError)
    return exc, took


# -- connect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["connect_timeout", "request_timeout", "idle_timeout"])
async def test_hanging_connect_times_out(h: Harness, limit: str) -> None:
    """A connect that never completes: Timeout (not ConnectError) after whichever limit is
    set; request_timeout and idle_timeout count from the start, connect included."""
    with FullBacklog() as hole:
        settings: dict[str, float] = {"connect_timeout": 30.0, limit: LIMIT}
        couch = h.couch(hole.url, **settings)
        exc, took = await _times_out(h, couch, "buffered")
    assert LIMIT - 0.1 < took < LIMIT + LATE, f"Timeout after {took:.2f}s"
    assert not isinstance(exc, ConnectError)


# -- request_timeout -------------------------------------------------------------------------


async def test_request_timeout_never_answers(h: Harness, fault: WatchedFaultServer) -> None:
    """The server accepts, reads the request and never answers (the same with a stall in the
    body, and streamed: test_transport.py::test_request_timeout)."""
    shape = "buffered"
    fault.add("GET", _route(shape), [Reply(stall_before_headers=4.0),
                                     Reply(headers=JSON, body=_body(shape))])
    couch = h.couch(request_timeout=LIMIT)
    _, took = await _times_out(h, couch, shape)
    assert LIMIT - 0.1 < took < LIMIT + LATE, f"Timeout after {took:.2f}s"
    first = fault.requests[0].connection
    assert await fault.hung_up(first), f"{h.backend} kept the timed-out connection open"
    _check(shape, await _fetch(h, couch, shape))
    assert [r.connection for r in fault.requests] == [first, first + 1]


async def test_request_timeout_bounds_a_steady_stream(h: Harness,
                                                      fault: WatchedFaultServer) -> None:
    """request_timeout is for the whole exchange: a response that keeps coming, but for
    longer than that, still times out."""
    shape = "streamed"
    body = _body(shape)
    pieces = [body[i:i + 16] for i in range(0, len(body), 16)]
    fault.add("GET", _route(shape), Reply(headers=JSON, chunks=pieces, delay=0.1))
    couch = h.couch(request_timeout=LIMIT, idle_timeout=LIMIT)
    _, took = await _times_out(h, couch, shape)
    assert LIMIT - 0.1 < took < LIMIT + LATE, f"Timeout after {took:.2f}s"


# -- idle_timeout ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stall", ["before-headers", "mid-body"])
async def test_idle_timeout_on_silence(h: Harness, fault: WatchedFaultServer, stall: str,
                                       shape: str) -> None:
    """Silence longer than idle_timeout, before the response or within it: Timeout, the
    connection dropped, and the next call works on a new one."""
    body = _body(shape)
    if stall == "before-headers":
        slow = Reply(headers=JSON, body=body, stall_before_headers=4.0)
    else:
        slow = Reply(headers=JSON, body=body, chunked=True, writes=[20],
                     stall_after_bytes=(20, 4.0))
    fault.add("GET", _route(shape), [slow, Reply(headers=JSON, body=body)])
    couch = h.couch(idle_timeout=LIMIT)
    exc, took = await _times_out(h, couch, shape)
    assert LIMIT - 0.1 < took < LIMIT + LATE, f"Timeout after {took:.2f}s"
    first = fault.requests[0].connection
    assert await fault.hung_up(first), f"{h.backend} kept the idle connection open"
    _check(shape, await _fetch(h, couch, shape))
    assert [r.connection for r in fault.requests] == [first, first + 1]


@pytest.mark.parametrize("shape", SHAPES)
async def test_idle_timeout_reset_by_each_piece(h: Harness, fault: WatchedFaultServer,
                                                shape: str) -> None:
    """A slow but steady response, several idle timeouts long in total, completes."""
    body = _body(shape)
    step = len(body) // 8 + 1
    pieces = [body[i:i + step] for i in range(0, len(body), step)]
    fault.add("GET", _route(shape), Reply(headers=JSON, chunks=pieces, delay=0.1))
    idle = 0.25
    couch = h.couch(idle_timeout=idle)
    began = time.monotonic()
    _check(shape, await _fetch(h, couch, shape))
    assert time.monotonic() - began > 2.5 * idle  # it really was longer than the limit


# -- at the adapter contract: exactly one on_error, overrides, pausing -----------------------


class _Recorder:
    """A sink that records every call, and can pause the transfer at the first chunk."""

    def __init__(self, pause_for: float | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.transfer: Transfer | None = None
        self.pause_for = pause_for
        self.blocking = False
        self._lock = threading.Lock()
        self.done = asyncio.Event()

    def _record(self, kind: str, value: Any) -> None:
        with self._lock:
            self.events.append((kind, value))
        if kind in ("end", "error"):
            LOOP.call_soon_threadsafe(self.done.set)

    def on_start(self, status: int, headers: Headers) -> None:
        self._record("start", status)

    def on_data(self, chunk: bytes) -> None:
        first = not any(kind == "data" for kind, _ in self.events)
        self._record("data", chunk)
        if first and self.pause_for is not None:
            if self.blocking:  # the sink runs inline with the reads: being slow is pausing
                time.sleep(self.pause_for)
            else:
                assert self.transfer is not None
                transfer = self.transfer
                transfer.pause()
                LOOP.call_later(self.pause_for, transfer.resume)

    def on_end(self) -> None:
        self._record("end", None)

    def on_error(self, exc: CouchError) -> None:
        self._record("error", exc)

    def ends(self) -> list[tuple[str, Any]]:
        with self._lock:
            return [(k, v) for k, v in self.events if k in ("end", "error")]


async def _send(h: Harness, backend: Backend, request: Request, sink: _Recorder) -> float:
    """Send on the backend's own terms (blocking: in a thread); seconds until the sink ended."""
    began = time.monotonic()
    if h.blocking:
        sink.blocking = True
        LOOP.run_in_executor(None, backend.send, request, sink)
    else:
        sink.transfer = backend.send(request, sink)
    await asyncio.wait_for(sink.done.wait(), CALL_TIMEOUT)
    return time.monotonic() - began


@pytest.mark.parametrize("which", ["timeout", "idle_timeout"])
async def test_request_override_and_single_error(h: Harness, fault: WatchedFaultServer,
                                                 which: str) -> None:
    """``Request.timeout`` / ``Request.idle_timeout`` override the backend's (much longer)
    setting; the sink gets one on_error(Timeout) and nothing after, even once the transport
    has torn the connection down."""
    body = _body("streamed")
    fault.add("GET", "/db/_all_docs", Reply(headers=JSON, body=body, chunked=True, writes=[20],
                                            stall_after_bytes=(20, 4.0)))
    couch = h.couch(**{"request_timeout" if which == "timeout" else which: 30.0})
    request = Request("GET", fault.url + "/db/_all_docs", stream=True, **{which: LIMIT})
    sink = _Recorder()
    took = await _send(h, couch.backend, request, sink)
    assert LIMIT - 0.1 < took < LIMIT + LATE, f"Timeout after {took:.2f}s"
    kinds = [k for k, _ in sink.events]
    assert kinds[0] == "start" and kinds[-1] == "error" and "end" not in kinds, kinds
    ((_, exc),) = sink.ends()
    assert type(exc) is Timeout and exc.method == "GET", repr(exc)
    assert await fault.hung_up(fault.requests[0].connection)
    await asyncio.sleep(0.2)  # whatever the teardown reports must not reach the sink
    assert [k for k, _ in sink.events] == kinds


async def test_idle_timeout_not_counted_while_paused(h: Harness,
                                                     fault: WatchedFaultServer) -> None:
    """The consumer holds the transfer (pauses it, or is slow inline) for longer than
    idle_timeout while the server has nothing more to wait for: no Timeout."""
    body = _body("streamed")
    fault.add("GET", "/db/_all_docs", Reply(headers=JSON, body=body, chunked=True,
                                            writes=[20], delay=0.05))
    couch = h.couch(idle_timeout=0.25)
    request = Request("GET", fault.url + "/db/_all_docs", stream=True)
    sink = _Recorder(pause_for=0.7)
    await _send(h, couch.backend, request, sink)
    assert sink.ends() == [("end", None)], sink.events
    assert b"".join(v for k, v in sink.events if k == "data") == body


@pytest.mark.parametrize("backend", [*TORNADO, "twisted-httptools"])
async def test_timed_out_in_the_queue_is_never_sent(h: Harness,
                                                   fault: WatchedFaultServer) -> None:
    """Tornado and Twisted's httptools client queue requests beyond max_connections. One whose idle timeout expires while
    it waits there has failed for its caller, so it must not go out once a slot frees up
    (the caller may well have sent it again by then)."""
    fault.add("GET", "/slow", Reply.json(VALUE, stall_before_headers=0.6))
    fault.add("GET", "/", Reply.json(VALUE))
    couch = h.couch(max_connections=1)
    slow, queued = _Recorder(), _Recorder()
    await asyncio.sleep(0)
    couch.backend.send(Request("GET", fault.url + "/slow"), slow)
    took = await _send(h, couch.backend, Request("GET", fault.url + "/", idle_timeout=LIMIT),
                       queued)
    assert LIMIT - 0.1 < took < LIMIT + LATE
    assert [k for k, _ in queued.events] == ["error"]
    assert type(queued.events[0][1]) is Timeout
    await asyncio.wait_for(slow.done.wait(), CALL_TIMEOUT)
    assert slow.ends() == [("end", None)]
    await asyncio.sleep(0.3)
    assert [r.path for r in fault.requests] == ["/slow"]


@pytest.mark.parametrize("stall", ["before-headers", "mid-body"])
async def test_idle_timeout_of_whole_seconds_on_a_plain_request(
        h: Harness, fault: WatchedFaultServer, stall: str) -> None:
    """An idle timeout of a few seconds on a plain request: every backend times out after about
    that silence, never before."""
    body = _body("buffered")
    if stall == "before-headers":
        slow = Reply(headers=JSON, body=body, stall_before_headers=6.0)
    else:
        slow = Reply(headers=JSON, body=body, chunked=True, writes=[20],
                     stall_after_bytes=(20, 6.0))
    fault.add("GET", "/", [slow, Reply(headers=JSON, body=body)])
    couch = h.couch(idle_timeout=2.0)
    exc, took = await _times_out(h, couch, "buffered")
    assert 1.9 < took < 2.0 + 2 * LATE, f"Timeout after {took:.2f}s"
    assert "idle_timeout" in str(exc)
    _check("buffered", await _fetch(h, couch, "buffered"))
