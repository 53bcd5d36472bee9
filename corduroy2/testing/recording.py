"""Asserting what code sends, without a server: a recording backend, and a recorder for any.

:class:`RecordingBackend` has no IO: it records each :class:`~corduroy2.protocol.requests.Request`
and answers from a script, synchronously. ``run`` returns the outcome like the blocking backend
(the value, or raises), so a test reads like blocking code while exercising exactly the code
every real backend runs::

    from corduroy2.api import Couch
    from corduroy2.testing import RecordingBackend, Reply

    backend = RecordingBackend([Reply(201, {"ok": True, "id": "a", "rev": "1-x"})])
    Couch("http://127.0.0.1:5984", backend=backend).database("db").save({"_id": "a"})
    assert backend.calls() == [("PUT", "http://127.0.0.1:5984/db/a")]

:func:`record_requests` wraps a live backend (Tornado, Twisted, blocking) instead: the requests
are still sent, and the list fills as they go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import orjson

from ..backend import Backend, Cancel, Outcome, Sink, Start, Transfer, TransportOptions
from ..errors import CouchError
from ..protocol.requests import Request
from ..protocol.responses import Headers

__all__ = ["RecordingBackend", "Reply", "Script", "record_requests"]


@dataclass
class Reply:
    """One scripted answer. ``body`` may be bytes (sent as is) or anything JSON-encodable."""

    status: int = 200
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if self.body is None:
            return b""
        return orjson.dumps(self.body)


Script = Union[Reply, tuple[Any, ...], CouchError]


class _Handle:
    """A :class:`~corduroy2.backend.Transfer` that only remembers what it was told."""

    def __init__(self) -> None:
        self.cancelled = False
        self.paused = False

    def cancel(self) -> None:
        self.cancelled = True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


class RecordingBackend(Backend):
    """Records requests; replies from ``script``: ``Reply``, ``(status, headers, body)``
    tuples, or a ``CouchError`` (delivered through ``sink.on_error``, like a transport
    failure)."""

    def __init__(self, script: Iterable[Script] = (), options: TransportOptions | None = None):
        super().__init__(options)
        self.script: list[Script] = list(script)
        self.requests: list[Request] = []
        self.later: list[tuple[float, Callable[[], None], _Handle]] = []
        self.closed = False

    def add(self, *replies: Script) -> RecordingBackend:
        self.script.extend(replies)
        return self

    def send(self, request: Request, sink: Sink) -> Transfer:
        self.requests.append(request)
        if not self.script:
            raise AssertionError(f"unscripted request {request!r}")
        reply = self.script.pop(0)
        if isinstance(reply, CouchError):
            sink.on_error(reply)
            return _Handle()
        if isinstance(reply, tuple):
            status, headers, body = reply
            reply = Reply(status, body, list(headers))
        sink.on_start(reply.status, Headers(reply.headers))
        payload = reply.payload()
        if payload:
            sink.on_data(payload)
        sink.on_end()
        return _Handle()

    def run(self, start: Start) -> Any:
        box: list[Outcome] = []
        start(box.append)
        assert len(box) == 1, f"an operation reported {len(box)} outcomes"
        if box[0].error is not None:
            raise box[0].error
        return box[0].value

    def when_done(self, value: Any, done: Callable[[Outcome], None]) -> bool:
        return False  # like blocking: values are results

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        handle = _Handle()
        self.later.append((delay, fn, handle))
        return handle

    def close(self) -> None:
        self.closed = True

    # -- helpers for assertions -------------------------------------------------------------

    @property
    def last(self) -> Request:
        return self.requests[-1]

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url) for r in self.requests]

    @staticmethod
    def header(request: Request, name: str) -> str | None:
        values = [v for k, v in request.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    @staticmethod
    def json(request: Request) -> Any:
        assert isinstance(request.body, bytes), "no JSON body (none, or a streamed one)"
        return orjson.loads(request.body)


def record_requests(backend: Backend) -> list[Request]:
    """Record every request ``backend`` is given from now on (each attempt of a retried
    request too), still sending it; the wrapper is set on the instance."""
    sent: list[Request] = []
    send = backend.send

    def recording_send(request: Request, sink: Sink) -> Transfer:
        sent.append(request)
        return send(request, sink)

    backend.send = recording_send  # type: ignore[method-assign]
    return sent
