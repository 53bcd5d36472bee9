"""Fault injection: the next N requests matching a method and a path misbehave on purpose.

::

    server.faults.answer(503, path="/db/_changes", retry_after=2)   # 503 + Retry-After: 2
    server.faults.answer(429, method="PUT", times=3)               # the next 3 PUTs anywhere
    server.faults.stall(5.0, path="/db/*")                         # wait 5 s, then answer
    server.faults.cut(100, path="/db/_all_docs")                   # 100 body bytes, then close

``path`` is a shell-style pattern (``fnmatch``) over the decoded path, without the query.
A rule is used up after ``times`` matches; the earliest matching rule applies.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["Faults", "Fault"]

_ERRORS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
           408: "request_timeout", 409: "conflict", 412: "precondition_failed",
           413: "too_large", 429: "too_many_requests", 500: "internal_server_error",
           502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}


@dataclass
class Fault:
    method: str | None
    path: str
    times: int
    status: int | None = None
    retry_after: float | None = None
    body: Any = None
    stall: float | None = None
    cut_after: int | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and fnmatch.fnmatchcase(
            path, self.path)

    def error_body(self) -> Any:
        if self.body is not None:
            return self.body
        status = self.status or 500
        return {"error": _ERRORS.get(status, "unknown_error"),
                "reason": f"injected by FakeCouch (status {status})"}


class Faults:
    """The fault rules of one served :class:`~corduroy2.testing.FakeCouch` (thread-safe)."""

    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)

    def answer(self, status: int, *, method: str | None = None, path: str = "*",
               times: int = 1, retry_after: float | None = None, body: Any = None) -> Fault:
        """Answer ``status`` (with ``Retry-After`` when given) instead of the real answer."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an error status (4xx/5xx), not {status}")
        return self._add(Fault(_method(method), path, times, status=status,
                               retry_after=retry_after, body=body))

    def stall(self, seconds: float, *, method: str | None = None, path: str = "*",
              times: int = 1) -> Fault:
        """Wait ``seconds`` before answering (the answer then comes as usual)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return self._add(Fault(_method(method), path, times, stall=seconds))

    def cut(self, after_bytes: int, *, method: str | None = None, path: str = "*",
            times: int = 1) -> Fault:
        """Send the headers and the first ``after_bytes`` bytes of the body, then close."""
        if after_bytes < 0:
            raise ValueError("after_bytes must be >= 0")
        return self._add(Fault(_method(method), path, times, cut_after=after_bytes))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The rule that applies to this request (using one of its times), or None."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def _add(self, rule: Fault) -> Fault:
        if rule.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._rules.append(rule)
        return rule


def _method(method: str | None) -> str | None:
    return method.upper() if method is not None else None
