"""Retries, and the :class:`Sender` every request of a ``Couch`` goes out through.

:class:`Retry` is the policy: which failures are retried, how many times, how long to wait.
It is on by default (:data:`DEFAULT_RETRY`), for requests that are safe to send twice:

* a ``ConnectError`` (no connection was made, so the request never left) for **any** method;
* a lost connection (``ResponseCut`` and other transport failures) and the statuses in
  ``statuses`` (429, 503) only for requests that are safe to repeat: ``GET``/``HEAD``, and
  ``PUT``/``DELETE`` carrying a rev (a ``rev=`` query or a top-level ``_rev`` in the body: sent
  twice, the second can at worst answer 409, never write twice), or what the API marked with
  ``Request.idempotent``. A ``POST`` is never sent twice unless ``Retry(methods={"POST"})``.
* A ``Timeout`` is not retried: the time allowed for the call has been spent.

Delays are exponential with full jitter (``uniform(0, min(cap, base * 2**(n-1)))``, AWS's
"full jitter"); a ``Retry-After`` (seconds or an HTTP date) replaces that delay, capped at
``cap``. No retry starts once ``deadline`` seconds have passed since the first attempt. Delays
run on the backend's ``call_later`` (the blocking backend sleeps). The few lines of backoff are
written here rather than taken from the ``backoff`` package: its decorators wrap a function
call, while a retry here is a step of a callback-driven exchange.

:class:`Sender` is a :class:`~corduroy2.backend.Backend` wrapping the real one, with a handle's
auth provider and retry policy. For each request it: adds dynamic credentials (waiting for a
renewal under way), sends, shows every response's headers to the provider (a refreshed
cookie), answers a 401 by renewing once (single-flight) and sending again, and retries what the
policy allows. Replies that may be retried are held back and replayed to the caller's sink
only when they are final; a streamed body that will not be retried goes to the sink as it
arrives, and is then never retried (its consumer has seen bytes). Each attempt is logged at
DEBUG on the ``corduroy2`` logger (method, URL, status, duration; never headers), retries and
renewals at INFO.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ..backend import Backend, Cancel, Outcome, Sink, Start, StopTransfer, Transfer
from ..errors import ConnectError, CouchError, Timeout, TransportError
from ..protocol.requests import Request
from ..protocol.responses import Headers

if TYPE_CHECKING:  # auth imports calls, which builds its call on this module's _Exchange
    from .auth import Auth, HeaderList

__all__ = ["Retry", "DEFAULT_RETRY", "as_retry", "is_idempotent", "retry_after", "Sender"]

log = logging.getLogger("corduroy2")


# No statuses (the retry statuses of a reply that will not be retried).
_NONE: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Retry:
    """A retry policy. ``Couch(..., retry=Retry(...))``, ``retry=False`` for none, or per
    handle with ``with_options(retry=...)``.

    ``attempts``: tries in all, the first included. ``base``/``cap``: backoff (seconds) before
    retry *n* is ``uniform(0, min(cap, base * 2**(n-1)))``; a ``Retry-After`` is used instead,
    capped at ``cap``. ``deadline``: no retry starts after this many seconds from the first
    attempt. ``statuses``: error replies (>= 400) retried (for requests safe to repeat).
    ``methods``: methods retried even though they are not safe to repeat (``{"POST"}``: the
    caller accepts that a POST may be applied twice).
    """

    attempts: int = 3
    base: float = 0.1
    cap: float = 5.0
    deadline: float = 10.0
    statuses: frozenset[int] = frozenset({429, 503})
    methods: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, got {self.attempts!r}")
        for name in ("base", "cap", "deadline"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        object.__setattr__(self, "statuses", frozenset(self.statuses))
        if any(status < 400 for status in self.statuses):
            raise ValueError(f"statuses must be error statuses (>= 400): {sorted(self.statuses)}")
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))

    def allows(self, request: Request) -> bool:
        """May ``request`` be sent again after it may have reached the server?"""
        return request.method in self.methods or is_idempotent(request)

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (1 for the first retry): full jitter."""
        return random.uniform(0.0, min(self.cap, self.base * 2 ** (retry - 1)))


