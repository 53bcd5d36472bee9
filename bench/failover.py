"""A cluster losing nodes: requests per second through three nodes while the node in use dies
every few seconds, next to the same run with no deaths; and how long after a death the first
request succeeds on another node.

    python -m bench failover [--seconds 10] [--every 2] [--down 1] [--threads 4]
                             [--how kill|freeze] [--connect-timeout 1] [--idle-timeout 1]
                             [--backend blocking|tornado-curl|tornado-simple|twisted]

A script, not a test. Each "node" is an nginx (bench/nginx.py) serving the same CouchDB-shaped
document on its own loopback port: ``Couch([node1, node2, node3])``, getting the document in
``--threads`` chains (threads in blocking mode; on an event loop, each answer starts the next
request), callback style, so each success says which node answered (``Status.node``).

* ``--how kill``: the node in use (the one that answered last) is stopped (nginx's fast
  shutdown: connections reset, new ones refused) and started again ``--down`` seconds later.
* ``--how freeze``: its processes are stopped (SIGSTOP): the kernel still accepts
  connections, nothing answers, so only the client's timeouts can tell (``--idle-timeout``);
  give ``--down`` more than the idle timeout, or the node is back before anyone notices.

Failover time: from a death to the first request that succeeds on another node. The target is
the connect timeout plus 100 ms (a refused connection is seen at once; a silent node after the
idle timeout). The machine is shared and its speed varies: compare the two runs of one
invocation, not figures from different days.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .get_doc import BODY, COUCH_HEADERS, DOC_PATH, AsyncioMode
from .nginx import Nginx

NODES = 3


@dataclass
class Run:
    """What one run saw: successes (time, node) and failures, by every thread."""

    ok: list[tuple[float, str]] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)
    # (died, node URL, back): when a node died, and when it came back
    deaths: list[tuple[float, str, float]] = field(default_factory=list)

    def failover_times(self) -> tuple[list[float], int]:
        """Per death: seconds to the first success on another node before the node came
        back; and how many deaths no request noticed (the node was back first)."""
        times, unnoticed = [], 0
        ok = sorted(self.ok)
        for died, node, back in self.deaths:
            first = next((t for t, n in ok if t >= died and n != node), None)
            if first is not None and first < back:
                times.append(first - died)
            else:
                unnoticed += 1
        return times, unnoticed


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _signal_tree(pid: int | None, sig: int) -> None:
    if pid is None:
        return
    for child in _children(pid):
        os.kill(child, sig)
    os.kill(pid, sig)


def make_couch(backend: str, urls: list[str], **kwargs: Any) -> Any:
    if backend == "blocking":
        from corduroy2.blocking import Couch
    elif backend == "twisted":
        from corduroy2.twisted_io import Couch  # type: ignore[assignment]
    else:
        from corduroy2.tornado_io import Couch  # type: ignore[assignment]

        kwargs["client"] = backend.split("-")[1]
    return Couch(urls, **kwargs)


def run(mode: Any, backend: str, nodes: list[Nginx], seconds: float, threads: int,
        kill_every: float | None, down: float, how: str, connect_timeout: float,
        idle_timeout: float) -> Run:
    couch = make_couch(backend, [n.url for n in nodes], connect_timeout=connect_timeout,
                       idle_timeout=idle_timeout, max_connections=threads * 2)
    db = couch.database("db")
    doc_id = DOC_PATH.rsplit("/", 1)[1]
    result = Run()
    stop = threading.Event()
    last_node = [nodes[0].url]

    def got(doc: Any, status: Any) -> None:
        now = time.monotonic()
        if status.ok:
            result.ok.append((now, status.node))
            last_node[0] = status.node
        else:
            result.failed.append((now, repr(status.exception)))

    def work() -> None:
        while not stop.is_set():
            db.get(doc_id, callback=got)

    def chain(doc: Any, status: Any) -> None:  # on the loop: each answer asks again
        got(doc, status)
        if not stop.is_set():
            db.get(doc_id, callback=chain)

    if mode is None:
        workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        _deaths(result, nodes, last_node, seconds, kill_every, down, how)
        stop.set()
        for worker in workers:
            worker.join(idle_timeout + connect_timeout + 5)
        couch.close()
        return result
    import asyncio

    for _ in range(threads):
        db.get(doc_id, callback=chain)
    killer = threading.Thread(target=_deaths, daemon=True,
                              args=(result, nodes, last_node, seconds, kill_every, down, how))
    killer.start()
    while killer.is_alive():
        mode.run(asyncio.sleep(0.1))
    stop.set()
    mode.run(asyncio.sleep(idle_timeout + 0.5))  # the last answers
    closing = couch.close()
    if closing is not None:  # Twisted: a Deferred, fired once the connections are closed
        mode.run(_settled(mode.wait(closing)))
    return result


async def _settled(future: Any) -> None:
    await future


def _deaths(result: Run, nodes: list[Nginx], last_node: list[str], seconds: float,
            kill_every: float | None, down: float, how: str) -> None:
    """For ``seconds``: every ``kill_every`` seconds, the node that answered last dies for
    ``down`` seconds (None: no deaths)."""
    start = time.monotonic()
    by_url = {n.url: n for n in nodes}
    while True:
        left = start + seconds - time.monotonic()
        if left <= 0:
            break
        if kill_every is None:
            time.sleep(left)
            continue
        time.sleep(min(left, kill_every - down))
        if time.monotonic() - start >= seconds:
            break
        victim = by_url[last_node[0]]
        died = time.monotonic()
        if how == "kill":
            victim.stop()
        else:
            _signal_tree(victim.pid, signal.SIGSTOP)
        time.sleep(min(down, max(0.0, start + seconds - time.monotonic())))
        if how == "kill":
            victim.start()
        else:
            _signal_tree(victim.pid, signal.SIGCONT)
        result.deaths.append((died, victim.url, time.monotonic()))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench failover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--every", type=float, default=2.0, help="a death every N seconds")
    parser.add_argument("--down", type=float, default=1.0, help="how long a node stays dead")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--how", choices=["kill", "freeze"], default="kill")
    parser.add_argument("--connect-timeout", type=float, default=1.0)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument("--backend", default="blocking",
                        choices=["blocking", "tornado-curl", "tornado-simple", "twisted"])
    args = parser.parse_args(argv)
    if not 0 < args.down < args.every:
        parser.error("--down must be > 0 and shorter than --every")
    return args


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    nodes = [Nginx({DOC_PATH: (BODY, COUCH_HEADERS)}) for _ in range(NODES)]
    mode = None
    try:
        for node in nodes:
            node.start()
        log(f"three nginx nodes: {' '.join(n.url for n in nodes)}; {args.backend}, "
            f"{args.threads} chains, {args.seconds:g} s per run; connect timeout "
            f"{args.connect_timeout:g} s, idle timeout {args.idle_timeout:g} s")
        mode = None if args.backend == "blocking" else AsyncioMode()
        calm = run(mode, args.backend, nodes, args.seconds, args.threads, None, args.down,
                   args.how, args.connect_timeout, args.idle_timeout)
        rough = run(mode, args.backend, nodes, args.seconds, args.threads, args.every,
                    args.down, args.how, args.connect_timeout, args.idle_timeout)
    finally:
        for node in nodes:
            _signal_tree(node.pid, signal.SIGCONT)
            node.stop()
    if mode is not None:
        mode.close()
    print(f"| run | requests/s | failed | deaths ({args.how}) |")
    print("|---|---|---|---|")
    for name, result, deaths in (("no deaths", calm, 0), (f"a death every {args.every:g} s",
                                                           rough, len(rough.deaths))):
        print(f"| {name} | {len(result.ok) / args.seconds:,.0f} | {len(result.failed)} | "
              f"{deaths} |")
    times, unnoticed = rough.failover_times()
    target = (args.connect_timeout if args.how == "kill" else args.idle_timeout) + 0.1
    if times:
        print(f"\nfailover (death -> first success on another node), {len(times)} deaths: "
              f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
              f"(target < {target * 1000:.0f} ms: {'met' if max(times) < target else 'MISSED'})")
    if unnoticed:
        print(f"{unnoticed} deaths ended (the node back) before any request moved elsewhere")
    for when, what in rough.failed[:5]:
        print(f"  failed: {what}")
    return 0
