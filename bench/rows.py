"""A 1,000,000-row view through each backend: rows/s and peak RSS.

The body is built once in CouchDB 3's exact framing (``{"total_rows":N,"offset":0,"rows":[``
CRLF, rows joined by ``,`` CRLF, CRLF ``]}`` LF) and chunked as couch_mrview chunks it (at most
1490 bytes), chunk headers included, into a file. A small server process replays that file with
``sendfile`` (the kernel copies it: the server costs next to nothing), so what is measured is
the client. nginx cannot send a static file chunked, which is why it is not used here.

Each measurement runs in a fresh process, so its peak RSS is its own:

* ``raw``: the same transport downloads the body, then one ``orjson.loads`` (the baseline);
* ``kept``: ``list(db.view(...).rows)``, every row in hand as a ``Row`` (default GC settings);
* ``frozen``: ``db.view(..., freeze_gc=True)``, the same, with the collector told to skip the
  rows already kept (``gc.freeze``, which corduroy2 uses only when asked);
* ``dropped``: ``db.view(..., on_rows=...)``, rows counted and dropped.

Targets (issue 4): kept in <= 0.6x the raw time (with ``freeze_gc=True`` since issue 14 made
the freeze opt-in), dropped in <= 60 MB; kept (default GC) in <= 0.8x the raw time on the
best backend (issue 19).

    python -m bench rows [--rows N] [--repeats K] [--only tornado-curl,...]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BACKENDS = ["tornado-curl", "tornado-simple", "tornado-aiohttp", "tornado-httptools", "twisted",
            "twisted-httptools", "blocking"]
#: Whose raw side is aiohttp on the same loop (their own transport has no raw form of its own).
AIOHTTP_RAW = ("tornado-aiohttp", "tornado-httptools")
REPO = Path(__file__).resolve().parent.parent
PATH = "/db/_design/d/_view/v"


def build_body(rows: int, path: Path) -> int:
    """Write the chunked body to ``path``; returns the JSON payload size."""
    chunks: list[bytes] = []
    pending = bytearray(b'{"total_rows":%d,"offset":0,"rows":[\r\n' % rows)
    size = 0
    with open(path, "wb") as out:
        def flush(force: bool = False) -> None:
            nonlocal pending
            while len(pending) >= 1490 or (force and pending):
                piece, pending = bytes(pending[:1490]), pending[1490:]
                out.write(b"%x\r\n%s\r\n" % (len(piece), piece))

        for i in range(rows):
            row = b'{"id":"doc-%07d","key":["t%d",%d],"value":{"n":%d,"s":"text"}}' % (
                i, i % 10, i, i)
            pending += row
            if i < rows - 1:
                pending += b",\r\n"
            size += len(row) + 3
            if len(pending) >= 1490:
                flush()
        pending += b"\r\n]}"
        flush(force=True)
        out.write(b"1\r\n\n\r\n0\r\n\r\n")  # the final "\n" chunk, then the end
    del chunks
    return size


def serve(body_file: str, port_file: str) -> None:
    """The replay server: one thread per connection, keep-alive, sendfile."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    Path(port_file).write_text(str(listener.getsockname()[1]))
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nCache-Control: must-revalidate\r\n\r\n")

    def handle(conn: socket.socket) -> None:
        with conn, open(body_file, "rb") as body:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                _, buf = buf.split(b"\r\n\r\n", 1)
                conn.sendall(head)
                body.seek(0)
                conn.sendfile(body)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def twisted_client(backend: str) -> str:
    """The ``client`` of the Twisted door a backend's name stands for."""
    return "httptools" if backend == "twisted-httptools" else "agent"


def make_loop(backend: str) -> Any:
    """A fresh asyncio loop; for Twisted, its asyncioreactor installed on it and started (the
    reactor's thread pool only starts with startRunning)."""
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if backend.startswith("twisted"):
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
        from twisted.internet import reactor

        reactor.startRunning(installSignalHandlers=False)  # type: ignore[attr-defined]
    return loop


def preload(backend: str) -> None:
    """Import both sides' modules before the clock starts: a measurement is of moving rows,
    not of importing Twisted or corduroy2 (~0.1 s, a fifth of a 200,000-change run)."""
    import http.client  # noqa: F401

    import corduroy2.blocking  # noqa: F401

    if backend.startswith("tornado"):
        import tornado.httpclient  # noqa: F401
        import tornado.simple_httpclient  # noqa: F401

        import corduroy2.tornado_io  # noqa: F401
        if backend == "tornado-curl":
            import tornado.curl_httpclient  # noqa: F401
        if backend in AIOHTTP_RAW:
            import aiohttp  # noqa: F401
        if backend == "tornado-aiohttp":
            import corduroy2.tornado_io.aiohttp_backend  # noqa: F401
        if backend == "tornado-httptools":
            import corduroy2.tornado_io.httptools_client  # noqa: F401
    elif backend.startswith("twisted"):
        import twisted.web.client  # noqa: F401

        import corduroy2.twisted_io  # noqa: F401
        if backend == "twisted-httptools":
            import corduroy2.twisted_io.httptools_client  # noqa: F401


