"""Running an operation in every calling style.

Each API method builds its requests up front (so bad arguments raise at once, in every style)
and describes the rest as an *operation*: a generator that yields
:class:`~corduroy2.protocol.requests.Request` values and receives the decoded JSON reply (or has
the typed error thrown in at the ``yield``). Multi-request calls (``save`` fetching uuids first,
``db(create_if_missing=True)``) are then plain sequential code, written once.

:class:`_Run` drives an operation over a :class:`~corduroy2.backend.Backend`. It trampolines, so
a backend that completes synchronously (blocking) does not recurse. :func:`invoke` picks the
calling style: an explicit callback, or the backend's native result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..backend import Backend, Outcome
from ..errors import CouchError, HTTPError
from ..protocol.requests import Request
from ..protocol.responses import Headers, check_status, decode_json
from .status import Status

__all__ = ["Raw", "Response", "Op", "invoke"]

log = logging.getLogger("corduroy2")

T = TypeVar("T")


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


Op = Generator["Request | Raw", Any, T]


class _Collector:
    """A sink that keeps the whole body (for replies that are not streamed)."""

    __slots__ = ("_done", "_status", "_headers", "_chunks")

    def __init__(self, done: Callable[[Response | CouchError], None]) -> None:
        self._done = done
        self._status = 0
        self._headers = Headers()
        self._chunks: list[bytes] = []

    def on_start(self, status: int, headers: Headers) -> None:
        self._status = status
        self._headers = headers

    def on_data(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def on_end(self) -> None:
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._done(Response(self._status, self._headers, body))

    def on_error(self, exc: CouchError) -> None:
        self._done(exc)


_IDLE, _RUNNING, _FINISHED = range(3)


class _Run:
    """Drives one operation; reports ``(outcome, status)`` once through ``done``."""

    def __init__(
        self,
        backend: Backend,
        op: Op[Any],
        done: Callable[[Outcome, Status], None],
    ) -> None:
        self._backend = backend
        self._op = op
        self._done = done
        self._state = _IDLE
        self._pending: tuple[Any, BaseException | None] | None = None
        self._current: Any = None
        self._code: int | None = None
        self._headers: Headers = Headers()

    def start(self) -> _Run:
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

    def _send(self, step: Request | Raw) -> Any:
        raw = isinstance(step, Raw)
        request = step.request if isinstance(step, Raw) else step

        def complete(result: Response | CouchError) -> None:
            self._current = None
            if isinstance(result, CouchError):
                self._code = None
                self._advance(None, result)
                return
            self._code, self._headers = result.status, result.headers
            if raw:
                self._advance(result, None)
                return
            try:
                check_status(
                    result.status, result.headers, result.body,
                    method=request.method, url=request.url,
                )
                value = (
                    decode_json(result.body, method=request.method, url=request.url)
                    if result.body
                    else None
                )
            except CouchError as exc:
                self._advance(None, exc)
                return
            self._advance(value, None)

        return self._backend.send(request, _Collector(complete))

    def _finish(self, outcome: Outcome) -> None:
        self._state = _FINISHED
        exc = outcome.error
        code = exc.status if isinstance(exc, HTTPError) else self._code
        status = Status(ok=exc is None, code=code, headers=self._headers, exception=exc)
        self._done(outcome, status)


def invoke(
    backend: Backend,
    op: Op[Any],
    callback: Callable[[Any, Status], Any] | None,
) -> Any:
    """Run ``op`` in the style the caller chose.

    With ``callback``, it is called as ``callback(data, status)`` and errors never propagate
    (they arrive in ``status``); the method returns None. Without it, the backend's native
    result is returned: a Future, a Deferred, or (blocking) the value itself.
    """
    if callback is None:
        return backend.run(lambda done: _Run(backend, op, lambda outcome, _: done(outcome)).start())

    def deliver(outcome: Outcome, status: Status) -> None:
        try:
            callback(outcome.value if outcome.error is None else None, status)
        except Exception:
            # The caller's callback failed; there is nobody to hand this to, and raising into
            # the transport would only break the connection for everyone else.
            log.exception("corduroy2: exception in callback %r", callback)

    _Run(backend, op, deliver).start()
    return None
