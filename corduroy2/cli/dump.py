"""``corduroy2 dump DB``: every document, one JSON object per line (NDJSON), in id order.

The documents come from one streamed ``_all_docs?include_docs=true`` request and go to the
file as they are parsed, a received piece at a time (``all_docs(on_rows=...)``), so memory stays
flat whatever the database's size. (The row iterator, ``iter_all_docs``, reads on a thread of
its own: the two threads' handing over the GIL took the dump from the speed of ``curl`` to about
half of it on pouchdb-server; on the calling thread it keeps up.) With ``--attachments`` the request adds ``attachments=true`` and each document carries
its attachments inline (base64, as CouchDB sends them), which ``load`` writes back as they are;
without it the dump holds the documents without their ``_attachments``.

Resuming: ``_all_docs`` is ordered by id on every CouchDB (also on a sharded CouchDB 3, where it
is merged in id order), so the last complete line of an interrupted dump says where to go on:
``--resume`` drops a partial last line and asks for the ids from that one on. Documents changed
meanwhile at ids already dumped keep the version dumped then (as with any dump that is not a
snapshot: CouchDB has none).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, BinaryIO

import orjson

from .commands import Context
from .progress import meter

__all__ = ["dump", "resume_point"]

_BLOCK = 1 << 16


class DumpFileError(ValueError):
    """The file to resume is not a dump (a usage error: the wrong file was named)."""


def resume_point(f: BinaryIO) -> tuple[str | None, int]:
    """For a dump file open for reading and writing: drop a partial last line, and return the
    last complete line's ``_id`` (None for an empty file) and how many lines the file holds."""
    size = f.seek(0, os.SEEK_END)
    end = _last_newline(f, size)  # index of the last b"\n", or -1
    if end + 1 != size:
        f.truncate(end + 1)  # the line being written when the dump stopped
    if end < 0:
        return None, 0
    start = _last_newline(f, end) + 1
    f.seek(start)
    last = f.read(end - start)
    try:
        doc = orjson.loads(last)
        last_id = doc["_id"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        raise DumpFileError("the file's last line is not a dumped document") from None
    if not isinstance(last_id, str):
        raise DumpFileError("the file's last line is not a dumped document")
    return last_id, _count_lines(f, end + 1)


def _last_newline(f: BinaryIO, before: int) -> int:
    """The offset of the last b"\\n" before offset ``before``, or -1. Reads backwards by
    blocks: a line (a document with its attachments) may be long."""
    pos = before
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        found = f.read(step).rfind(b"\n")
        if found >= 0:
            return pos + found
    return -1


def _count_lines(f: BinaryIO, size: int) -> int:
    f.seek(0)
    count = 0
    while block := f.read(min(_BLOCK * 16, size - f.tell())):
        count += block.count(b"\n")
    return count


def dump(args: argparse.Namespace, ctx: Context) -> int:
    if args.resume and args.output in (None, "-"):
        raise ValueError("--resume needs -o FILE (a dump to stdout cannot be resumed)")
    db = ctx.server.database(args.db)
    total = db.info().get("doc_count")  # also checks the database exists before a file is made
    if args.output in (None, "-"):
        return _dump_to(sys.stdout.buffer, db, args.attachments, None, 0, total, ctx)
    if args.resume and os.path.exists(args.output):
        with open(args.output, "r+b") as f:
            after, done = resume_point(f)
            f.seek(0, os.SEEK_END)
            return _dump_to(f, db, args.attachments, after, done, total, ctx)
    with open(args.output, "wb") as f:
        return _dump_to(f, db, args.attachments, None, 0, total, ctx)


def _dump_to(out: BinaryIO, db: Any, attachments: bool, after: str | None, done: int,
             total: int | None, ctx: Context) -> int:
    """Write the docs whose id sorts after ``after`` (all of them when None) to ``out``."""
    opts: dict[str, Any] = {"include_docs": True}
    if attachments:
        opts["attachments"] = True
    if after is not None:
        opts["startkey"] = after  # inclusive: the row with that id is skipped below
    dumps = orjson.dumps
    with meter(f"dump {db.name}", ctx.progress, total_docs=total) as progress:
        progress.add(done)

        def write(rows: list[Any]) -> None:
            docs = [row.raw.get("doc") for row in rows]
            lines = b"".join(dumps(_stored(doc, attachments)) + b"\n" for doc in docs
                             if doc is not None and doc.get("_id") != after)
            out.write(lines)
            progress.add(len(rows), len(lines))

        db.all_docs(on_rows=write, **opts)
    out.flush()
    return 0


def _stored(doc: dict[str, Any], attachments: bool) -> dict[str, Any]:
    if not attachments:
        doc.pop("_attachments", None)
    return doc
