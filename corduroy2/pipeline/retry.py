"""The retry policy: which failures are worth another attempt, how many, and how long to wait.

:class:`Retry` is on by default (:data:`DEFAULT_RETRY`), for requests that are safe to send
twice:

* a ``ConnectError`` (no connection was made, so the request never left) for **any** method;
* a lost connection (``ResponseCut`` and other transport failures) and the statuses in
  ``statuses`` (429, 503) only for requests that are safe to repeat: ``GET``/``HEAD``, and
  ``PUT``/``DELETE`` carrying a rev (a ``rev=`` query or a top-level ``_rev`` in the body: sent
  twice, the second can at worst answer 409, never write twice), or what the API marked with
  ``Request.idempotent``. A ``POST`` is never sent twice unless ``Retry(methods={"POST"})``.
* A ``Timeout`` is not retried: the time allowed for the call has been spent.

Delays are exponential with full jitter (``uniform(0, min(cap, base * 2**(n-1)))``, AWS's
"full jitter"); a ``Retry-After`` (seconds or an HTTP date) replaces that delay, capped at
``cap``. No retry starts once ``deadline`` seconds have passed since the first attempt. The few
lines of backoff are written here rather than taken from the ``backoff`` package: its
decorators wrap a function call, while a retry here is a step of a callback-driven exchange.
What to do with one attempt's outcome is decided by :func:`corduroy2.pipeline.decision.decide`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlsplit

import orjson

from ..protocol.requests import Request

__all__ = ["Retry", "DEFAULT_RETRY", "as_retry", "is_idempotent", "retry_after"]


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

    def backoff(self, retry: int, jitter: Callable[[], float] = random.random) -> float:
        """The delay before retry number ``retry`` (1 for the first retry): full jitter.
        ``jitter`` gives a number in [0, 1) (tests pass a fixed one)."""
        return jitter() * min(self.cap, self.base * 2.0 ** (retry - 1))


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
    if isinstance(request.body, bytes) and b'"_rev"' in request.body:  # cheap test first; parse only if it may be
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
