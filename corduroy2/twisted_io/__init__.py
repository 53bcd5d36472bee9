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
from ..backend import Backend, TransportOptions
from .backend import TwistedBackend

__all__ = ["Couch", "Database", "relax", "TwistedBackend"]


class Couch(api.Couch):
    """A CouchDB server on Twisted. ``reactor`` defaults to the global one, looked up at the
    first request; ``close()`` returns a Deferred that fires once connections are closed."""

    backend_name = "twisted"

    def __init__(self, url: api.couch.URLs = api.couch.DEFAULT_URL, auth: AuthArg = None, *,
                 reactor: Any = None, **kwargs: Any) -> None:
        self._reactor = reactor
        super().__init__(url, auth, **kwargs)

    def _make_backend(self, options: TransportOptions) -> Backend:
        return TwistedBackend(options, self._reactor)


class Database(api.Database):
    couch_class = Couch


Couch.database_class = Database

#: ``@relax`` on Twisted is ``inlineCallbacks``: ``doc = yield db.get("x")``, errors raised at
#: the ``yield``, the decorated call returns a Deferred.
relax = inlineCallbacks
