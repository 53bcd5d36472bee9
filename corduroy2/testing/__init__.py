"""Test tools for applications that use corduroy2 (and for corduroy2's own tests).

* :class:`FakeCouch`: an in-memory CouchDB 3; ``FakeCouch().serve()`` runs it on a loopback
  port in milliseconds, with fault injection (:class:`Faults`). No Node, no network.
* :class:`RecordingBackend`: a backend with no IO that records each request and answers from
  a script, to assert what code sends.
* :class:`PouchDBServer`: a throwaway pouchdb-server (needs Node), as the project's own
  behaviour suite uses.
* a pytest fixture, ``fake_couch`` (:mod:`corduroy2.testing.pytest_plugin`).

Importing this package imports no framework.
"""

from __future__ import annotations

from .fake import FakeCouch, FakeServer, Faults
from .pouchdb import POUCHDB_SERVER_VERSION, PouchDBServer, install_pouchdb_server
from .recording import RecordingBackend, Reply, record_requests

__all__ = [
    "FakeCouch",
    "FakeServer",
    "Faults",
    "RecordingBackend",
    "Reply",
    "record_requests",
    "POUCHDB_SERVER_VERSION",
    "PouchDBServer",
    "install_pouchdb_server",
]
