"""Twisted front door: every network method returns a ``Deferred``, or calls
``callback(data, status)``; ``@relax`` is ``inlineCallbacks``.

    from corduroy2.twisted_io import Couch, Database, relax

``await`` works too, inside ``Deferred.fromCoroutine(...)`` / ``ensureDeferred(...)``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from .. import api
from ..pipeline.auth import AuthArg
from ..backend import Backend, TransportOptions, missing_package
from .backend import TwistedBackend

__all__ = ["Couch", "Database", "relax", "TwistedBackend"]


CLIENTS = ("agent", "httptools")


class Couch(api.Couch):
    """A CouchDB server on Twisted. ``reactor`` defaults to the global one, looked up at the
    first request; ``close()`` returns a Deferred that fires once connections are closed.

    ``client="agent"`` (the default) sends requests with Twisted's ``Agent``;
    ``client="httptools"`` with corduroy2's own HTTP/1.1 client, which parses responses with
    httptools (the ``corduroy2[httptools]`` extra) and costs much less per request."""

    backend_name = "twisted"

    def __init__(self, url: api.couch.URLs = api.couch.DEFAULT_URL, auth: AuthArg = None, *,
                 reactor: Any = None, client: str = "agent", **kwargs: Any) -> None:
        if client not in CLIENTS:
            raise ValueError(f"client must be 'agent' or 'httptools', not {client!r}")
        self._reactor = reactor
        self._client_kind = client
        super().__init__(url, auth, **kwargs)

    def _make_backend(self, options: TransportOptions) -> Backend:
        if self._client_kind == "httptools":
            return _httptools_backend(options, self._reactor)
        return TwistedBackend(options, self._reactor)


def _httptools_backend(options: TransportOptions, reactor: Any) -> Backend:
    """The httptools client, imported only when it is asked for: httptools is optional."""
    try:
        from .httptools_client import HttptoolsBackend
    except ImportError as exc:
        raise missing_package(exc, "httptools")
    return HttptoolsBackend(options, reactor)


class Database(api.Database):
    couch_class = Couch


Couch.database_class = Database

#: ``@relax`` on Twisted is ``inlineCallbacks``: ``doc = yield db.get("x")``, errors raised at
#: the ``yield``, the decorated call returns a Deferred.
relax = inlineCallbacks
