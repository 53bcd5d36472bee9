"""No secret ever shows: a representative set of calls (successes and failures, every kind of
auth) runs on every backend with DEBUG logging captured, then every log record, every repr/str
of the objects involved and every exception (with its chain) is searched for the secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import traceback
from typing import Any

import pytest

from corduroy2 import CookieAuth, CouchError, JWTAuth, ProxyAuth, Retry, Status
from corduroy2.protocol.requests import Request

from ..support.faultserver import FaultServer, Received, Reply
from corduroy2.testing import record_requests
from .conftest import Runner, Sessions

USER = "bob"
PASSWORD = "pw-Xq7-leaktest"
COOKIE = "ck-Zr9-leaktest"  # the fault server's cookies are COOKIE1, COOKIE2...
TOKEN = "tok-Jw4-leaktest"
PROXY_SECRET = "px-Mn2-leaktest"
PROXY_TOKEN = hmac.new(PROXY_SECRET.encode(), USER.encode(), hashlib.sha256).hexdigest()
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = [PASSWORD, COOKIE, TOKEN, PROXY_SECRET, PROXY_TOKEN, BASIC, "Xq7", "Zr9", "Jw4", "Mn2"]

QUICK = Retry(attempts=2, base=0.01, cap=0.01)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Evidence:
    """Everything a user could see: objects, exceptions, statuses."""

    def __init__(self) -> None:
        self.objects: list[Any] = []
        self.errors: list[BaseException] = []
        self._recorded: list[list[Request]] = []

    @property
    def requests(self) -> list[Request]:
        return [request for sent in self._recorded for request in sent]

    def watch(self, couch: Any) -> Any:
        """Record every Request ``couch``'s backend sends (they carry the credentials)."""
        self._recorded.append(record_requests(couch.backend))
        self.objects += [couch, couch.sender, couch._auth, couch._retry]
        return couch

    async def call(self, run: Runner, fn: Any, *args: Any) -> Any:
        try:
            value = await run.call(fn, *args)
        except CouchError as exc:
            self.errors.append(exc)
            return exc
        self.objects.append(value)
        return value

    async def callback(self, run: Runner, fn: Any) -> Status:
        """``fn`` in callback style; the Status it reports."""
        import asyncio

        from ..conftest import LOOP

        got: list[Status] = []
        if run.blocking:
            await LOOP.run_in_executor(None, lambda: fn(callback=lambda d, s: got.append(s)))
        else:
            done = LOOP.create_future()

            def cb(data: Any, status: Status) -> None:
                got.append(status)
                done.set_result(None)

            fn(callback=cb)
            await asyncio.wait_for(done, 10)
        status = got[0]
        self.objects += [status, status.headers, status.response]
        if status.exception is not None:
            self.errors.append(status.exception)
        return status

    def texts(self, records: list[logging.LogRecord]) -> list[str]:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        out = [formatter.format(r) for r in records] + [r.getMessage() for r in records]
        out += [repr(r.args) for r in records]
        for obj in self.objects + self.requests:
            out += [repr(obj), str(obj)]
        for exc in self.errors:
            out += [repr(exc), str(exc), "".join(traceback.format_exception(exc))]
            headers = getattr(exc, "headers", None)
            if headers is not None:
                out.append(repr(headers))
        return out


def _app(fault: FaultServer) -> Sessions:
    """Cookie sessions plus routes that want Basic, Bearer or proxy credentials."""
    sessions = Sessions(fault, USER, PASSWORD, max_age=600, cookie_prefix=COOKIE)
    sessions.protect("GET", "/cookie")

    def basic(request: Received) -> Reply:
        if request.headers.get("authorization") == f"Basic {BASIC}":
            # CouchDB may hand a Basic client a session cookie too: it must not show either.
            return Reply.json({"ok": True},
                              headers={"Set-Cookie": sessions.set_cookie(COOKIE + "-basic")})
        return Reply.json({"error": "unauthorized", "reason": "Name or password is incorrect."},
                          401, headers={"WWW-Authenticate": "Basic realm=\"server\""})

    def bearer(request: Received) -> Reply:
        if request.headers.get("authorization") == f"Bearer {TOKEN}":
            return Reply.json({"ok": True})
        return Reply.json({"error": "unauthorized", "reason": "bad token"}, 401)

    def proxy(request: Received) -> Reply:
        if request.headers.get("x-auth-couchdb-token") == PROXY_TOKEN:
            return Reply.json({"ok": True})
        return Reply.json({"error": "unauthorized", "reason": "bad proxy token"}, 401)

    fault.add_handler("GET", "/basic", basic)
    fault.add_handler("GET", "/bearer", bearer)
    fault.add_handler("GET", "/proxy", proxy)
    fault.add("GET", "/busy", Reply.json({"error": "unavailable"}, 503, headers={"Retry-After": "0"}))
    return sessions


