"""``FakeCouch``: an in-memory CouchDB 3 for tests, served on loopback by ``serve()``.

Modules: ``store`` (databases, docs, revision trees), ``collation`` (view key order),
``views`` (map/reduce and the row query options), ``mango`` (``_find``), ``endpoints`` (what each
database URL answers), ``design`` (show/list/update functions), ``admin`` (the node, feeds of
databases, replication and the scheduler), ``node`` (config, stats), ``replicator`` (replication
between the fake's databases), ``routes`` (the routing table), ``http`` (the loopback server),
``faults`` (injected failures). Stdlib and orjson only: no Tornado, no Twisted, no Node.
"""

from __future__ import annotations

from .couch import FakeCouch, User
from .errors import Refusal
from .faults import Fault, Faults
from .http import FakeServer

__all__ = ["FakeCouch", "FakeServer", "Faults", "Fault", "Refusal", "User"]
