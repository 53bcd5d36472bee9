"""The small commands: ``info``, ``dbs``, ``get``, ``put``, ``view``, ``find``, ``changes``.

Each takes the parsed arguments and a :class:`Context` and returns the exit status; errors
propagate to :func:`corduroy2.cli.main`, which turns them into a one-line message and a status.
Results are streamed where they can be long (rows, docs, changes): memory stays flat.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from .connect import Server
from .output import Output, parse_json_arg, parse_options

__all__ = ["Context", "info", "dbs", "get", "put", "view", "find", "changes"]

#: Changes per request when reading a feed to its current end (``changes`` without
#: ``--follow``): pages of a normal feed keep memory bounded however long the feed is.
CHANGES_PAGE = 1000
#: Docs per page of a Mango query (paged by bookmark).
FIND_PAGE = 1000


@dataclass
class Context:
    server: Server
    out: Output
    progress: bool  # draw progress bars (stderr is a terminal and --quiet was not given)


def info(args: argparse.Namespace, ctx: Context) -> int:
    """The server's welcome object, or a database's info."""
    if args.db is None:
        ctx.out.json(ctx.server.couch.info())
    else:
        ctx.out.json(ctx.server.database(args.db).info())
    return 0


def dbs(args: argparse.Namespace, ctx: Context) -> int:
    """The database names, one per line."""
    for name in ctx.server.couch.all_dbs():
        ctx.out.text(name)
    return 0


def get(args: argparse.Namespace, ctx: Context) -> int:
    opts = parse_options(args.opt)
    if args.rev:
        opts["rev"] = args.rev
    ctx.out.json(ctx.server.database(args.db).get(args.id, **opts))
    return 0


def put(args: argparse.Namespace, ctx: Context) -> int:
    """Create or update the document in FILE (``-``: stdin); prints ``{"ok", "id", "rev"}``."""
    if args.file == "-":
        raw = sys.stdin.buffer.read()
    else:
        with open(args.file, "rb") as f:
            raw = f.read()
    doc = parse_json_arg(raw.decode("utf-8", "replace"), args.file)
    if not isinstance(doc, dict):
        raise ValueError(f"{args.file}: a document must be a JSON object")
    saved = ctx.server.database(args.db).save(doc)
    ctx.out.json({"ok": True, "id": saved["_id"], "rev": saved.get("_rev")})
    return 0


def view(args: argparse.Namespace, ctx: Context) -> int:
    """A view's (or ``_all_docs``'s) rows, one per line, streamed."""
    db = ctx.server.database(args.db)
    with db.iter_view(args.view, **parse_options(args.opt)) as rows:
        for row in rows:
            ctx.out.json(row.raw)
    return 0


def find(args: argparse.Namespace, ctx: Context) -> int:
    """The docs a Mango selector matches, one per line (all of them, paged by bookmark, unless
    ``--opt limit=N``)."""
    selector = parse_json_arg(args.selector, "SELECTOR")
    if not isinstance(selector, dict):
        raise ValueError("SELECTOR must be a JSON object")
    db = ctx.server.database(args.db)
    for page in db.find_pages(selector, page_size=FIND_PAGE, **parse_options(args.opt)):
        for doc in page.docs:
            ctx.out.json(doc)
    return 0


def changes(args: argparse.Namespace, ctx: Context) -> int:
    """The changes since ``--since`` (default: all), one per line, then ``{"last_seq": ...}``;
    with ``--follow``, the changes as they happen, until interrupted."""
    db = ctx.server.database(args.db)
    since: Any = args.since if args.since is not None else 0
    opts = parse_options(args.opt)
    if args.follow:
        return _follow(db, since, opts, ctx.out)
    while True:
        page = db.changes(since=since, limit=CHANGES_PAGE, **opts)
        for change in page["results"]:
            ctx.out.json(change)
        since = page["last_seq"]
        if _last_page(page):
            break
    ctx.out.json({"last_seq": since})
    return 0


def _last_page(page: dict[str, Any]) -> bool:
    """Whether a page of the feed reached its current end: CouchDB 3 says how many changes are
    ``pending`` (a sharded database may answer fewer than ``limit`` before the end); a server
    that does not say (pouchdb-server) ended with a short page."""
    if not page["results"]:
        return True
    pending = page.get("pending")
    if isinstance(pending, int):
        return pending == 0
    return len(page["results"]) < CHANGES_PAGE


def _follow(db: Any, since: Any, opts: dict[str, Any], out: Output) -> int:
    """Follow the feed (reconnecting as needed) until Ctrl-C, or an error following cannot
    get past (a deleted database, lost permissions): that one is raised."""
    failure: list[BaseException] = []

    def show(change: dict[str, Any]) -> None:
        out.json(change)
        out.flush()  # a reader at the other end of a pipe sees each change as it comes

    follower = db.follow(show, since=since, on_error=failure.append, **opts)
    follower.run()
    if failure:
        raise failure[0]
    return 0
