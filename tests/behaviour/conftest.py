"""The backend x calling-style matrix: every behaviour test runs once per combination.

A test receives ``c`` (a :class:`Client`) and awaits ``c.call(method, *args)``: the call is made
in the combination's style and its value returned, or its error raised, so one test body checks
the same behaviour in every style. Each style also checks its own contract on the way (a
promise is a Future/Deferred, a callback call returns None and reports errors in ``status``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from corduroy2 import CouchError, HTTPError, Status
from corduroy2.api import Couch

from ..conftest import LOOP, Server
from corduroy2.testing import recording

BACKENDS = ["tornado-curl", "tornado-simple", "tornado-aiohttp", "tornado-httptools", "twisted",
            "twisted-httptools", "blocking"]
ASYNC_STYLES = ["callback", "promise", "relax", "await"]
BLOCKING_STYLES = ["blocking", "callback", "relax"]
#: The styles are the API's, the same over every transport of a front door (the Future or
#: Deferred, and the callback, @relax and await styles made from it): a front door's second
#: transports run the suite in one of them, to keep CI time (their transport-level behaviour
#: is checked in full by tests/backends).
STYLES = {"blocking": BLOCKING_STYLES, "tornado-aiohttp": ["await"],
          "tornado-httptools": ["await"], "twisted-httptools": ["await"]}
MATRIX = [(b, s) for b in BACKENDS for s in STYLES.get(b, ASYNC_STYLES)]

#: How many times longer than the suite's own loopback server (the fake, pouchdb-server) a
#: server at ``COUCHDB_URL`` may take to answer, perhaps across a network. Tests that must tell
#: a silent server from a slow one, or wait for a request to reach it, scale their short
#: timeouts with this: short on loopback (the suite's time), safe elsewhere.
SLACK = 2.5 if os.environ.get("COUCHDB_URL") else 1.0


def make_couch(backend: str, url: str | list[str], auth: Any, **kwargs: Any) -> Couch:
    """A front-door ``Couch`` for ``backend``; skips (with the reason) if it is not installed."""
    if backend.startswith("tornado"):
        tornado_io = pytest.importorskip("corduroy2.tornado_io", reason="tornado is not installed")
        client = backend.split("-")[1]
        if client == "curl" and not tornado_io.HAS_CURL:
            pytest.skip("pycurl is not installed")
        if client == "aiohttp":
            pytest.importorskip("aiohttp", reason="aiohttp is not installed")
        if client == "httptools":
            pytest.importorskip("httptools", reason="httptools is not installed")
        return tornado_io.Couch(url, auth, client=client, **kwargs)  # type: ignore[no-any-return]
    if backend.startswith("twisted"):
        twisted_io = pytest.importorskip("corduroy2.twisted_io", reason="twisted is not installed")
        if backend == "twisted-httptools":
            pytest.importorskip("httptools", reason="httptools is not installed")
            kwargs["client"] = "httptools"
        return twisted_io.Couch(url, auth, **kwargs)  # type: ignore[no-any-return]
    from corduroy2 import blocking

    return blocking.Couch(url, auth, **kwargs)


class Client:
    """Calls API methods in one style on one backend and awaits them on the shared loop."""

    def __init__(self, backend: str, style: str, couch: Couch) -> None:
        self.backend = backend
        self.style = style
        self.couch = couch

    def __repr__(self) -> str:
        return f"<Client {self.backend}/{self.style}>"

    @property
    def blocking(self) -> bool:
        return self.backend == "blocking"

    def relax(self) -> Callable[..., Any]:
        if self.backend.startswith("tornado"):
            from corduroy2.tornado_io import relax
        elif self.backend.startswith("twisted"):
            from corduroy2.twisted_io import relax
        else:
            from corduroy2.blocking import relax
        return relax  # type: ignore[no-any-return]

    async def resolve(self, result: Any) -> Any:
        """Await a backend's native promise on the shared loop."""
        if self.backend.startswith("twisted"):
            from twisted.internet.defer import Deferred

            assert isinstance(result, Deferred), f"expected a Deferred, got {result!r}"
            return await result.asFuture(LOOP)
        assert isinstance(result, asyncio.Future), f"expected a Future, got {result!r}"
        return await result

    async def in_thread(self, fn: Callable[[], Any]) -> Any:
        # Blocking calls run in a worker thread so the loop keeps serving in-process servers.
        return await LOOP.run_in_executor(None, fn)

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        style = self.style
        if style == "callback":
            return await self._call_with_callback(method, args, kwargs)
        if style == "relax":
            relax = self.relax()

            @relax
            def body() -> Any:
                value = yield method(*args, **kwargs)
                return value

            if self.blocking:
                return await self.in_thread(body)
            return await self.resolve(body())
        if self.blocking:
            return await self.in_thread(functools.partial(method, *args, **kwargs))
        if style == "promise":
            return await self.resolve(method(*args, **kwargs))
        if style == "await":
            async def body_await() -> Any:
                return await method(*args, **kwargs)

            if self.backend.startswith("twisted"):
                from twisted.internet.defer import Deferred

                return await Deferred.fromCoroutine(body_await()).asFuture(LOOP)
            return await body_await()
        raise AssertionError(style)

    async def _call_with_callback(self, method: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        calls: list[tuple[Any, Status]] = []
        if self.blocking:
            def run() -> Any:
                return method(*args, callback=lambda d, s: calls.append((d, s)), **kwargs)

            returned = await self.in_thread(run)
        else:
            done: asyncio.Future[None] = LOOP.create_future()

            def callback(data: Any, status: Status) -> None:
                calls.append((data, status))
                if not done.done():
                    done.set_result(None)

            returned = method(*args, callback=callback, **kwargs)
            await done
            await asyncio.sleep(0)  # a second, wrong call would show up here
        assert returned is None, "a callback-style call must return None"
        assert len(calls) == 1, f"callback called {len(calls)} times"
        data, status = calls[0]
        assert isinstance(status, Status)
        if status.ok:
            # code is the last response's status: usually < 400, but a call that turns a
            # 404 into an answer (exists() -> False) succeeds with code 404.
            assert status.exception is None and status.error is None
            assert isinstance(status.code, int)
            return data
        assert data is None
        exc = status.exception
        assert isinstance(exc, CouchError) and status.error is type(exc)
        if isinstance(exc, HTTPError):
            assert status.code == exc.status and status.response is exc.body
        raise exc


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


#: How long a shared Couch may sit unused and still be handed out: less than any server's
#: keep-alive timeout (pouchdb-server's: 5 s), so that no test meets a connection the server
#: closed while it idled (a POST on one would fail, rightly not sent again).
SHARED_IDLE = 1.0

Couches = dict[str, tuple[Couch, float]]


@pytest.fixture(scope="session")
def couches(server: Server) -> Iterator[Couches]:
    """The server's ``Couch`` of each backend, with when it was last used: consecutive tests
    share one (a Couch keeps nothing from a call but its connections, and making one, a client
    and its first connection, then closing it took more than most tests' calls)."""
    made: Couches = {}
    yield made
    for couch, _ in made.values():
        close_couch(couch)


def shared_couch(request: pytest.FixtureRequest, couches: Couches, server: Server,
                 backend: str) -> Iterator[Couch]:
    """For fixtures: a ``Couch`` of ``backend`` on the server, the one the test before used if
    it ended lately and well: handed back as found, without the recording a test put on it;
    closed after a test that failed (it may have left a call or a feed going)."""
    couch, last_used = couches.pop(backend, (None, 0.0))
    if couch is not None and time.monotonic() - last_used > SHARED_IDLE:
        close_couch(couch)
        couch = None
    if couch is None:
        couch = make_couch(backend, server.url, server.auth)
    yield couch
    couch.backend.__dict__.pop("send", None)  # record_requests' wrapper
    if request.node.stash.get(FAILED, False):
        close_couch(couch)
    else:
        couches[backend] = (couch, time.monotonic())


@pytest.fixture(params=MATRIX, ids=[f"{b}-{s}" for b, s in MATRIX])
def c(request: pytest.FixtureRequest, couches: Couches, server: Server) -> Any:
    backend, style = request.param
    for couch in shared_couch(request, couches, server, backend):
        yield Client(backend, style, couch)


def close_couch(couch: Couch) -> None:
    """Close ``couch``, waiting for Twisted's pool to let its connections go."""
    closing = couch.close()
    if closing is not None and hasattr(closing, "asFuture"):
        LOOP.run_until_complete(closing.asFuture(LOOP))


@pytest.fixture(params=BACKENDS)
def couch(request: pytest.FixtureRequest, couches: Couches, server: Server) -> Any:
    """A Couch of each backend, for features that are per backend rather than per style
    (iterators, feeds, paging)."""
    yield from shared_couch(request, couches, server, request.param)


@pytest.fixture(scope="session")
def admin(server: Server) -> Any:
    """A blocking admin client for arranging and checking state independently of ``c``: one
    for the session (it keeps no state but its connections; tests leave it as they found it)."""
    from corduroy2 import blocking

    couch = blocking.Couch(server.url, server.auth)
    yield couch
    couch.close()


def fresh_database(admin: Any, **create_opts: Any) -> Iterator[str]:
    """For fixtures: yields a new database's name, created by the admin client with
    ``create_opts``, and deletes the database afterwards."""
    name = f"c2test-{uuid.uuid4().hex[:12]}"
    admin.create(name, **create_opts)
    yield name
    try:
        admin.delete(name)
    except HTTPError:
        pass


@pytest.fixture
def dbname(admin: Any) -> Iterator[str]:
    """A fresh database name, created by the admin client and deleted afterwards."""
    yield from fresh_database(admin)


@pytest.fixture
def db(c: Client, dbname: str) -> Any:
    """The fresh database, as a handle of the backend under test."""
    return c.couch.database(dbname)


def record_requests(couch: Any) -> list[Any]:
    """Record every request ``couch`` sends from now on (its backend's entry points wrapped)."""
    return recording.record_requests(couch.backend)
