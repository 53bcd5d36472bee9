"""Running an operation in every calling style.

Each API method builds its requests up front (so bad arguments raise at once, in every style)
and describes the rest as an *operation*: a generator that yields
:class:`~corduroy2.protocol.requests.Request` values and receives the decoded JSON reply (or has
the typed error thrown in at the ``yield``). Multi-request calls (``save`` fetching uuids first,
``db(create_if_missing=True)``) are then plain sequential code, written once. An operation may
also yield :class:`Wait` to wait for something that is not a request (a login in progress, a
token from the user's callable).

:class:`_Run` drives an operation over a ``Couch``'s :class:`~corduroy2.api.retry.Sender` (the
backend wrapped with credentials, their renewal and retries, so every request of every operation
gets them on every backend; a login is itself just an operation run here). It trampolines, so a
backend that completes synchronously (blocking) does not recurse. Most methods send a single
request: :class:`_Call` runs that directly (:func:`invoke_one`), with no generator; it is also
how ``_Run`` sends each request step. A ``_Call`` is the Sender's exchange itself (a subclass),
fetching each attempt's reply whole. :func:`invoke` picks the calling style: an explicit
callback, or the backend's native result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from ..backend import Cancel, Outcome, Start, StopTransfer
from ..errors import CouchError, HTTPError
from ..protocol.requests import Request
from ..protocol.responses import Headers, decode_json, make_error
from ..protocol.rows import NEED_DATA, End, Header, RowStream
from ..errors import DecodeError, ResponseCut
from .retry import _DONE, Sender, _Exchange
from .status import Status

__all__ = ["Raw", "Response", "Stream", "Wait", "RowConsumer", "Op", "invoke", "invoke_one"]

log = logging.getLogger("corduroy2")

T = TypeVar("T")

# The headers of "no response yet". Headers are read-only, so one empty instance serves all.
_NO_HEADERS = Headers()


@dataclass(frozen=True)
class Response:
    """A whole response, for operations that need more than the decoded body."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class Raw:
    """Yield ``Raw(request)`` to receive the :class:`Response` itself, with no status check."""

    request: Request


