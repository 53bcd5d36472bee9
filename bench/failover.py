"""A cluster losing nodes: requests per second through three nodes while the node in use dies
every few seconds, next to the same run with no deaths; and how long after a death the first
request succeeds on another node.

    python -m bench failover [--seconds 10] [--every 2] [--down 1] [--threads 4]
                             [--how kill|freeze] [--connect-timeout 1] [--idle-timeout 1]

A script, not a test. Each "node" is an nginx (bench/nginx.py) serving the same CouchDB-shaped
document on its own loopback port: ``Couch([node1, node2, node3])`` on the blocking front door,
``--threads`` threads each getting the document in a loop (callback style, so each success
says which node answered: ``Status.node``).

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

from .get_doc import BODY, COUCH_HEADERS, DOC_PATH
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


def run(nodes: list[Nginx], seconds: float, threads: int, kill_every: float | None,
        down: float, how: str, connect_timeout: float, idle_timeout: float) -> Run:
    from corduroy2.blocking import Couch

    couch = Couch([n.url for n in nodes], connect_timeout=connect_timeout,
                  idle_timeout=idle_timeout, max_connections=threads * 2)
    db = couch.database("db")
    result = Run()
    stop = threading.Event()
    last_node = [nodes[0].url]

    def work() -> None:
        def got(doc: Any, status: Any) -> None:
            now = time.monotonic()
            if status.ok:
                result.ok.append((now, status.node))
                last_node[0] = status.node
            else:
                result.failed.append((now, repr(status.exception)))

        while not stop.is_set():
            db.get(DOC_PATH.rsplit("/", 1)[1], callback=got)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    start = time.monotonic()
    for worker in workers:
        worker.start()
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
    stop.set()
    for worker in workers:
        worker.join(idle_timeout + connect_timeout + 5)
    couch.close()
    return result


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
    args = parser.parse_args(argv)
    if not 0 < args.down < args.every:
        parser.error("--down must be > 0 and shorter than --every")
    return args


def main(argv: list[str]) -> int:
    args = _parse(argv)
    log = (lambda text: print(text, file=sys.stderr, flush=True))
    nodes = [Nginx({DOC_PATH: (BODY, COUCH_HEADERS)}) for _ in range(NODES)]
    try:
        for node in nodes:
            node.start()
        log(f"three nginx nodes: {' '.join(n.url for n in nodes)}; blocking front door, "
            f"{args.threads} threads, {args.seconds:g} s per run; connect timeout "
            f"{args.connect_timeout:g} s, idle timeout {args.idle_timeout:g} s")
        calm = run(nodes, args.seconds, args.threads, None, args.down, args.how,
                   args.connect_timeout, args.idle_timeout)
        rough = run(nodes, args.seconds, args.threads, args.every, args.down, args.how,
                    args.connect_timeout, args.idle_timeout)
    finally:
        for node in nodes:
            _signal_tree(node.pid, signal.SIGCONT)
            node.stop()
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
