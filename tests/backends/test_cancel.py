"""Cancelling requests, and callbacks that raise, on each backend.

Twisted: ``Deferred.cancel()`` fails the Deferred with ``CancelledError`` and aborts the
connection (the server sees it close). Tornado: ``Future.cancel()`` stops delivery quietly;
Tornado has no per-request abort, so a buffered request runs to its end in the background,
while a streamed one is torn down. Callback style: an exception raised by the user's callback
is logged on the "corduroy2" logger and the Couch keeps working.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import pytest

from ..support.faultserver import Reply
from .conftest import TORNADO, Harness, WatchedFaultServer

VALUE = {"couchdb": "Welcome", "version": "3.3.3"}
ROWS = [{"id": f"d{i:03}", "key": i, "value": None} for i in range(40)]


def _rows_reply(delay: float) -> Reply:
    """An _all_docs reply sent row by row, ``delay`` seconds apart."""
    rows = [b'{"total_rows":40,"offset":0,"rows":[\r\n']
    rows += [Reply.json(r).body + (b",\r\n" if i < len(ROWS) - 1 else b"\r\n")
             for i, r in enumerate(ROWS)]
    rows.append(b"]}\n")
    return Reply(headers={"Content-Type": "application/json"}, chunks=rows, delay=delay)


async def _until(predicate: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


# -- Twisted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["twisted", "twisted-httptools"])
@pytest.mark.parametrize("when", ["before-headers", "mid-body", "streamed"])
async def test_twisted_cancel_aborts_connection(h: Harness, fault: WatchedFaultServer,
                                                caplog: pytest.LogCaptureFixture,
                                                when: str) -> None:
    from twisted.internet.defer import CancelledError

    if when == "before-headers":
        slow = Reply.json({"_id": "x"}, stall_before_headers=5.0)
    elif when == "mid-body":
        slow = Reply.json({"_id": "x", "pad": "p" * 100}, stall_after_bytes=(10, 5.0))
    else:
        slow = _rows_reply(delay=0.2)
    path = "/db/_all_docs" if when == "streamed" else "/db/x"
    fault.add("GET", path, [slow, Reply.json({"_id": "x"}) if when != "streamed"
                            else _rows_reply(0)])
    db = h.couch().database("db")
    call = db.all_docs if when == "streamed" else lambda: db.get("x")
    d = call()
    outcomes: list[Any] = []
    d.addBoth(outcomes.append)
    await _until(lambda: fault.requests)
    await asyncio.sleep(0.15)  # let headers and the first bytes reach the client
    assert outcomes == []
    d.cancel()
    assert len(outcomes) == 1 and outcomes[0].check(CancelledError), outcomes
    outcomes[0].trap(CancelledError)  # handled: no "Unhandled error in Deferred"
    first = fault.requests[0].connection
    assert await fault.hung_up(first), "the server did not see the cancelled connection close"
    # Nothing more arrives for the cancelled call, and the next one uses a new connection.
    result = await h.run(call)
    if when == "streamed":
        assert [r.id for r in result.rows] == [r["id"] for r in ROWS]
    else:
        assert result == {"_id": "x"}
    assert len(outcomes) == 1
    assert [r.connection for r in fault.requests] == [first, first + 1]
    gc.collect()
    assert _problems(caplog) == []


# -- Tornado ---------------------------------------------------------------------------------


# A cancelled request must leave nothing behind that asyncio would log when its abandoned
# fetch ends later: a reply goes nowhere (_Fetch.fetched and _Transfer.fetched return once
# cancelled), and a failure must not surface as "Future exception was never retrieved".


@pytest.mark.parametrize("backend", TORNADO)
@pytest.mark.parametrize("how", ["cancel", "wait_for"])
@pytest.mark.parametrize("then", ["replies", "drops"])
@pytest.mark.parametrize("idle", ["default", None])
async def test_tornado_cancel_buffered(request: pytest.FixtureRequest, h: Harness,
                                       fault: WatchedFaultServer,
                                       caplog: pytest.LogCaptureFixture, how: str,
                                       then: str, idle: str | None) -> None:
    """Cancelling the Future: no exception logged, nothing delivered (whatever arrives later
    for it, a reply or a failure, goes nowhere), and later calls work. With or without an idle
    timeout (without one, the simple client's plain request is a _Fetch too)."""
    late = (Reply.json(VALUE, stall_before_headers=0.5) if then == "replies"
            else Reply(drop=True, stall_before_headers=0.5))
    fault.add("GET", "/", [late, Reply.json(VALUE)])
    couch = h.couch() if idle == "default" else h.couch(idle_timeout=None)
    future = couch.info()
    if how == "cancel":
        await _until(lambda: fault.requests)
        assert future.cancel()
    else:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(future, 0.2)
    assert future.cancelled()
    await asyncio.sleep(0.7)  # the stalled answer arrives now, and must go nowhere
    assert future.cancelled()
    assert await h.run(couch.info) == VALUE
    gc.collect()
    await asyncio.sleep(0)
    assert _problems(caplog) == []


@pytest.mark.parametrize("backend", ["tornado-simple"])
async def test_tornado_simple_cancel_plain_aborts(h: Harness, fault: WatchedFaultServer) -> None:
    """On the simple client a cancelled plain request is aborted too (its _Fetch's ``abort``,
    set by the client's repair): the server sees the connection close, long before its
    stalled reply would have come."""
    fault.add("GET", "/", [Reply.json(VALUE, stall_before_headers=5.0), Reply.json(VALUE)])
    couch = h.couch(idle_timeout=None)
    future = couch.info()
    await _until(lambda: fault.requests)
    assert future.cancel()
    assert await fault.hung_up(fault.requests[0].connection, timeout=2.0)
    assert await h.run(couch.info) == VALUE


@pytest.mark.parametrize("backend", TORNADO)
async def test_tornado_cancel_streamed_aborts(h: Harness, fault: WatchedFaultServer) -> None:
    """A cancelled streamed request is torn down (curl: the progress callback, about once a
    second; simple: at the next chunk), so the server sees the connection close; nothing more
    is delivered and later calls work."""
    fault.add("GET", "/db/_all_docs", [_rows_reply(delay=0.3), _rows_reply(0)])
    db = h.couch().database("db")
    seen: list[Any] = []
    future = db.all_docs(on_rows=seen.extend)
    await _until(lambda: seen)
    assert future.cancel()
    await asyncio.sleep(0)
    count = len(seen)
    first = fault.requests[0].connection
    assert await fault.hung_up(first, timeout=2.5), "the cancelled stream was not aborted"
    assert len(seen) == count
    result = await h.run(db.all_docs)
    assert [r.id for r in result.rows] == [r["id"] for r in ROWS]




@pytest.mark.parametrize("backend", TORNADO)
async def test_tornado_cancel_streamed_is_quiet(request: pytest.FixtureRequest, h: Harness,
                                                fault: WatchedFaultServer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Cancelling a streamed request logs nothing (it is the caller's choice, not an error)."""
    fault.add("GET", "/db/_all_docs", [_rows_reply(delay=0.3), _rows_reply(0)])
    db = h.couch().database("db")
    seen: list[Any] = []
    future = db.all_docs(on_rows=seen.extend)
    await _until(lambda: seen)
    future.cancel()
    await fault.hung_up(fault.requests[0].connection, timeout=2.5)
    await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)
    assert _problems(caplog) == []


# -- callbacks that raise (every backend) ----------------------------------------------------


async def test_raising_callback_is_logged(h: Harness, fault: WatchedFaultServer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    fault.add("GET", "/", Reply.json(VALUE))
    couch = h.couch()
    calls: list[Any] = []

    def callback(data: Any, status: Any) -> None:
        calls.append((data, status))
        raise RuntimeError("boom in user callback")

    if h.blocking:
        returned = await h.run(couch.info, callback=callback)
    else:
        returned = couch.info(callback=callback)
        await _until(lambda: calls)
        await asyncio.sleep(0.05)
    assert returned is None
    assert len(calls) == 1 and calls[0][0] == VALUE and calls[0][1].ok
    logged = [r for r in caplog.records if r.name == "corduroy2" and r.levelno >= logging.ERROR]
    assert len(logged) == 1, _problems(caplog)
    assert logged[0].exc_info and isinstance(logged[0].exc_info[1], RuntimeError)
    # Nothing else complained (no "Unhandled error in Deferred", no Tornado/asyncio log).
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == logged
    # The Couch keeps working, in both styles.
    assert await h.run(couch.info) == VALUE
    if h.blocking:
        await h.run(couch.info, callback=lambda d, s: calls.append((d, s)))
    else:
        couch.info(callback=lambda d, s: calls.append((d, s)))
        await _until(lambda: len(calls) == 2)
    assert calls[1][0] == VALUE