class RowConsumer(Protocol):
    """Receives a streamed row body as it is parsed; :meth:`end` gives the operation's value."""

    def header(self, fields: dict[str, Any]) -> None: ...

    def rows(self, rows: list[Any]) -> None: ...

    def end(self, fields: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Stream:
    """Yield ``Stream(request, consumer)`` to have a row-bearing reply parsed as it arrives.

    ``request.stream`` should be True. The consumer sees rows per received chunk; what its
    ``end`` returns is sent back at the ``yield``. An exception raised by the consumer aborts
    the transfer and fails the call with that exception.
    """

    request: Request
    consumer: RowConsumer


@dataclass(frozen=True)
class Wait:
    """Yield ``Wait(start)`` to wait for anything with a callback: ``start(done)`` begins it and
    returns a cancel handle, and ``done(Outcome)`` later delivers the value (or the error, raised
    at the ``yield``). The shape of :meth:`~corduroy2.backend.Backend.run`'s argument. A
    :class:`Response` value counts as the call's last response (``Status.code``)."""

    start: Start


Op = Generator["Request | Raw | Stream | Wait", Any, T]


class RowSink:
    """A sink that parses a row-bearing body with :class:`RowStream` as chunks arrive.

    Error replies (>= 400) are collected whole and mapped. A failure while parsing (bad JSON, an
    error member mid-stream, the consumer raising) cancels the transfer: the rest of the body is
    unwanted, and the connection must not be reused half-read.
    """

    __slots__ = ("_consumer", "_done", "_request", "transfer", "_parser", "_status",
                 "_headers", "_error_chunks", "_end", "_over")

    def __init__(self, request: Request, consumer: RowConsumer,
                 done: Callable[[Any, BaseException | None, int, Headers], None]) -> None:
        self._request = request
        self._consumer = consumer
        self._done = done
        self.transfer: Any = None
        self._parser: RowStream | None = None
        self._status = 0
        self._headers = _NO_HEADERS
        self._error_chunks: list[bytes] = []
        self._end: dict[str, Any] | None = None
        self._over = False

    def on_start(self, status: int, headers: Headers) -> None:
        self._status, self._headers = status, headers
        if status < 400:
            self._parser = RowStream(status=status, headers=headers)

    def on_data(self, chunk: bytes) -> None:
        if self._over:
            return
        if self._parser is None:
            self._error_chunks.append(chunk)
            return
        try:
            self._parser.receive_data(chunk)
            self._drain(self._parser)
        except StopTransfer:
            raise
        except Exception as exc:
            self._fail(exc)

    def _drain(self, parser: RowStream) -> None:
        consumer = self._consumer
        while True:
            rows = parser.rows_ready()
            if rows:
                consumer.rows(rows)
                continue
            event = parser.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, Header):
                consumer.header(event.fields)
            elif isinstance(event, End):
                self._end = event.fields
                return
            else:  # a row that rows_ready() left for next_event()
                consumer.rows([event.value])  # type: ignore[union-attr]

    def _fail(self, exc: BaseException) -> None:
        self._over = True
        self._done(None, exc, self._status, self._headers)
        if self.transfer is not None:
            self.transfer.cancel()
        else:
            raise StopTransfer() from exc  # a synchronous backend: stop reading now

    def on_end(self) -> None:
        if self._over:
            return
        request = self._request
        if self._parser is None:
            self._over = True
            error = make_error(self._status, self._headers, b"".join(self._error_chunks),
                               method=request.method, url=request.url)
            self._done(None, error, self._status, self._headers)
            return
        try:
            self._parser.receive_data(b"")
            try:
                self._drain(self._parser)
            except ResponseCut as cut:
                # The transport saw the whole body by its framing: JSON that stops short is a
                # malformed reply, not a cut connection (which arrives through on_error).
                raise DecodeError(f"response body is incomplete JSON: {cut}") from cut
            if self._end is None:
                raise ResponseCut("response body ended early", method=request.method,
                                  url=request.url)
            value = self._consumer.end(self._end)
        except Exception as exc:
            self._over = True  # the body is complete: nothing to abort
            self._done(None, exc, self._status, self._headers)
            return
        self._over = True
        self._done(value, None, self._status, self._headers)

    def on_error(self, exc: CouchError) -> None:
        if not self._over:
            self._over = True
            self._done(None, exc, self._status, self._headers)


class _Driver:
    """What both drivers keep for the explicit-callback style: the last response's status code
    and headers, from which :meth:`status` builds the :class:`Status` (only when a callback
    wants one). Class-level defaults, no ``__slots__``: a driver is made per call, and sets only
    what differs."""

    _code: int | None = None
    _headers: Headers | None = None

    def start(self, done: Callable[[Outcome], None]) -> Cancel:
        """Begin; ``done`` is called once with the outcome. Returns the cancel handle."""
        raise NotImplementedError

    def status(self, exc: BaseException | None) -> Status:
        code = exc.status if isinstance(exc, HTTPError) else self._code
        headers = self._headers
        return Status(ok=exc is None, code=code,
                      headers=_NO_HEADERS if headers is None else headers, exception=exc)


