"""A Tornado app tested with ``tornado.testing.AsyncHTTPTestCase`` against ``FakeCouch``.

Run: ``python -m unittest guide/examples/test_tornado_notes.py`` (the project's test command
runs it: tests/test_guide_examples.py).
"""

from __future__ import annotations

import json
import unittest
from typing import Any

from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application, HTTPError, RequestHandler

from corduroy2 import Conflict, NotFound
from corduroy2.testing import FakeCouch
from corduroy2.tornado_io import Couch


# -- the application under test ------------------------------------------------------------------

class NoteHandler(RequestHandler):
    def initialize(self, db: Any) -> None:
        self.db = db

    async def get(self, note_id: str) -> None:
        try:
            note = await self.db.get(note_id)
        except NotFound:
            raise HTTPError(404) from None
        self.write({"text": note.text})

    async def put(self, note_id: str) -> None:
        note = {"_id": note_id, "text": json.loads(self.request.body)["text"]}
        try:
            await self.db.save(note)
        except Conflict:
            raise HTTPError(409) from None
        self.set_status(201)
        self.write({"rev": note["_rev"]})


def make_app(couch: Couch) -> Application:
    return Application([(r"/notes/(\w+)", NoteHandler, {"db": couch.database("notes")})])


# -- its tests -----------------------------------------------------------------------------------

class NotesTest(AsyncHTTPTestCase):
    def setUp(self) -> None:
        self.server = FakeCouch().serve()            # a fresh CouchDB in about a millisecond
        self.server.couch.create_db("notes")
        super().setUp()                              # makes the IOLoop, then calls get_app()

    def tearDown(self) -> None:
        self.couch.close()
        super().tearDown()
        self.server.stop()

    def get_app(self) -> Application:
        self.couch = Couch(self.server.url, self.server.admin)
        return make_app(self.couch)

    def test_put_then_get(self) -> None:
        put = self.fetch("/notes/n1", method="PUT", body=json.dumps({"text": "hello"}))
        self.assertEqual(put.code, 201)
        self.assertTrue(json.loads(put.body)["rev"].startswith("1-"))
        self.assertEqual(json.loads(self.fetch("/notes/n1").body), {"text": "hello"})
        # what CouchDB holds, read without HTTP
        self.assertEqual(self.server.couch.get("notes", "n1")["text"], "hello")

    def test_a_second_put_is_a_conflict(self) -> None:
        self.fetch("/notes/n1", method="PUT", body=json.dumps({"text": "one"}))
        again = self.fetch("/notes/n1", method="PUT", body=json.dumps({"text": "two"}))
        self.assertEqual(again.code, 409)

    def test_missing_note(self) -> None:
        self.assertEqual(self.fetch("/notes/nope").code, 404)

    def test_survives_a_busy_couchdb(self) -> None:
        self.server.couch.save("notes", {"_id": "n1", "text": "hi"})
        # CouchDB answers 503 once, asking for a retry: corduroy2 retries, the user sees 200
        self.server.faults.answer(503, method="GET", path="/notes/n1", retry_after=0)
        self.assertEqual(self.fetch("/notes/n1").code, 200)
        self.assertEqual(len(self.server.faults), 0)  # the fault was used


if __name__ == "__main__":
    unittest.main()
