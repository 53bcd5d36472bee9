"""GET one small document: each corduroy2 backend next to the raw transport it sits on.

    ./dev.sh bench get [--pairs 60] [--block 200] [--only tornado-curl,...] [--concurrency 1,32]
    ./dev.sh bench get --instructions [--concurrency 1,32]   # callgrind counts, repeatable
    ./dev.sh bench get --profile tornado-curl      # cProfile of corduroy2's c=1 loop

A script, not a test. nginx (from Debian; installed when missing and running as root) serves a
~200-byte CouchDB-shaped document with the headers CouchDB sends, on a free loopback port, with
its own config in a temp dir; it is stopped at the end.

Each pair's two clients are open side by side and make requests in blocks (``--block``
requests, at least 20 per chain at concurrency c), raw and corduroy2 alternating, ``--pairs``
blocks each after a few unmeasured ones. The overhead is the median over the pairs of blocks
of 1 - corduroy2/raw: two blocks run back to back, within a fraction of a second, so the
machine's speed (which drifts by 20-40% within seconds on a shared VM) is nearly the same for
both. With two CPUs or more, nginx is pinned to CPU 0 and the client to the last CPU
(``--no-pin``: neither).

- tornado-curl / tornado-simple: ``CurlAsyncHTTPClient`` / ``SimpleAsyncHTTPClient``
  ``.fetch`` + ``orjson.loads`` vs ``corduroy2.tornado_io`` ``db.get`` (Future).
- tornado-aiohttp: aiohttp's ``session.get`` + ``read`` + ``orjson.loads`` in a task per
  request, on the same loop, vs ``corduroy2.tornado_io`` ``Couch(client="aiohttp")``.
- tornado-httptools: the same raw aiohttp vs ``Couch(client="httptools")`` (HTTP/1.1 on
  asyncio's connections, parsed by httptools): negative where corduroy2 is faster than aiohttp.
- twisted: ``Agent`` on ``HTTPConnectionPool(persistent=True)`` + ``readBody`` +
  ``orjson.loads`` vs ``corduroy2.twisted_io`` ``db.get`` (Deferred). On the shared asyncio loop
  (Twisted's asyncioreactor, as the tests run), and on Twisted's default (epoll) reactor in a
  subprocess (``twisted-epoll``).
- twisted-httptools: the same raw ``Agent`` vs ``corduroy2.twisted_io`` over its own transport
  (``Couch(client="httptools")``): the raw side is still Twisted's own client, so the
  "overhead" is negative where corduroy2 is faster than Agent itself.
- blocking: ``http.client`` keep-alive + ``orjson.loads`` vs ``corduroy2.blocking`` ``db.get``;
  c=32 is 32 threads (one connection each).

Async clients are driven by completion callbacks (a finished request starts the next), so the
harness adds as little as possible to either side: overhead = 1 - corduroy2 / raw.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from corduroy2.api.couch import USER_AGENT

from . import instructions
from .rows import AIOHTTP_RAW, twisted_client
from .nginx import Nginx, connections_accepted

TARGET = 0.10  # overhead goal
DOC_PATH = "/db/doc1"
REV = "1-967a00dff5e02add41819138abb3284d"
DOC = {
    "_id": "doc1",
    "_rev": REV,
    "title": "Relaxing with CouchDB",
    "type": "post",
    "author": "jan",
    "tags": ["couchdb", "http", "json"],
    "body": "Django may be built for the Web, but CouchDB is built of the Web.",
    "created": "2026-11-22T10:00:00Z",
}
BODY = orjson.dumps(DOC) + b"\n"  # CouchDB ends document bodies with a newline
# What CouchDB 3 adds to a document GET (nginx adds Server, Date, Content-Type/-Length).
COUCH_HEADERS = [
    ("Cache-Control", "must-revalidate"),
    ("ETag", f'"{REV}"'),
    ("X-Couch-Request-ID", "8fe3a1c2d4"),
    ("X-CouchDB-Body-Time", "0"),
]
# The raw clients send what corduroy2 sends, so both sides move the same bytes.
REQUEST_HEADERS = [("Accept", "application/json"), ("User-Agent", USER_AGENT)]

Done = Callable[[BaseException | None], None]
Issue = Callable[[Done], None]  # start one request; done(error or None) when it completes
Get = Callable[[int], None]  # one blocking request on thread i's connection

ALL = ["tornado-curl", "tornado-simple", "tornado-aiohttp", "tornado-httptools", "twisted",
       "twisted-epoll", "twisted-httptools", "blocking"]
CONCURRENCY = (1, 32)


@dataclass
class Settings:
    url: str
    pairs: int  # blocks of each side, interleaved
    block: int  # requests per block at c=1 (at c, max(block, 20 * c))
    warmup: int  # unmeasured blocks of each side first

    def requests(self, concurrency: int) -> int:
        return max(self.block, 20 * concurrency)


def _check(doc: Any) -> None:
    if doc.get("_id") != "doc1":
        raise AssertionError(f"unexpected document: {doc!r:.100}")


# -- event-loop modes ---------------------------------------------------------------------------


class AsyncioMode:
    """One asyncio loop shared by Tornado and Twisted (asyncioreactor), as in tests/conftest.py."""

    name = "asyncio"

    def __init__(self) -> None:
        import asyncio

        from twisted.internet import asyncioreactor

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        asyncioreactor.install(self.loop)
        from twisted.internet import reactor

        reactor.startRunning(installSignalHandlers=False)  # type: ignore[attr-defined]

    def promise(self) -> tuple[Any, Callable[[Any], None]]:
        future = self.loop.create_future()
        return future, future.set_result

    def wait(self, thing: Any) -> Any:
        from twisted.internet.defer import Deferred

        return thing.asFuture(self.loop) if isinstance(thing, Deferred) else thing

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        """Stop the reactor: its shutdown stops the thread pool, whose (non-daemon) threads
        would otherwise keep the process alive after main returns."""
        from twisted.internet import reactor

        reactor.stop()  # its shutdown ends with crash(), which stops the asyncio loop
        safety = self.loop.call_later(5, self.loop.stop)
        self.loop.run_forever()
        safety.cancel()
        self.loop.close()


class TwistedMode:
    """Twisted's default reactor (epoll on Linux), alone in its process."""

    def __init__(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.name = type(reactor).__name__

    def promise(self) -> tuple[Any, Callable[[Any], None]]:
        from twisted.internet.defer import Deferred

        deferred: Deferred[Any] = Deferred()
        return deferred, deferred.callback

    def wait(self, thing: Any) -> Any:
        return thing

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        from twisted.internet.defer import Deferred

        box: list[Any] = []
        deferred = Deferred.fromCoroutine(coro)
        deferred.addBoth(box.append)
        deferred.addBoth(lambda _: self.reactor.stop())
        if not box:
            self.reactor.run(installSignalHandlers=False)
        if box and hasattr(box[0], "raiseException"):
            box[0].raiseException()
        return box[0]


# -- the measuring loops ------------------------------------------------------------------------


def _call_soon_safe(done: Done, fn: Callable[[], Any]) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - reported by the harness
        done(exc)
        return
    done(None)


async def _async_block(mode: Any, issue: Issue, n: int, concurrency: int) -> None:
    """``n`` requests in ``concurrency`` chains, each starting the next request when one
    completes (so the harness adds as little as possible); returns once all have completed."""
    promise, resolve = mode.promise()
    left, inflight, failed = n, 0, []

    def completed(error: BaseException | None) -> None:
        nonlocal left, inflight
        inflight -= 1
        if error is not None:
            failed.append(error)
            left = 0
        if left:
            left -= 1
            inflight += 1
            issue(completed)
        elif not inflight:
            resolve(None)

    for _ in range(min(concurrency, n)):
        left -= 1
        inflight += 1
        issue(completed)
    await mode.wait(promise)
    if failed:
        raise RuntimeError(f"a request failed: {failed[0]!r}") from failed[0]


class _Threads:
    """``concurrency`` worker threads kept for the whole measurement (starting 32 threads per
    block would be timed too); c=1 runs in the calling thread."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None

    def block(self, get: Get, n: int, profile: cProfile.Profile | None = None) -> None:
        """``n`` requests, shared between the threads; ``get(i)`` makes one on thread i's
        connection."""
        c = self.concurrency

        def work(i: int) -> None:
            if profile is not None:
                profile.enable()  # cProfile hooks only the calling thread
            try:
                for _ in range(n // c + (i < n % c)):
                    get(i)
            finally:
                if profile is not None:
                    profile.disable()

        if self.pool is None:
            work(0)
            return
        for future in [self.pool.submit(work, i) for i in range(c)]:
            future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


# -- the clients ------------------------------------------------------------------------------
# Each maker returns (issue, close) for one measurement; fresh clients every time.


def tornado_raw(settings: Settings, concurrency: int, kind: str) -> tuple[Issue, Callable[[], Any]]:
    from tornado.httpclient import HTTPResponse
    from tornado.simple_httpclient import SimpleAsyncHTTPClient

    if kind == "curl":
        from tornado.curl_httpclient import CurlAsyncHTTPClient as cls
    else:
        cls = SimpleAsyncHTTPClient  # type: ignore[assignment]
    client = cls(force_instance=True, max_clients=concurrency)
    url = settings.url + DOC_PATH
    headers = dict(REQUEST_HEADERS)

    def issue(done: Done) -> None:
        def finished(future: Any) -> None:
            def decode() -> None:
                response: HTTPResponse = future.result()
                if response.code != 200:
                    raise RuntimeError(f"HTTP {response.code}: {response.error!r}")
                _check(orjson.loads(response.body))

            _call_soon_safe(done, decode)

        client.fetch(url, headers=headers, raise_error=False).add_done_callback(finished)

    return issue, client.close


def tornado_corduroy(settings: Settings, concurrency: int,
                     kind: str) -> tuple[Issue, Callable[[], Any]]:
    from corduroy2.tornado_io import Couch

    couch = Couch(settings.url, client=kind, max_connections=concurrency)
    db = couch.database("db")

    def issue(done: Done) -> None:
        def finished(future: Any) -> None:
            _call_soon_safe(done, lambda: _check(future.result()))

        db.get("doc1").add_done_callback(finished)

    return issue, couch.close


def aiohttp_raw(settings: Settings, concurrency: int) -> tuple[Issue, Callable[[], Any]]:
    """aiohttp itself on the same loop: a task per request, as the harness issues requests by
    callback (corduroy2's aiohttp transport runs one per request too)."""
    import asyncio

    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                    skip_auto_headers=("Accept-Encoding", "User-Agent"))
    url = settings.url + DOC_PATH
    headers = dict(REQUEST_HEADERS)

    async def get() -> None:
        async with session.get(url, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        _check(orjson.loads(body))

    def issue(done: Done) -> None:
        def finished(task: Any) -> None:
            done(task.exception())

        asyncio.ensure_future(get()).add_done_callback(finished)

    return issue, session.close


def twisted_raw(settings: Settings, concurrency: int) -> tuple[Issue, Callable[[], Any]]:
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool, readBody
    from twisted.web.http_headers import Headers

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = concurrency
    agent = Agent(reactor, pool=pool)
    url = (settings.url + DOC_PATH).encode()
    accept = [(name.encode(), [value.encode()]) for name, value in REQUEST_HEADERS]

    def got(response: Any) -> Any:
        if response.code != 200:
            raise RuntimeError(f"HTTP {response.code}")
        return readBody(response)

    def decoded(body: bytes) -> None:
        _check(orjson.loads(body))

    def issue(done: Done) -> None:
        requesting = agent.request(b"GET", url, Headers(dict(accept)))
        requesting.addCallback(got)
        requesting.addCallback(decoded)
        requesting.addCallbacks(lambda _: done(None), lambda failure: done(failure.value))

    return issue, pool.closeCachedConnections


def twisted_corduroy(settings: Settings, concurrency: int,
                     client: str = "agent") -> tuple[Issue, Callable[[], Any]]:
    from corduroy2.twisted_io import Couch

    couch = Couch(settings.url, max_connections=concurrency, client=client)
    db = couch.database("db")

    def finished(doc: Any, done: Done) -> None:
        _call_soon_safe(done, lambda: _check(doc))

    def issue(done: Done) -> None:
        db.get("doc1").addCallbacks(finished, lambda failure: done(failure.value),
                                    callbackArgs=(done,))

    return issue, couch.close


def blocking_raw(settings: Settings, concurrency: int) -> tuple[Get, Callable[[], Any]]:
    parts = urlsplit(settings.url)
    headers = dict(REQUEST_HEADERS)
    conns = [http.client.HTTPConnection(parts.hostname, parts.port) for _ in range(concurrency)]

    def get(i: int) -> None:
        conn = conns[i]  # thread i's own connection
        conn.request("GET", DOC_PATH, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        _check(orjson.loads(body))

    def close() -> None:
        for conn in conns:
            conn.close()

    return get, close


def blocking_corduroy(settings: Settings, concurrency: int) -> tuple[Get, Callable[[], Any]]:
    from corduroy2.blocking import Couch

    couch = Couch(settings.url, max_connections=concurrency)
    db = couch.database("db")

    def get(i: int) -> None:
        _check(db.get("doc1"))

    return get, couch.close


# -- one pair: its two clients, interleaved blocks ------------------------------------------


class _Client:
    """One side of a pair, ready to run blocks of requests."""

    def __init__(self, mode: Any, settings: Settings, backend: str, side: str,
                 concurrency: int) -> None:
        self.mode, self.concurrency = mode, concurrency
        self.threads: _Threads | None = None
        if backend == "blocking":
            maker = blocking_raw if side == "raw" else blocking_corduroy
            self.get, self._close = maker(settings, concurrency)
            self.threads = _Threads(concurrency)
        else:
            self.issue, self._close = _async_client(settings, backend, side, concurrency)

    async def block(self, n: int, profile: cProfile.Profile | None = None) -> None:
        if self.threads is not None:
            self.threads.block(self.get, n, profile)
            return
        if profile is not None:
            profile.enable()
        try:
            await _async_block(self.mode, self.issue, n, self.concurrency)
        finally:
            if profile is not None:
                profile.disable()

    async def close(self) -> None:
        if self.threads is not None:
            self.threads.close()
        closing = self._close()
        if closing is not None:
            await self.mode.wait(closing)


def _async_client(settings: Settings, backend: str, side: str,
                  concurrency: int) -> tuple[Issue, Callable[[], Any]]:
    if backend in AIOHTTP_RAW and side == "raw":
        return aiohttp_raw(settings, concurrency)
    if backend.startswith("tornado-"):
        kind = backend.split("-", 1)[1]
        maker = tornado_raw if side == "raw" else tornado_corduroy
        return maker(settings, concurrency, kind)
    if side == "raw":  # Agent, under either corduroy2 transport
        return twisted_raw(settings, concurrency)
    return twisted_corduroy(settings, concurrency, twisted_client(backend))


async def count_requests(mode: Any, settings: Settings, backend: str, side: str, n: int,
                         concurrency: int = 1) -> None:
    """``n`` requests, once, with no clock: one run for instruction counts."""
    client = _Client(mode, settings, backend, side, concurrency)
    try:
        await client.block(n)
    finally:
        await client.close()


def count_instructions(settings: Settings, backends: list[str], n: int,
                       concurrencies: list[int]) -> list[str]:
    """Rows of the instructions table: per request, each side, at each concurrency."""
    lines = ["| backend | c | raw instr/req | corduroy2 instr/req | overhead | ≤10%? |",
             "|---|---|---|---|---|---|"]
    for backend in backends:
        for c in concurrencies:
            counts = {side: instructions.per_item(
                lambda k: ["-m", "bench", "get", "--_count", backend, side, str(k),
                           settings.url, "--concurrency", str(c)], n)
                for side in ("raw", "corduroy2")}
            overhead = 1 - counts["raw"] / counts["corduroy2"]
            lines.append(f"| {backend} | {c} | {counts['raw']:,.0f} | "
                         f"{counts['corduroy2']:,.0f} | {overhead * 100:.1f}% | "
                         f"{'yes' if overhead <= TARGET else 'NO'} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


@dataclass
class Row:
    backend: str
    concurrency: int
    raw: list[float]  # req/s of each block
    corduroy: list[float]
    raw_cpu: list[float]  # client CPU µs per request of each block
    corduroy_cpu: list[float]
    raw_conns: int  # TCP connections opened in all the measured blocks
    corduroy_conns: int

    @property
    def paired(self) -> list[float]:
        """The overhead of each pair of blocks: they run back to back, so the machine's speed,
        which drifts within seconds on a shared VM, is nearly the same for both."""
        return [1 - c / r for r, c in zip(self.raw, self.corduroy)]

    @property
    def overhead(self) -> float:
        return statistics.median(self.paired)


async def measure_pair(mode: Any, settings: Settings, backend: str, concurrency: int,
                       profile: tuple[str, cProfile.Profile] | None = None) -> Row:
    """``settings.pairs`` blocks of each side, alternating (raw first, then corduroy2 first),
    after ``settings.warmup`` unmeasured blocks of each. Both clients stay open throughout."""
    port = urlsplit(settings.url).port or 80
    n = settings.requests(concurrency)
    clients = {side: _Client(mode, settings, backend, side, concurrency)
               for side in ("raw", "corduroy2")}
    row = Row(backend, concurrency, [], [], [], [], 0, 0)
    try:
        for _ in range(settings.warmup):
            for client in clients.values():
                await client.block(n)
        for i in range(settings.pairs):
            for side in ("raw", "corduroy2") if i % 2 == 0 else ("corduroy2", "raw"):
                hook = profile[1] if profile is not None and profile[0] == side else None
                before = connections_accepted(port)
                t0, cpu0 = time.perf_counter(), time.process_time()
                await clients[side].block(n, hook)
                t1, cpu1 = time.perf_counter(), time.process_time()
                # minus 1: the status request itself
                conns = connections_accepted(port) - before - 1
                if side == "raw":
                    row.raw.append(n / (t1 - t0))
                    row.raw_cpu.append((cpu1 - cpu0) / n * 1e6)
                    row.raw_conns += conns
                else:
                    row.corduroy.append(n / (t1 - t0))
                    row.corduroy_cpu.append((cpu1 - cpu0) / n * 1e6)
                    row.corduroy_conns += conns
    finally:
        for client in clients.values():
            await client.close()
    return row


async def suite(mode: Any, settings: Settings, pairs: list[tuple[str, int]],
                log: Callable[[str], None]) -> list[Row]:
    rows = []
    for backend, concurrency in pairs:
        row = await measure_pair(mode, settings, backend, concurrency)
        log(f"  {backend:<15} c={concurrency:<3} raw {statistics.median(row.raw):9,.0f} req/s"
            f"  corduroy2 {statistics.median(row.corduroy):9,.0f} req/s"
            f"  overhead {row.overhead * 100:5.1f}%")
        rows.append(row)
    return rows


def _epoll_subprocess(settings: Settings, pairs: list[tuple[str, int]]) -> list[Row]:
    """The twisted pairs again, on Twisted's default reactor, in a fresh process."""
    cmd = [sys.executable, "-m", "bench", "get", "--url", settings.url, "--json",
           "--pairs", str(settings.pairs), "--block", str(settings.block),
           "--warmup", str(settings.warmup), "--_default-reactor",
           "--concurrency", ",".join(str(c) for _, c in pairs), "--only", "twisted"]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    data = json.loads(out)
    return [Row(**{**r, "backend": f"twisted-{data['reactor']}"}) for r in data["rows"]]


# -- output -------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    head = ("| backend | c | raw req/s | corduroy2 req/s | overhead | middle half | ≤10%? "
            "| CPU µs/req raw → c2 | new conns raw/c2 |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        low, _, high = statistics.quantiles(r.paired, n=4)
        lines.append(
            f"| {r.backend} | {r.concurrency} | {statistics.median(r.raw):,.0f} | "
            f"{statistics.median(r.corduroy):,.0f} | {r.overhead * 100:.1f}% | "
            f"{low * 100:.1f} … {high * 100:.1f}% | "
            f"{'yes' if r.overhead <= TARGET else 'NO'} | "
            f"{statistics.median(r.raw_cpu):.0f} → {statistics.median(r.corduroy_cpu):.0f} | "
            f"{r.raw_conns}/{r.corduroy_conns} |"
        )
    return "\n".join(lines)


def pin(cpu: int | None) -> str:
    """Run this process (and the threads and subprocesses it starts) on ``cpu`` only."""
    if cpu is None:
        return "nothing pinned"
    os.sched_setaffinity(0, {cpu})
    return f"server on CPU 0, client on CPU {cpu}"


def environment(server: str, pinned: str) -> str:
    import platform

    import tornado
    import twisted

    try:
        import pycurl

        curl = pycurl.version
    except ImportError:
        curl = "no pycurl"
    return (f"nproc={os.cpu_count()} ({pinned}), Python {platform.python_version()}, "
            f"tornado {tornado.version}, Twisted {twisted.__version__}, orjson "
            f"{orjson.__version__}, {curl.split()[0]} {curl.split()[1] if ' ' in curl else ''}"
            f"; server {server}")


# -- entry point ------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench get", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=60,
                        help="measured blocks of each side, alternating (overhead: the median "
                             "of the pairs' overheads)")
    parser.add_argument("--block", type=int, default=200,
                        help="requests per block (at concurrency c: at least 20 * c)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured blocks of each side")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin nginx to CPU 0 and the clients to the last CPU")
    parser.add_argument("--only", default=",".join(ALL),
                        help=f"comma-separated backends among {', '.join(ALL)}")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated, e.g. 1,32")
    parser.add_argument("--url", help="use this server (serving /db/doc1) instead of nginx")
    parser.add_argument("--profile", metavar="BACKEND",
                        help="instead of the table: cProfile one side of BACKEND's pair at the "
                             "first --concurrency")
    parser.add_argument("--profile-side", default="corduroy2", choices=("corduroy2", "raw"))
    parser.add_argument("--profile-sort", default="tottime")
    parser.add_argument("--profile-lines", type=int, default=30)
    parser.add_argument("--instructions", action="store_true",
                        help="instead of timing: instructions per request under callgrind "
                             "(repeatable on a busy machine; see bench/instructions.py)")
    parser.add_argument("--requests", type=int, default=300,
                        help="with --instructions: requests per run (the second run makes 3x)")
    parser.add_argument("--_count", nargs=4, metavar=("BACKEND", "SIDE", "N", "URL"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_default-reactor", dest="default_reactor", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ALL)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.profile and args.profile not in ALL:
        parser.error(f"--profile takes one of {', '.join(ALL)}")
    return args


def _profile(mode: Any, settings: Settings, backend: str, side: str, sort: str,
             lines: int, concurrency: int) -> None:
    profile = cProfile.Profile()
    try:
        row = mode.run(measure_pair(mode, settings, backend, concurrency, (side, profile)))
    finally:
        mode.close()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    rate = statistics.median(row.raw if side == "raw" else row.corduroy)
    count = settings.pairs * settings.requests(concurrency)
    print(f"# cProfile: {backend} {side} c={concurrency}, {rate:,.0f} req/s under the profiler, "
          f"{total / count * 1e6:.1f} µs of profiled time per request")
    stats.sort_stats(sort).print_stats(lines)
    print(out.getvalue())


def main(argv: list[str]) -> int:
    args = _parse(argv)
    settings = Settings(args.url or "", args.pairs, args.block, args.warmup)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    chosen = args.only.split(",")
    log = (lambda text: print(text, file=sys.stderr, flush=True))

    if args._count:  # one run of --instructions, in this fresh process
        backend, side, n, settings.url = args._count
        mode: Any = TwistedMode() if backend == "twisted-epoll" else AsyncioMode()
        mode.run(count_requests(mode, settings, backend.replace("-epoll", ""), side, int(n),
                                concurrencies[0]))
        os._exit(0)  # Twisted's reactor thread pool (non-daemon threads) would keep it alive

    if args.default_reactor:  # the subprocess half of twisted-epoll
        mode = TwistedMode()
        pairs = [("twisted", c) for c in concurrencies]
        rows = mode.run(suite(mode, settings, pairs, log))
        print(json.dumps({"reactor": mode.name.replace("Reactor", "").lower(),
                          "rows": [r.__dict__ for r in rows]}))
        return 0

    server = None
    # Pinned, the client and nginx each have a core of their own (with 2 CPUs, the scheduler
    # otherwise moves them about, and a run's speed with it); not with --instructions (counts).
    cpu = (os.cpu_count() or 1) - 1 if args.pin and (os.cpu_count() or 1) > 1 else None
    if args.instructions or args.profile:
        cpu = None
    try:
        if not args.url:
            server = Nginx({DOC_PATH: (BODY, COUCH_HEADERS)}, cpu=0 if cpu is not None else None)
            server.start()
            settings.url = server.url
        if args.instructions:
            problem = instructions.available()
            if problem:
                raise SystemExit(f"--instructions: {problem}")
            log(f"GET {DOC_PATH}: instructions per request at c={args.concurrency} (callgrind; "
                f"{args.requests} and {3 * args.requests} requests per side). Left out: the "
                f"kernel's share (the same on both sides) and the cost of cache and branch "
                f"misses (more Python per request pays more of them)")
            print("\n".join(count_instructions(settings, chosen, args.requests, concurrencies)))
            return 0
        if args.profile:
            backend = args.profile
            if backend == "twisted-epoll":
                raise SystemExit("profile twisted-epoll by hand: the table's subprocess")
            _profile(AsyncioMode(), settings, backend, args.profile_side, args.profile_sort,
                     args.profile_lines, concurrencies[0])
            return 0
        pinned = pin(cpu)
        log(f"GET {DOC_PATH} ({len(BODY)} bytes) from {settings.url}; {settings.pairs} "
            f"blocks of {settings.block} requests (20 x c at c > 10) per side, interleaved, "
            f"after {settings.warmup} unmeasured; {pinned}")
        pairs = []
        for backend in chosen:
            if backend == "twisted-epoll":
                continue
            pairs += [(backend, c) for c in concurrencies]
        mode = AsyncioMode()
        try:
            rows = mode.run(suite(mode, settings, pairs, log))
        finally:
            mode.close()
        if "twisted-epoll" in chosen:
            log("  twisted on its default reactor, in a subprocess:")
            rows += _epoll_subprocess(settings, [("twisted", c) for c in concurrencies])
        if args.json:
            print(json.dumps({"reactor": "asyncio", "rows": [r.__dict__ for r in rows]}))
            return 0
        print(f"\n{environment(server.version if server else settings.url, pinned)}")
        print("raw / corduroy2 req/s: the blocks' median; overhead: the median over the pairs "
              "of blocks (back to back) of 1 - corduroy2/raw, and the middle half of them;\n"
              "CPU: client process CPU per request (median); new conns: TCP connections "
              "opened in all the measured blocks\n")
        print(table(rows))
        return 0
    finally:
        if server is not None:
            server.stop()
