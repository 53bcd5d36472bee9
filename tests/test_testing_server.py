"""End-to-end check of corduroy2.testing.PouchDBServer (stdlib urllib only)."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from corduroy2.testing import PouchDBServer

CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache"


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    headers = {"Accept": "application/json"}
    if auth is not None:
        token = base64.b64encode(":".join(auth).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_pouchdb_server_lifecycle() -> None:
    server = PouchDBServer(CACHE_DIR)
    with server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.url_with_credentials == server.url.replace(
            "http://", "http://admin:secret@"
        )

        status, body = _get(server.url + "/", auth=server.admin)
        assert status == 200
        assert "express-pouchdb" in json.loads(body)

        # 401 without credentials proves the admin from config.json is active
        # (in admin party, everyone would be allowed to read /_config).
        status, body = _get(server.url + "/_config")
        assert status == 401, body

        assert "secret" not in repr(server)
        host, port = server.host, server.port
        assert port is not None

    assert "secret" not in repr(server)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=2).close()
