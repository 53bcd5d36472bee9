"""The way out: every request of a ``Couch`` handle goes through its :class:`Sender`.

For one request, an :class:`Exchange`

1. adds the credentials that change (a cookie, a JWT), first waiting for a renewal under way;
2. sends the request once (an *attempt*) through the backend, as that attempt's sink;
3. shows the reply's headers to the auth provider (a refreshed cookie);
4. asks :func:`~corduroy2.pipeline.decision.decide` what the attempt's end means and does it:
   deliver the reply to the caller's sink, fail with the transport error, renew the credentials
   then send again, send again to another node of a cluster, or wait then send again.

On a cluster (``Couch([url1, url2...])``, a Sender with :class:`~corduroy2.pipeline.nodes.Nodes`)
each attempt goes to the node :class:`~corduroy2.pipeline.nodes.Nodes` picks, its URL prefix
swapped; an attempt that finds its node down sets the node aside. The reply's
:class:`~corduroy2.protocol.responses.Headers` carry the node that answered (``node``) and the
URL it answered (``url``), for ``Status.node`` and the URL in errors.

The decision for a reply is made when its status arrives. A reply to deliver goes to the
caller's sink as it arrives; one to retry (a 503, a 401 to renew) is read to its end and
dropped. Should a delivered body be cut, a streamed request fails (its consumer has seen part of
it), while any other request may be sent again: its sink then gets ``on_start`` again and starts
over. Each attempt is logged at DEBUG on the ``corduroy2`` logger (method, URL with its node,
status, duration; never headers), retries, renewals and failovers at INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..backend import (
    Backend, Cancel, Outcome, PauseTransfer, Sink, Start, StopTransfer, Transfer,
)
from ..errors import CouchError, TransportError
from ..protocol.requests import Request
from ..protocol.responses import Headers
from .auth import Auth, HeaderList, _Flight
from .decision import DELIVER, FAIL, FAILOVER, RENEW, Decision, RetryAfter, decide
from .nodes import Nodes, node_down
from .retry import Retry

__all__ = ["Sender", "Exchange"]

log = logging.getLogger("corduroy2")


class Sender:
    """A handle's way out: its backend, auth provider and retry policy, and a cluster's
    ``nodes`` (None for one server). Handles made by ``with_options`` have their own Sender
    over the same backend and nodes. ``url`` is the server (the first node) requests are built
    against."""

    def __init__(self, backend: Backend, url: str, auth: Auth | None, retry: Retry | None,
                 base_headers: HeaderList = (), nodes: Nodes | None = None) -> None:
        self.backend = backend
        self.url = url
        self.nodes = nodes
        self.auth = auth
        self.retry = retry
        #: Headers every request carries whatever the auth (Accept, User-Agent): for the
        #: requests the auth provider builds itself (the login).
        self.base_headers = base_headers
        self._bare: Sender | None = None

    @property
    def bare(self) -> Sender:
        """This sender without auth: for the requests that carry their own credentials."""
        if self.auth is None:
            return self
        if self._bare is None:
            self._bare = Sender(self.backend, self.url, None, self.retry, self.base_headers,
                                self.nodes)
        return self._bare

    def send(self, request: Request, sink: Sink) -> Exchange:
        """Send ``request`` with this handle's credentials and retries; the final reply goes
        to ``sink``. Returns the exchange, a transfer handle (cancel, pause, resume)."""
        return Exchange(self, request, sink).start()

    def when_done(self, value: Any, done: Callable[[Outcome], None]) -> bool:
        return self.backend.when_done(value, done)

    def __repr__(self) -> str:
        return f"<Sender {self.url} auth={self.auth!r} retry={self.retry!r}>"


class Exchange:
    """One request through a :class:`Sender`, its final reply to ``sink``; the handle its
    caller cancels, pauses and resumes.

    Its steps (:meth:`_attempt`, :meth:`_attempted`, and what they wait for) run one after the
    other from :meth:`_step`'s loop. A synchronous backend (blocking) delivers a reply inside
    ``send()``: the step that follows is then queued, not called, so any number of retries
    never recurses.
    """

    # The exchange's state starts from these class-level values: a request (one per call)
    # sets only what differs.
    _attempts = 0
    _retries = 0
    _renewed = False  # credentials renewed after a 401 (at most once)
    _fresh = False  # a renewal was just waited for (see Auth._ready)
    _generation = 0  # of the credentials the attempt was sent with
    _current: Cancel | None = None  # what is under way: an attempt or a wait
    _next: Callable[[], None] | None = None
    _running = False
    # The attempt under way: how its reply has gone so far (_new_attempt() puts these back).
    _in_flight = False
    _status: int | None = None
    _headers: Headers | None = None
    _error: CouchError | None = None
    _delivering = False  # the caller's sink has this attempt's reply as it comes
    _then: Decision | None = None  # what a reply that is not delivered asked for at its start
    _began = 0.0
    _first = 0.0  # when the first attempt began: the retry deadline counts from there
    # On a cluster: the attempt's node and URL, and the nodes tried so far (bit i: node i).
    _node = 0
    _url: str | None = None
    _tried = 0

    def __init__(self, sender: Sender, request: Request, sink: Sink) -> None:
        self._sender = sender
        self._request = request
        self._sink = sink
        # Read for every piece of a reply (on_data): an instance's own attributes are read
        # faster than class-level ones (CPython 3.11 specialises only the former): a blocking
        # view's rows, dropped, 8,759 -> 8,714 instructions a row under callgrind.
        self._transfer: Transfer | None = None  # the attempt under way
        self._paused = False
        self._over = False

    def start(self) -> Exchange:
        self._step(self._attempt)
        return self

    # -- the handle ------------------------------------------------------------------------

    def cancel(self) -> None:
        if self._over:
            return
        current = self._current
        self._finish()  # (and lets go of the attempt: a cancelled call holds nothing)
        if current is not None:
            current.cancel()

    def pause(self) -> None:
        self._paused = True
        if self._transfer is not None:
            self._transfer.pause()

    def resume(self) -> None:
        self._paused = False
        if self._transfer is not None:
            self._transfer.resume()

    # -- running the steps -----------------------------------------------------------------

    def _step(self, step: Callable[[], None]) -> None:
        """Run ``step`` now, or after the step under way when called from inside it."""
        if self._running:
            self._next = step
            return
        if self._over:  # cancelled: what it waited for ended anyway
            return
        self._running = True
        try:
            step()
            while self._next is not None and not self._over:
                step, self._next = self._next, None
                step()
        except BaseException:
            self._over = True
            raise
        finally:
            self._running = False
            self._next = None  # left by a step that ended the exchange (a cycle otherwise)

    def _wait(self, start: Start, then: Callable[[Outcome], None]) -> None:
        """Begin what ``start`` begins; ``then(outcome)`` is the next step once it is done."""
        self._current = start(lambda outcome: self._step(lambda: then(outcome)))

    def _finish(self) -> None:
        """The exchange is over: nothing more runs, and it lets go of what leads back to it."""
        self._over = True
        self._current = self._transfer = self._next = None

    # -- the steps -------------------------------------------------------------------------

    def _attempt(self) -> None:
        """Send the request once, with the credentials (after a renewal under way)."""
        request = self._request
        auth = self._sender.auth
        if auth is not None and auth.dynamic:
            ready = auth._ready(self._sender, fresh=self._fresh)
            self._fresh = False
            if isinstance(ready, _Flight):
                self._wait(ready.join, self._renewal_ended)
                return
            headers, self._generation = ready
            if headers:
                request = replace(request, headers=request.headers + headers)
        nodes = self._sender.nodes
        if nodes is not None:
            node = self._node = nodes.pick(self._tried)
            self._tried |= 1 << node
            request = nodes.request_for(request, node)
            self._url = request.url
        self._began = time.monotonic()
        if self._attempts:
            self._new_attempt()
        else:
            self._first = self._began
        self._attempts += 1
        self._in_flight = True
        transfer = self._sender.backend.send(request, self)
        if self._in_flight:  # not answered inside send(): this is what cancel() stops
            if self._over:  # cancelled from another thread while a synchronous send() read
                transfer.cancel()
                return
            self._current = self._transfer = transfer
            if self._paused:
                transfer.pause()

    def _attempted(self) -> None:
        """The attempt has ended: deliver, fail, renew, fail over or retry."""
        self._current = self._transfer = None
        if log.isEnabledFor(logging.DEBUG):
            self._log_attempt()
        error = self._error
        nodes = self._sender.nodes
        if nodes is not None and node_down(self._status, error):
            assert error is not None
            nodes.failed(self._node, error)
        if error is None:
            if self._delivering:
                self._finish()
                self._sink.on_end()
                return
            decision = self._then
        elif self._delivering and self._request.stream:
            # Its consumer has seen part of the reply: it is not sent again as it was. A feed
            # that can pick up where it broke goes on from there on another node.
            decision = self._pick_up()
        else:
            decision = self._decide()
        if decision is FAIL:
            assert error is not None
            self._fail(error)
        elif decision is RENEW:
            self._renew()
        elif decision is FAILOVER:
            self._fail_over()
        elif isinstance(decision, RetryAfter):
            self._retry(decision.delay)
        else:  # DELIVER after a transport error cannot be: decide() fails those
            raise AssertionError(f"{decision!r} at the end of {self._request!r}")

    def _pick_up(self) -> Decision:
        """After a streamed reply broke: on a cluster, carry on with the request its sink
        gives to pick the stream up (``request_to_resume()``, a changes feed's), as a new
        request: its own retries, deadline and nodes, its status not yet known (so a node that
        went silent is left like one that never answered)."""
        # (An optional member of a sink: "resume" is the transfer handle's word for unpausing.)
        request_to_resume = getattr(self._sink, "request_to_resume", None)
        if request_to_resume is None or self._sender.nodes is None:
            return FAIL
        self._request = request_to_resume()
        self._tried = 1 << self._node
        self._retries = 0
        self._first = time.monotonic()
        self._status = self._headers = None
        return self._decide()

    def _decide(self) -> Decision:
        auth = self._sender.auth
        nodes = self._sender.nodes
        return decide(
            self._request, self._status, self._headers, self._error,
            policy=self._sender.retry,
            retries=self._retries,
            elapsed=time.monotonic() - self._first,
            renewable=auth is not None and not self._renewed and auth.renewable(),
            other_node=nodes is not None and self._tried != (1 << len(nodes)) - 1,
        )

    def _renew(self) -> None:
        auth = self._sender.auth
        assert auth is not None
        self._renewed = True
        log.info("corduroy2: %s %s answered 401: renewing the credentials of %r and sending "
                 "it again", self._request.method, self._request.url, auth)
        flight = auth._renew(self._sender, self._generation)
        if flight is None:  # renewed by another request meanwhile: send again
            self._attempt()
        else:
            self._wait(flight.join, self._renewal_ended)

    def _renewal_ended(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self._fail(_couch_error(outcome.error))
            return
        self._fresh = True
        self._attempt()

    def _fail_over(self) -> None:
        log.info("corduroy2: %s %s: %s; sending it to another node", self._request.method,
                 self._url, self._describe())
        self._attempt()

    def _retry(self, delay: float) -> None:
        self._retries += 1
        policy = self._sender.retry
        assert policy is not None
        log.info("corduroy2: %s %s: %s; retry %d of %d in %.3f s", self._request.method,
                 self._request.url, self._describe(), self._retries, policy.attempts - 1, delay)
        backend = self._sender.backend

        def sleep(done: Callable[[Outcome], None]) -> Cancel:
            return backend.call_later(delay, lambda: done(_SLEPT))

        self._wait(sleep, lambda _: self._attempt())

    # -- the sink of the current attempt ---------------------------------------------------

    def _new_attempt(self) -> None:
        """Put back the attempt state the last attempt changed."""
        self._status = self._headers = self._error = self._then = None
        self._delivering = False

    def on_start(self, status: int, headers: Headers) -> None:
        self._status, self._headers = status, headers
        nodes = self._sender.nodes
        if nodes is not None:
            nodes.answered(self._node)
            headers.node, headers.url = nodes.urls[self._node], self._url
        auth = self._sender.auth
        if auth is not None:
            auth._observe(headers)
        decision = self._decide()
        if decision is DELIVER:
            self._delivering = True
            self._sink.on_start(status, headers)
        else:
            self._then = decision

    def on_data(self, chunk: bytes) -> None:
        if self._delivering:
            self._sink.on_data(chunk)
            if self._transfer is None:
                # A synchronous backend delivering inside send(): no handle to pause or
                # cancel it by yet (cancel() may come from another thread), so it is told so.
                if self._over:
                    raise StopTransfer()
                if self._paused:
                    raise PauseTransfer()

    def on_end(self) -> None:
        self._in_flight = False
        self._step(self._attempted)

    def on_error(self, exc: CouchError) -> None:
        self._in_flight = False
        self._error = exc
        self._step(self._attempted)

    # -- the end ---------------------------------------------------------------------------

    def _fail(self, error: CouchError) -> None:
        self._finish()
        self._sink.on_error(error)

    def _log_attempt(self) -> None:
        log.debug("corduroy2: %s %s -> %s (%.1f ms)", self._request.method,
                  self._url or self._request.url,
                  self._describe(), (time.monotonic() - self._began) * 1000)

    def _describe(self) -> str:
        error = self._error
        if error is not None:
            # A TransportError's text without the "(METHOD url)" the log line already has.
            text = error.args[0] if isinstance(error, TransportError) and error.args else error
            return f"{type(error).__name__}: {text}"
        return str(self._status)


# What a retry's sleep reports when it is over.
_SLEPT = Outcome()


def _couch_error(error: BaseException) -> CouchError:
    if isinstance(error, CouchError):
        return error
    wrapped = CouchError(f"could not get credentials: {type(error).__name__}")
    wrapped.__cause__ = error
    return wrapped
