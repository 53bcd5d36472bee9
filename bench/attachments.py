"""A 256 MB attachment uploaded and downloaded through each backend: MB/s next to the same
transport used raw, and peak RSS.

A small server process (pinned to its own CPU, as in ``bench rows``) stands in for CouchDB: a
PUT's body is read and dropped (then ``201 {"ok":true,...}``), a GET is answered from a file
with ``sendfile`` and its Content-Length, so what is measured is the client. The upload is
read from a file (a seekable binary file: sent with its Content-Length), as an application
storing a file would.

Each measurement runs in a fresh process, so its peak RSS is its own; "growth" is the peak
minus the RSS just before the transfer began (imports and the loop excluded):

* ``raw up``: the transport's own way to stream a file up (Tornado simple: ``body_producer``;
  curl: ``READFUNCTION``; Twisted: ``FileBodyProducer``; blocking: ``http.client`` with the
  file as the body), with the same piece size as corduroy2's;
* ``up``: ``db.put_attachment(doc, name, open(file, "rb"))``;
* ``raw down``: the transport streaming the body to a callback that counts it (Tornado:
  ``streaming_callback``; Twisted: ``deliverBody``; blocking: ``read1`` in a loop);
* ``down``: ``async for chunk in db.iter_attachment(...)`` (blocking: ``for``), which pauses
  the transfer while its reader is behind.

Targets (issue 15): corduroy2 >= 0.8x the raw MB/s; peak RSS growth <= 64 MB.

    python -m bench attachments [--mb N] [--repeats K] [--only tornado-curl,...]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.rows import (
    AIOHTTP_RAW, BACKENDS, make_loop, pin_apart, preload, run_measurement, twisted_client,
)

PATH = "/db/doc/big.bin"
PIECE = 256 * 1024  # corduroy2's file piece (api/attachments.FILE_PIECE), for the raw too
MODES = ["raw-up", "up", "raw-down", "down"]


def serve(body_file: str, port_file: str) -> None:
    """The stand-in server: one thread per connection, keep-alive."""
    import threading

    size = os.path.getsize(body_file)
    listener = socket.create_server(("127.0.0.1", 0))
    Path(port_file).write_text(str(listener.getsockname()[1]))
    reply = b'{"ok":true,"id":"doc","rev":"2-bench"}'
    put_head = (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(reply)) + reply
    get_head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"ETag: \"bench\"\r\nContent-Length: %d\r\n\r\n" % size)

    def handle(conn: socket.socket) -> None:
        buffer = bytearray(1 << 20)
        with conn, open(body_file, "rb") as body:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                if head.startswith(b"PUT"):
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    left = length - len(pending)
                    pending = b""
                    view = memoryview(buffer)
                    while left > 0:
                        got = conn.recv_into(view, min(left, len(buffer)))
                        if not got:
                            return
                        left -= got
                    conn.sendall(put_head)
                else:
                    conn.sendall(get_head)
                    body.seek(0)
                    conn.sendfile(body)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def rss_mb() -> float:
    """The current RSS (from /proc), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(backend: str, mode: str, url: str, body_file: str) -> dict[str, Any]:
    """One transfer, in this (fresh) process."""
    size = os.path.getsize(body_file)
    loop = make_loop(backend)
    preload(backend)
    doc_rev = {"_id": "doc", "_rev": "1-bench"}

    def couch() -> Any:
        if backend.startswith("tornado"):
            from corduroy2.tornado_io import Couch
            return Couch(url, client=backend.split("-")[1], retry=False)
        if backend.startswith("twisted"):
            from corduroy2.twisted_io import Couch as TwistedCouch
            return TwistedCouch(url, retry=False, client=twisted_client(backend))
        from corduroy2.blocking import Couch as BlockingCouch
        return BlockingCouch(url, retry=False)

    def settle(value: Any) -> Any:
        if backend.startswith("twisted"):
            return value.asFuture(loop)
        return value

    async def corduroy_up() -> int:
        db = couch().database("db")
        with open(body_file, "rb") as f:
            await settle(db.put_attachment(dict(doc_rev), "big.bin", f))
        return size

    async def corduroy_down() -> int:
        db = couch().database("db")
        got = 0

        async def read() -> int:
            nonlocal got
            async for chunk in db.iter_attachment("doc", "big.bin"):
                got += len(chunk)
            return got

        if backend.startswith("twisted"):
            from twisted.internet.defer import Deferred
            return await Deferred.fromCoroutine(read()).asFuture(loop)  # type: ignore[no-any-return]
        return await read()

    async def tornado_raw(up: bool) -> int:
        from tornado.httpclient import HTTPRequest
        if backend == "tornado-curl":
            from tornado.curl_httpclient import CurlAsyncHTTPClient as cls
        else:
            from tornado.simple_httpclient import SimpleAsyncHTTPClient as cls  # type: ignore
        client = cls(force_instance=True, max_body_size=1 << 40)
        got = [0]
        if not up:
            await client.fetch(HTTPRequest(url + PATH, request_timeout=0,
                                           streaming_callback=lambda c: got.__setitem__(
                                               0, got[0] + len(c))))
            return got[0]
        with open(body_file, "rb") as f:
            if backend == "tornado-curl":
                import pycurl

                def prepare(curl: Any) -> None:
                    curl.setopt(pycurl.READFUNCTION, f.read)
                    curl.setopt(pycurl.INFILESIZE_LARGE, size)
                    curl.setopt(pycurl.UPLOAD_BUFFERSIZE, PIECE)

                request = HTTPRequest(url + PATH, "PUT", body=b"", request_timeout=0,
                                      prepare_curl_callback=prepare)
            else:
                async def produce(write: Any) -> None:
                    while piece := f.read(PIECE):
                        await write(piece)

                request = HTTPRequest(url + PATH, "PUT", body_producer=produce,
                                      headers={"Content-Length": str(size)},
                                      request_timeout=0)
            await client.fetch(request)
        return size

    async def aiohttp_raw(up: bool) -> int:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout()) as session:
            if up:
                async def pieces() -> Any:
                    with open(body_file, "rb") as f:
                        while piece := f.read(PIECE):
                            yield piece

                async with session.put(url + PATH, data=pieces(),
                                       headers={"Content-Length": str(size)}) as response:
                    await response.read()
                return size
            got = 0
            async with session.get(url + PATH) as response:
                async for chunk in response.content.iter_any():
                    got += len(chunk)
            return got

    async def twisted_raw(up: bool) -> int:
        from twisted.internet import defer, protocol, reactor
        from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
        if up:
            with open(body_file, "rb") as f:
                response = await agent.request(b"PUT", (url + PATH).encode(), None,
                                               FileBodyProducer(f, readSize=PIECE)
                                               ).asFuture(loop)
                response.deliverBody(protocol.Protocol())
            return size

        class Count(protocol.Protocol):
            def __init__(self) -> None:
                self.got = 0
                self.done: defer.Deferred[int] = defer.Deferred()

            def dataReceived(self, data: bytes) -> None:
                self.got += len(data)

            def connectionLost(self, reason: Any = None) -> None:
                self.done.callback(self.got)

        response = await agent.request(b"GET", (url + PATH).encode()).asFuture(loop)
        counter = Count()
        response.deliverBody(counter)
        return await counter.done.asFuture(loop)  # type: ignore[no-any-return]

    def blocking_raw(up: bool) -> int:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, blocksize=PIECE)
        if up:
            with open(body_file, "rb") as f:
                conn.request("PUT", PATH, body=f, headers={"Content-Length": str(size)})
                conn.getresponse().read()
            return size
        conn.request("GET", PATH)
        response = conn.getresponse()
        got = 0
        while chunk := response.read1(PIECE):
            got += len(chunk)
        return got

    def blocking_corduroy(up: bool) -> int:
        db = couch().database("db")
        if up:
            with open(body_file, "rb") as f:
                db.put_attachment(dict(doc_rev), "big.bin", f)
            return size
        return sum(len(chunk) for chunk in db.iter_attachment("doc", "big.bin"))

    up = mode.endswith("up")
    before = rss_mb()
    start = time.perf_counter()
    if backend == "blocking":
        n = blocking_raw(up) if mode.startswith("raw") else blocking_corduroy(up)
    elif mode.startswith("raw"):
        raw = (aiohttp_raw if backend in AIOHTTP_RAW
               else tornado_raw if backend.startswith("tornado") else twisted_raw)
        n = loop.run_until_complete(raw(up))
    else:
        n = loop.run_until_complete(corduroy_up() if up else corduroy_down())
    elapsed = time.perf_counter() - start
    assert n == size, f"{backend}/{mode}: {n} bytes, expected {size}"
    return {"backend": backend, "mode": mode, "mb_s": size / 1e6 / elapsed,
            "rss_mb": peak_rss_mb(), "growth_mb": peak_rss_mb() - before}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench attachments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256, help="attachment size in MiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(BACKENDS))
    parser.add_argument("--_measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        import json

        backend, mode, url, body_file = args._measure
        print(json.dumps(measure(backend, mode, url, body_file)), flush=True)
        os._exit(0)  # Twisted's reactor thread pool (non-daemon threads) would keep it alive

    import subprocess

    tmp = Path(tempfile.mkdtemp(prefix="corduroy2-bench-att-"))
    body_file, port_file = tmp / "body", tmp / "port"
    with open(body_file, "wb") as out:
        block = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(args.mb):
            out.write(block)
    server = subprocess.Popen([sys.executable, "-c",
                               f"from bench.attachments import serve; "
                               f"serve({str(body_file)!r}, {str(port_file)!r})"],
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        pin_apart(server.pid)
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        print(f"{args.mb} MiB attachment, {os.cpu_count()} CPUs, median of {args.repeats}; "
              "MB/s (growth = peak RSS - RSS before the transfer)")
        print(f"{'backend':<15}{'raw up':>8}{'up':>8}{'up/raw':>8}{'raw down':>10}{'down':>8}"
              f"{'down/raw':>10}{'up growth':>11}{'down growth':>13}{'peak RSS':>10}")
        for backend in args.only.split(","):
            results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for _ in range(args.repeats):
                for mode in MODES:
                    results[mode].append(run_measurement("bench.attachments", backend, mode,
                                                         url, str(body_file)))
            speed = {m: statistics.median(r["mb_s"] for r in rs) for m, rs in results.items()}
            growth = {m: max(r["growth_mb"] for r in rs) for m, rs in results.items()}
            peak = max(r["rss_mb"] for rs in results.values() for r in rs)
            print(f"{backend:<15}{speed['raw-up']:>8.0f}{speed['up']:>8.0f}"
                  f"{speed['up'] / speed['raw-up']:>8.2f}{speed['raw-down']:>10.0f}"
                  f"{speed['down']:>8.0f}{speed['down'] / speed['raw-down']:>10.2f}"
                  f"{growth['up']:>11.1f}{growth['down']:>13.1f}{peak:>10.0f}", flush=True)
    finally:
        server.kill()
        body_file.unlink(missing_ok=True)
        port_file.unlink(missing_ok=True)
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
