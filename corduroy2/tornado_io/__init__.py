"""Tornado front door: every network method returns a Future (asyncio-compatible), or calls
``callback(data, status)``; ``@relax`` turns a generator into a coroutine.

    from corduroy2.tornado_io import Couch, Database, relax
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tornado import gen

from .. import api
from ..pipeline.auth import AuthArg
from ..backend import Backend, TransportOptions
from .backend import HAS_CURL, TornadoBackend, make_backend

__all__ = ["Couch", "Database", "relax", "TornadoBackend", "HAS_CURL"]


class Couch(api.Couch):
    """A CouchDB server on Tornado. ``client="curl"`` (default when pycurl is installed: it
    keeps connections alive), ``client="simple"`` (Tornado's own client, which opens a new
    connection per request), ``client="aiohttp"`` (aiohttp on the same asyncio loop;
    ``pip install corduroy2[aiohttp]``) or ``client="httptools"`` (HTTP/1.1 on asyncio's own
    connections, parsed by httptools: the fastest for many small requests; ``pip install
    corduroy2[httptools]``)."""

    backend_name = "tornado"

    def __init__(self, url: api.couch.URLs = api.couch.DEFAULT_URL, auth: AuthArg = None, *,
                 client: str | None = None, **kwargs: Any) -> None:
        self._client_kind = client
        super().__init__(url, auth, **kwargs)

    def _make_backend(self, options: TransportOptions) -> Backend:
        return make_backend(options, self._client_kind)


class Database(api.Database):
    couch_class = Couch


Couch.database_class = Database


def relax(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a generator as a Tornado coroutine: ``doc = yield db.get("x")`` waits for the
    result, and errors are raised at the ``yield``. Works on ``RequestHandler`` methods (Tornado
    awaits the returned Future) and on plain functions, which then return a Future."""
    return functools.wraps(func)(gen.coroutine(func))
