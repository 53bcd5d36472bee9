"""Blocking iterators read in the thread that iterates them, so ``close()`` from another thread
must wake that thread when it waits on the server: mid-body (the transport is aborted), and
during the first request, before the iterator has a transfer to abort (it stops at the next
bytes the server sends, a feed's heartbeat).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from corduroy2 import blocking

from ..support.faultserver import Reply
from .conftest import WatchedFaultServer

HEAD = b'{"total_rows":3,"offset":0,"rows":[\r\n'
TWO_ROWS = b'{"id":"a","key":1,"value":null},\r\n{"id":"b","key":2,"value":null},\r\n'
LAST_ROW = b'{"id":"c","key":3,"value":null}\r\n]}\n'


@pytest.fixture
def couch(fault: WatchedFaultServer) -> Iterator[blocking.Couch]:
    couch = blocking.Couch(fault.url, retry=False)
    yield couch
    couch.close()


class Loop:
    """``for item in iterator`` on a thread of its own, recording what it sees."""

    def __init__(self, iterator: Any) -> None:
        self.seen: list[Any] = []
        self.errors: list[BaseException] = []
        self.ended = threading.Event()
        threading.Thread(target=self._run, args=(iterator,), daemon=True).start()

    def _run(self, iterator: Any) -> None:
        try:
            for item in iterator:
                self.seen.append(item)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.errors.append(exc)
        self.ended.set()


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_close_from_another_thread_wakes_a_loop_waiting_mid_body(
        couch: blocking.Couch, fault: WatchedFaultServer) -> None:
    fault.add("GET", "/db/_design/d/_view/v", Reply(chunks=[HEAD + TWO_ROWS, LAST_ROW],
                                                    delay=10.0))
    iterator = couch.database("db").iter_view("d/v")
    loop = Loop(iterator)
    until(lambda: len(loop.seen) == 2)
    time.sleep(0.1)  # the loop now waits for the server's next bytes
    began = time.monotonic()
    iterator.close()
    assert loop.ended.wait(2.0) and time.monotonic() - began < 1.0
    assert [row.id for row in loop.seen] == ["a", "b"] and loop.errors == []
    until(lambda: fault.hangups == [1])  # the connection was dropped, not left waiting


def test_close_from_another_thread_during_the_first_request(
        couch: blocking.Couch, fault: WatchedFaultServer) -> None:
    """A quiet feed: only heartbeats (every 50 ms), so the first ``next()`` is still inside
    the request when ``close()`` comes; the loop ends at the next heartbeat."""
    fault.add("GET", "/db/_changes", Reply(chunks=[b"\n"] * 200, delay=0.05))
    iterator = couch.database("db").iter_changes(since=0)
    loop = Loop(iterator)
    until(lambda: len(fault.requests) == 1)
    time.sleep(0.2)
    began = time.monotonic()
    iterator.close()
    assert loop.ended.wait(2.0) and time.monotonic() - began < 1.0
    assert loop.seen == [] and loop.errors == []
    until(lambda: fault.hangups == [1])
