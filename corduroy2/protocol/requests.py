"""Request values and the JSON encoder for bodies."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Request", "encode_json", "check_headers", "JSON_HEADERS"]


@dataclass(frozen=True, init=False)
class Request:
    """One HTTP request, ready to send. ``url`` is absolute and never holds credentials."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    # Streamed responses are fed to the sink chunk by chunk as they arrive; the others may be
    # delivered in one piece, which lets a transport skip its per-chunk machinery.
    stream: bool = False
    # Per-request overrides of the backend's TransportOptions (None: use the backend's).
    timeout: float | None = field(default=None, compare=False)
    idle_timeout: float | None = field(default=None, compare=False)
    # Safe to send twice? None lets the retry policy decide by rule (GET/HEAD yes; PUT/DELETE
    # when they carry a rev; anything else no); the API sets True/False where it knows better.
    idempotent: bool | None = field(default=None, compare=False)

    def __init__(self, method: str, url: str, headers: tuple[tuple[str, str], ...] = (),
                 body: bytes | None = None, stream: bool = False, timeout: float | None = None,
                 idle_timeout: float | None = None, idempotent: bool | None = None) -> None:
        # The generated __init__ of a frozen dataclass goes through object.__setattr__ once per
        # field, which made building a Request a tenth of a document GET's cost in corduroy2.
        # Storing into the instance dict does the same (the fields are the same, in order).
        fields = self.__dict__
        fields["method"] = method
        fields["url"] = url
        fields["headers"] = headers
        fields["body"] = body
        fields["stream"] = stream
        fields["timeout"] = timeout
        fields["idle_timeout"] = idle_timeout
        fields["idempotent"] = idempotent

    def __repr__(self) -> str:
        # Headers are left out: they may carry Authorization or Cookie.
        size = "" if self.body is None else f", {len(self.body)} bytes"
        return f"<Request {self.method} {self.url}{size}>"


JSON_HEADERS = (("Content-Type", "application/json"),)

# RFC 9110: a field name is a token; a field value has no control character but HTAB (a line
# break in one would end the line and start another: a header injected by a value).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search


def check_headers(fields: tuple[tuple[str, str], ...]) -> None:
    """Raise ValueError if a header of ``fields`` cannot be sent as it is. The message names the
    header but never shows the value: it may be a credential. Every backend applies this one
    rule (each checks a header set once, when it changes), so none sends what another refuses,
    and none cleans up a value silently (Twisted would turn a line break into a space)."""
    for name, value in fields:
        if not _TOKEN(name):
            raise ValueError(f"invalid header name {name!r}")
        if _CONTROL(value):
            raise ValueError(f"invalid value for header {name!r}: a control character")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"invalid value for header {name!r}: not Latin-1") from None

# datetime is passed through so that it fails like stdlib json does instead of being written as
# a string that comes back as a str: a silent type change is a data loss. Dataclasses too: orjson
# would write them itself, hiding NaN fields from the finiteness check below.
_DUMPS_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _unsupported(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable: {value!r:.80}")


def _check_finite(value: Any) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not allowed in JSON (CouchDB would store null)")
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(item)


def encode_json(value: Any) -> bytes:
    """Serialize ``value`` with orjson; ``TypeError`` if it cannot be, ``ValueError`` for NaN/inf.

    orjson writes NaN and infinities as ``null``, which would silently change the data. They can
    only hide where the output has a ``null``, so the slow walk runs only then.
    """
    try:
        data = orjson.dumps(value, default=_unsupported, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from exc.__cause__
    if b"null" in data:
        _check_finite(value)
    return data
