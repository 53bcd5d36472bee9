"""Recording what a backend is asked to send, for tests that check the requests themselves."""

from __future__ import annotations

from typing import Any

from corduroy2.backend import Backend
from corduroy2.protocol.requests import Request


def record_requests(backend: Backend) -> list[Request]:
    """Record every request ``backend`` is given from now on, by either entry point (``send``
    with a sink, ``fetch`` for a whole reply); the wrappers are set on the instance."""
    sent: list[Request] = []
    send, fetch = backend.send, backend.fetch

    def note(request: Request) -> None:
        # The default fetch goes through send with the same request: record it once.
        if not sent or sent[-1] is not request:
            sent.append(request)

    def recording_send(request: Request, sink: Any) -> Any:
        note(request)
        return send(request, sink)

    def recording_fetch(request: Request, reply: Any) -> Any:
        note(request)
        return fetch(request, reply)

    backend.send = recording_send  # type: ignore[method-assign]
    backend.fetch = recording_fetch  # type: ignore[method-assign]
    return sent