DEFAULT_RETRY = Retry()


def as_retry(value: Retry | bool | None) -> Retry | None:
    """The policy for ``retry=``: a :class:`Retry`, True (the default policy), False/None (off)."""
    if isinstance(value, Retry):
        return value
    if value is True:
        return DEFAULT_RETRY
    if value is False or value is None:
        return None
    raise TypeError(f"retry must be a Retry, True or False, not {type(value).__name__}")


def is_idempotent(request: Request) -> bool:
    """Whether sending ``request`` twice does no more than sending it once.

    ``request.idempotent`` decides when set. Otherwise: GET and HEAD are; PUT and DELETE are
    when they carry a rev (query ``rev=``, or ``_rev`` at the top of a JSON body): a second
    copy then meets the new revision and answers 409 instead of writing again. Anything else
    (POST, COPY, a PUT creating a doc or a database) is not.
    """
    if request.idempotent is not None:
        return request.idempotent
    method = request.method
    if method in ("GET", "HEAD"):
        return True
    if method not in ("PUT", "DELETE"):
        return False
    query = urlsplit(request.url).query
    if query and any(name == "rev" for name, _ in parse_qsl(query)):
        return True
    if request.body and b'"_rev"' in request.body:  # cheap test first; parse only if it may be
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return False
        return isinstance(body, dict) and bool(body.get("_rev"))
    return False


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not headers:
        return None
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class Sender(Backend):
    """The backend a ``Couch`` handle's calls go through: the real backend plus the handle's
    auth provider and retry policy (see the module docstring). Handles made by
    ``with_options`` have their own Sender over the same backend."""

    def __init__(self, backend: Backend, url: str, auth: Auth | None, retry: Retry | None,
                 base_headers: HeaderList = ()) -> None:
        # Not Backend.__init__: the options are the wrapped backend's.
        self.options = backend.options
        self.backend = backend
        self.url = url
        self.auth = auth
        self.retry = retry
        #: Headers every request carries whatever the auth (Accept, User-Agent): for requests
        #: the auth machinery builds itself (the login).
        self.base_headers = base_headers
        self._bare: Sender | None = None

    @property
    def bare(self) -> Sender:
        """This sender without auth: for the requests that carry their own credentials."""
        if self.auth is None:
            return self
        if self._bare is None:
            self._bare = Sender(self.backend, self.url, None, self.retry, self.base_headers)
        return self._bare

    def send(self, request: Request, sink: Sink) -> Transfer:
        exchange = _Exchange(self, request, sink)
        exchange._resume(_DONE)  # runs the first step, _attempt
        return exchange

    # fetch(): Backend's, over send(). The API's calls do not go through it: each call is an
    # exchange itself (calls._Call), which fetches each attempt from the real backend.

    def run(self, start: Start) -> Any:
        return self.backend.run(start)

    def when_done(self, value: Any, done: Callable[[Outcome], None]) -> bool:
        return self.backend.when_done(value, done)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        return self.backend.call_later(delay, fn)

    def close(self) -> Any:
        return self.backend.close()

    def __repr__(self) -> str:
        return f"<Sender {self.url} auth={self.auth!r} retry={self.retry!r}>"


