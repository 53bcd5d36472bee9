"""What only Twisted's httptools client has: its choice on the front door, its optional
dependency, and its own connection pool (the shared contract is checked with every backend in
the other files of this folder).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..support.faultserver import Reply
from .conftest import Harness, WatchedFaultServer

pytest.importorskip("twisted")

REPO = Path(__file__).resolve().parents[2]
VALUE = {"couchdb": "Welcome"}

_WITHOUT_HTTPTOOLS = textwrap.dedent(
    """
    import importlib.abc, json, sys


    class WithoutHttptools(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "httptools" or name.startswith("httptools."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, WithoutHttptools())
    import corduroy2.twisted_io as twisted_io

    found = {}
    twisted_io.Couch("http://127.0.0.1:5984")  # Agent, the default: no httptools needed
    twisted_io.Couch("http://127.0.0.1:5984", client="agent")
    found["imported"] = "httptools" in sys.modules
    try:
        twisted_io.Couch("http://127.0.0.1:5984", client="httptools")
    except ImportError as exc:
        found["error"] = [str(exc), exc.name]
    print(json.dumps(found))
    """
)


def test_without_httptools_only_its_client_fails_and_says_what_to_install() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_HTTPTOOLS], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["imported"] is False
    message, name = found["error"]
    assert name == "httptools"
    assert "client='httptools'" in message and "corduroy2[httptools]" in message, message


def test_an_unknown_client_is_refused() -> None:
    from corduroy2.twisted_io import Couch

    with pytest.raises(ValueError, match="'agent' or 'httptools'"):
        Couch("http://127.0.0.1:5984", client="curl")


@pytest.mark.parametrize("backend", ["twisted-httptools"])
@pytest.mark.parametrize("limit", [1, 3])
async def test_connections_bounded_and_requests_queued_in_order(
        h: Harness, fault: WatchedFaultServer, limit: int) -> None:
    """At most max_connections connections, each kept alive; requests beyond them wait, and
    go out in the order they were made (on one connection, exactly that order)."""
    fault.add_handler("GET", "/db/slow", lambda received: Reply.json(
        {"_id": received.query}, stall_before_headers=0.1))
    db = h.couch(max_connections=limit).database("db")
    calls = [db.get("slow", rev=str(i)) for i in range(7)]
    docs = await asyncio.gather(*(h.resolve(call) for call in calls))
    assert [doc["_id"] for doc in docs] == [f"rev={i}" for i in range(7)]
    assert fault.connections_accepted == limit
    if limit == 1:
        assert [r.query for r in fault.requests] == [f"rev={i}" for i in range(7)]
