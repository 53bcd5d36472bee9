"""Blocking mode under gevent: with ``gevent.monkey.patch_all()`` the blocking front door
cooperates, so calls made from several greenlets interleave instead of queueing.

Monkey-patching must happen before anything imports ``socket`` or ``threading``, so each check
runs a fresh interpreter (``PYTHONPATH`` set to this checkout) that patches first, then imports
corduroy2. The servers run in the test process, on real threads: a client that blocked gevent's
hub could not slow them down, only itself.

Besides the total time, each script runs a *ticker* greenlet that wakes every 10 ms and records
the longest gap between two wake-ups: anything that blocks the hub (a lock or an Event made
before patching, a C-level wait) shows up as a gap as long as the wait.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from ..auth.conftest import Sessions
from ..behaviour.conftest import fresh_database
from ..conftest import REPO, Server
from ..support.faultserver import Reply
from .conftest import WatchedFaultServer

pytest.importorskip("gevent")

#: Greenlets, each making one request that the server answers after STALL seconds.
N = 8
STALL = 0.3

_PRELUDE = """
import json, os, sys, time
if os.environ["PATCH"] == "1":
    from gevent import monkey
    monkey.patch_all()
import gevent
from corduroy2.blocking import Couch

gaps = [0.0]
last = time.monotonic()

def ticker():
    global last
    last = time.monotonic()
    while True:
        gevent.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now

def report(**fields):
    gaps.append(time.monotonic() - last)  # a wait the ticker had not woken from yet
    print(json.dumps(dict(fields, max_gap=max(gaps))))
