"""Cookie sessions, JWT and proxy auth through the fault server, on every backend."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import pytest

from corduroy2 import CookieAuth, CouchError, JWTAuth, ProxyAuth, Unauthorized

from ..conftest import LOOP
from ..support.faultserver import FaultServer, Received, Reply
from .conftest import Runner, Sessions

N = 100


async def test_expired_cookie_under_100_concurrent_calls_logs_in_once(
        run: Runner, fault: FaultServer) -> None:
    # The login is slow, so that many of the 401s arrive while it is under way.
    sessions = Sessions(fault, login_delay=0.2)
    sessions.protect("GET", "/")
    couch = run.couch(fault.url, CookieAuth("bob", "pw"))
    assert (await run.call(couch.login))["name"] == "bob"
    assert sessions.logins == 1
    sessions.expire()  # the server now answers 401 to the cookie the client holds

    results = await run.many([couch.info] * N)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert results == [{"ok": True}] * N
    assert sessions.logins == 2, "exactly one re-login"
    assert len(fault.received("POST", "/_session")) == 2
    gets = fault.received("GET", "/")
    rejected = [g for g in gets if Sessions.cookie(g) == "c1"]
    assert rejected, "some calls met the expired cookie"
    assert len(gets) == N + len(rejected)  # each rejected call was sent again once
    assert all(Sessions.cookie(g) == "c2" for g in gets if Sessions.cookie(g) != "c1")


async def test_first_calls_share_one_login(run: Runner, fault: FaultServer) -> None:
    sessions = Sessions(fault, login_delay=0.1)
    sessions.protect("GET", "/")
    couch = run.couch(fault.url, CookieAuth("bob", "pw"))
    results = await run.many([couch.info] * 20, threads=10)
    assert results == [{"ok": True}] * 20
    assert sessions.logins == 1
    # No request left without the cookie: the calls waited for the login.
    assert all(Sessions.cookie(g) == "c1" for g in fault.received("GET", "/"))


async def test_refreshed_cookie_is_adopted(run: Runner, fault: FaultServer) -> None:
    sessions = Sessions(fault)
    sessions.protect("GET", "/")

    def refresh(request: Received) -> Reply:
        with sessions.lock:
            sessions.valid.add("fresh")
        return Reply.json({"db_name": "db"}, headers={"Set-Cookie": sessions.set_cookie("fresh")})

    fault.add_handler("GET", "/db", refresh)
    couch = run.couch(fault.url, CookieAuth("bob", "pw"))
    await run.call(couch.database("db").info)
    await run.call(couch.info)
    assert sessions.logins == 1
    first_info, = fault.received("GET", "/db")
    assert Sessions.cookie(first_info) == "c1"
    assert Sessions.cookie(fault.received("GET", "/")[-1]) == "fresh"


async def test_max_age_expiry_logs_in_before_sending(run: Runner, fault: FaultServer) -> None:
    sessions = Sessions(fault, max_age=1)
    sessions.protect("GET", "/")
    couch = run.couch(fault.url, CookieAuth("bob", "pw"))
    await run.call(couch.info)
    await run.call(couch.info)
    assert sessions.logins == 1
    await run.sleep(1.0)  # renewal starts a little before Max-Age runs out
    await run.call(couch.info)
    assert sessions.logins == 2
    calls = [(r.method, r.path, Sessions.cookie(r)) for r in fault.requests]
    assert calls == [
        ("POST", "/_session", None), ("GET", "/", "c1"), ("GET", "/", "c1"),
        ("POST", "/_session", None), ("GET", "/", "c2"),  # proactive: no 401 on the way
    ]


async def test_wrong_password_fails_every_waiting_call(run: Runner, fault: FaultServer) -> None:
    sessions = Sessions(fault, login_delay=0.1)
    sessions.protect("GET", "/")
    couch = run.couch(fault.url, CookieAuth("bob", "wrong"))
    results = await run.many([couch.info] * 10, threads=10)
    assert all(isinstance(r, Unauthorized) for r in results), results
    assert all(r.reason == "Name or password is incorrect." for r in results)
    assert len({id(r) for r in results}) == 10, "each call has its own exception object"
    assert fault.received("GET", "/") == []
    assert len(fault.received("POST", "/_session")) == 1


async def test_a_401_after_renewal_is_final(run: Runner, fault: FaultServer) -> None:
    sessions = Sessions(fault)
    fault.add("GET", "/db", Reply.json({"error": "unauthorized", "reason": "not a member"}, 401))
    couch = run.couch(fault.url, CookieAuth("bob", "pw"))
    with pytest.raises(Unauthorized):
        await run.call(couch.database("db").info)
    # one login up front, one renewal after the 401, and the call sent twice
    assert sessions.logins == 2
    assert len(fault.received("GET", "/db")) == 2


async def test_login_session_logout(run: Runner, fault: FaultServer) -> None:
    sessions = Sessions(fault)
    sessions.protect("GET", "/")
    couch = run.couch(fault.url, CookieAuth("bob", "pw"))
    reply = await run.call(couch.login)
    assert reply == {"ok": True, "name": "bob", "roles": []}
    assert (await run.call(couch.session))["userCtx"]["name"] == "bob"
    assert await run.call(couch.logout) == {"ok": True}
    logout, = fault.received("DELETE", "/_session")
    assert Sessions.cookie(logout) == "c1"
    # Logged out: calls are anonymous and nothing logs in by itself.
    assert (await run.call(couch.session))["userCtx"]["name"] is None
    with pytest.raises(Unauthorized):
        await run.call(couch.info)
    assert sessions.logins == 1
    await run.call(couch.login)
    assert await run.call(couch.info) == {"ok": True}
    assert sessions.logins == 2


async def test_login_needs_cookie_auth(run: Runner, fault: FaultServer) -> None:
    couch = run.couch(fault.url, ("bob", "pw"))
    with pytest.raises(TypeError):
        couch.login()
    assert fault.requests == []


async def test_with_options_auth_shares_the_transport(run: Runner, fault: FaultServer) -> None:
    sessions = Sessions(fault)
    sessions.protect("GET", "/")
    couch = run.couch(fault.url)
    as_bob = couch.with_options(auth=CookieAuth("bob", "pw"))
    assert as_bob.backend is couch.backend
    assert await run.call(as_bob.info) == {"ok": True}
    with pytest.raises(Unauthorized):
        await run.call(couch.info)  # the original handle is still anonymous
    db = as_bob.database("x")
    assert db.couch is as_bob and "bob" in repr(as_bob)


# -- JWT --------------------------------------------------------------------------------------


def _bearer(request: Received) -> str:
    return request.headers.get("authorization", "")


def _jwt_server(fault: FaultServer, valid: set[str]) -> None:
    def handler(request: Received) -> Reply:
        if _bearer(request).removeprefix("Bearer ") in valid:
            return Reply.json({"ok": True})
        return Reply.json({"error": "unauthorized", "reason": "bad token"}, 401)

    fault.add_handler("GET", "/", handler)


async def test_static_jwt(run: Runner, fault: FaultServer) -> None:
    _jwt_server(fault, {"t0"})
    couch = run.couch(fault.url, JWTAuth("t0"))
    assert await run.call(couch.info) == {"ok": True}
    assert _bearer(fault.requests[0]) == "Bearer t0"
    fault.add("GET", "/", Reply.json({"error": "unauthorized"}, 401))
    with pytest.raises(Unauthorized):
        await run.call(couch.info)
    assert len(fault.requests) == 2  # a fixed token cannot be renewed: no second try


def _promise(run: Runner, value: str, kind: str) -> Any:
    """``value`` as the front door's promise, settled a little later."""
    if kind == "plain":
        return value
    if run.backend.startswith("twisted"):
        from twisted.internet import defer, reactor

        if kind == "coroutine":
            async def later_coro() -> str:
                await asyncio.sleep(0)  # runs under the asyncio reactor
                return value

            return later_coro()
        d: defer.Deferred[str] = defer.Deferred()
        reactor.callLater(0.05, d.callback, value)  # type: ignore[attr-defined]
        return d
    if kind == "coroutine":
        async def later() -> str:
            await asyncio.sleep(0.05)
            return value

        return later()
    future: asyncio.Future[str] = LOOP.create_future()
    LOOP.call_later(0.05, future.set_result, value)
    return future