@contextlib.contextmanager
def replay(build: Callable[[Path], int], prefix: str) -> Iterator[tuple[str, int]]:
    """Build a body with ``build(path)`` and serve it from a replay-server process; yields
    ``(url, payload size)`` and cleans everything up afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    body_file, port_file = tmp / "body", tmp / "port"
    size = build(body_file)
    server = subprocess.Popen([sys.executable, "-c",
                               f"from bench.rows import serve; serve({str(body_file)!r}, "
                               f"{str(port_file)!r})"], cwd=REPO)
    try:
        pin_apart(server.pid)
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text()}", size
    finally:
        server.kill()
        body_file.unlink(missing_ok=True)
        port_file.unlink(missing_ok=True)
        tmp.rmdir()


def pin_apart(server: int) -> None:
    """With two CPUs or more: the server process on CPU 0, this process (and the measurement
    processes it starts) on the last one, so that they never compete for a core (with 2 CPUs,
    the scheduler otherwise moves them about, and a run's speed with it)."""
    cpus = os.cpu_count() or 1
    if cpus > 1:
        os.sched_setaffinity(server, {0})
        os.sched_setaffinity(0, {cpus - 1})


def run_measurement(module: str, *args: Any) -> dict[str, Any]:
    """Run ``python -m <module> --_measure args...`` in a fresh process; its JSON result."""
    out = subprocess.run([sys.executable, "-m", module, "--_measure", *map(str, args)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def answer_measurement(args: list[str], measure: Callable[[str, str, str, int], Any]) -> None:
    """The ``--_measure backend mode url n`` half of a benchmark: one measurement in this fresh
    process, printed as JSON; then the process ends."""
    backend, mode, url, n = args
    print(json.dumps(measure(backend, mode, url, int(n))), flush=True)
    os._exit(0)  # Twisted's reactor thread pool (non-daemon threads) would keep it alive


def interleaved(module: str, backend: str, modes: list[str], repeats: int, url: str,
                n: int) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` fresh-process measurements of each mode, interleaved so that drift on the
    machine hits every mode alike."""
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            results[mode].append(run_measurement(module, backend, mode, url, n))
    return results


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CollectorWatch:
    """What CPython's cyclic collector did meanwhile: collections per generation and the CPU
    seconds spent in them (``gc.callbacks``; reading the collector's state changes nothing).
    CPU time, unlike wall time, hardly moves when other processes load the machine."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.cpu_s = 0.0
        self._began = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.process_time()
        else:
            self.collections[info["generation"]] += 1
            self.cpu_s += time.process_time() - self._began

    def stop(self) -> None:
        gc.callbacks.remove(self._note)


def measure(backend: str, mode: str, url: str, rows: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import orjson

    loop = make_loop(backend)
    counted = [0]

    def count(batch: list[Any]) -> None:
        counted[0] += len(batch)

    async def via_corduroy() -> int | list[Any]:
        if backend.startswith("tornado"):
            from corduroy2.tornado_io import Couch
            couch: Any = Couch(url, client=backend.split("-")[1])
        else:
            from corduroy2.twisted_io import Couch
            couch = Couch(url, client=twisted_client(backend))
        db = couch.database("db")
        if mode in ("kept", "frozen"):
            result = db.view("d/v", freeze_gc=mode == "frozen")
            result = await (result.asFuture(loop) if backend.startswith("twisted") else result)
            return list(result.rows)  # every row in hand as a Row
        result = db.view("d/v", on_rows=count)
        await (result.asFuture(loop) if backend.startswith("twisted") else result)
        return counted[0]

    async def raw() -> list[Any]:
        if backend in AIOHTTP_RAW:
            import aiohttp
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout()) as session:
                async with session.get(url + PATH) as response:
                    body = await response.read()
        elif backend.startswith("tornado"):
            from tornado.httpclient import HTTPRequest
            if backend == "tornado-curl":
                from tornado.curl_httpclient import CurlAsyncHTTPClient as cls
            else:
                from tornado.simple_httpclient import SimpleAsyncHTTPClient as cls  # type: ignore
            extra = {"max_buffer_size": 1 << 40} if backend == "tornado-simple" else {}
            client = cls(force_instance=True, max_body_size=1 << 40, **extra)
            response = await client.fetch(HTTPRequest(url + PATH, request_timeout=0))
            body = response.body
        else:
            from twisted.internet import reactor
            from twisted.web.client import Agent, HTTPConnectionPool, readBody
            agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
            response = await agent.request(b"GET", (url + PATH).encode()).asFuture(loop)
            body = await readBody(response).asFuture(loop)
        return orjson.loads(body)["rows"]  # type: ignore[no-any-return]

    def blocking() -> int | list[Any]:
        if mode == "raw":
            import http.client
            from urllib.parse import urlsplit
            parts = urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port)
            conn.request("GET", PATH)
            return orjson.loads(conn.getresponse().read())["rows"]  # type: ignore[no-any-return]
        from corduroy2.blocking import Couch
        db = Couch(url).database("db")
        if mode in ("kept", "frozen"):
            return list(db.view("d/v", freeze_gc=mode == "frozen").rows)
        db.view("d/v", on_rows=count)
        return counted[0]

    preload(backend)
    tracked_before = len(gc.get_objects())
    collector = CollectorWatch()
    cpu, start = time.process_time(), time.perf_counter()
    if backend == "blocking":
        got = blocking()
    else:
        got = loop.run_until_complete(raw() if mode == "raw" else via_corduroy())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    collector.stop()
    n = got if isinstance(got, int) else len(got)
    assert n == rows, f"{backend}/{mode}: {n} rows, expected {rows}"
    rss = peak_rss_mb()  # before gc.get_objects() makes its list of every tracked object
    # the rows are still in hand: the objects the collector tracks for each of them
    tracked = (len(gc.get_objects()) - tracked_before) / rows
    return {"backend": backend, "mode": mode, "seconds": elapsed, "rss_mb": rss,
            "cpu_s": cpu, "gc_cpu_s": collector.cpu_s, "collections": collector.collections,
            "tracked_per_row": tracked}


def cpu_line(backend: str, results: dict[str, list[dict[str, Any]]]) -> str:
    """One backend's line of the CPU table: raw and kept modes."""
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    def gen2(mode: str) -> int:
        return int(statistics.median(r["collections"][2] for r in results[mode]))

    collections = f"{gen2('raw')}/{gen2('kept')}"
    return (f"{backend:<15}{med('raw', 'cpu_s'):>8.2f}{med('kept', 'cpu_s'):>9.2f}"
            f"{med('kept', 'cpu_s') / med('raw', 'cpu_s'):>9.2f}{med('raw', 'gc_cpu_s'):>8.2f}"
            f"{med('kept', 'gc_cpu_s'):>8.2f}{collections:>14}"
            f"{med('raw', 'tracked_per_row'):>11.2f}/{med('kept', 'tracked_per_row'):.2f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(BACKENDS))
    parser.add_argument("--_measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        answer_measurement(args._measure, measure)

    with replay(lambda path: build_body(args.rows, path), "corduroy2-bench-rows-") as (url, size):
        print(f"{args.rows:,} rows, {size / 1e6:.1f} MB of JSON (chunked as CouchDB chunks it, "
              f"<=1490-byte chunks), {os.cpu_count()} CPUs, median of {args.repeats}")
        print(f"{'backend':<15}{'raw s':>8}{'kept s':>8}{'kept/raw':>9}{'frozen s':>9}"
              f"{'frozen/raw':>11}{'dropped s':>10}{'raw MB':>8}{'kept MB':>8}"
              f"{'dropped MB':>11}")
        cpu_lines = []
        for backend in args.only.split(","):
            results = interleaved("bench.rows", backend, ["raw", "kept", "frozen", "dropped"],
                                  args.repeats, url, args.rows)
            med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in results.items()}
            rss = {m: max(r["rss_mb"] for r in rs) for m, rs in results.items()}
            print(f"{backend:<15}{med['raw']:>8.2f}{med['kept']:>8.2f}"
                  f"{med['kept'] / med['raw']:>9.2f}{med['frozen']:>9.2f}"
                  f"{med['frozen'] / med['raw']:>11.2f}"
                  f"{med['dropped']:>10.2f}{rss['raw']:>8.0f}{rss['kept']:>8.0f}"
                  f"{rss['dropped']:>11.0f}", flush=True)
            cpu_lines.append(cpu_line(backend, results))
        print("\nCPU seconds (median; steadier than wall time on a loaded machine), of which in "
              "the cyclic collector;\nfull (gen 2) collections; objects the collector tracks "
              "per row in hand")
        print(f"{'backend':<15}{'raw cpu':>8}{'kept cpu':>9}{'kept/raw':>9}{'raw gc':>8}"
              f"{'kept gc':>8}{'gen2 raw/kept':>14}{'tracked raw/kept':>17}")
        print("\n".join(cpu_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
