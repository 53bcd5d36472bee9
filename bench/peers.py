"""corduroy2 beside the peer clients, in one run, on one server: the table of issue 19.

    python -m bench peers [--requests N] [--rows N] [--changes N] [--only get,rows,...]

Not a test. The peers (couchdb-python ``CouchDB``, ``aiocouch``, ``ibmcloudant``) and the GET
floor (``aiohttp``) are installed at run time with pip into ``.cache/bench-peers/site`` (never
into the project's environment) and that folder is put at the *end* of ``sys.path`` of the
measuring processes, so corduroy2's own dependencies keep their installed versions.

Each client is driven the way its users write code, each measurement in a fresh process
(clients pinned to the last CPU, the server to CPU 0), the best of ``--repeats`` rounds (each
round runs every client once, so that a machine whose speed drifts slows all of them alike):

* ``get1`` / ``get32``: ``GET /db/doc1`` and decode, one at a time / 32 at once (async clients:
  32 coroutines; sync clients: 32 threads), served by nginx (bench/nginx.py) with CouchDB's
  headers. Floor: aiohttp + orjson.
* ``rows``: a view of ``--rows`` rows (bench/rows.py's replay server, CouchDB's framing), every
  row in hand (``list(v.rows)``; a peer's own row objects). Floor: curl downloads the whole
  body, one ``orjson.loads``.
* ``stream``: the same view streamed, rows dropped (``on_rows``); no peer streams.
* ``changes``: a continuous ``_changes`` feed of ``--changes`` changes read with ``async for``
  (a plain ``for`` when blocking), bench/changes.py's body. Floor: curl, lines split and
  ``orjson.loads``-ed.

Each figure is a rate (or, for rows, a time) and its ratio to the floor of this run: above 1
is faster than the floor. The peak RSS of the rows runs is shown too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.rows import BACKENDS, REPO, peak_rss_mb, pin_apart, replay, twisted_client

SITE = REPO / ".cache" / "bench-peers" / "site"
PEER_PACKAGES = {"couchdb": "CouchDB", "aiocouch": "aiocouch", "ibmcloudant": "ibmcloudant",
                 "aiohttp": "aiohttp"}
PEERS = ["couchdb-python", "aiocouch", "ibmcloudant"]
WORKLOADS = ["get1", "get32", "rows", "stream", "changes"]
FLOOR = {"get1": "aiohttp", "get32": "aiohttp", "rows": "curl-whole", "stream": "curl-whole",
         "changes": "curl-lines"}
VIEW = "/db/_design/d/_view/v"


def install_peers() -> None:
    """pip-install what is missing from SITE (once; later runs find it there)."""
    missing = [pkg for module, pkg in PEER_PACKAGES.items()
               if not (SITE / module).exists()]
    if missing:
        print(f"bench peers: installing {', '.join(missing)} into {SITE}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(SITE),
                        *missing], check=True, stdout=sys.stderr)


# -- the measuring process -------------------------------------------------------------------


def _loop(client: str) -> asyncio.AbstractEventLoop:
    from bench.rows import make_loop
    return make_loop("twisted" if client.startswith("twisted") else "asyncio")  # type: ignore[no-any-return]


def _run(client: str, loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Run an ``async def``'s coroutine the way the client's users do."""
    if client.startswith("twisted"):
        from twisted.internet.defer import Deferred
        return loop.run_until_complete(Deferred.fromCoroutine(coro).asFuture(loop))
    return loop.run_until_complete(coro)


def _corduroy(client: str, url: str, connections: int = 10) -> Any:
    """A corduroy2 Couch on ``client``'s backend, with as many connections as the run has
    requests at once (as the aiohttp floor has; aiocouch keeps aiohttp's default of 100)."""
    kwargs = {"max_connections": max(connections, 10)}
    if client.startswith("tornado"):
        from corduroy2.tornado_io import Couch
        return Couch(url, client=client.split("-")[1], **kwargs)
    if client.startswith("twisted"):
        from corduroy2.twisted_io import Couch as TCouch
        return TCouch(url, client=twisted_client(client), **kwargs)
    from corduroy2.blocking import Couch as BCouch
    return BCouch(url, **kwargs)


def _ibm(url: str) -> Any:
    from ibm_cloud_sdk_core.authenticators import NoAuthAuthenticator
    from ibmcloudant.cloudant_v1 import CloudantV1
    service = CloudantV1(authenticator=NoAuthAuthenticator())
    service.set_service_url(url)
    return service


