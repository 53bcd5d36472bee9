"""Session-wide test plumbing: one asyncio loop shared by Tornado and Twisted, and a real
CouchDB-compatible server.

Twisted's asyncioreactor is installed on that loop before anything imports the default reactor,
so Tornado (which runs on asyncio) and Twisted share one loop in one process. ``async def``
tests run on it. ``reactor.startRunning`` must be called once, or the reactor's thread pool
(name resolution for ``Agent``) never starts and requests hang.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corduroy2.protocol.urls import split_credentials

REPO = Path(__file__).resolve().parent.parent
TEST_TIMEOUT = 60.0

LOOP = asyncio.new_event_loop()
asyncio.set_event_loop(LOOP)
try:
    from twisted.internet import asyncioreactor

    asyncioreactor.install(LOOP)
    from twisted.internet import reactor

    reactor.startRunning(installSignalHandlers=False)  # type: ignore[attr-defined]
except ImportError:  # Twisted is optional; its tests skip themselves
    pass


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Shut the reactor down: its thread pool's threads are not daemons, so without this the
    interpreter waits for them forever after the last test."""
    import sys

    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        reactor.fireSystemEvent("shutdown")  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests on the shared loop, with a timeout so a hang fails."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    LOOP.run_until_complete(asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_TIMEOUT))
    return True


@dataclass(frozen=True)
class Server:
    """The server under test: its URL (no credentials), admin credentials, and flavour
    (``"couchdb"``, ``"pouchdb"`` or ``"fake"``: corduroy2.testing.FakeCouch)."""

    url: str
    auth: tuple[str, str] | None
    flavour: str

    @property
    def pouchdb(self) -> bool:
        return self.flavour == "pouchdb"

    @property
    def fake(self) -> bool:
        return self.flavour == "fake"

    def deviates(self, name: str) -> bool:
        """True where this server is known to differ from CouchDB 3 in the documented way
        ``name`` (pouchdb-server: ../shared/reference/pouchdb-server.md; the fake: its
        guide chapter). Tests assert CouchDB 3 behaviour and branch on this explicitly, so a
        real CouchDB runs the strict path."""
        if name in POUCHDB_DEVIATIONS:
            return self.pouchdb
        if name in FAKE_DEVIATIONS:
            return self.fake
        raise KeyError(f"undocumented deviation {name!r}")


POUCHDB_DEVIATIONS = {
    "delete_missing_db_ok": "DELETE of a missing db answers 200, not 404",
    "copy_reply_no_rev": "COPY answers {ok:true} without id/rev",
    "batch_ok_has_rev": "batch=ok answers 201 with a rev (3.x: 202, none)",
    "uuids_dashed": "uuids are uuid4 with dashes",
    "seq_integers": "seqs are integers",
    "all_dbs_unsorted": "_all_dbs is not sorted",
    "attachment_range_ignored": "Range on an attachment is ignored: 200, whole body (3.x: 206/416)",
    # server administration and replication (tests/behaviour/test_server_admin.py,
    # test_replication.py)
    "no_up": "/_up is missing (404)",
    "node_local_missing": "/_node/_local/... is missing (404); /_node/<name from "
                          "_membership>/_config and /_stats work (rewritten to /_config, /_stats)",
    "stats_stub": "_stats is a stub object without CouchDB's metrics",
    "no_system": "/_node/<node>/_system is missing (404)",
    "no_dbs_info": "POST /_dbs_info is missing (404)",
    "no_scheduler": "_scheduler/jobs and _scheduler/docs are missing (404); the replicator "
                    "writes _replication_state into _replicator docs (1.x style)",
    "no_db_updates": "_db_updates answers 400 with an empty body",
    "replication_endpoint_objects": "_replicate/_replicator endpoints given as {url, auth} "
                                    "objects fail (500 HTML page); only URL strings work",
    "replicate_ignores_doc_ids": "_replicate ignores doc_ids (and selector): everything is "
                                 "replicated (_replicator documents do honour them)",
    "replicate_continuous_uncancellable": "a continuous _replicate runs until the server "
                                          "stops: cancel:true starts a one-shot one instead",
    "replicate_creates_missing_source": "replicating from a missing source succeeds and "
                                        "creates it (3.x: 404 db_not_found / crashing)",
    # revisions, maintenance, design functions, partitions (issue 15)
    "head_etag_not_rev": "a doc's HEAD has a weak ETag (a body hash), not the rev",
    "bulk_get_missing_empty": "_bulk_get gives {} for a missing doc, not an error entry",
    "no_missing_revs": "_missing_revs is missing (400 only_multipart_accepted)",
    "no_purge": "_purge is missing (400 only_multipart_accepted)",
    "no_compact_ddoc": "_compact/{ddoc} is missing (400 only_multipart_accepted)",
    "no_revs_limits": "_revs_limit and _purged_infos_limit are missing (404 / 400)",
    "no_shards": "_shards and _sync_shards are missing (404 / 400)",
    "no_local_design_docs": "_local_docs and _design_docs are missing (404)",
    "no_view_queries": "POST .../_view/v/queries is missing (400 only_multipart_accepted)",
    "no_partitions": ("partitioned=true is ignored; /db/_partition/... is missing (404, "
                      "400 only_multipart_accepted for POSTs)"),
}

#: Where corduroy2.testing.FakeCouch differs from CouchDB 3 (none known yet).
FAKE_DEVIATIONS: dict[str, str] = {}


def _probe(url: str, auth: tuple[str, str] | None) -> dict[str, Any]:
    import base64
    import json
    import urllib.request

    request = urllib.request.Request(url + "/", headers={"Accept": "application/json"})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _fake_server() -> Iterator[Server]:
    """FakeCouch in its own process (tests/support/fake_server.py says why)."""
    with subprocess.Popen([sys.executable, "-m", "tests.support.fake_server"], cwd=REPO,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the fake server did not start (exit {proc.wait(10)})")
            started = json.loads(line)
            yield Server(started["url"], tuple(started["admin"]), "fake")
        finally:
            proc.stdin.close()  # it stops serving and exits
            proc.wait(10)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The server the suite runs against: ``COUCHDB_URL`` (with admin credentials in it) if
    set; else ``COUCHDB_SERVER=fake`` (corduroy2.testing.FakeCouch, in a process of its own:
    ``tests/support/fake_server.py``) or
    ``pouchdb`` (the default: a pouchdb-server started here on a free loopback port)."""
    external = os.environ.get("COUCHDB_URL")
    if external:
        url, auth = split_credentials(external)
        info = _probe(url, auth)
        flavour = "pouchdb" if "express-pouchdb" in info else "couchdb"
        if info.get("vendor", {}).get("name") == "corduroy2.testing.FakeCouch":
            flavour = "fake"
        yield Server(url, auth, flavour)
        return
    kind = os.environ.get("COUCHDB_SERVER", "pouchdb")
    if kind == "fake":
        yield from _fake_server()
        return
    if kind != "pouchdb":
        raise pytest.UsageError(f"COUCHDB_SERVER={kind!r}: expected 'fake' or 'pouchdb'")
    from corduroy2.testing import PouchDBServer

    with PouchDBServer(REPO / ".cache") as pouch:
        yield Server(pouch.url, pouch.admin, "pouchdb")
