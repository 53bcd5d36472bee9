"""corduroy2, end to end: run with ``./dev.sh demo``.

Starts its own pouchdb-server (installed into .cache/ by npm on the first run), then in ONE
process and on ONE asyncio loop:

  1. a Tornado web app whose handlers use ``@relax`` (``doc = yield db.get(...)``), driven by
     Tornado's AsyncHTTPClient: two notes created, one read back, a missing one answers 404;
     plus one explicit ``callback(data, status)`` call and a plain ``await``;
  2. a Twisted ``inlineCallbacks`` script (``corduroy2.twisted_io.relax``): bulk save, a
     Conflict caught at the ``yield`` and resolved with ``save(doc, merge=fn)``, ``get([ids])``;
  3. one blocking call (``corduroy2.blocking``), outside the loop.

Tornado runs on asyncio; Twisted joins the same loop through its asyncioreactor, which must be
installed before anything imports ``twisted.internet.reactor`` and then started with
``reactor.startRunning(installSignalHandlers=False)`` (otherwise the reactor's thread pool, which
resolves host names for Agent, never starts and requests hang).
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent


def say(section: str, text: str) -> None:
    print(f"[{section}] {text}", flush=True)


# -- the shared loop ---------------------------------------------------------------------------


def install_shared_loop() -> asyncio.AbstractEventLoop:
    """One asyncio loop for Tornado and Twisted. Must run before anything imports the reactor."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    from twisted.internet import reactor

    reactor.startRunning(installSignalHandlers=False)  # type: ignore[attr-defined]
    return loop


# -- 1. Tornado ----------------------------------------------------------------------------------


def make_app(db: Any) -> Any:
    import tornado.web

    from corduroy2 import NotFound
    from corduroy2.tornado_io import relax

    class NotesHandler(tornado.web.RequestHandler):
        @relax
        def post(self) -> Any:
            note = json.loads(self.request.body)
            yield db.save(note)  # writes _id and _rev back into `note`
            self.set_status(201)
            self.write({"id": note["_id"], "rev": note["_rev"]})

    class NoteHandler(tornado.web.RequestHandler):
        @relax
        def get(self, note_id: str) -> Any:
            try:
                note = yield db.get(note_id)
            except NotFound:  # raised at the yield
                self.set_status(404)
                self.write({"error": "not_found", "id": note_id})
                return
            self.write({"text": note.text, "tags": note.tags, "_id": note.id})

    return tornado.web.Application(
        [(r"/notes", NotesHandler), (r"/notes/([^/]+)", NoteHandler)],
        log_function=lambda handler: None,  # keep the access log out of the demo's output
    )


async def tornado_part(url: str, auth: tuple[str, str]) -> str:
    import tornado.netutil
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer

    from corduroy2.tornado_io import Couch

    couch = Couch(url, auth=auth)
    tag = "tornado"
    version = await couch.version()  # plain `await` on the returned Future
    say(tag, f"await couch.version() -> {version!r}")
    db = await couch.db("notes", create_if_missing=True)
    say(tag, f"await couch.db('notes', create_if_missing=True) -> {db!r}")

    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    server = HTTPServer(make_app(db))
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{port}"
    say(tag, f"web app listening on {base} (handlers use @relax)")

    http = AsyncHTTPClient(force_instance=True)
    try:
        ids = []
        for text in ("buy milk", "write the guide"):
            body = json.dumps({"text": text, "tags": ["demo"]})
            r = await http.fetch(base + "/notes", method="POST", body=body, raise_error=False)
            created = json.loads(r.body)
            ids.append(created["id"])
            say(tag, f"POST /notes {text!r:18} -> {r.code} id={created['id'][:8]}... "
                     f"rev={created['rev'][:6]}...")
        r = await http.fetch(f"{base}/notes/{ids[0]}", raise_error=False)
        say(tag, f"GET /notes/{ids[0][:8]}... -> {r.code} {json.loads(r.body)['text']!r}")
        r = await http.fetch(base + "/notes/no-such-note", raise_error=False)
        say(tag, f"GET /notes/no-such-note -> {r.code} {r.body.decode()}")

        # The explicit style: the method returns None, later calls callback(data, status).
        # Errors are never raised here; they arrive in status.
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answers: list[str] = []

        def on_doc(doc: Any, status: Any) -> None:
            if status.ok:
                answers.append(f"{status!r} data={doc.text!r}")
            else:
                answers.append(f"{status.code} status.ok={status.ok} "
                               f"status.error={status.error.__name__}, data={doc!r}")
            if len(answers) == 2 and not finished.done():
                finished.set_result(None)

        returned = db.get(ids[1], callback=on_doc)
        db.get("no-such-note", callback=on_doc)
        await finished
        say("callback", f"db.get(id, callback=cb) returned {returned!r}; cb got:")
        for answer in answers:
            say("callback", f"  {answer}")
    finally:
        http.close()
        server.stop()
        await server.close_all_connections()
        couch.close()
    return ids[0]


