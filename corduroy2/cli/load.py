"""``corduroy2 load DB FILE``: write the documents of an NDJSON file (a dump) with
``_bulk_docs``, in batches, and account for every one of them.

Each document is written as a new document of the target: the ``_rev`` it had where it was
dumped is dropped, so a document whose id already exists in the target is a conflict, reported
(not overwritten). With ``--keep-revs`` the documents keep their revisions instead
(``new_edits=false``, as the replicator and ``couchrestore`` write): a faithful restore into an
empty database, but over existing documents a different revision becomes a conflicting branch
without any error (that is what ``new_edits=false`` means). Inline attachments (``dump
--attachments``) are written with their document.

Nothing is dropped silently: a line that is not a JSON object, and every document the server
did not write (conflict, forbidden, ...), is counted and named on stderr, and the exit status
is then 1. The file is read line by line; a batch holds at most ``--batch`` documents and about
:data:`MAX_BATCH_BYTES`, so memory is bounded by the batch, not the file.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from .commands import Context
from .progress import Meter, meter

__all__ = ["load", "Failures", "MAX_BATCH_BYTES"]

#: A batch is sent once it holds this many bytes of JSON, even if it has fewer than ``--batch``
#: documents (documents with attachments can be large).
MAX_BATCH_BYTES = 8 << 20
#: Failed ids listed on stderr; the count always covers them all.
SHOW_IDS = 100


@dataclass
class Failures:
    """What was not written: (line number or doc id, reason), in file order."""

    items: list[tuple[str, str]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, what: str, reason: str) -> None:
        self.items.append((what, reason))
        self.reasons[reason] += 1

    def report(self, written: int, err: IO[str]) -> None:
        count = len(self.items)
        summary = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())
        err.write(f"corduroy2: {count} of {count + written} docs not written ({summary}):\n")
        for what, reason in self.items[:SHOW_IDS]:
            err.write(f"  {reason}\t{what}\n")
        if count > SHOW_IDS:
            err.write(f"  ... and {count - SHOW_IDS} more\n")


def load(args: argparse.Namespace, ctx: Context) -> int:
    if args.batch < 1:
        raise ValueError("--batch must be at least 1")
    if args.file == "-":
        return _load_from(sys.stdin.buffer, None, args, ctx)
    with open(args.file, "rb") as f:
        return _load_from(f, os.fstat(f.fileno()).st_size, args, ctx)


def _load_from(source: IO[bytes], size: int | None, args: argparse.Namespace,
               ctx: Context) -> int:
    if args.parallel < 1:
        raise ValueError("--parallel must be at least 1")
    db = ctx.server.couch.db(args.db, create_if_missing=args.create)  # NotFound if missing
    failures = Failures()
    written = 0
    save_opts = {"new_edits": False} if args.keep_revs else {}
    # Up to --parallel batches in flight: the server works on one while the next is read,
    # encoded and sent (the blocking front door is thread safe; each request has its own
    # connection). Outcomes are taken in file order.
    in_flight: collections.deque[tuple[Future[Any], list[dict[str, Any]], int]] = \
        collections.deque()
    with meter(f"load {db.name}", ctx.progress, total_bytes=size) as progress, \
            ThreadPoolExecutor(args.parallel, thread_name_prefix="corduroy2-load") as pool:
        for batch, nbytes in _batches(source, args.batch, args.keep_revs, failures):
            in_flight.append((pool.submit(db.save, batch, **save_opts), batch, nbytes))
            if len(in_flight) >= args.parallel:
                written += _settle(*in_flight.popleft(), failures, progress, args.keep_revs)
        while in_flight:
            written += _settle(*in_flight.popleft(), failures, progress, args.keep_revs)
    if failures.items:
        failures.report(written, sys.stderr)
        return 1
    return 0


def _batches(source: IO[bytes], size: int, keep_revs: bool,
             failures: Failures) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """The file's documents in batches of at most ``size`` documents and about
    :data:`MAX_BATCH_BYTES`, each with its size in the file; lines that are not a JSON object
    (and, to keep revisions, documents without one) are recorded in ``failures``."""
    batch: list[dict[str, Any]] = []
    nbytes = 0
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            failures.add(f"line {number}", "not a JSON object")
            continue
        if not keep_revs:
            doc.pop("_rev", None)
        elif not isinstance(doc.get("_rev"), str):
            # It would fail the whole batch (new_edits=false needs every rev).
            failures.add(f"line {number}", "no _rev to keep")
            continue
        batch.append(doc)
        nbytes += len(line)
        if len(batch) >= size or nbytes >= MAX_BATCH_BYTES:
            yield batch, nbytes
            batch, nbytes = [], 0
    if batch:
        yield batch, nbytes


def _settle(saving: Future[Any], batch: list[dict[str, Any]], nbytes: int, failures: Failures,
            progress: Meter, keep_revs: bool) -> int:
    """The outcome of one ``_bulk_docs``: how many docs it wrote (the others are recorded).
    An error of the request itself (the server or the connection failed) is raised."""
    results = saving.result().results
    progress.add(len(batch), nbytes)
    if keep_revs:
        # With new_edits=false CouchDB answers only the documents it refused.
        errors = [r for r in results if "error" in r]
        for result in errors:
            failures.add(str(result.get("id")), str(result["error"]))
        return len(batch) - len(errors)
    written = 0
    for doc, result in zip(batch, results):
        if "error" in result:
            failures.add(str(result.get("id") or doc.get("_id")), str(result["error"]))
        else:
            written += 1
    for doc in batch[len(results):]:  # a server answering fewer results than docs
        failures.add(str(doc.get("_id")), "no answer")
    return written
