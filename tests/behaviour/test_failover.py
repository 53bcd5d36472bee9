"""A cluster's nodes dying under load: ``Couch([url1, url2, url3])`` on every backend.

Each "node" is a loopback proxy (tests/support/proxy.py) in front of the test server, so every
node serves all data, as a CouchDB cluster's nodes do. Nodes are killed (connections closed,
new ones refused), silenced (connections accepted, nothing answered) and restored while calls,
feeds and followers run:

* no idempotent call fails; a POST is sent again only when it never reached a server, so no
  POST is applied twice;
* a changes feed, ``iter_changes`` and a follower go on from their last seq on another node:
  every change is delivered exactly once;
* the node that answered shows in ``Status.node``, in the URL of an error and in the DEBUG log.

The kills are sequenced by the test (one node down at a time), not by a clock racing the calls:
the assertions hold whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from corduroy2 import CookieAuth, CouchError, NotFound, Status, TransportError

from ..conftest import LOOP, Server
from ..support.proxy import Proxy
from ..support.wait import until
from .conftest import BACKENDS, SLACK, close_couch, make_couch


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def nodes(server: Server) -> Iterator[list[Proxy]]:
    parts = urlsplit(server.url)
    target = (parts.hostname or "127.0.0.1", parts.port or 80)
    proxies = [Proxy(target) for _ in range(3)]
    yield proxies
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def cluster(backend: str, server: Server, nodes: list[Proxy]) -> Iterator[Any]:
    # Feeds ask for a heartbeat every 0.05 s: 0.25 s of silence is a node that stopped.
    couch = make_couch(backend, [n.url for n in nodes], server.auth, connect_timeout=2.0,
                       idle_timeout=0.25 * SLACK)
    yield couch
    close_couch(couch)


async def resolve(couch: Any, make: Callable[[], Any]) -> Any:
    """``make()``'s value, the backend's way (blocking: in a worker thread)."""
    if couch.backend_name == "blocking":
        return await LOOP.run_in_executor(None, make)
    result = make()
    if couch.backend_name == "twisted":
        return await result.asFuture(LOOP)
    return await result


async def with_status(couch: Any, method: Callable[..., Any], *args: Any) -> tuple[Any, Status]:
    """Call ``method`` in the callback style: its ``(data, status)``."""
    got: asyncio.Future[tuple[Any, Status]] = LOOP.create_future()

    def callback(data: Any, status: Status) -> None:
        LOOP.call_soon_threadsafe(got.set_result, (data, status))

    if couch.backend_name == "blocking":
        await LOOP.run_in_executor(None, lambda: method(*args, callback=callback))
    else:
        method(*args, callback=callback)
    return await got


async def closed(couch: Any) -> None:
    """Close ``couch`` from a test running on the loop (Twisted's pool closes later)."""
    closing = couch.close()
    if closing is not None and hasattr(closing, "asFuture"):
        await closing.asFuture(LOOP)


class Log(logging.Handler):
    """The ``corduroy2`` log records of a test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log() -> Iterator[Log]:
    handler, logger = Log(), logging.getLogger("corduroy2")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_calls_go_on_while_nodes_die(cluster: Any, nodes: list[Proxy], admin: Any,
                                           dbname: str, log: Log) -> None:
    admin.database(dbname).save({"_id": "doc", "n": 1})
    db = cluster.database(dbname)
    posted: dict[str, bool] = {}  # marker -> the POST answered success
    reads = 0
    # Each node in turn dies for a few calls, then comes back; the first one twice (it is
    # the one in use whenever it is up).
    for victim in (0, 1, 2, 0):
        nodes[victim].kill()
        for _ in range(3):
            doc = await resolve(cluster, lambda: db.get("doc"))  # idempotent: never fails
            assert doc["n"] == 1
            reads += 1
            marker = uuid.uuid4().hex
            try:
                await resolve(cluster, lambda: cluster.request("POST", f"/{dbname}",
                                                               body={"marker": marker}))
                posted[marker] = True
            except CouchError:
                posted[marker] = False  # it may have reached a server: not sent again
        nodes[victim].restore()
    assert reads == 12
    # No POST applied twice; every POST that answered success applied once.
    stored = Counter(row["doc"].get("marker") for row in
                     admin.database(dbname).all_docs(include_docs=True).rows)
    for marker, ok in posted.items():
        assert stored[marker] == (1 if ok else stored[marker]) and stored[marker] <= 1
    assert all(posted.values())  # the kills came between calls: each POST got a refusal
    # Each death was felt (and the call sent elsewhere), not dodged by luck.
    assert sum("sending it to another node" in line for line in log.lines) >= 4
    assert all(any(f"node {n.url} set aside" in line for line in log.lines) for n in nodes)


async def start(couch: Any, make: Callable[[], Any]) -> asyncio.Future[Any]:
    """``make()`` under way (a task), to be awaited later."""
    return asyncio.ensure_future(resolve(couch, make))


async def test_a_read_in_flight_when_its_node_dies(cluster: Any, nodes: list[Proxy],
                                                   admin: Any, dbname: str) -> None:
    admin.database(dbname).save({"_id": "doc"})
    db = cluster.database(dbname)
    nodes[0].hang()  # the request reaches the node, which holds it
    reading = await start(cluster, lambda: db.get("doc"))
    await until(lambda: nodes[0].held == 1)
    nodes[0].kill()  # ... and dies: its connection drops before any reply
    assert (await reading)["_id"] == "doc"  # sent again, to another node


async def test_a_post_in_flight_when_its_node_dies(cluster: Any, nodes: list[Proxy],
                                                   admin: Any, dbname: str) -> None:
    nodes[0].hang()
    posting = await start(cluster, lambda: cluster.request("POST", f"/{dbname}",
                                                           body={"marker": "m"}))
    await until(lambda: nodes[0].held == 1)
    nodes[0].kill()
    # It reached a server, which may have applied it: it fails rather than going elsewhere.
    with pytest.raises(TransportError):
        await posting
    assert admin.database(dbname).find({"marker": "m"}).docs == []  # sent to no other node


async def test_a_silent_node_is_set_aside(backend: str, server: Server, nodes: list[Proxy],
                                          admin: Any, dbname: str, log: Log) -> None:
    admin.database(dbname).save({"_id": "doc"})
    couch = make_couch(backend, [n.url for n in nodes], server.auth, idle_timeout=0.15 * SLACK)
    try:
        db = couch.database(dbname)
        nodes[0].hang()  # accepts connections, answers nothing
        for _ in range(3):
            doc, status = await with_status(couch, db.get, "doc")
            assert status.ok and doc["_id"] == "doc"
            assert status.node == nodes[1].url
        # Only the first call waited for it: the node was then set aside.
        assert nodes[0].held == 1
        # Errors name the node that answered; so does the DEBUG line of each attempt.
        _, status = await with_status(couch, db.get, "missing")
        assert isinstance(status.exception, NotFound) and status.node == nodes[1].url
        assert (status.exception.url or "").startswith(nodes[1].url + "/")
        assert any(line.startswith(f"corduroy2: GET {nodes[1].url}/{dbname}/doc -> 200")
                   for line in log.lines)
        assert any(line.startswith(f"corduroy2: GET {nodes[0].url}/{dbname}/doc -> Timeout")
                   for line in log.lines)
    finally:
        await closed(couch)


async def test_cookie_session_across_nodes(backend: str, server: Server, nodes: list[Proxy],
                                           admin: Any, dbname: str, log: Log) -> None:
    if server.auth is None:
        pytest.skip("the server has no admin to log in as")
    couch = make_couch(backend, [n.url for n in nodes], CookieAuth(*server.auth))
    try:
        session = await resolve(couch, couch.session)
        assert session["userCtx"]["name"] == server.auth[0]
        nodes[0].kill()
        session, status = await with_status(couch, couch.session)
        assert session["userCtx"]["name"] == server.auth[0] and status.node == nodes[1].url
        # One login, on the first node: its cookie is good on the others.
        assert sum("logging in" in line for line in log.lines) == 1
    finally:
        await closed(couch)


@pytest.fixture
def quick_cluster(backend: str, server: Server, nodes: list[Proxy]) -> Iterator[Any]:
    """The cluster for feeds only: 0.15 s without a heartbeat (every 0.05 s) is a silent node
    (for calls, too short a wait for a busy server's answer, which must not fail a POST)."""
    couch = make_couch(backend, [n.url for n in nodes], server.auth, connect_timeout=2.0,
                       idle_timeout=0.15 * SLACK)
    yield couch
    close_couch(couch)


async def test_feeds_resume_on_another_node(quick_cluster: Any, nodes: list[Proxy], admin: Any,
                                            dbname: str) -> None:
    cluster = quick_cluster
    total = 30
    db = cluster.database(dbname)
    followed: list[str] = []
    fed: list[str] = []
    iterated: list[str] = []
    blocking = cluster.backend_name == "blocking"

    follower = db.follow(lambda change: followed.append(change["id"]), heartbeat=0.05,
                         stall_timeout=0.15 * SLACK, backoff_base=0.01, backoff_cap=0.05)
    if blocking:
        threading.Thread(target=follower.run, daemon=True).start()
    feed = db.changes(feed="continuous", since=0, heartbeat=50,
                      callback=lambda seq, changes: fed.extend(c["id"] for c in changes))
    iterator = db.iter_changes(since=0, heartbeat=50)

    def iterate_blocking() -> None:
        for change in iterator:
            iterated.append(change["id"])
            if len(iterated) == total:
                break

    async def iterate_async() -> None:
        async for change in iterator:
            iterated.append(change["id"])
            if len(iterated) == total:
                break

    if blocking:
        iterating = LOOP.run_in_executor(None, iterate_blocking)
    elif cluster.backend_name == "twisted":
        from twisted.internet.defer import Deferred

        iterating = Deferred.fromCoroutine(iterate_async()).asFuture(LOOP)
    else:
        iterating = asyncio.ensure_future(iterate_async())

    writer = admin.database(dbname)
    written = 0

    def write(n: int) -> None:
        nonlocal written
        for _ in range(n):
            writer.save({"_id": f"c{written:03d}"})
            written += 1

    def caught_up() -> bool:
        return len(followed) == len(fed) == len(iterated) == written

    # The feeds run on the first node; kill it, then the one they moved to, and so on, with
    # changes written before and after each death; once, the node goes silent instead.
    write(6)
    await until(caught_up, timeout=10)
    for victim, die in ((0, Proxy.kill), (1, Proxy.kill), (0, Proxy.hang), (2, Proxy.kill)):
        die(nodes[victim])
        write(6)
        await until(caught_up, timeout=10)
        nodes[victim].restore()
    assert written == total
    await asyncio.wait_for(iterating, 10)
    expected = [f"c{i:03d}" for i in range(total)]
    for seen in (followed, fed, iterated):
        assert Counter(seen) == Counter(expected)  # every change, exactly once
    feed.stop()
    iterator.close()
    stopping = follower.stop()
    if blocking:
        pass
    elif cluster.backend_name == "twisted":
        await stopping.asFuture(LOOP)
    else:
        await stopping


async def test_one_url_is_one_node(backend: str, server: Server, admin: Any,
                                   dbname: str) -> None:
    couch = make_couch(backend, server.url, server.auth)
    try:
        assert couch.nodes == (server.url,) and couch.sender.nodes is None
        _, status = await with_status(couch, couch.database(dbname).info)
        assert status.ok and status.node == server.url
    finally:
        await closed(couch)


def test_node_list_arguments() -> None:
    from corduroy2 import blocking

    couch = blocking.Couch(["http://a:1/", "http://u:p@b:2"])  # no request made
    assert couch.nodes == ("http://a:1", "http://b:2") and couch.url == "http://a:1"
    assert couch._user == "u" and "p@" not in repr(couch)
    assert couch.with_options(retry=False).sender.nodes is couch.sender.nodes  # one health
    with pytest.raises(TypeError):
        blocking.Couch([])
    with pytest.raises(TypeError):
        blocking.Couch(["http://a:1", 5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="twice"):
        blocking.Couch(["http://a:1", "http://a:1/"])
    with pytest.raises(ValueError, match="different credentials"):
        blocking.Couch(["http://u:p@a:1", "http://u:q@b:2"])
