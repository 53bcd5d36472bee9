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
    # The request a fetch is passing on: the default fetch hands it to send, which must not
    # record it again (a retry of the same Request object is recorded again, as it is sent).
    fetching: list[Request | None] = [None]

    def recording_send(request: Request, sink: Any) -> Any:
        if request is fetching[0]:
            fetching[0] = None
        else:
            sent.append(request)
        return send(request, sink)

    def recording_fetch(request: Request, reply: Any) -> Any:
        sent.append(request)
        fetching[0] = request
        try:
            return fetch(request, reply)
        finally:
            fetching[0] = None

    backend.send = recording_send  # type: ignore[method-assign]
    backend.fetch = recording_fetch  # type: ignore[method-assign]
    return sent
