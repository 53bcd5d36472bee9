"""A 200,000-change continuous ``_changes`` feed through each backend: lines/s.

The body is CouchDB 3's continuous framing (one change per LF-ended line, opaque string seqs,
already-available changes several per chunk, a final ``{"last_seq":...,"pending":0}`` line),
replayed by bench.rows's sendfile server (pinned to CPU 0, the clients to the last CPU). Per
backend, in fresh processes, each side's best run (on a shared machine, noise only ever adds
time), and the median over the repeats of each repeat's ratio (its runs are back to back, so a
drift of the machine's speed moves them alike):

* ``raw``: the same transport streams the body; lines are split and each ``orjson.loads``-ed;
* ``feed``: corduroy's ``ChangesFeed`` with ``latency=0``: ``callback(seq, [change])`` per change;
* ``batched``: the same with ``latency=0.05``: one call per batch of changes;
* ``iter``: ``async for change in db.iter_changes(...)`` (a plain ``for`` in blocking mode).

Targets: the callback feed >= 0.9x the raw line rate (issue 5); ``async for`` >= 0.9x the
per-change callback's rate (issue 19).

    python -m bench changes [--changes N] [--repeats K] [--only tornado-curl,...]
    python -m bench changes --instructions [--changes N]   # callgrind: repeatable figures

``--instructions`` reports instructions per change instead of time (see bench/instructions.py);
the rate ratio it implies is raw's count over corduroy2's.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import instructions
from bench.rows import (
    AIOHTTP_RAW, BACKENDS, answer_measurement, interleaved, make_loop, peak_rss_mb, preload,
    replay, twisted_client,
)

PATH = "/db/_changes?feed=continuous&since=0"
MODES = ("raw", "feed", "batched", "iter")


def build_body(changes: int, path: Path) -> int:
    """Write the chunked feed to ``path``; returns the payload size."""
    size = 0
    with open(path, "wb") as out:
        pending = bytearray()
        for i in range(1, changes + 1):
            seq = b'"%d-g1AAAAFReJzLYWBg4MhgTmHgz8tPSTV0MDQy0TM0MDE0MTHSMzQyNNEzNDQ%07d"' % (i, i)
            pending += (b'{"seq":%s,"id":"doc-%07d","changes":[{"rev":"1-%032x"}]}\n'
                        % (seq, i, i))
            if len(pending) >= 1490 or i == changes:
                out.write(b"%x\r\n%s\r\n" % (len(pending), bytes(pending)))
                size += len(pending)
                pending.clear()
        last = b'{"last_seq":"%d-g1AAAA","pending":0}\n' % changes
        out.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))
        size += len(last)
    return size


def measure(backend: str, mode: str, url: str, changes: int) -> dict[str, Any]:
    import asyncio

    import orjson

    loop = make_loop(backend)
    count = [0]
    tail = [b""]
    # The end, seen at the last change (polling feed.listening would wake the loop, or take the
    # GIL from the reading thread, a thousand times a second while it is measured).
    arrived = threading.Event()
    last: list[Any] = []

    def lines(chunk: bytes) -> None:
        # What a careful hand-written client does: split on LF, keep the partial last line.
        parts = (tail[0] + chunk).split(b"\n")
        tail[0] = parts.pop()
        for line in parts:
            if line:
                obj = orjson.loads(line)
                if "id" in obj:
                    count[0] += 1
                    if count[0] >= changes:  # the same end check as the callbacks below
                        arrived.set()

    def on_batch(seq: Any, batch: list[Any]) -> None:
        count[0] += len(batch)
        if count[0] >= changes:
            arrived.set()
            if last:
                last[0].set_result(None)

    def on_change(seq: Any, batch: list[Any]) -> None:
        # latency=0: one change per call, counted as the raw side counts a line
        count[0] += 1
        if count[0] >= changes:
            arrived.set()
            if last:
                last[0].set_result(None)

    on_changes = on_batch if mode == "batched" else on_change

    async def run_async() -> None:
        if mode == "raw":
            if backend in AIOHTTP_RAW:
                import aiohttp
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout()) as session:
                    async with session.get(url + PATH) as response:
                        async for chunk in response.content.iter_any():
                            lines(chunk)
            elif backend.startswith("tornado"):
                from tornado.httpclient import HTTPRequest
                if backend == "tornado-curl":
                    from tornado.curl_httpclient import CurlAsyncHTTPClient as cls
                else:
                    from tornado.simple_httpclient import SimpleAsyncHTTPClient as cls  # type: ignore
                client = cls(force_instance=True, max_body_size=1 << 40)
                await client.fetch(HTTPRequest(url + PATH, request_timeout=0,
                                               streaming_callback=lines))
            else:
                from twisted.internet import reactor
                from twisted.internet.defer import Deferred
                from twisted.internet.protocol import Protocol
                from twisted.web.client import Agent, HTTPConnectionPool

                done: Deferred[None] = Deferred()

                class Lines(Protocol):
                    def dataReceived(self, data: bytes) -> None:
                        lines(data)

                    def connectionLost(self, reason: Any = None) -> None:
                        done.callback(None)

                agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
                response = await agent.request(b"GET", (url + PATH).encode()).asFuture(loop)
                response.deliverBody(Lines())
                await done.asFuture(loop)
            return
        if backend.startswith("tornado"):
            from corduroy2.tornado_io import Couch
            couch: Any = Couch(url, client=backend.split("-")[1])
        else:
            from corduroy2.twisted_io import Couch
            couch = Couch(url, client=twisted_client(backend))
        if mode == "iter":
            async def iterate() -> None:
                async for _change in couch.database("db").iter_changes(since=0):
                    count[0] += 1

            if backend.startswith("twisted"):
                from twisted.internet.defer import Deferred
                await Deferred.fromCoroutine(iterate()).asFuture(loop)
            else:
                await iterate()
            return
        last.append(loop.create_future())
        feed = couch.database("db").changes(feed="continuous", since=0, callback=on_changes,
                                            latency=0.05 if mode == "batched" else 0)
        await last[0]
        while feed.listening:  # the last_seq line, just behind the last change
            await asyncio.sleep(0)

    def run_blocking() -> None:
        if mode == "raw":
            import http.client
            from urllib.parse import urlsplit
            parts = urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port)
            conn.request("GET", PATH)
            # The read buffer corduroy2's blocking backend gives streams (64 KiB, not 8 KiB):
            # the same transport, set up the same way.
            from corduroy2.blocking._repairs import StreamResponse, TimedReader
            conn.response_class = functools.partial(  # type: ignore[assignment]
                StreamResponse, reader=TimedReader(conn.sock))
            response = conn.getresponse()
            while chunk := response.read1(256 * 1024):
                lines(chunk)
            return
        from corduroy2.blocking import Couch
        if mode == "iter":
            for _change in Couch(url).database("db").iter_changes(since=0):
                count[0] += 1
            return
        feed = Couch(url).database("db").changes(feed="continuous", since=0, callback=on_changes,
                                                 latency=0.05 if mode == "batched" else 0)
        arrived.wait()
        while feed.listening:
            time.sleep(0.0001)

    preload(backend)
    start = time.perf_counter()
    if backend == "blocking":
        run_blocking()
    else:
        loop.run_until_complete(run_async())
    elapsed = time.perf_counter() - start
    assert count[0] == changes, f"{backend}/{mode}: {count[0]} changes, expected {changes}"
    return {"seconds": elapsed, "rss_mb": peak_rss_mb()}


def count_instructions(backends: list[str], n: int) -> int:
    """Instructions per change of each side, from runs over ``n`` and ``3n`` changes."""
    problem = instructions.available()
    if problem:
        print(f"--instructions: {problem}", file=sys.stderr)
        return 1
    with replay(lambda path: build_body(n, path), "corduroy2-bench-changes-") as (one, _), \
            replay(lambda path: build_body(3 * n, path), "corduroy2-bench-changes-") as (three, _):
        urls = {n: one, 3 * n: three}
        print(f"instructions per change (callgrind; {n:,} and {3 * n:,} changes); ratio = raw's "
              f"count / this side's (the rate ratio if time followed instructions; >= 0.90); "
              f"iter/cb = the per-change callback's count / async for's (>= 0.90)")
        print(f"{'backend':<15}{'raw':>8}{'per-change cb':>15}{'ratio':>7}{'batched cb':>12}"
              f"{'ratio':>7}{'async for':>11}{'ratio':>7}{'iter/cb':>9}")
        for backend in backends:
            counts = {mode: instructions.per_item(
                lambda k: ["-m", "bench", "changes", "--_measure", backend, mode, urls[k], str(k)],
                n) for mode in MODES}
            raw, feed, batched, it = (counts[m] for m in MODES)
            print(f"{backend:<15}{raw:>8,.0f}{feed:>15,.0f}{raw / feed:>7.3f}"
                  f"{batched:>12,.0f}{raw / batched:>7.3f}{it:>11,.0f}{raw / it:>7.3f}"
                  f"{feed / it:>9.3f}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench changes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=",".join(BACKENDS))
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per change under callgrind (default --changes "
                             "20000) instead of timing")
    parser.add_argument("--_measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        answer_measurement(args._measure, measure)
    if args.instructions:
        return count_instructions(args.only.split(","), 20_000 if args.changes == 200_000
                                  else args.changes)

    with replay(lambda path: build_body(args.changes, path), "corduroy2-bench-changes-") as (
            url, size):
        print(f"{args.changes:,} changes, {size / 1e6:.1f} MB, {os.cpu_count()} CPUs "
              f"(server and client pinned apart); best of {args.repeats}, and the median of "
              f"the repeats' ratios (a repeat's three runs are back to back)")
        print(f"{'backend':<15}{'raw lines/s':>13}{'per-change cb':>15}{'ratio':>7}{'median':>8}"
              f"{'batched cb':>12}{'ratio':>7}{'median':>8}{'async for':>11}{'ratio':>7}"
              f"{'median':>8}{'iter/cb':>8}{'median':>8}")
        for backend in args.only.split(","):
            results = interleaved("bench.changes", backend, list(MODES), args.repeats, url,
                                  args.changes)
            best = {mode: args.changes / min(r["seconds"] for r in rs)
                    for mode, rs in results.items()}
            # a repeat's runs are back to back: the median of their ratios
            paired = {(a, b): statistics.median(x["seconds"] / y["seconds"] for x, y in
                                                zip(results[a], results[b]))
                      for a, b in (("raw", "feed"), ("raw", "batched"), ("raw", "iter"),
                                   ("feed", "iter"))}
            raw = best["raw"]
            print(f"{backend:<15}{raw:>13,.0f}{best['feed']:>15,.0f}{best['feed'] / raw:>7.2f}"
                  f"{paired['raw', 'feed']:>8.2f}{best['batched']:>12,.0f}"
                  f"{best['batched'] / raw:>7.2f}{paired['raw', 'batched']:>8.2f}"
                  f"{best['iter']:>11,.0f}{best['iter'] / raw:>7.2f}{paired['raw', 'iter']:>8.2f}"
                  f"{best['iter'] / best['feed']:>8.2f}{paired['feed', 'iter']:>8.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
