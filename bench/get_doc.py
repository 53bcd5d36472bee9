"""GET one small document: each corduroy2 backend next to the raw transport it sits on.

    ./dev.sh bench get [--seconds 3] [--warmup 1] [--repeats 3] [--only tornado-curl,...]
    ./dev.sh bench get --profile tornado-curl      # cProfile of corduroy2's c=1 loop

A script, not a test. nginx (from Debian; installed when missing and running as root) serves a
~200-byte CouchDB-shaped document with the headers CouchDB sends, on a free loopback port, with
its own config in a temp dir; it is stopped at the end.

Pairs, each measured in the same run (raw first or second in alternation, ``--repeats`` times,
medians reported):

- tornado-curl / tornado-simple: ``CurlAsyncHTTPClient`` / ``SimpleAsyncHTTPClient``
  ``.fetch`` + ``orjson.loads`` vs ``corduroy2.tornado_io`` ``db.get`` (Future).
- twisted: ``Agent`` on ``HTTPConnectionPool(persistent=True)`` + ``readBody`` +
  ``orjson.loads`` vs ``corduroy2.twisted_io`` ``db.get`` (Deferred). On the shared asyncio loop
  (Twisted's asyncioreactor, as the tests run), and on Twisted's default (epoll) reactor in a
  subprocess (``twisted-epoll``).
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
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from corduroy2.api.couch import USER_AGENT

from . import instructions
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
Issue = Callable[[Done], None]

ALL = ["tornado-curl", "tornado-simple", "twisted", "twisted-epoll", "blocking"]
CONCURRENCY = (1, 32)


@dataclass
class Settings:
    url: str
    seconds: float
    warmup: float
    repeats: int


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

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(delay, fn)

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

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.reactor.callLater(delay, fn)

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


class _AsyncRun:
    """``concurrency`` request chains, each starting the next request when one completes."""

    def __init__(self, mode: Any, issue: Issue, concurrency: int, warmup: float, seconds: float,
                 profile: cProfile.Profile | None) -> None:
        self.issue = issue
        self.concurrency = concurrency
        self.mode = mode
        self.warmup, self.seconds = warmup, seconds
        self.profile = profile
        self.counting = self.stopping = False
        self.count = 0
        self.inflight = 0
        self.t0 = self.t1 = self.cpu0 = self.cpu1 = 0.0
        self.error: BaseException | None = None
        self.promise, self._resolve = mode.promise()

    def start(self) -> Any:
        self.mode.call_later(self.warmup, self._begin)
        for _ in range(self.concurrency):
            self.inflight += 1
            self.issue(self._completed)
        return self.promise

    def _begin(self) -> None:
        if self.profile is not None:
            self.profile.enable()
        self.count, self.counting = 0, True
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        self.mode.call_later(self.seconds, self._end)

    def _end(self) -> None:
        self.t1, self.cpu1 = time.perf_counter(), time.process_time()
        if self.profile is not None:
            self.profile.disable()
        self.counting, self.stopping = False, True

    def _completed(self, error: BaseException | None) -> None:
        if error is not None and self.error is None:
            self.error = error
            self.stopping = True
        elif self.counting:
            self.count += 1
        if self.stopping:
            self.inflight -= 1
            if self.inflight == 0:
                self._resolve(None)
        else:
            self.issue(self._completed)

    def result(self) -> tuple[float, float]:
        """(requests/s, client CPU µs per request)"""
        if self.error is not None:
            raise RuntimeError(f"a request failed: {self.error!r}") from self.error
        return (self.count / (self.t1 - self.t0),
                (self.cpu1 - self.cpu0) / max(self.count, 1) * 1e6)


def _call_soon_safe(done: Done, fn: Callable[[], Any]) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - reported by the harness
        done(exc)
        return
    done(None)


def _measure_threads(worker: Callable[[int, list[int], threading.Event], None], concurrency: int,
                     warmup: float, seconds: float,
                     profile: cProfile.Profile | None) -> tuple[float, float]:
    """``concurrency`` threads, each counting its completed requests into ``counts[i]``."""
    counts = [0] * concurrency
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            if profile is not None:
                profile.enable()  # cProfile hooks only the calling thread
            worker(i, counts, stop)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()
        finally:
            if profile is not None:
                profile.disable()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    c0, t0, cpu0 = sum(counts), time.perf_counter(), time.process_time()
    time.sleep(seconds)
    c1, t1, cpu1 = sum(counts), time.perf_counter(), time.process_time()
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"a request failed: {errors[0]!r}") from errors[0]
    return (c1 - c0) / (t1 - t0), (cpu1 - cpu0) / max(c1 - c0, 1) * 1e6


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


def twisted_corduroy(settings: Settings, concurrency: int) -> tuple[Issue, Callable[[], Any]]:
    from corduroy2.twisted_io import Couch

    couch = Couch(settings.url, max_connections=concurrency)
    db = couch.database("db")

    def finished(doc: Any, done: Done) -> None:
        _call_soon_safe(done, lambda: _check(doc))

    def issue(done: Done) -> None:
        db.get("doc1").addCallbacks(finished, lambda failure: done(failure.value),
                                    callbackArgs=(done,))

    return issue, couch.close


def blocking_raw(settings: Settings) -> Callable[[int, list[int], threading.Event], None]:
    parts = urlsplit(settings.url)
    headers = dict(REQUEST_HEADERS)

    def worker(i: int, counts: list[int], stop: threading.Event) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
        try:
            while not stop.is_set():
                conn.request("GET", DOC_PATH, headers=headers)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                _check(orjson.loads(body))
                counts[i] += 1
        finally:
            conn.close()

    return worker


def blocking_corduroy(settings: Settings,
                      concurrency: int) -> tuple[Callable[..., None], Callable[[], Any]]:
    from corduroy2.blocking import Couch

    couch = Couch(settings.url, max_connections=concurrency)
    db = couch.database("db")

    def worker(i: int, counts: list[int], stop: threading.Event) -> None:
        while not stop.is_set():
            _check(db.get("doc1"))
            counts[i] += 1

    return worker, couch.close


# -- one measurement, one pair, the suite --------------------------------------------------


def _async_client(settings: Settings, backend: str, side: str,
                  concurrency: int) -> tuple[Issue, Callable[[], Any]]:
    if backend.startswith("tornado-"):
        kind = backend.split("-", 1)[1]
        maker = tornado_raw if side == "raw" else tornado_corduroy
        return maker(settings, concurrency, kind)
    maker2 = twisted_raw if side == "raw" else twisted_corduroy
    return maker2(settings, concurrency)


class _After:
    """A worker's stop flag that is set after ``n`` checks: the loop makes exactly n requests."""

    def __init__(self, n: int) -> None:
        self.left = n

    def is_set(self) -> bool:
        self.left -= 1
        return self.left < 0


