"""``couch.request(...)``, the escape hatch to any endpoint: with the handle's credentials,
typed errors, and (through the fault server) its retries, in every calling style."""

from __future__ import annotations

from typing import Any

import pytest

from corduroy2 import NotFound, Retry, ServerError
from corduroy2.protocol.responses import Response

from ..conftest import LOOP, Server
from ..support.faultserver import FaultServer, Reply
from .conftest import BACKENDS, Client, make_couch


async def test_request_any_endpoint(c: Client, dbname: str, server: Server) -> None:
    couch = c.couch
    assert await c.call(couch.request, "GET", "/") == await c.call(couch.info)
    # The handle's credentials go along: the server takes this request for the admin's.
    session = await c.call(couch.request, "GET", "/_session")
    assert server.auth is not None and session["userCtx"]["name"] == server.auth[0]

    path = "/" + dbname + "/a%2Fb"
    created = await c.call(couch.request, "PUT", path, body={"v": 1})
    assert created["ok"] and created["id"] == "a/b"
    rows = await c.call(couch.request, "GET", "/" + dbname + "/_all_docs",
                        {"key": "a/b", "include_docs": True})
    assert rows["rows"][0]["doc"]["v"] == 1


async def test_request_raw_gives_the_response(c: Client, dbname: str) -> None:
    response = await c.call(c.couch.request, "GET", "/" + dbname, raw=True)
    assert isinstance(response, Response) and response.status == 200
    assert response.json()["db_name"] == dbname
    assert response.headers["content-type"].startswith("application/json")
    for raw in (False, True):
        with pytest.raises(NotFound) as info:
            await c.call(c.couch.request, "GET", "/" + dbname + "/missing", raw=raw)
        assert info.value.error == "not_found"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_request_is_retried_like_any_call(backend: str) -> None:
    unavailable = Reply.json({"error": "unavailable"}, 503, headers={"Retry-After": "0"})
    with FaultServer() as fault:
        fault.add("GET", "/_up", [unavailable, Reply.json({"status": "ok"})])
        fault.add("POST", "/x", unavailable)
        couch = make_couch(backend, fault.url, None, retry=Retry(attempts=3, base=0.01))
        client = Client(backend, "blocking" if backend == "blocking" else "promise", couch)
        try:
            assert await client.call(couch.request, "GET", "/_up") == {"status": "ok"}
            assert len(fault.received("GET", "/_up")) == 2
            with pytest.raises(ServerError):  # a POST is not repeated: it may have been done
                await client.call(couch.request, "POST", "/x", body={})
            assert len(fault.received("POST", "/x")) == 1
        finally:
            closing = couch.close()
            if closing is not None and hasattr(closing, "asFuture"):
                await closing.asFuture(LOOP)
