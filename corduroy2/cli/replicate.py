"""``corduroy2 replicate SRC TGT``: start a replication and follow it to its end.

The replication is a ``_replicator`` document on the ``--url`` server
(``couch.start_replication``), followed through ``_scheduler/docs`` (``Replication.wait``):
the bar counts the documents written against the source's count. A one-shot replication is
followed until it completes; its counts are printed and its document, now only a record, is
deleted. A ``--continuous`` one is followed until interrupted and then left running on the
server (that is what was asked for); stderr names its document. Ctrl-C during a one-shot
replication cancels it.

SRC and TGT are database names on the ``--url`` server or full URLs; their credentials reach
CouchDB in its ``auth`` object, never in a URL, and what is printed never holds them (the
scheduler's entry names the endpoints with their credentials, so only the counts are shown).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import CouchError
from .commands import Context
from .progress import meter

__all__ = ["replicate"]

#: Longest pause between two looks at the replication's state (seconds).
MAX_POLL = 2.0


def replicate(args: argparse.Namespace, ctx: Context) -> int:
    source = ctx.server.database(args.source)
    target = ctx.server.database(args.target)
    total = _doc_count(source)
    couch = ctx.server.couch
    replication = couch.start_replication(source, target, continuous=args.continuous,
                                          create_target=args.create_target)
    written = [0]

    with meter(f"replicate {source.name} -> {target.name}", ctx.progress,
               total_docs=total) as progress:

        def show(state: Any) -> None:
            now = _counts(state).get("docs_written") or 0
            progress.add(now - written[0])
            written[0] = now

        try:
            final = replication.wait(on_progress=show, max_interval=MAX_POLL)
        except KeyboardInterrupt:
            if args.continuous:
                sys.stderr.write(f"corduroy2: the replication goes on: document "
                                 f"{replication.replicator_db}/{replication.id}\n")
            else:
                _cancel_quietly(replication)
                sys.stderr.write("corduroy2: replication cancelled\n")
            raise
    counts = _counts(final)
    ctx.out.json({"id": replication.id, "state": final.state, **counts})
    _cancel_quietly(replication)  # completed: the document is only a record now
    failures = counts.get("doc_write_failures") or 0
    if failures:
        sys.stderr.write(f"corduroy2: {failures} docs were not written to the target\n")
        return 1
    return 0


def _doc_count(db: Any) -> int | None:
    """The source's document count, for the bar's total (None when it cannot be read: the
    replication itself will say what is wrong)."""
    try:
        count = db.info().get("doc_count")
    except CouchError:
        return None
    return count if isinstance(count, int) else None


def _counts(state: Any) -> dict[str, Any]:
    """The numbers of a state's ``info`` (docs read, written, failed...), nothing else."""
    info = state.get("info")
    if not isinstance(info, dict):
        return {}
    return {k: v for k, v in info.items() if isinstance(v, (int, float)) and k != "error"}


def _cancel_quietly(replication: Any) -> None:
    try:
        replication.cancel()
    except CouchError:
        pass  # already gone: nothing left to stop
