"""A Twisted service tested with trial against ``FakeCouch``.

Run: ``python -m twisted.trial guide/examples/test_twisted_counter.py`` (the project's test
command runs it: tests/test_guide_examples.py).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from corduroy2 import NotFound
from corduroy2.testing import FakeCouch
from corduroy2.twisted_io import Couch, relax


# -- the service under test ----------------------------------------------------------------------

class Counter:
    """Counts hits per page in CouchDB documents."""

    def __init__(self, db: Any) -> None:
        self.db = db

    @relax
    def hit(self, page: str) -> Any:
        try:
            doc = yield self.db.get(page)
        except NotFound:
            doc = {"_id": page, "hits": 0}
        doc["hits"] += 1
        yield self.db.save(doc)
        return doc["hits"]


# -- its tests -----------------------------------------------------------------------------------

class CounterTest(unittest.TestCase):
    def setUp(self) -> None:
        self.server = FakeCouch().serve()
        self.addCleanup(self.server.stop)
        self.server.couch.create_db("hits")
        self.couch = Couch(self.server.url, self.server.admin)
        self.addCleanup(self.couch.close)  # a Deferred: trial waits for the pool to close
        self.counter = Counter(self.couch.database("hits"))

    @inlineCallbacks
    def test_counts(self) -> Any:
        self.assertEqual((yield self.counter.hit("home")), 1)
        self.assertEqual((yield self.counter.hit("home")), 2)
        self.assertEqual(self.server.couch.get("hits", "home")["hits"], 2)

    @inlineCallbacks
    def test_a_cut_answer_is_an_error(self) -> Any:
        from corduroy2 import ResponseCut

        self.server.couch.save("hits", {"_id": "home", "hits": 5})
        self.server.faults.cut(3, method="GET", path="/hits/home", times=10)
        with self.assertRaises(ResponseCut):
            yield self.counter.hit("home")
