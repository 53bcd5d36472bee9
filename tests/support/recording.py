"""Recording what a backend is asked to send, for tests that check the requests themselves."""

from __future__ import annotations

from typing import Any

from corduroy2.backend import Backend
from corduroy2.protocol.requests import Request


def record_requests(backend: Backend) -> list[Request]:
    """Record every request ``backend`` is given from now on (each attempt of a retried
    request too); the wrapper is set on the instance."""
    sent: list[Request] = []
    send = backend.send

    def recording_send(request: Request, sink: Any) -> Any:
        sent.append(request)
        return send(request, sink)

    backend.send = recording_send  # type: ignore[method-assign]
    return sent