async def test_no_secret_in_logs_reprs_or_errors(run: Runner, fault: FaultServer,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    caplog.set_level(logging.DEBUG, logger="corduroy2")
    sessions = _app(fault)
    ev = Evidence()

    # Basic, from a tuple and from the URL; right and wrong passwords; a 503 storm; a refusal.
    basic = ev.watch(run.couch(fault.url, (USER, PASSWORD), retry=QUICK))
    in_url = ev.watch(run.couch(fault.url.replace("//", f"//{USER}:{PASSWORD}@"), retry=QUICK))
    wrong = ev.watch(run.couch(fault.url, (USER, PASSWORD + "-wrong")))
    dead = ev.watch(run.couch(f"http://{USER}:{PASSWORD}@127.0.0.1:{_free_port()}", retry=QUICK))
    for couch in (basic, in_url, wrong):
        db = couch.database("basic")
        ev.objects.append(db)
        await ev.call(run, db.couch.runner.call, couch.origin.request("GET", "/basic"), None)
    assert isinstance(await ev.call(run, basic.runner.call, basic.origin.request("GET", "/busy"), None),
                      CouchError)
    assert isinstance(await ev.call(run, dead.info), CouchError)
    ev.objects.append(dead.database("x"))
    assert (await ev.callback(run, wrong.info)).ok is False
    assert (await ev.callback(run, basic.session)).ok is True

    # Cookie sessions: login, use, expiry (401 and a re-login), logout, a wrong password.
    cookie = ev.watch(run.couch(fault.url, CookieAuth(USER, PASSWORD), retry=QUICK))
    assert (await ev.call(run, cookie.login))["ok"] is True
    await ev.call(run, cookie.runner.call, cookie.origin.request("GET", "/cookie"), None)
    sessions.expire()
    await ev.call(run, cookie.runner.call, cookie.origin.request("GET", "/cookie"), None)
    assert sessions.logins == 2
    await ev.call(run, cookie.session)
    await ev.call(run, cookie.logout)
    assert isinstance(await ev.call(run, cookie.runner.call, cookie.origin.request("GET", "/cookie"), None),
                      CouchError)
    bad_cookie = ev.watch(run.couch(fault.url, CookieAuth(USER, "nope" + PASSWORD)))
    assert isinstance(await ev.call(run, bad_cookie.login), CouchError)
    assert (await ev.callback(run, bad_cookie.info)).ok is False

    # JWT: fixed, from a callable, a callable that fails; proxy: right and wrong secret.
    jwt = ev.watch(run.couch(fault.url, JWTAuth(TOKEN)))
    jwt_source = ev.watch(run.couch(fault.url, JWTAuth(lambda: TOKEN)))
    jwt_bad = ev.watch(run.couch(fault.url, JWTAuth(lambda: TOKEN + "-expired")))

    def broken() -> str:
        raise RuntimeError("token service down")

    jwt_broken = ev.watch(run.couch(fault.url, JWTAuth(broken)))
    proxy = ev.watch(run.couch(fault.url, ProxyAuth(USER, ["a"], PROXY_SECRET)))
    proxy_bad = ev.watch(run.couch(fault.url, ProxyAuth(USER, ["a"], "other-secret")))
    for couch, path in [(jwt, "/bearer"), (jwt_source, "/bearer"), (jwt_bad, "/bearer"),
                        (jwt_broken, "/bearer"), (proxy, "/proxy"), (proxy_bad, "/proxy")]:
        await ev.call(run, couch.runner.call, couch.origin.request("GET", path), None)
    handle = jwt.with_options(auth=CookieAuth(USER, PASSWORD), timeout=5)
    ev.objects += [handle, handle.database("x")]

    # The calls happened as intended (so the search below is not vacuous).
    assert len(ev.errors) >= 10
    assert any(r.levelno == logging.DEBUG and r.name == "corduroy2" for r in caplog.records)
    assert any("renewing" in r.getMessage() for r in caplog.records)
    assert any("retry" in r.getMessage() for r in caplog.records)
    sent = [dict(r.headers) for r in ev.requests]
    assert any(h.get("Authorization") == f"Basic {BASIC}" for h in sent)
    assert any(h.get("Cookie", "").startswith(f"AuthSession={COOKIE}") for h in sent)
    assert any(h.get("Authorization") == f"Bearer {TOKEN}" for h in sent)
    assert any(h.get("X-Auth-CouchDB-Token") == PROXY_TOKEN for h in sent)

    for text in ev.texts(caplog.records):
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in: {text[:300]}"


def test_provider_reprs() -> None:
    providers = [CookieAuth(USER, PASSWORD), JWTAuth(TOKEN), JWTAuth(lambda: TOKEN),
                 ProxyAuth(USER, ["r"], PROXY_SECRET)]
    for provider in providers:
        for text in (repr(provider), str(provider)):
            assert all(secret not in text for secret in SECRETS), text
    assert repr(providers[0]) == "<CookieAuth 'bob'>"
    assert repr(providers[1]) == "<JWTAuth>"


def test_bad_auth_argument_error_does_not_show_it() -> None:
    from corduroy2.pipeline.auth import as_auth

    with pytest.raises(TypeError) as info:
        as_auth((USER, PASSWORD, "extra"))
    assert PASSWORD not in str(info.value)
    with pytest.raises(TypeError) as info:
        as_auth(f"{USER}:{PASSWORD}")
    assert PASSWORD not in str(info.value)