@pytest.mark.parametrize("kind", ["plain", "promise", "coroutine"])
async def test_jwt_source_is_called_once_and_renewed_after_401(
        run: Runner, fault: FaultServer, kind: str) -> None:
    if run.blocking and kind != "plain":
        pytest.skip("blocking mode takes plain values from the token source")
    valid = {"t1"}
    _jwt_server(fault, valid)
    calls: list[str] = []

    def source() -> Any:
        token = f"t{len(calls) + 1}"
        calls.append(token)
        return _promise(run, token, kind)

    couch = run.couch(fault.url, JWTAuth(source))
    results = await run.many([couch.info] * 10, threads=5)
    assert results == [{"ok": True}] * 10
    assert calls == ["t1"]
    valid.clear()
    valid.add("t2")  # the server no longer takes t1
    assert await run.call(couch.info) == {"ok": True}
    assert calls == ["t1", "t2"]
    assert [_bearer(r) for r in fault.requests[-2:]] == ["Bearer t1", "Bearer t2"]


async def test_jwt_source_failure_is_a_couch_error(run: Runner, fault: FaultServer) -> None:
    def source() -> str:
        raise RuntimeError("token service down")

    couch = run.couch(fault.url, JWTAuth(source))
    with pytest.raises(CouchError) as info:
        await run.call(couch.info)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert fault.requests == []