"""


def _run(script: str, timeout: float = 60.0, patch: bool = True, **env: str) -> dict[str, Any]:
    """Run ``script`` (after the prelude) in a fresh interpreter; its last line of output,
    JSON."""
    out = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(script)],
        env={**os.environ, "PYTHONPATH": str(REPO), "PATCH": "1" if patch else "0", **env},
        capture_output=True, text=True, timeout=timeout,
    )
    assert out.returncode == 0, f"the gevent script failed:\n{out.stderr[-4000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


_GETS = """
tick = gevent.spawn(ticker)
db = Couch(os.environ["URL"], retry=False).database("db")
began = time.monotonic()
jobs = [gevent.spawn(db.get, f"doc{i}") for i in range(int(os.environ["N"]))]
gevent.joinall(jobs, raise_error=True)
took = time.monotonic() - began
report(took=took, ids=[job.value["_id"] for job in jobs])
"""


@pytest.fixture
def slow_docs(fault: WatchedFaultServer) -> WatchedFaultServer:
    """``GET /db/doc{i}``, each answered after STALL seconds."""
    for i in range(N):
        fault.add("GET", f"/db/doc{i}", Reply.json({"_id": f"doc{i}", "_rev": "1-a"},
                                                   stall_before_headers=STALL))
    return fault


def test_blocking_calls_from_greenlets_interleave(slow_docs: WatchedFaultServer) -> None:
    result = _run(_GETS, URL=slow_docs.url, N=str(N))
    assert result["ids"] == [f"doc{i}" for i in range(N)]
    # One after the other they would take N * STALL (2.4 s); side by side, about STALL.
    assert STALL <= result["took"] < N * STALL / 3, result
    assert result["max_gap"] < STALL / 2, result  # the hub never waited on a request
    assert slow_docs.connections_accepted == N  # a connection each, all open at once


def test_blocking_calls_from_greenlets_queue_without_patching(
        slow_docs: WatchedFaultServer) -> None:
    """The control: without monkey-patching the same script makes its requests one after the
    other, blocking the hub through each wait (what the test above would catch)."""
    result = _run(_GETS, patch=False, URL=slow_docs.url, N=str(N))
    assert result["ids"] == [f"doc{i}" for i in range(N)]
    assert result["took"] >= N * STALL * 0.9, result
    assert result["max_gap"] >= STALL * 0.9, result  # the ticker waited as long


def test_blocking_idle_timeout_under_gevent(fault: WatchedFaultServer) -> None:
    """A silent server still ends in Timeout under gevent, whose sockets wait in its hub (a
    plain socket's kernel receive timeout would not bound that wait), and the hub runs
    meanwhile."""
    fault.add("GET", "/db/silent", Reply.json({"_id": "silent"}, stall_before_headers=5.0))
    script = """
    from corduroy2.errors import Timeout
    tick = gevent.spawn(ticker)
    db = Couch(os.environ["URL"], retry=False, idle_timeout=0.3).database("db")
    began = time.monotonic()
    try:
        db.get("silent")
        error = None
    except Timeout as exc:
        error = str(exc)
    report(took=time.monotonic() - began, error=error)
    """
    result = _run(script, URL=fault.url)
    assert result["error"] is not None and "idle_timeout" in result["error"], result
    assert 0.3 <= result["took"] < 2.0, result
    assert result["max_gap"] < 0.2, result


def test_blocking_greenlets_share_one_login_under_gevent(fault: WatchedFaultServer) -> None:
    """Cookie auth: the first greenlet logs in, the others wait for that login (an Event,
    gevent's once patched) instead of blocking the hub or logging in themselves."""
    sessions = Sessions(fault, login_delay=STALL)
    sessions.protect("GET", "/")
    script = """
    from corduroy2 import CookieAuth
    tick = gevent.spawn(ticker)
    couch = Couch(os.environ["URL"], CookieAuth("bob", "pw"), retry=False)
    began = time.monotonic()
    jobs = [gevent.spawn(couch.info) for _ in range(int(os.environ["N"]))]
    gevent.joinall(jobs, raise_error=True)
    report(took=time.monotonic() - began, results=[job.value for job in jobs])
    """
    result = _run(script, URL=fault.url, N=str(N))
    assert result["results"] == [{"ok": True}] * N
    assert sessions.logins == 1
    assert all(Sessions.cookie(g) == "c1" for g in fault.received("GET", "/"))
    assert result["took"] < 3 * STALL, result
    assert result["max_gap"] < STALL / 2, result


# -- streams: iterators read in their own greenlet, a feed's thread becomes one --------------------

ROWS = 60


@pytest.fixture
def filled(server: Server) -> Iterator[str]:
    """A fresh database on the test server holding ROWS documents."""
    from corduroy2 import blocking

    admin = blocking.Couch(server.url, server.auth)
    try:
        for name in fresh_database(admin):
            admin.database(name).save([{"_id": f"d{i:03}", "n": i} for i in range(ROWS)])
            yield name
    finally:
        admin.close()


def test_blocking_iterators_under_gevent(server: Server, filled: str) -> None:
    """Two ``iter_all_docs()`` loops in two greenlets, slow consumers with a small
    ``high_water`` (each loop reads in its own greenlet, again and again, as it asks for
    rows): both see every row, in order, they take turns, and the hub is never blocked."""
    script = """
    tick = gevent.spawn(ticker)
    user, password = os.environ["AUTH"].split(":", 1)
    db = Couch(os.environ["URL"], (user, password)).database(os.environ["DB"])
    seen = []  # (loop, id) in the order the loops received them

    def loop(name):
        ids = []
        with db.iter_all_docs(high_water=2) as rows:
            for row in rows:
                ids.append(row.id)
                seen.append((name, row.id))
                gevent.sleep(0.005)  # a slow consumer: 0.3 s for the rows
        return ids

    a, b = gevent.spawn(loop, "a"), gevent.spawn(loop, "b")
    gevent.joinall([a, b], raise_error=True)
    loops = [name for name, _ in seen]
    report(a=a.value, b=b.value, a_done=len(loops) - loops[::-1].index("a"),
           b_first=loops.index("b"))
    """
    auth = ":".join(server.auth) if server.auth else ":"
    result = _run(script, URL=server.url, AUTH=auth, DB=filled)
    expected = [f"d{i:03}" for i in range(ROWS)]
    assert result["a"] == expected and result["b"] == expected
    assert result["b_first"] < result["a_done"], result  # the loops took turns
    assert result["max_gap"] < 0.25, result


def test_blocking_changes_feed_under_gevent(server: Server, filled: str) -> None:
    """The callback feed reads on a thread and flushes ``latency`` batches from a timer
    thread, both greenlets under gevent: every change arrives, and a save made meanwhile from
    the main greenlet is seen too."""
    script = """
    tick = gevent.spawn(ticker)
    user, password = os.environ["AUTH"].split(":", 1)
    db = Couch(os.environ["URL"], (user, password)).database(os.environ["DB"])
    ids = []
    feed = db.changes(feed="continuous", callback=lambda seq, changes: ids.extend(
        c["id"] for c in changes), latency=0.05, heartbeat=1000)
    deadline = time.monotonic() + 10
    while len(ids) < int(os.environ["ROWS"]) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    db.save({"_id": "late"})
    while "late" not in ids and time.monotonic() < deadline:
        gevent.sleep(0.01)
    feed.stop()
    report(ids=ids)
    """
    auth = ":".join(server.auth) if server.auth else ":"
    result = _run(script, URL=server.url, AUTH=auth, DB=filled, ROWS=str(ROWS))
    assert sorted(result["ids"]) == sorted([f"d{i:03}" for i in range(ROWS)] + ["late"])
    assert result["max_gap"] < 0.25, result