async def count_requests(mode: Any, settings: Settings, backend: str, side: str, n: int) -> None:
    """``n`` requests one after the other (the c=1 loop, no clock): for instruction counts."""
    if backend == "blocking":
        if side == "raw":
            worker, close = blocking_raw(settings), (lambda: None)
        else:
            worker, close = blocking_corduroy(settings, 1)
        try:
            worker(0, [0], _After(n))  # type: ignore[arg-type]
        finally:
            close()
        return
    issue, close = _async_client(settings, backend, side, 1)
    promise, resolve = mode.promise()
    left, failed = [n], []

    def completed(error: BaseException | None) -> None:
        if error is not None:
            failed.append(error)
            resolve(None)
            return
        left[0] -= 1
        if left[0]:
            issue(completed)
        else:
            resolve(None)

    issue(completed)
    try:
        await mode.wait(promise)
    finally:
        closing = close()
        if closing is not None:
            await mode.wait(closing)
    if failed:
        raise RuntimeError(f"a request failed: {failed[0]!r}") from failed[0]


def count_instructions(settings: Settings, backends: list[str], n: int) -> list[str]:
    """Rows of the instructions table: per request, each side, c=1."""
    lines = ["| backend | raw instr/req | corduroy2 instr/req | overhead | ≤10%? |",
             "|---|---|---|---|---|"]
    for backend in backends:
        counts = {side: instructions.per_item(
            lambda k: ["-m", "bench", "get", "--_count", backend, side, str(k), settings.url], n)
            for side in ("raw", "corduroy2")}
        overhead = 1 - counts["raw"] / counts["corduroy2"]
        lines.append(f"| {backend} | {counts['raw']:,.0f} | {counts['corduroy2']:,.0f} | "
                     f"{overhead * 100:.1f}% | {'yes' if overhead <= TARGET else 'NO'} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


async def measure(mode: Any, settings: Settings, backend: str, side: str, concurrency: int,
                  profile: cProfile.Profile | None = None) -> tuple[float, float, int]:
    """req/s of one side of one pair, client CPU µs per request (all threads of this process,
    so other load on the machine barely moves it), and TCP connections nginx accepted."""
    port = urlsplit(settings.url).port or 80
    before = connections_accepted(port)
    if backend == "blocking":
        if side == "raw":
            worker, close = blocking_raw(settings), (lambda: None)
        else:
            worker, close = blocking_corduroy(settings, concurrency)
        try:
            rate, cpu = _measure_threads(worker, concurrency, settings.warmup, settings.seconds,
                                    profile)
        finally:
            close()
    else:
        issue, close = _async_client(settings, backend, side, concurrency)
        run = _AsyncRun(mode, issue, concurrency, settings.warmup, settings.seconds, profile)
        try:
            await mode.wait(run.start())
        finally:
            closing = close()
            if closing is not None:
                await mode.wait(closing)
        rate, cpu = run.result()
    return rate, cpu, connections_accepted(port) - before - 1


@dataclass
class Row:
    backend: str
    concurrency: int
    raw: list[float]
    corduroy: list[float]
    raw_conns: int
    corduroy_conns: int
    raw_cpu: list[float]
    corduroy_cpu: list[float]

    @property
    def overhead(self) -> float:
        return 1 - statistics.median(self.corduroy) / statistics.median(self.raw)


async def suite(mode: Any, settings: Settings, pairs: list[tuple[str, int]],
                log: Callable[[str], None]) -> list[Row]:
    rows = []
    for backend, concurrency in pairs:
        row = Row(backend, concurrency, [], [], 0, 0, [], [])
        for rep in range(settings.repeats):
            order = ("raw", "corduroy2") if rep % 2 == 0 else ("corduroy2", "raw")
            for side in order:
                rate, cpu, conns = await measure(mode, settings, backend, side, concurrency)
                if side == "raw":
                    row.raw.append(rate)
                    row.raw_cpu.append(cpu)
                    row.raw_conns = max(row.raw_conns, conns)
                else:
                    row.corduroy.append(rate)
                    row.corduroy_cpu.append(cpu)
                    row.corduroy_conns = max(row.corduroy_conns, conns)
                log(f"  {backend:<15} c={concurrency:<3} {side:<9} {rate:9,.0f} req/s"
                    f"  {cpu:6.1f} µs CPU/req  ({conns} connections)")
        rows.append(row)
    return rows


def _epoll_subprocess(settings: Settings, pairs: list[tuple[str, int]]) -> list[Row]:
    """The twisted pairs again, on Twisted's default reactor, in a fresh process."""
    cmd = [sys.executable, "-m", "bench", "get", "--url", settings.url, "--json",
           "--seconds", str(settings.seconds), "--warmup", str(settings.warmup),
           "--repeats", str(settings.repeats), "--_default-reactor",
           "--concurrency", ",".join(str(c) for _, c in pairs), "--only", "twisted"]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    data = json.loads(out)
    return [Row(**{**r, "backend": f"twisted-{data['reactor']}"}) for r in data["rows"]]


# -- output -------------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    med = statistics.median(values)
    return f"±{max(abs(v - med) for v in values) / med * 100:.0f}%"


def table(rows: list[Row]) -> str:
    head = ("| backend | c | raw req/s | corduroy2 req/s | overhead | ≤10%? "
            "| CPU µs/req raw → c2 | conns raw/c2 |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        raw, cor = statistics.median(r.raw), statistics.median(r.corduroy)
        lines.append(
            f"| {r.backend} | {r.concurrency} | {raw:,.0f} {_spread(r.raw)} | "
            f"{cor:,.0f} {_spread(r.corduroy)} | {r.overhead * 100:.1f}% | "
            f"{'yes' if r.overhead <= TARGET else 'NO'} | "
            f"{statistics.median(r.raw_cpu):.0f} → {statistics.median(r.corduroy_cpu):.0f} | "
            f"{r.raw_conns}/{r.corduroy_conns} |"
        )
    return "\n".join(lines)


def environment(server: str) -> str:
    import platform

    import tornado
    import twisted

    try:
        import pycurl

        curl = pycurl.version
    except ImportError:
        curl = "no pycurl"
    return (f"nproc={os.cpu_count()} (nothing pinned), Python {platform.python_version()}, "
            f"tornado {tornado.version}, Twisted {twisted.__version__}, orjson "
            f"{orjson.__version__}, {curl.split()[0]} {curl.split()[1] if ' ' in curl else ''}"
            f"; server {server}")


# -- entry point ------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench get", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time before it")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (median taken)")
    parser.add_argument("--only", default=",".join(ALL),
                        help=f"comma-separated backends among {', '.join(ALL)}")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated, e.g. 1,32")
    parser.add_argument("--url", help="use this server (serving /db/doc1) instead of nginx")
    parser.add_argument("--profile", metavar="BACKEND",
                        help="instead of the table: cProfile one run of BACKEND at the first "
                             "--concurrency")
    parser.add_argument("--profile-side", default="corduroy2", choices=("corduroy2", "raw"))
    parser.add_argument("--profile-sort", default="tottime")
    parser.add_argument("--profile-lines", type=int, default=30)
    parser.add_argument("--instructions", action="store_true",
                        help="instead of timing: instructions per request at c=1 under callgrind "
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
        rate, _, _ = mode.run(measure(mode, settings, backend, side, concurrency, profile))
    finally:
        mode.close()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    count = rate * settings.seconds
    print(f"# cProfile: {backend} {side} c={concurrency}, {rate:,.0f} req/s under the profiler, "
          f"{total / count * 1e6:.1f} µs of profiled time per request")
    stats.sort_stats(sort).print_stats(lines)
    print(out.getvalue())


def main(argv: list[str]) -> int:
    args = _parse(argv)
    settings = Settings(args.url or "", args.seconds, args.warmup, args.repeats)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    chosen = args.only.split(",")
    log = (lambda text: print(text, file=sys.stderr, flush=True))

    if args._count:  # one run of --instructions, in this fresh process
        backend, side, n, settings.url = args._count
        mode: Any = TwistedMode() if backend == "twisted-epoll" else AsyncioMode()
        mode.run(count_requests(mode, settings, backend.replace("-epoll", ""), side, int(n)))
        os._exit(0)  # Twisted's reactor thread pool (non-daemon threads) would keep it alive

    if args.default_reactor:  # the subprocess half of twisted-epoll
        mode = TwistedMode()
        pairs = [("twisted", c) for c in concurrencies]
        rows = mode.run(suite(mode, settings, pairs, log))
        print(json.dumps({"reactor": mode.name.replace("Reactor", "").lower(),
                          "rows": [r.__dict__ for r in rows]}))
        return 0

    server = None
    try:
        if not args.url:
            server = Nginx({DOC_PATH: (BODY, COUCH_HEADERS)}).start()
            settings.url = server.url
        if args.instructions:
            problem = instructions.available()
            if problem:
                raise SystemExit(f"--instructions: {problem}")
            log(f"GET {DOC_PATH}: instructions per request at c=1 (callgrind; "
                f"{args.requests} and {3 * args.requests} requests per side); user space only, "
                f"so the overhead is overstated (the kernel's share is the same on both sides)")
            print("\n".join(count_instructions(settings, chosen, args.requests)))
            return 0
        if args.profile:
            backend = args.profile
            if backend == "twisted-epoll":
                raise SystemExit("profile twisted-epoll by hand: the table's subprocess")
            _profile(AsyncioMode(), settings, backend, args.profile_side, args.profile_sort,
                     args.profile_lines, concurrencies[0])
            return 0
        log(f"GET {DOC_PATH} ({len(BODY)} bytes) from {settings.url}; "
            f"{settings.warmup:g} s warm-up + {settings.seconds:g} s per run, "
            f"{settings.repeats} runs per side")
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
        print(f"\n{environment(server.version if server else settings.url)}")
        print("raw / corduroy2: median of the runs (± = largest deviation from it); "
              "overhead = 1 - corduroy2/raw;\n"
              "CPU = client process CPU per request (medians; insensitive to other load on the "
              "machine); conns = TCP connections opened per run (max)\n")
        print(table(rows))
        return 0
    finally:
        if server is not None:
            server.stop()
