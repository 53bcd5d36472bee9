"""``corduroy2 load DB FILE``: write the documents of an NDJSON file (a dump) with
``_bulk_docs``, in batches, and account for every one of them.

Each document is written as a new revision of its id: the ``_rev`` it had where it was dumped
means nothing to the target, so it is dropped. A document whose id already exists in the target
is therefore a conflict, reported (not overwritten). Inline attachments (``dump
--attachments``) are written with their document.

Nothing is dropped silently: a line that is not a JSON object, and every document the server
did not write (conflict, forbidden, ...), is counted and named on stderr, and the exit status
is then 1. The file is read line by line; a batch holds at most ``--batch`` documents and about
:data:`MAX_BATCH_BYTES`, so memory is bounded by the batch, not the file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
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
    db = ctx.server.couch.db(args.db, create_if_missing=args.create)  # NotFound if missing
    failures = Failures()
    written = 0
    batch: list[dict[str, Any]] = []
    batch_bytes = 0
    with meter(f"load {db.name}", ctx.progress, total_bytes=size) as progress:
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
            doc.pop("_rev", None)
            batch.append(doc)
            batch_bytes += len(line)
            if len(batch) >= args.batch or batch_bytes >= MAX_BATCH_BYTES:
                written += _write(db, batch, batch_bytes, failures, progress)
                batch, batch_bytes = [], 0
        if batch:
            written += _write(db, batch, batch_bytes, failures, progress)
    if failures.items:
        failures.report(written, sys.stderr)
        return 1
    return 0


def _write(db: Any, batch: list[dict[str, Any]], nbytes: int, failures: Failures,
           progress: Meter) -> int:
    """One ``_bulk_docs``; returns how many docs it wrote, and records the others."""
    outcome = db.save(batch)
    written = 0
    for doc, result in zip(batch, outcome.results):
        if "error" in result:
            failures.add(str(result.get("id") or doc.get("_id")), str(result["error"]))
        else:
            written += 1
    for doc in batch[len(outcome.results):]:  # a server answering fewer results than docs
        failures.add(str(doc.get("_id")), "no answer")
    progress.add(len(batch), nbytes)
    return written
