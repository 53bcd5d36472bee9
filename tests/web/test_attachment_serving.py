"""Serving attachments to browsers: Tornado's ``AttachmentHandler`` and Twisted's
``AttachmentResource``, through real HTTP requests to an app / site on loopback.

The functional cases run against the real server. The streaming cases put a loopback
"CouchDB" behind the handler that serves a large attachment as fast as it is read and counts
what it has sent: a browser that reads slowly must hold the whole chain back (the download from
CouchDB is paused, so only buffers' worth is sent), and one that leaves mid-body must end the
download from CouchDB.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import pytest

from ..backends.test_attachment_streams import MB, TOTAL, SlowWriter
from ..behaviour.conftest import admin, dbname, make_couch  # noqa: F401 (fixtures)
from ..conftest import LOOP, Server

KINDS = ["tornado", "twisted"]
DATA = bytes(range(256)) * 400  # 100 KiB
BOUND = 24 * MB  # buffers' worth: the browser's socket, the handler's, CouchDB's socket


class Site:
    """An app (Tornado) or site (Twisted) serving ``/files/<doc id>/<name>`` from a database at
    ``url``, on a loopback port."""

    def __init__(self, kind: str, url: str, auth: Any, db_name: str = "db") -> None:
        self.kind = kind
        self.couch = make_couch("tornado-curl" if kind == "tornado" else "twisted", url, auth)
        db = self.couch.database(db_name)
        if kind == "tornado":
            from tornado.httpserver import HTTPServer
            from tornado.netutil import bind_sockets
            from tornado.web import Application

            from corduroy2.tornado_io.web import AttachmentHandler

            sockets = bind_sockets(0, "127.0.0.1")
            self._server: Any = HTTPServer(Application([
                (r"/files/([^/]+)/(.+)", AttachmentHandler, {"database": db})]))
            self._server.add_sockets(sockets)
            self.port = sockets[0].getsockname()[1]
        else:
            from twisted.internet import reactor
            from twisted.web.resource import Resource
            from twisted.web.server import Site as TwistedSite

            from corduroy2.twisted_io.web import AttachmentResource

            root = Resource()
            root.putChild(b"files", AttachmentResource(db))
            self._server = reactor.listenTCP(0, TwistedSite(root), interface="127.0.0.1")
            self.port = self._server.getHost().port

    async def close(self) -> None:
        if self.kind == "tornado":
            self._server.stop()
        else:
            await self._server.stopListening().asFuture(LOOP)
        closing = self.couch.close()
        if closing is not None and hasattr(closing, "asFuture"):
            await closing.asFuture(LOOP)

    async def browse(self, fn: Callable[[http.client.HTTPConnection], Any]) -> Any:
        """Run ``fn(connection)`` in a thread (a browser), the loop serving meanwhile."""
        def run() -> Any:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            try:
                return fn(conn)
            finally:
                conn.close()

        return await asyncio.wait_for(LOOP.run_in_executor(None, run), 30)

    async def fetch(self, path: str, method: str = "GET",
                    headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        def fn(conn: http.client.HTTPConnection) -> Any:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, \
                response.read()

        return await self.browse(fn)  # type: ignore[no-any-return]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    pytest.importorskip("tornado" if request.param == "tornado" else "twisted")
    return request.param  # type: ignore[no-any-return]


async def test_get_head_conditional_ranged_missing(kind: str, server: Server, admin: Any,
                                                   dbname: str) -> None:
    doc = {"_id": "a doc"}
    admin.database(dbname).put_attachment(doc, "dir/p.bin", DATA, "application/octet-stream")
    site = Site(kind, server.url, server.auth, dbname)
    path = f"/files/{quote(doc['_id'])}/dir/p.bin"
    try:
        status, headers, body = await site.fetch(path)
        assert (status, body) == (200, DATA)
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-length"] == str(len(DATA))
        etag = headers["etag"]
        assert etag.strip('"')

        status, headers, body = await site.fetch(path, headers={"If-None-Match": etag})
        assert (status, body) == (304, b"")
        assert headers.get("etag") == etag  # a 304 names what is still valid (RFC 9110)
        status, headers, body = await site.fetch(path, "HEAD")
        assert (status, body, headers["etag"]) == (200, b"", etag)
        assert headers["content-length"] == str(len(DATA))

        status, headers, body = await site.fetch(path, headers={"Range": "bytes=2-5"})
        if server.deviates("attachment_range_ignored"):
            assert (status, body) == (200, DATA)
        else:
            assert (status, body) == (206, DATA[2:6])
            assert headers["content-range"] == f"bytes 2-5/{len(DATA)}"
            status, headers, _ = await site.fetch(path, headers={"Range": "bytes=999999-"})
            assert status == 416

        status, _, _ = await site.fetch(f"/files/{quote(doc['_id'])}/missing.bin")
        assert status == 404
        status, _, _ = await site.fetch("/files/nodoc/x", "HEAD")
        assert status == 404
    finally:
        await site.close()


async def test_a_slow_browser_holds_the_download_back(kind: str) -> None:
    couch = SlowWriter()
    site = Site(kind, couch.url, None)

    def slow(conn: http.client.HTTPConnection) -> tuple[int, int]:
        conn.request("GET", "/files/d/big.bin")
        response = conn.getresponse()
        size = len(response.read(64 * 1024))
        time.sleep(1.0)  # the whole chain fills up, then stops
        sent_while_stalled = couch.sent
        while chunk := response.read(1 << 20):
            size += len(chunk)
        return size, sent_while_stalled

    try:
        size, sent = await site.browse(slow)
        assert size == 64 * 1024 + (TOTAL - 64 * 1024)
        assert sent < BOUND, f"{sent / MB:.0f} MB came from CouchDB for a stalled browser"
    finally:
        await site.close()


async def test_a_browser_leaving_ends_the_download(kind: str) -> None:
    couch = SlowWriter()
    site = Site(kind, couch.url, None)

    def leave(conn: http.client.HTTPConnection) -> None:
        conn.request("GET", "/files/d/big.bin")
        response = conn.getresponse()
        assert response.status == 200 and response.read(64 * 1024)
        conn.sock.close()  # type: ignore[union-attr]

    try:
        await site.browse(leave)
        deadline = time.monotonic() + 5
        while not couch.cut.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert couch.cut.is_set(), "the download from CouchDB went on after the browser left"
        assert couch.sent < TOTAL
    finally:
        await site.close()
