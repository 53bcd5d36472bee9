"""The exception tree. Imports nothing from corduroy2.

::

    CouchError
     +-- HTTPError(status, error, reason, headers, body)   the server answered >= 400
     |    +-- BadRequest 400, Unauthorized 401, Forbidden 403, NotFound 404,
     |    |   MethodNotAllowed 405, Conflict 409, PreconditionFailed 412,
     |    |   RequestEntityTooLarge 413, UnsupportedMediaType 415,
     |    |   TooManyRequests 429
     |    +-- ServerError 5xx
     +-- TransportError                                    no (complete) HTTP answer
     |    +-- ConnectError
     |    +-- Timeout          (also a builtins.TimeoutError)
     |    +-- ResponseCut      (the body ended early)
     +-- DecodeError          (also a ValueError)         the answer was not the JSON expected
     +-- ReplicationFailed(state, reason, doc_id, details) a followed replication failed/crashed

Argument errors found before anything is sent are plain ``ValueError`` / ``TypeError``.
Messages never contain credentials: URLs are stored without userinfo before they reach an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CouchError",
    "HTTPError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "PreconditionFailed",
    "RequestEntityTooLarge",
    "UnsupportedMediaType",
    "TooManyRequests",
    "ServerError",
    "TransportError",
    "ConnectError",
    "Timeout",
    "ResponseCut",
    "DecodeError",
    "ReplicationFailed",
]


class CouchError(Exception):
    """Base of every error corduroy2 raises for a request that was sent."""


class HTTPError(CouchError):
    """The server answered with a status >= 400.

    ``error`` and ``reason`` come from CouchDB's ``{"error": ..., "reason": ...}`` body (Mango's
    ``message`` counts as the reason); match on ``status``/``error``, since ``reason`` wording
    varies between CouchDB versions.
    """

    def __init__(
        self,
        status: int,
        error: str | None = None,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.reason = reason
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.body = body
        self.method = method
        self.url = url
        super().__init__(status, error, reason)

    def __str__(self) -> str:
        text = f"{self.status} {self.error or 'error'}"
        if self.reason:
            text += f": {self.reason}"
        if self.method and self.url:
            text += f" ({self.method} {self.url})"
        request_id = self.headers.get("x-couch-request-id") if self.headers else None
        if request_id:
            text += f" [request {request_id}]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.error!r}, {self.reason!r})"


class BadRequest(HTTPError):
    """HTTP 400."""


class Unauthorized(HTTPError):
    """HTTP 401: no or wrong credentials."""


class Forbidden(HTTPError):
    """HTTP 403: authenticated but not allowed (or ``validate_doc_update`` said no)."""


class NotFound(HTTPError):
    """HTTP 404."""


class MethodNotAllowed(HTTPError):
    """HTTP 405."""


class Conflict(HTTPError):
    """HTTP 409: a stale or missing ``_rev``, or a document that already exists."""


class PreconditionFailed(HTTPError):
    """HTTP 412: e.g. creating a database that exists."""


class RequestEntityTooLarge(HTTPError):
    """HTTP 413."""


class UnsupportedMediaType(HTTPError):
    """HTTP 415."""


class TooManyRequests(HTTPError):
    """HTTP 429: rate limited; ``headers['retry-after']`` may say for how long."""


class ServerError(HTTPError):
    """Any HTTP 5xx."""


class TransportError(CouchError):
    """No complete HTTP answer arrived. ``__cause__`` holds the transport's own exception."""

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None) -> None:
        self.method = method
        self.url = url
        super().__init__(message)

    def __str__(self) -> str:
        text = str(self.args[0]) if self.args else type(self).__name__
        if self.method and self.url:
            text += f" ({self.method} {self.url})"
        return text


class ConnectError(TransportError):
    """The connection could not be made (refused, unreachable, name not resolved, TLS failed)."""


class Timeout(TransportError, TimeoutError):
    """A connect, request or idle timeout expired."""


class ResponseCut(TransportError):
    """The connection ended before the whole response arrived."""


class DecodeError(CouchError, ValueError):
    """The server's answer was not the JSON (or shape) expected."""


class ReplicationFailed(CouchError):
    """A replication being waited for ended badly: CouchDB put it in a ``failed`` state (for
    good: a malformed or duplicate document), or (unless the wait was told to sit it out) in
    ``crashing`` / ``error``, where CouchDB retries it with a growing backoff.

    ``state`` is CouchDB's word for it, ``reason`` CouchDB's own explanation (``info.error`` of
    ``_scheduler/docs``, e.g. ``"db_not_found: could not open http://host/missing/"``; CouchDB
    masks passwords in it), ``doc_id`` the ``_replicator`` document and ``details`` the whole
    state document last read.
    """

    def __init__(self, state: str, reason: str | None, doc_id: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        self.state = state
        self.reason = reason
        self.doc_id = doc_id
        self.details: Mapping[str, Any] = details if details is not None else {}
        super().__init__(state, reason)

    def __str__(self) -> str:
        text = f"replication {self.doc_id!r} {self.state}" if self.doc_id else \
            f"replication {self.state}"
        return text + (f": {self.reason}" if self.reason else "")

    def __repr__(self) -> str:
        return f"ReplicationFailed({self.state!r}, {self.reason!r}, {self.doc_id!r})"
