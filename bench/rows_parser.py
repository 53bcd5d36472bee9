"""Benchmark RowStream against one ``orjson.loads`` of the whole body (not a test).

Builds a 1,000,000-row view body framed as CouchDB 3 frames it, cuts it into 1490-byte chunks
(couch_mrview's flush threshold) and times each way of getting the rows. Run:

    PYTHONPATH=. .venv/bin/python bench/rows_parser.py [rows] [repeats]
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from corduroy2.protocol.rows import NEED_DATA, End, Header, RowStream

CHUNK = 1490


def make_rows(count: int) -> list[dict[str, Any]]:
    return [{"id": f"doc-{i:06d}", "key": ["t0", i], "value": {"n": i, "s": "text"}} for i in range(count)]


def couch_body(rows: list[dict[str, Any]]) -> bytes:
    head = b'{"total_rows":%d,"offset":0,"rows":[\r\n' % len(rows)
    return head + b",\r\n".join(map(orjson.dumps, rows)) + b"\r\n]}\n"


def chunked(body: bytes) -> list[bytes]:
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


def stream_rows(chunks: list[bytes], *, keep: bool, freeze: bool) -> tuple[int, list[Any]]:
    """Feed chunks as a transport would, taking each chunk's rows as one batch.

    Returns the row count and the rows kept, so that freeing them is not timed (as for the
    baseline, whose result is freed after the clock stops).
    """
    stream = RowStream()
    kept: list[Any] = []
    count = 0
    for chunk in [*chunks, b""]:
        stream.receive_data(chunk)
        rows = stream.rows_ready()
        count += len(rows)
        if keep:
            kept += rows
        if freeze:
            gc.freeze()  # the rows kept so far are never rescanned by the cyclic GC
        while (event := stream.next_event()) is not NEED_DATA:
            assert isinstance(event, (Header, End)), event
            if isinstance(event, Header):
                count += len(stream.rows_ready())  # rows behind the header in the first chunk
    if freeze:
        gc.unfreeze()
    return count, kept


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` wall times; the heap is cleaned between runs."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
        del result
        gc.collect()
    return best


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rows = make_rows(count)
    body = couch_body(rows)
    line = orjson.dumps({"total_rows": count, "offset": 0, "rows": rows})  # pouchdb: one line
    del rows
    chunks, line_chunks = chunked(body), chunked(line)

    def check(result: tuple[int, list[Any]]) -> list[Any]:
        assert result[0] == count, result[0]
        return result[1]

    cases: list[tuple[str, Callable[[], object]]] = [
        ("orjson.loads(whole body)  [baseline]", lambda: orjson.loads(body)),
        ("RowStream, rows kept", lambda: check(stream_rows(chunks, keep=True, freeze=False))),
        ("RowStream, rows kept, gc.freeze()", lambda: check(stream_rows(chunks, keep=True, freeze=True))),
        ("RowStream, rows dropped", lambda: check(stream_rows(chunks, keep=False, freeze=False))),
        ("general path, kept, gc.freeze()", lambda: check(stream_rows(line_chunks, keep=True, freeze=True))),
        ("general path, rows dropped", lambda: check(stream_rows(line_chunks, keep=False, freeze=False))),
    ]
    print(f"{count:,} rows, {len(body) / 1e6:.1f} MB in {len(chunks):,} chunks of {CHUNK} bytes; "
          f"best of {repeats}; Python {sys.version.split()[0]}, orjson {orjson.__version__}")
    print(f"{'way':<40} {'seconds':>8} {'x baseline':>11}")
    baseline = 0.0
    for name, fn in cases:
        seconds = timed(fn, repeats)
        baseline = baseline or seconds
        print(f"{name:<40} {seconds:>8.3f} {seconds / baseline:>11.2f}")


if __name__ == "__main__":
    main()