class _Call(_Exchange, _Driver):
    """One request through the Sender's exchange (credentials, their renewal, retries), each
    attempt's reply fetched whole; the final one checked and decoded (an error status raised as
    its mapped error, JSON decoded; with ``raw`` the :class:`Response` itself), then ``post``
    applied.

    Most methods are exactly this, so they run it directly, with no generator to trampoline
    (it is on every call's path); an operation's request steps run through it as well. It is
    the exchange itself rather than a driver over one: one object and one reply hop per call.
    """

    _whole = True
    _post: Callable[[Any], Any] | None = None
    _raw = False
    _done: Callable[[Outcome], None]

    def __init__(self, sender: Sender, request: Request,
                 post: Callable[[Any], Any] | None = None, raw: bool = False) -> None:
        # Not _Exchange.__init__: there is no sink (the reply is this call's), and start()
        # runs the first attempt itself, so the trampoline has no step yet.
        self._sender = sender
        self._request = request
        if post is not None:
            self._post = post
        if raw:
            self._raw = True
        self._first = time.monotonic()  # the retry deadline counts from the first attempt

    def start(self, done: Callable[[Outcome], None]) -> _Call:
        self._done = done
        self._attempt(_DONE)
        return self

    def _fetched(self, status: int | None, headers: Headers | None, body: bytes,
                 error: CouchError | None) -> None:
        # Without an error, a reply has its status and headers (Backend.fetch's contract).
        if error is None and status < 400 and not self._over:  # type: ignore[operator]
            # A success is the last step (only errors are retried): settled here rather than
            # through the retry rules and the trampoline (which keeps retries from recursing).
            # Let go of the step (after a retry) and the transfer (of an asynchronous
            # backend), which lead back here: no reference cycle left for the cyclic GC.
            self._next = _ignore
            if self._current is not None:
                self._current = self._transfer = None
            auth = self._sender.auth
            if auth is not None:
                auth._adopt(headers)  # type: ignore[arg-type]  # a reply has headers
            if log.isEnabledFor(logging.DEBUG):
                self._status = status
                self._log_attempt()
            self._settle(status, headers, body)  # type: ignore[arg-type]
        else:
            _Exchange._fetched(self, status, headers, body, error)

    def _deliver(self) -> None:
        """The final reply, after the retry rules (an error, or a status they did not retry)."""
        if self._error is not None:
            self._fail(self._error)
        else:
            assert self._status is not None and self._headers is not None
            self._settle(self._status, self._headers, self._body)

    def _settle(self, status: int, headers: Headers, body: bytes) -> None:
        """The call's end with a reply: checked, decoded, given to whoever waits."""
        self._over = True
        self._code, self._headers = status, headers
        if self._raw:
            outcome = Outcome(value=Response(status, headers, body))
        else:
            try:
                if status >= 400:
                    request = self._request
                    raise make_error(status, headers, body, method=request.method,
                                     url=request.url)
                try:
                    value = orjson.loads(body) if body else None
                except orjson.JSONDecodeError:
                    request = self._request
                    value = decode_json(body, method=request.method, url=request.url)  # raises
                if self._post is not None:
                    value = self._post(value)
                outcome = Outcome(value=value)
            except Exception as exc:  # a mapped HTTP error, bad JSON, or post's own failure
                outcome = Outcome(error=exc)
        # Let go of whoever waits (which may hold this): a cycle otherwise.
        done, self._done = self._done, _ignore
        done(outcome)

    def _fail(self, error: CouchError) -> None:
        """The call's end without a (complete) answer: no status code, nor headers to show."""
        self._over = True
        self._headers = None
        done, self._done = self._done, _ignore
        done(Outcome(error=error))


_IDLE, _RUNNING, _FINISHED = range(3)