# -- proxy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_name", ["sha256", "sha1"])
async def test_proxy_headers(run: Runner, fault: FaultServer, hash_name: str) -> None:
    fault.add("GET", "/", Reply.json({"ok": True}))
    auth = ProxyAuth("bob", ["editor", "_admin"], secret="proxy-secret", hash=hash_name)
    couch = run.couch(fault.url, auth)
    await run.call(couch.info)
    headers = fault.requests[0].headers
    expected = hmac.new(b"proxy-secret", b"bob", getattr(hashlib, hash_name)).hexdigest()
    assert headers["x-auth-couchdb-username"] == "bob"
    assert headers["x-auth-couchdb-roles"] == "editor,_admin"
    assert headers["x-auth-couchdb-token"] == expected
    assert "authorization" not in headers and "cookie" not in headers


async def test_proxy_without_secret_sends_no_token(run: Runner, fault: FaultServer) -> None:
    fault.add("GET", "/", Reply.json({"ok": True}))
    couch = run.couch(fault.url, ProxyAuth("bob"))
    await run.call(couch.info)
    headers = fault.requests[0].headers
    assert headers["x-auth-couchdb-username"] == "bob"
    assert "x-auth-couchdb-roles" not in headers
    assert "x-auth-couchdb-token" not in headers


# -- parsing, without IO -----------------------------------------------------------------------


def test_set_cookie_parsing() -> None:
    import time as _time
    from email.utils import formatdate

    from corduroy2.pipeline.auth import _parse_set_cookie

    assert _parse_set_cookie("AuthSession=abc; Version=1; Path=/; HttpOnly") == ("abc", None)
    assert _parse_set_cookie("AuthSession=abc; Max-Age=600; Path=/") == ("abc", 600.0)
    assert _parse_set_cookie('AuthSession="abc"; max-age=0') == ("abc", 0.0)
    assert _parse_set_cookie("AuthSession=; Version=1; Path=/") == ("", None)
    assert _parse_set_cookie("Other=x; Max-Age=5") is None
    value, lifetime = _parse_set_cookie(
        f"AuthSession=abc; Expires={formatdate(_time.time() + 100, usegmt=True)}")  # type: ignore[misc]
    assert value == "abc" and lifetime is not None and 95 < lifetime <= 100
    # Max-Age wins over Expires (RFC 6265)
    assert _parse_set_cookie("AuthSession=a; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=9") \
        == ("a", 9.0)


def test_jwt_lifetime_from_exp() -> None:
    import base64
    import json
    import time as _time

    from corduroy2.pipeline.auth import _jwt_lifetime

    def jwt(claims: dict[str, Any]) -> str:
        part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"eyJhbGciOiJIUzI1NiJ9.{part}.sig"

    lifetime = _jwt_lifetime(jwt({"sub": "bob", "exp": int(_time.time()) + 300}))
    assert lifetime is not None and 290 < lifetime <= 300
    assert _jwt_lifetime(jwt({"sub": "bob"})) is None
    assert _jwt_lifetime("not-a-jwt") is None


async def test_cleared_cookie_means_a_new_login(run: Runner, fault: FaultServer) -> None:
    sessions = Sessions(fault)
    sessions.protect("GET", "/")
    fault.add("GET", "/bye", Reply.json({"ok": True},
                                        headers={"Set-Cookie": "AuthSession=; Version=1; Path=/"}))
    couch = run.couch(fault.url, CookieAuth("bob", "pw"))
    await run.call(couch.info)
    await run.call(couch.runner.call, couch.origin.request("GET", "/bye"), None)
    await run.call(couch.info)
    assert sessions.logins == 2
    assert [Sessions.cookie(r) for r in fault.received("GET", "/")] == ["c1", "c2"]
