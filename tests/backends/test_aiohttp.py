"""What only Tornado's aiohttp transport (``client="aiohttp"``) has to show: its ``close()``
works at once although aiohttp's is a coroutine, and leaves nothing behind that aiohttp or
asyncio would complain about. Everything else it shares with every backend (the backend and
behaviour suites run it)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from typing import Any

import pytest

from corduroy2.errors import TransportError

from ..support.faultserver import Reply
from .conftest import Harness, WatchedFaultServer

pytest.importorskip("aiohttp", reason="aiohttp is not installed")

VALUE = {"couchdb": "Welcome"}


async def _until(predicate: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.mark.parametrize("backend", ["tornado-aiohttp"])
async def test_close_ends_every_connection_at_once(h: Harness, fault: WatchedFaultServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """close() closes the kept-alive connection and the one of a request under way, before
    the loop runs again; that request fails (a TransportError, not a hang); nothing warns
    about an unclosed session, connector or transport, nor a pending task."""
    fault.add("GET", "/", Reply.json(VALUE))
    fault.add("GET", "/slow", Reply.json({"db_name": "slow"}, stall_before_headers=5.0))
    couch = h.couch()
    assert await asyncio.wait_for(asyncio.gather(couch.info(), couch.info()), 5) == [VALUE] * 2
    slow = couch.database("slow").info()  # on one of the two, the other waits in the pool
    assert await _until(lambda: len(fault.requests) == 3)
    assert fault.open_connections == 2
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        closing = couch.close()
        with pytest.raises(TransportError):
            await asyncio.wait_for(slow, 2.0)
        if closing is not None:
            await asyncio.wait_for(closing, 2.0)
        assert await _until(lambda: fault.open_connections == 0), "a connection stayed open"
        del slow, closing
        gc.collect()
        await asyncio.sleep(0)
    assert [str(w.message) for w in warned] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_close_after_the_loop_is_gone(fault: WatchedFaultServer,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """A Couch closed after its loop has been closed (a script's asyncio.run() is over):
    close() neither fails nor leaves an unclosed session behind to be reported."""
    from corduroy2.tornado_io import Couch

    fault.add("GET", "/", Reply.json(VALUE))
    couch = Couch(fault.url, client="aiohttp")
    async def info() -> Any:
        return await asyncio.wait_for(couch.info(), 5)

    assert asyncio.run(info()) == VALUE
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert couch.close() is None
        gc.collect()
    assert [str(w.message) for w in warned if "nclosed client session" in str(w.message)
            or "nclosed connector" in str(w.message)] == []
    assert [r.getMessage() for r in caplog.records if "nclosed" in r.getMessage()] == []