class _Run(_Driver):
    """Drives one operation (a generator of steps). It trampolines, so a backend that completes
    synchronously (blocking) does not recurse."""

    def __init__(self, backend: Sender, op: Op[Any]) -> None:
        self._backend = backend
        self._done: Callable[[Outcome], None] = _ignore
        self._op = op
        self._state = _IDLE
        self._pending: tuple[Any, BaseException | None] | None = None
        self._current: Any = None

    def start(self, done: Callable[[Outcome], None]) -> _Run:
        self._done = done
        self._advance(None, None)
        return self

    def cancel(self) -> None:
        if self._state == _FINISHED:
            return
        self._state = _FINISHED
        if self._current is not None:
            self._current.cancel()
        self._op.close()

    def _advance(self, value: Any, error: BaseException | None) -> None:
        if self._state == _FINISHED:
            return
        self._pending = (value, error)
        if self._state == _RUNNING:
            # A synchronous backend completed inside send(): the loop below picks it up.
            return
        self._state = _RUNNING
        while self._pending is not None and self._state == _RUNNING:
            value, error = self._pending
            self._pending = None
            try:
                step = self._op.throw(error) if error is not None else self._op.send(value)
            except StopIteration as stop:
                self._finish(Outcome(value=stop.value))
                return
            except Exception as exc:  # the operation's own error (or one it let through)
                self._finish(Outcome(error=exc))
                return
            self._current = self._send(step)
        if self._state == _RUNNING:
            self._state = _IDLE

    def _send(self, step: Request | Raw | Stream | Wait) -> Any:
        if isinstance(step, Stream):
            return self._stream(step)
        if isinstance(step, Wait):
            return step.start(self._waited)
        if isinstance(step, Raw):
            call = _Call(self._backend, step.request, raw=True)
        else:
            call = _Call(self._backend, step)
        return call.start(lambda outcome: self._called(call, outcome))

    def _called(self, call: _Call, outcome: Outcome) -> None:
        self._current = None
        self._code = call._code
        if call._code is not None:  # a transport failure keeps the last response's headers
            self._headers = call._headers
        self._advance(outcome.value, outcome.error)

    def _waited(self, outcome: Outcome) -> None:
        self._current = None
        if isinstance(outcome.value, Response):
            self._code, self._headers = outcome.value.status, outcome.value.headers
        self._advance(outcome.value, outcome.error)

    def _stream(self, step: Stream) -> Any:
        def complete(value: Any, error: BaseException | None, status: int,
                     headers: Headers) -> None:
            self._current = None
            self._code, self._headers = (status or None), headers
            self._advance(value, error)

        sink = RowSink(step.request, step.consumer, complete)
        sink.transfer = self._backend.send(step.request, sink)
        return sink.transfer

    def _finish(self, outcome: Outcome) -> None:
        self._state = _FINISHED
        # As at the end of _Call._replied: no cycle left behind.
        done, self._done, self._current = self._done, _ignore, None
        done(outcome)


def invoke(backend: Sender, op: Op[Any], callback: Callable[[Any, Status], Any] | None) -> Any:
    """Run the operation ``op`` in the style the caller chose.

    With ``callback``, it is called as ``callback(data, status)`` and errors never propagate
    (they arrive in ``status``); the method returns None. Without it, the backend's native
    result is returned: a Future, a Deferred, or (blocking) the value itself.
    """
    run = _Run(backend, op)
    # backend.backend.run: what Sender.run would call, a frame fewer on every call.
    return backend.backend.run(run.start) if callback is None else _call_back(run, callback)


def invoke_one(backend: Sender, request: Request, callback: Callable[[Any, Status], Any] | None,
               post: Callable[[Any], Any] | None = None) -> Any:
    """Like :func:`invoke` for the operation "send ``request``, return ``post(reply)``"."""
    call = _Call(backend, request, post)
    return backend.backend.run(call.start) if callback is None else _call_back(call, callback)


def _call_back(driver: _Driver, callback: Callable[[Any, Status], Any]) -> None:
    """The explicit-callback style: start ``driver``, then ``callback(data, status)``."""

    def deliver(outcome: Outcome) -> None:
        error = outcome.error
        try:
            callback(outcome.value if error is None else None, driver.status(error))
        except Exception:
            # The caller's callback failed; there is nobody to hand this to, and raising into
            # the transport would only break the connection for everyone else.
            log.exception("corduroy2: exception in callback %r", callback)

    driver.start(deliver)


def _ignore(outcome: Outcome) -> None:
    return None
