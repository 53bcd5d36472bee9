"""The fake's own tests: a served FakeCouch per test (it starts in about a millisecond) and a
plain stdlib HTTP client, so these tests see exactly the bytes any client would."""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from corduroy2.testing import FakeCouch, FakeServer
from corduroy2.testing.pytest_plugin import fake_couch  # noqa: F401  (the fixture users get)


class Http:
    """Requests to one FakeServer as its admin (or as ``auth``), over one keep-alive
    connection."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=10)

    def __call__(self, method: str, path: str, body: Any = None, *,
                 auth: tuple[str, str] | None | str = "admin",
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """``(status, headers, body)``: the body decoded from JSON when it is JSON."""
        status, head, raw = self.raw(method, path, body, auth=auth, headers=headers)
        if head.get("content-type", "").startswith("application/json") and raw.strip():
            try:
                return status, head, orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
        return status, head, raw

    def raw(self, method: str, path: str, body: Any = None, *,
            auth: tuple[str, str] | None | str = "admin",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if auth == "admin":
            auth = self.server.admin
        if auth is not None:
            token = base64.b64encode(":".join(auth).encode()).decode()  # type: ignore[arg-type]
            sent["Authorization"] = f"Basic {token}"
        payload = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        if payload is not None and not isinstance(body, bytes):
            sent.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, payload, sent)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeCouch().serve() as served:
        yield served
        assert served.errors == []  # no bug inside the fake answered a 500


@pytest.fixture
def couch(server: FakeServer) -> Iterator[Http]:
    client = Http(server)
    yield client
    client.close()


@pytest.fixture
def db(couch: Http) -> str:
    assert couch("PUT", "/db")[0] == 201
    return "/db"
