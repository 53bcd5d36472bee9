"""Plumbing for the auth and retry tests: a backend fixture, a runner that makes calls (alone or
a hundred at once) on the shared loop or in threads, and a scripted CouchDB session endpoint on
the fault server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ..behaviour.conftest import BACKENDS, make_couch
from ..conftest import LOOP
from ..support.faultserver import FaultServer, Received, Reply


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server
        assert server.errors == []


class Runner:
    """Makes front-door Couches for one backend and runs their calls from the test."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.couches: list[Any] = []

    @property
    def blocking(self) -> bool:
        return self.backend == "blocking"

    def couch(self, url: str, auth: Any = None, **kwargs: Any) -> Any:
        couch = make_couch(self.backend, url, auth, **kwargs)
        self.couches.append(couch)
        return couch

    async def resolve(self, result: Any) -> Any:
        if self.backend.startswith("twisted"):
            from twisted.internet.defer import Deferred

            assert isinstance(result, Deferred), result
            return await result.asFuture(LOOP)
        assert isinstance(result, asyncio.Future), result
        return await result

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``: its promise awaited, or (blocking) run in a worker thread."""
        if self.blocking:
            return await LOOP.run_in_executor(None, lambda: fn(*args, **kwargs))
        return await self.resolve(fn(*args, **kwargs))

    async def many(self, calls: list[Callable[[], Any]], threads: int = 20) -> list[Any]:
        """Run every call at once; each result is its value or the exception it raised. Async
        backends start them all before awaiting any; blocking runs them on ``threads``
        threads."""
        if self.blocking:
            def one(fn: Callable[[], Any]) -> Any:
                try:
                    return fn()
                except Exception as exc:
                    return exc

            def run_all() -> list[Any]:
                with ThreadPoolExecutor(threads) as pool:
                    return list(pool.map(one, calls))

            return await LOOP.run_in_executor(None, run_all)
        promises = [fn() for fn in calls]
        return list(await asyncio.gather(*(self.resolve(p) for p in promises),
                                         return_exceptions=True))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def close(self) -> None:
        for couch in self.couches:
            closing = couch.close()
            if closing is not None and hasattr(closing, "asFuture"):
                LOOP.run_until_complete(closing.asFuture(LOOP))


@pytest.fixture
def run(backend: str) -> Iterator[Runner]:
    runner = Runner(backend)
    yield runner
    runner.close()


class Sessions:
    """A CouchDB-like cookie session endpoint on a :class:`FaultServer`.

    ``POST /_session`` checks the JSON name/password and hands out a new cookie (``c1``,
    ``c2``... unless ``cookie_prefix`` says otherwise), which replaces the valid ones. Routes
    added with :meth:`protect` answer 200 to a valid cookie and 401 otherwise. :meth:`expire`
    makes the server forget every cookie (as an expired session does)."""

    def __init__(self, server: FaultServer, user: str = "bob", password: str = "pw",
                 max_age: int | None = None, login_delay: float = 0.0,
                 cookie_prefix: str = "c") -> None:
        self.server = server
        self.user, self.password = user, password
        self.max_age = max_age
        self.login_delay = login_delay
        self.prefix = cookie_prefix
        self.logins = 0
        self.valid: set[str] = set()
        self.lock = threading.Lock()
        server.add_handler("POST", "/_session", self._login)
        server.add_handler("GET", "/_session", self._whoami)
        server.add_handler("DELETE", "/_session", self._logout)

    def protect(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> None:
        reply_body = body if body is not None else {"ok": True}

        def handler(request: Received) -> Reply:
            if self.cookie(request) in self.valid:
                return Reply.json(reply_body, headers=headers or {})
            return Reply.json({"error": "unauthorized", "reason": "You are not authorized."}, 401)

        self.server.add_handler(method, path, handler)

    @staticmethod
    def cookie(request: Received) -> str | None:
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "AuthSession":
                return value
        return None

    def expire(self) -> None:
        with self.lock:
            self.valid.clear()

    def set_cookie(self, value: str) -> str:
        line = f"AuthSession={value}; Version=1; Path=/; HttpOnly"
        return line + (f"; Max-Age={self.max_age}" if self.max_age is not None else "")

    def _login(self, request: Received) -> Reply:
        if self.login_delay:
            time.sleep(self.login_delay)
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if body != {"name": self.user, "password": self.password}:
            return Reply.json({"error": "unauthorized",
                               "reason": "Name or password is incorrect."}, 401)
        with self.lock:
            self.logins += 1
            value = f"{self.prefix}{self.logins}"
            self.valid = {value}
        return Reply.json({"ok": True, "name": self.user, "roles": []},
                          headers={"Set-Cookie": self.set_cookie(value)})

    def _whoami(self, request: Received) -> Reply:
        name = self.user if self.cookie(request) in self.valid else None
        return Reply.json({"ok": True, "userCtx": {"name": name, "roles": []},
                           "info": {"authenticated": "cookie"} if name else {}})

    def _logout(self, request: Received) -> Reply:
        return Reply.json({"ok": True}, headers={"Set-Cookie": "AuthSession=; Version=1; Path=/; HttpOnly"})
