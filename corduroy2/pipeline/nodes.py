"""A cluster's nodes: which one the next attempt goes to, and which are set aside for a while.

``Couch([url1, url2, url3])`` talks to a CouchDB cluster, whose nodes each serve all data.
Requests are built against the first node's URL (:class:`~corduroy2.protocol.requests.Origin`);
each attempt of the :class:`~corduroy2.pipeline.exchange.Exchange` asks :class:`Nodes` which node
to use and is sent there with its URL prefix swapped (:meth:`Nodes.request_for`).

The policy, pure and table-tested (``tests/core/test_nodes.py``):

* :func:`node_down`: a failure that says the node is down or unreachable: a refused
  connection (``ConnectError``), or a ``Timeout`` before any reply started. A cut body or a slow
  reply says nothing about the node as a whole.
* :func:`set_aside` / :data:`HEALTHY`: a failed node is set aside for ``base * 2**(n-1)``
  seconds after its *n*-th failure in a row (capped); a reply once that time is over makes it
  healthy again.
* :func:`choose`: the first node (in the caller's order) that is neither set aside nor already
  tried by this request; failing that, the untried one back soonest; failing that, the node
  back soonest. So the first node is used while it answers and the others are standbys, a
  request tries each node at most once before the retry policy's backoff applies, and a node
  whose time out is over is tried again by the next request (one request pays for the probe).

:class:`Nodes` keeps the health of each node (shared by every handle of one ``Couch``, across
threads in blocking mode) and applies the policy with the clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..errors import ConnectError, CouchError, Timeout
from ..protocol.requests import Request

__all__ = ["Health", "HEALTHY", "Backoff", "node_down", "set_aside", "choose", "Nodes"]

log = logging.getLogger("corduroy2")


@dataclass(frozen=True)
class Health:
    """A node's health: ``failures`` in a row, and the time (monotonic) before which it is set
    aside (0: not set aside)."""

    failures: int = 0
    until: float = 0.0


HEALTHY = Health()


@dataclass(frozen=True)
class Backoff:
    """How long a failed node is set aside: ``base * 2**(n-1)`` seconds after its *n*-th failure
    in a row, at most ``cap``."""

    base: float = 1.0
    cap: float = 30.0


def node_down(status: int | None, error: CouchError | None) -> bool:
    """Whether an attempt's end says its node is down: no connection could be made, or no
    reply began within the time allowed."""
    if isinstance(error, ConnectError):
        return True
    return isinstance(error, Timeout) and status is None


def set_aside(health: Health, now: float, backoff: Backoff) -> Health:
    """The health of a node that has just failed (again). A node already set aside stays as it
    is: the requests that were under way when it went down fail together, and count once."""
    if health.until > now:
        return health
    failures = health.failures + 1
    return Health(failures, now + min(backoff.cap, backoff.base * 2.0 ** (failures - 1)))


def choose(healths: Sequence[Health], now: float, tried: int) -> int:
    """The index of the node for the next attempt of a request that has tried the nodes whose
    bits are set in ``tried`` (bit *i*: node *i*)."""
    untried = [i for i in range(len(healths)) if not tried >> i & 1]
    for i in untried:
        if healths[i].until <= now:
            return i
    pool = untried or range(len(healths))
    return min(pool, key=lambda i: healths[i].until)


class Nodes:
    """The nodes of one ``Couch`` and their health. ``urls[0]`` is the URL requests are built
    with; :meth:`request_for` moves a request to another node."""

    def __init__(self, urls: Sequence[str], backoff: Backoff = Backoff(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        if len(urls) < 2:
            raise ValueError("Nodes is for two nodes or more")
        self.urls = tuple(urls)
        self.backoff = backoff
        self._clock = clock
        self._healths = [HEALTHY] * len(self.urls)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.urls)

    def pick(self, tried: int) -> int:
        """The node for the next attempt (see :func:`choose`)."""
        return choose(self._healths, self._clock(), tried)

    def request_for(self, request: Request, node: int) -> Request:
        """``request`` (built against ``urls[0]``) sent to ``node`` instead. A request for
        another server altogether is left as it is."""
        if node == 0:
            return request
        first, url = self.urls[0], request.url
        rest = url[len(first):]
        if not url.startswith(first) or rest[:1] not in ("", "/", "?"):
            return request
        return replace(request, url=self.urls[node] + rest)

    def failed(self, node: int, why: CouchError) -> None:
        """The attempt sent to ``node`` found it down: set it aside."""
        now = self._clock()
        with self._lock:
            before = self._healths[node]
            health = self._healths[node] = set_aside(before, now, self.backoff)
        if health is before:
            return
        log.warning("corduroy2: node %s set aside for %.1f s (%s: failure %d in a row)",
                    self.urls[node], health.until - now, type(why).__name__,
                    health.failures)

    def answered(self, node: int) -> None:
        """``node`` sent a reply: it is healthy, unless it was set aside since that request
        left (a reply that was on its way when the node went down says nothing)."""
        if self._healths[node] is HEALTHY:  # the usual case, without the lock
            return
        with self._lock:
            if self._healths[node].until > self._clock():
                return
            self._healths[node] = HEALTHY
        log.info("corduroy2: node %s answers again", self.urls[node])

    def health(self, node: int) -> Health:
        return self._healths[node]

    def __repr__(self) -> str:
        return f"<Nodes {' '.join(self.urls)}>"
