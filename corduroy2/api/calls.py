"""Running the API's calls, in every calling style.

Most methods send one request and decode its reply: a :class:`Call`. A method that needs more
than one request (``save`` fetching uuids first, ``db(create_if_missing=True)``) describes its
work as an *operation*: a generator that yields steps and receives each step's value (or has
its error thrown in at the ``yield``), so that multi-request logic is plain sequential code,
written once. The steps:

* a :class:`~corduroy2.protocol.requests.Request`: its reply decoded as JSON (a :class:`Call`);
* :class:`Raw`: the :class:`~corduroy2.protocol.responses.Response` itself, unchecked;
* :class:`Stream`: a row body parsed as it arrives, into a consumer;
* :class:`Wait`: anything else with a callback (a login in progress).

:class:`Run` drives an operation. Both go out through the handle's
:class:`~corduroy2.pipeline.exchange.Sender` (credentials, renewal, retries).
:class:`Runner` starts either in the style the caller chose: ``callback(data, status)``, or the
backend's native result (a Future, a Deferred, or the value itself when blocking).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..backend import Cancel, Outcome, Start
from ..errors import CouchError, HTTPError
from ..pipeline.exchange import Exchange, Sender
from ..protocol.requests import Request
from ..protocol.responses import NO_HEADERS, Headers, Response, decode_json, make_error
from .sinks import Finished, RowConsumer, RowSink
from .status import Status

__all__ = ["Raw", "Stream", "Wait", "Op", "Call", "Run", "Runner"]

log = logging.getLogger("corduroy2")

T = TypeVar("T")

MakeSink = Callable[[Request, Any, Finished], RowSink]  # (request, consumer, done) -> sink


@dataclass(frozen=True)
class Raw:
    """Yield ``Raw(request)`` to receive the :class:`Response` itself, with no status check."""

    request: Request


@dataclass(frozen=True)
class Stream:
    """Yield ``Stream(request, consumer)`` to have a row-bearing reply parsed as it arrives.

    ``request.stream`` should be True. The consumer sees rows per received chunk; what its
    ``end`` returns is sent back at the ``yield``. An exception raised by the consumer aborts
    the transfer and fails the call with that exception.
    """

    request: Request
    consumer: RowConsumer
    #: Makes the sink that reads the body for the consumer: rows (RowSink), or anything else
    #: delivered the same way (an attachment's raw chunks: api/attachments.py).
    make_sink: MakeSink = RowSink


@dataclass(frozen=True)
class Wait:
    """Yield ``Wait(start)`` to wait for anything with a callback: ``start(done)`` begins it and
    returns a cancel handle, and ``done(Outcome)`` later delivers the value (or the error, raised
    at the ``yield``). A :class:`Response` value counts as the call's last response
    (``Status.code``)."""

    start: Start


Op = Generator["Request | Raw | Stream | Wait", Any, T]


class Call:
    """One request and its decoded reply: the JSON body (``post`` applied), the mapped error of
    an error status, or with ``raw`` the :class:`Response` itself.

    It is the sink of its :class:`~corduroy2.pipeline.exchange.Exchange`, which hands it the
    reply to deliver as it arrives (retries and renewals are the exchange's business):
    ``on_end`` is the success path, ``on_error`` the failure path.
    """

    code: int | None = None
    headers: Headers | None = None

    def __init__(self, sender: Sender, request: Request,
                 post: Callable[[Any], Any] | None = None, raw: bool = False) -> None:
        self._sender = sender
        self._request = request
        self._post = post
        self._raw = raw
        self._chunks: list[bytes] = []  # the body so far
        self._done: Callable[[Outcome], None] = _ignore
        self._exchange: Exchange | None = None

    def start(self, done: Callable[[Outcome], None]) -> Call:
        self._done = done
        exchange = self._sender.send(self._request, self)
        if self._done is done:  # not settled inside send(): cancel() must reach the exchange
            self._exchange = exchange
        return self

    def cancel(self) -> None:
        if self._exchange is not None:
            self._exchange.cancel()

    def status(self, exc: BaseException | None) -> Status:
        return _status(self.code, self.headers, exc, self._sender.url)

    # -- the sink of the exchange ----------------------------------------------------------

    def on_start(self, status: int, headers: Headers) -> None:
        # Again after a reply whose body was cut, when the request is sent again: start over.
        self.code, self.headers = status, headers
        self._chunks = []

    def on_data(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def on_end(self) -> None:
        assert self.code is not None and self.headers is not None
        try:
            value = self._value(self.code, self.headers, b"".join(self._chunks))
        except Exception as exc:  # a mapped HTTP error, bad JSON, or post's own failure
            # Settled here: a local holding the error would be held by its traceback (a cycle).
            self._settle(Outcome(error=exc))
            return
        self._settle(Outcome(value))

    def on_error(self, exc: CouchError) -> None:
        self.headers = None  # no (complete) answer: no headers to show
        self._settle(Outcome(error=exc))

    def _value(self, status: int, headers: Headers, body: bytes) -> Any:
        if self._raw:
            return Response(status, headers, body)
        request = self._request
        if status >= 400:
            raise make_error(status, headers, body, method=request.method, url=request.url)
        value = (decode_json(body, method=request.method, url=headers.url or request.url)
                 if body else None)
        return value if self._post is None else self._post(value)

    def _settle(self, outcome: Outcome) -> None:
        # Let go of the exchange and of whoever waits (both lead back here): no cycle is left
        # for the cyclic collector.
        done, self._done, self._exchange = self._done, _ignore, None
        done(outcome)


_IDLE, _RUNNING, _FINISHED = range(3)


class Run:
    """Drives one operation (a generator of steps). It trampolines, so a backend that completes
    synchronously (blocking) does not recurse."""

    code: int | None = None
    headers: Headers | None = None

    def __init__(self, sender: Sender, op: Op[Any]) -> None:
        self._sender = sender
        self._done: Callable[[Outcome], None] = _ignore
        self._op = op
        self._state = _IDLE
        self._pending: tuple[Any, BaseException | None] | None = None
        self._current: Cancel | None = None

    def start(self, done: Callable[[Outcome], None]) -> Run:
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

    def status(self, exc: BaseException | None) -> Status:
        return _status(self.code, self.headers, exc, self._sender.url)

    def _advance(self, value: Any, error: BaseException | None) -> None:
        if self._state == _FINISHED:
            return
        self._pending = (value, error)
        if self._state == _RUNNING:
            return  # a synchronous backend completed inside a step: the loop below goes on
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
            self._current = self._begin(step)
        if self._state == _RUNNING:
            self._state = _IDLE

    def _begin(self, step: Request | Raw | Stream | Wait) -> Cancel:
        if isinstance(step, Stream):
            return self._stream(step)
        if isinstance(step, Wait):
            return step.start(self._waited)
        call = (Call(self._sender, step.request, raw=True) if isinstance(step, Raw)
                else Call(self._sender, step))
        return call.start(lambda outcome: self._called(call, outcome))

    def _called(self, call: Call, outcome: Outcome) -> None:
        self._current = None
        self.code = call.code
        if call.code is not None:  # a transport failure keeps the last response's headers
            self.headers = call.headers
        self._advance(outcome.value, outcome.error)

    def _waited(self, outcome: Outcome) -> None:
        self._current = None
        if isinstance(outcome.value, Response):
            self.code, self.headers = outcome.value.status, outcome.value.headers
        self._advance(outcome.value, outcome.error)

    def _stream(self, step: Stream) -> Cancel:
        def finished(value: Any, error: BaseException | None, status: int,
                     headers: Headers) -> None:
            self._current = None
            self.code, self.headers = (status or None), headers
            self._advance(value, error)

        sink = step.make_sink(step.request, step.consumer, finished)
        return sink.keep_transfer(self._sender.send(step.request, sink))

    def _finish(self, outcome: Outcome) -> None:
        self._state = _FINISHED
        # Let go of whoever waits and of the step under way: no cycle left behind.
        done, self._done, self._current = self._done, _ignore, None
        done(outcome)


class Runner:
    """Runs one handle's calls through its :class:`~corduroy2.pipeline.exchange.Sender`, in the
    style the caller chose.

    With ``callback``, it is called later as ``callback(data, status)`` and errors never
    propagate (they arrive in ``status``); the method returns None. Without it, the backend's
    native result is returned: a Future, a Deferred, or (blocking) the value itself.
    """

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    def call(self, request: Request, callback: Callable[[Any, Status], Any] | None,
             post: Callable[[Any], Any] | None = None) -> Any:
        """Send ``request``; its value is ``post(reply)`` (the decoded reply without ``post``)."""
        return self._start(Call(self.sender, request, post), callback)

    def run(self, op: Op[Any], callback: Callable[[Any, Status], Any] | None) -> Any:
        """Run the operation ``op``; its value is what the generator returns."""
        return self._start(Run(self.sender, op), callback)

    def stream(self, step: Stream, callback: Callable[[Any, Status], Any] | None) -> Any:
        """Parse ``step``'s streamed reply into its consumer; the value is what the consumer's
        ``end`` returns."""
        return self.run(_streamed(step), callback)

    def _start(self, driver: Call | Run, callback: Callable[[Any, Status], Any] | None) -> Any:
        if callback is None:
            return self.sender.backend.run(driver.start)

        def deliver(outcome: Outcome) -> None:
            error = outcome.error
            try:
                callback(outcome.value if error is None else None, driver.status(error))
            except Exception:
                # The caller's callback failed; there is nobody to hand this to, and raising
                # into the transport would only break the connection for everyone else.
                log.exception("corduroy2: exception in callback %r", callback)

        driver.start(deliver)
        return None


def _streamed(step: Stream) -> Op[Any]:
    value = yield step
    return value


def _status(code: int | None, headers: Headers | None, exc: BaseException | None,
            server: str) -> Status:
    """The Status of a call whose last response had ``code`` and ``headers`` (None: no
    answer), sent to ``server`` (the node that answered, if the headers say, is shown)."""
    if isinstance(exc, HTTPError):
        code = exc.status
    if headers is None or code is None:
        return Status(ok=exc is None, code=code, headers=headers or NO_HEADERS, exception=exc)
    return Status(ok=exc is None, code=code, headers=headers, exception=exc,
                  node=headers.node or server)


def _ignore(outcome: Outcome) -> None:
    return None