class _Exchange:
    """One request through a :class:`Sender`: its handle (cancel, pause, resume), its steps,
    and the sink of each of its attempts (one at a time).

    The steps are methods: :meth:`_attempt` (one attempt, with the credentials, after waiting
    for a renewal under way), :meth:`_attempted` (done; or renew after a 401 and send again; or
    retry after a delay; or give the held reply to the caller's sink). A step that has to wait
    starts what it waits for with :meth:`_wait`, naming the step that follows. A synchronous
    backend finishes inside that start: the loop in :meth:`_resume` then runs the next step, so
    any number of retries never recurses.

    An attempt's reply is held back (so it can be retried, or replayed to the caller's sink
    once it is final), except a streamed reply that will not be retried: that goes to the
    caller's sink as it arrives (``_forwarded``). A subclass with ``_whole`` set fetches each
    attempt's reply whole instead (:meth:`~corduroy2.backend.Backend.fetch`, to
    :meth:`_fetched`) and overrides :meth:`_deliver` and :meth:`_fail`: that is the API's call
    (:class:`corduroy2.api.calls._Call`), one object per request.
    """

    #: Attempts are fetched whole (Backend.fetch) rather than sent to this exchange as a sink.
    _whole = False
    # The state, with its starting values. Class-level defaults (so no __slots__, which would
    # forbid them): a new exchange, on every request, sets only what differs.
    _retries = 0
    _renewed = False  # credentials renewed after a 401 (done at most once)
    _renew = False  # a 401 to this attempt is answered by renewing the credentials
    _fresh = False  # a renewal was just waited for (see Auth._ready)
    _current: Cancel | None = None
    _transfer: Transfer | None = None
    _pending: Outcome | None = None
    _running = False
    _over = False
    _paused = False
    # The current attempt; _clear() puts back what an attempt changed, before the next one.
    _generation = 0
    _retry_statuses = _NONE
    _status: int | None = None
    _headers: Headers | None = None
    _error: CouchError | None = None
    _forwarded = False
    _body = b""  # a whole reply (_fetched)

    def __init__(self, sender: Sender, request: Request, sink: Sink) -> None:
        self._sender = sender
        self._request = request
        self._sink = sink
        self._first = time.monotonic()  # the retry deadline counts from the first attempt
        self._next: Callable[[Outcome], None] = self._attempt

    # -- handle ------------------------------------------------------------------------------

    def cancel(self) -> None:
        if self._over:
            return
        self._over = True
        if self._current is not None:
            self._current.cancel()

    def pause(self) -> None:
        self._paused = True
        if self._transfer is not None:
            self._transfer.pause()

    def resume(self) -> None:
        self._paused = False
        if self._transfer is not None:
            self._transfer.resume()

    # -- trampoline --------------------------------------------------------------------------

    def _wait(self, start: Start, then: Callable[[Outcome], None]) -> None:
        """Begin what ``start`` begins; ``then(outcome)`` is the step once it is done."""
        self._next = then
        self._current = None
        handle = start(self._resume)
        if self._pending is None:  # not done yet: this is what cancel() must stop
            self._current = handle

    def _resume(self, outcome: Outcome) -> None:
        if self._over:
            return
        self._pending = outcome
        if self._running:
            return  # done inside _wait's start(): the loop below runs the next step
        self._running = True
        try:
            while self._pending is not None and not self._over:
                outcome, self._pending = self._pending, None
                self._next(outcome)
        except BaseException:
            self._over = True
            raise
        finally:
            self._running = False

    def _end(self, error: BaseException | None = None) -> None:
        if error is not None:
            self._fail(_couch_error(error))
        self._over = True
        # Let go of the step and the transfer (both lead back here): no reference cycle is
        # left for the cyclic GC, on every request.
        self._next, self._current = _ignore, None

    # -- the steps ---------------------------------------------------------------------------

    def _attempt(self, outcome: Outcome) -> None:
        """Send the request once, with the credentials (after a renewal under way)."""
        sender = self._sender
        auth = sender.auth
        request = sent = self._request
        if auth is not None:
            if auth.dynamic:
                ready = auth._ready(sender, fresh=self._fresh)
                if not isinstance(ready, tuple):  # a renewal under way (a _Flight): join it
                    self._wait(ready.join, self._joined)
                    return
                headers, self._generation = ready
                if headers:
                    sent = replace(request, headers=request.headers + headers)
                self._fresh = False
            self._renew = not self._renewed and auth.renewable()
        self._began = time.monotonic()
        # As _wait(start, self._attempted), with this exchange as the attempt's sink (or its
        # _fetched as the reply): its end resumes the steps (inside send()/fetch() when the
        # backend is synchronous). A whole reply names its next step itself (in _fetched),
        # since a success does not need one.
        self._current = None
        if self._whole:
            transfer = sender.backend.fetch(sent, self._fetched)
        else:
            self._next = self._attempted
            policy = sender.retry
            # A streamed reply with one of these statuses is held back rather than forwarded,
            # as it may be retried (a reply that is not streamed is held until it is final).
            if (sent.stream and policy is not None and self._retries + 1 < policy.attempts
                    and policy.allows(request)):
                self._retry_statuses = policy.statuses
            self._chunks: list[bytes] = []
            transfer = sender.backend.send(sent, self)
        # Under way: what cancel() must stop. Unless it has ended already: its end is then
        # pending (in the trampoline), or settled (over), or, when a whole call's first attempt
        # (run outside the trampoline) is answered at once, already followed by the next step,
        # which has set _current itself (a retry's wait, or its attempt).
        if self._pending is None and not self._over and self._current is None:
            self._current = self._transfer = transfer
            if self._paused:
                transfer.pause()

    def _clear(self) -> None:
        """Put back what an attempt set (to the class-level defaults), for the next one."""
        self._generation = 0
        self._retry_statuses = _NONE
        self._status = self._headers = self._error = None
        self._forwarded = False
        self._body = b""

    def _joined(self, outcome: Outcome) -> None:
        """A renewal that the credentials waited for has ended."""
        if outcome.error is not None:
            self._end(outcome.error)
            return
        self._fresh = True
        self._attempt(outcome)

    def _attempted(self, outcome: Outcome) -> None:
        self._transfer = None
        sender, request = self._sender, self._request
        if log.isEnabledFor(logging.DEBUG):
            self._log_attempt()
        if self._forwarded:
            self._end()
            return
        status = self._status
        if self._error is None and status is not None and status < 400:
            # The common case, settled without the retry rules: only errors are retried.
            self._deliver()
            # _end(), inlined: this is every successful request's path.
            self._over = True
            self._next, self._current = _ignore, None
            return
        if self._error is None and status == 401 and self._renew:
            auth = sender.auth
            assert auth is not None
            self._renewed = True
            log.info("corduroy2: %s %s answered 401: renewing the credentials of %r and "
                     "sending it again", request.method, request.url, auth)
            flight = auth._renew(sender, self._generation)
            self._clear()
            if flight is not None:
                self._wait(flight.join, self._joined_renewal)
            else:
                self._attempt(outcome)  # renewed by someone else meanwhile: send again
            return
        policy = sender.retry
        delay = _delay(policy, request, self._error, self._status, self._headers,
                       self._retries, self._first)
        if delay is None:
            self._deliver()
            self._end()
            return
        self._retries += 1
        assert policy is not None
        log.info("corduroy2: %s %s: %s; retry %d of %d in %.3f s", request.method,
                 request.url, self._describe(), self._retries, policy.attempts - 1, delay)
        self._clear()
        self._wait(_sleep(sender, delay), self._attempt)

    def _joined_renewal(self, outcome: Outcome) -> None:
        """The renewal after a 401 has ended: send again with what it got."""
        if outcome.error is not None:
            self._end(outcome.error)
            return
        self._attempt(outcome)

    # -- the sink of the current attempt -----------------------------------------------------

    def on_start(self, status: int, headers: Headers) -> None:
        self._status, self._headers = status, headers
        auth = self._sender.auth
        if auth is not None:
            auth._adopt(headers)
        if self._request.stream and not (
            status in self._retry_statuses or (status == 401 and self._renew)
        ):
            self._forwarded = True
            self._sink.on_start(status, headers)

    def on_data(self, chunk: bytes) -> None:
        if self._forwarded:
            self._sink.on_data(chunk)
        else:
            self._chunks.append(chunk)

    def on_end(self) -> None:
        status = self._status
        if status is not None and status < 400 and not self._over:
            # A success is the last step (only errors are retried): settled here rather than
            # through the trampoline, which only has to keep retries from recursing.
            self._attempted(_DONE)
        else:
            self._resume(_DONE)
        if self._forwarded:
            self._sink.on_end()

    def on_error(self, exc: CouchError) -> None:
        self._error = exc
        self._resume(_DONE)
        if self._forwarded:
            self._sink.on_error(exc)

    # -- or the reply of the current attempt, whole ------------------------------------------

    def _fetched(self, status: int | None, headers: Headers | None, body: bytes,
                 error: CouchError | None) -> None:
        """The reply of an attempt fetched whole (``_whole``); its end resumes the steps."""
        self._status, self._headers, self._body, self._error = status, headers, body, error
        if headers is not None:
            auth = self._sender.auth
            if auth is not None:
                auth._adopt(headers)
        self._next = self._attempted
        self._resume(_DONE)

    # -- the end -----------------------------------------------------------------------------

    def _fail(self, error: CouchError) -> None:
        """The request failed before an attempt could be made (credentials)."""
        self._sink.on_error(error)

    def _deliver(self) -> None:
        """Give the held reply to the caller's sink, as it was received."""
        sink = self._sink
        try:
            if self._status is not None:
                assert self._headers is not None
                sink.on_start(self._status, self._headers)
                for chunk in self._chunks:
                    sink.on_data(chunk)
            if self._error is not None:
                sink.on_error(self._error)
            else:
                sink.on_end()
        except StopTransfer:
            pass  # the sink gave up on a body that had already arrived whole

    def _log_attempt(self) -> None:
        request = self._request
        log.debug("corduroy2: %s %s -> %s (%.1f ms)", request.method, request.url,
                  self._describe(), (time.monotonic() - self._began) * 1000)

    def _describe(self) -> str:
        error = self._error
        if error is not None:
            # A TransportError's text without the "(METHOD url)" the log line already has.
            text = error.args[0] if isinstance(error, TransportError) and error.args else error
            return f"{type(error).__name__}: {text}"
        return str(self._status)