# -- 2. Twisted ----------------------------------------------------------------------------------


def twisted_part(url: str, auth: tuple[str, str]) -> Any:
    from corduroy2 import Conflict
    from corduroy2.twisted_io import Couch, relax

    tag = "twisted"
    couch = Couch(url, auth=auth)

    @relax  # on Twisted, relax is inlineCallbacks
    def script() -> Any:
        db = yield couch.create("inventory")
        say(tag, f"yield couch.create('inventory') -> {db!r}")
        docs = [{"_id": name, "count": n} for name, n in (("apples", 3), ("pears", 5), ("figs", 0))]
        outcome = yield db.save(docs)
        say(tag, f"yield db.save([3 docs]) -> {outcome!r}")

        # Two writers start from the same revision of "apples".
        mine = yield db.get("apples")
        theirs = yield db.get("apples")
        theirs["count"] += 10
        yield db.save(theirs)
        say(tag, f"someone else saved apples: count={theirs['count']} rev={theirs['_rev'][:6]}...")
        mine["count"] += 1
        try:
            yield db.save(mine)  # stale _rev
        except Conflict as exc:  # raised at the yield
            say(tag, f"yield db.save(stale apples) raised {type(exc).__name__}: {exc.status} "
                     f"{exc.error}")

        def merge(local: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
            # Keep both increments: theirs (+10) is on the server, ours (+1) on top.
            return {**local, "count": server["count"] + 1}

        yield db.save(mine, merge=merge)
        say(tag, f"yield db.save(apples, merge=fn) -> count={mine['count']} "
                 f"rev={mine['_rev'][:6]}...")

        found = yield db.get(["apples", "pears", "kiwis"])
        shown = [None if d is None else (d.id, d["count"]) for d in found]
        say(tag, f"yield db.get(['apples', 'pears', 'kiwis']) -> {shown}")
        yield couch.delete("inventory")
        say(tag, "yield couch.delete('inventory') -> done")
        yield couch.close()

    return script()


# -- 3. blocking ---------------------------------------------------------------------------------


def blocking_part(url: str, auth: tuple[str, str], note_id: str) -> None:
    from corduroy2.blocking import Couch

    couch = Couch(url, auth=auth)
    try:
        db = couch.database("notes")
        note = db.get(note_id)  # returns the value; errors raise
        say("blocking", f"db.get({note_id[:8]}...) -> {note!r}")
        try:
            couch.database("Not A Valid Name")
        except ValueError as exc:
            say("blocking", f"bad db name raises before sending (in every style): "
                            f"ValueError: {str(exc)[:45]}...")
        couch.delete("notes")
        say("blocking", f"couch.delete('notes'); all_dbs now {couch.all_dbs()}")
    finally:
        couch.close()


# -- main ----------------------------------------------------------------------------------------


def stop_shared_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Stop the reactor, so its thread pool ends (its threads would keep the process alive)."""
    from twisted.internet import reactor

    if reactor.running:  # type: ignore[attr-defined]
        reactor.stop()  # type: ignore[attr-defined]
        loop.run_forever()  # the reactor stops the loop once its shutdown triggers have run
    loop.close()


def main() -> int:
    loop = install_shared_loop()  # before any other Twisted import

    from corduroy2.testing import PouchDBServer

    server = PouchDBServer(REPO / ".cache")
    say("server", "starting pouchdb-server (npm installs it into .cache/ on the first run)...")
    try:
        server.start()
        url, auth = server.url, server.admin
        say("server", f"{url} admin={auth[0]!r}")

        note_id = loop.run_until_complete(tornado_part(url, auth))
        loop.run_until_complete(twisted_part(url, auth).asFuture(loop))
        blocking_part(url, auth, note_id)
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        try:
            stop_shared_loop(loop)
        finally:
            server.stop()
            say("server", "stopped")
    print("demo finished: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