SYNC = {"blocking", "couchdb-python", "ibmcloudant"}


def measure_get(client: str, url: str, n: int, concurrency: int) -> float:
    """Seconds for ``n`` GETs (after a warm-up), ``concurrency`` at a time."""
    import orjson

    if client in SYNC:
        def make_get() -> Callable[[], Any]:
            if client == "blocking":
                db = _corduroy(client, url, concurrency).database("db")
                return lambda: db.get("doc1")
            if client == "couchdb-python":
                import couchdb
                cdb = couchdb.Database(url + "/db")
                return lambda: cdb["doc1"]
            service = _ibm(url)
            return lambda: service.get_document(db="db", doc_id="doc1").get_result()

        gets = [make_get() for _ in range(concurrency)]

        def worker(get: Callable[[], Any], k: int) -> None:
            for _ in range(k):
                assert get()["_id"] == "doc1"

        for get in gets:
            worker(get, 20)
        threads = [threading.Thread(target=worker, args=(get, n // concurrency)) for get in gets]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start

    loop = _loop(client)

    async def main() -> float:
        if client == "aiohttp":
            import aiohttp
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

            async def get() -> Any:
                async with session.get(url + "/db/doc1") as response:
                    return orjson.loads(await response.read())
        elif client == "aiocouch":
            from aiocouch import CouchDB
            from aiocouch.database import Database
            couch = CouchDB(url)
            adb = Database(couch, "db")  # what couch["db"] returns, less its existence check

            async def get() -> Any:
                return (await adb.get("doc1")).data
        else:
            db = _corduroy(client, url, concurrency).database("db")

            async def get() -> Any:
                return await db.get("doc1")

        async def worker(k: int) -> None:
            for _ in range(k):
                assert (await get())["_id"] == "doc1"

        await worker(20)
        start = time.perf_counter()
        if concurrency == 1:
            await worker(n)
        else:
            tasks = [worker(n // concurrency) for _ in range(concurrency)]
            if client.startswith("twisted"):
                from twisted.internet.defer import Deferred, gatherResults
                await gatherResults([Deferred.fromCoroutine(t) for t in tasks])
            else:
                await asyncio.gather(*tasks)
        return time.perf_counter() - start

    return _run(client, loop, main())  # type: ignore[no-any-return]


def measure_rows(client: str, url: str, n: int) -> int:
    """Every row of the view in hand (the peer's own form of a row); returns the count."""
    if client == "couchdb-python":
        import couchdb
        return len(list(couchdb.Database(url + "/db").view("d/v")))
    if client == "ibmcloudant":
        return len(list(_ibm(url).post_view(db="db", ddoc="d", view="v").get_result()["rows"]))
    if client == "aiocouch":
        from aiocouch import CouchDB
        from aiocouch.database import Database
        loop = _loop(client)

        async def rows() -> int:
            couch = CouchDB(url)
            view = Database(couch, "db").view("d", "v")
            return len(list((await view.get()).rows))

        return _run(client, loop, rows())  # type: ignore[no-any-return]
    raise ValueError(client)


def measure_changes(client: str, url: str, n: int) -> int:
    """Read the continuous feed to its end with the peer's iterator; returns the count."""
    count = 0
    if client == "couchdb-python":
        import couchdb
        for change in couchdb.Database(url + "/db").changes(feed="continuous", since=0):
            count += "id" in change
        return count
    if client == "ibmcloudant":
        response = _ibm(url).post_changes_as_stream(db="db", feed="continuous",
                                                    since="0").get_result()
        for line in response.iter_lines():
            if line:
                count += "id" in json.loads(line)
        return count
    if client == "aiocouch":
        from aiocouch import CouchDB
        from aiocouch.database import Database
        loop = _loop(client)

        async def changes() -> int:
            k = 0
            async for event in Database(CouchDB(url), "db").changes(feed="continuous",
                                                                   since="0"):
                k += "id" in event.json  # the last_seq line comes as an event too
            return k

        return _run(client, loop, changes())  # type: ignore[no-any-return]
    raise ValueError(client)


def preload_peer(client: str) -> None:
    """Import a peer before the clock starts, as bench.rows.preload does for corduroy2."""
    if client == "couchdb-python":
        import couchdb  # noqa: F401
    elif client == "ibmcloudant":
        import ibmcloudant.cloudant_v1  # noqa: F401
        import ibm_cloud_sdk_core.authenticators  # noqa: F401
    elif client == "aiocouch":
        import aiocouch.database  # noqa: F401


def measure(workload: str, client: str, url: str, n: int) -> dict[str, Any]:
    """One measurement in this fresh process: ``seconds`` (and peak RSS)."""
    from bench import changes as changes_bench
    from bench import rows as rows_bench

    if workload in ("get1", "get32"):
        seconds = measure_get(client, url, n, 1 if workload == "get1" else 32)
        return {"seconds": seconds, "rss_mb": peak_rss_mb()}
    if client in BACKENDS or client.startswith("curl"):
        backend = "tornado-curl" if client.startswith("curl") else client
        mode = {"rows": "kept", "stream": "dropped", "changes": "iter"}[workload]
        if client.startswith("curl"):
            mode = "raw"
        bench = changes_bench if workload == "changes" else rows_bench
        return bench.measure(backend, mode, url, n)  # type: ignore[no-any-return]
    preload_peer(client)
    start = time.perf_counter()
    got = (measure_changes if workload == "changes" else measure_rows)(client, url, n)
    seconds = time.perf_counter() - start
    assert got == n, f"{client}/{workload}: {got} items, expected {n}"
    return {"seconds": seconds, "rss_mb": peak_rss_mb()}


# -- the driver ------------------------------------------------------------------------------


def run_one(workload: str, client: str, url: str, n: int) -> dict[str, Any] | str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH", ""), str(REPO), str(SITE)) if p))
    out = subprocess.run([sys.executable, "-m", "bench", "peers", "--_measure", workload, client,
                          url, str(n)], capture_output=True, text=True, cwd=REPO, env=env)
    if out.returncode != 0:
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def clients_for(workload: str) -> list[str]:
    ours = list(BACKENDS)
    if workload == "stream":
        return [FLOOR[workload], *ours]  # no peer streams rows
    return [FLOOR[workload], *PEERS, *ours]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="GETs per measurement")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="best of K fresh processes")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"workloads, of {','.join(WORKLOADS)}")
    parser.add_argument("--_measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        workload, client, url, n = args._measure
        sys.path.append(str(SITE))
        print(json.dumps(measure(workload, client, url, int(n))), flush=True)
        os._exit(0)  # Twisted's reactor thread pool would keep the process alive

    install_peers()
    workloads = args.only.split(",")
    print(f"{os.cpu_count()} CPUs, server and clients pinned apart; best of {args.repeats} "
          f"fresh processes; ratio = to this run's floor (> 1: faster than the floor)")
    for workload in workloads:
        if workload.startswith("get"):
            from bench.get_doc import BODY, COUCH_HEADERS, DOC_PATH
            from bench.nginx import Nginx
            server: Any = Nginx({DOC_PATH: (BODY, COUCH_HEADERS)}, cpu=0)
            server.start()
            pin_apart(server._proc.pid)
            source: Any = None
            url, n, unit = server.url, args.requests, "req/s"
        else:
            from bench import changes as changes_bench
            from bench import rows as rows_bench
            n = args.changes if workload == "changes" else args.rows
            build = (changes_bench.build_body if workload == "changes"
                     else rows_bench.build_body)
            source = replay(lambda path, build=build, n=n: build(n, path), "corduroy2-peers-")
            url, _ = source.__enter__()
            server, unit = None, ("changes/s" if workload == "changes" else "s")
        try:
            print(f"\n{workload} ({n:,} {'requests' if workload.startswith('get') else 'items'})")
            print(f"  {'client':<18}{unit:>14}{'x floor':>9}{'peak MB':>9}")
            floor = None
            clients = clients_for(workload)
            # Round-robin, one process of each client per round: the machine's speed drifts
            # (other load), and a drift then hits every client alike instead of a few.
            runs: dict[str, list[dict[str, Any] | str]] = {client: [] for client in clients}
            for _ in range(args.repeats):
                for client in clients:
                    runs[client].append(run_one(workload, client, url, n))
            for client in clients:
                results = runs[client]
                good = [r for r in results if isinstance(r, dict)]
                if not good:
                    print(f"  {client:<18}  failed: {results[0]}", flush=True)
                    continue
                seconds = min(r["seconds"] for r in good)
                rss = max(r["rss_mb"] for r in good)
                if floor is None:
                    floor = seconds
                # a rate for GETs and changes; rows are a time (ratio: floor's time / ours)
                shown = seconds if unit == "s" else n / seconds
                print(f"  {client:<18}{shown:>14,.2f}{floor / seconds:>9.2f}{rss:>9.0f}",
                      flush=True)
        finally:
            if server is not None:
                server.stop()
            if source is not None:
                source.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