# What an attempt or a sleep reports when it is over (its details are kept elsewhere).
_DONE = Outcome()


def _sleep(sender: Sender, delay: float) -> Start:
    def start(done: Callable[[Outcome], None]) -> Cancel:
        return sender.backend.call_later(delay, lambda: done(_DONE))

    return start


def _delay(policy: Retry | None, request: Request, error: CouchError | None,
           status: int | None, headers: Headers | None, retries: int,
           first: float) -> float | None:
    """Seconds to wait before sending ``request`` again after an attempt that ended with
    ``error`` or with ``status``, or None to give up."""
    if policy is None or retries + 1 >= policy.attempts:
        return None
    if error is not None:
        if isinstance(error, Timeout) or not isinstance(error, TransportError):
            return None
        # A ConnectError means no connection was made, so the request never reached the server
        # and may be sent again whatever its method. Other transport failures may have happened
        # after the server applied it: only for requests safe to repeat.
        if not isinstance(error, ConnectError) and not policy.allows(request):
            return None
        delay = policy.backoff(retries + 1)
    elif status in policy.statuses and policy.allows(request):
        asked = retry_after(headers)
        delay = min(asked, policy.cap) if asked is not None else policy.backoff(retries + 1)
    else:
        return None
    if time.monotonic() - first + delay > policy.deadline:
        return None
    return delay


def _couch_error(error: BaseException) -> CouchError:
    if isinstance(error, CouchError):
        return error
    wrapped = CouchError(f"could not get credentials: {type(error).__name__}")
    wrapped.__cause__ = error
    return wrapped


def _ignore(outcome: Outcome) -> None:
    return None
