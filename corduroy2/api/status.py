"""``Status``: what a ``callback(data, status)`` receives with every result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import HTTPError

__all__ = ["Status"]


@dataclass(frozen=True)
class Status:
    """The outcome of one call, for the explicit-callback style (which never raises).

    ``ok`` is False when the call failed; then ``error`` is the exception class (so
    ``status.error is NotFound`` works), ``exception`` the instance, and ``response`` the decoded
    error body the server sent (None for transport errors). ``code`` is the HTTP status of the
    last response, or None when no answer arrived. ``node`` is the server that sent that
    response (its URL: on a cluster, the node that answered), None when no answer arrived.
    """

    ok: bool
    code: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    exception: BaseException | None = None
    node: str | None = None

    @property
    def error(self) -> type[BaseException] | None:
        return None if self.exception is None else type(self.exception)

    @property
    def response(self) -> Any:
        return self.exception.body if isinstance(self.exception, HTTPError) else None

    def __repr__(self) -> str:
        if self.ok:
            return f"<{self.code}/Success>"
        name = type(self.exception).__name__
        return f"<{self.code}/{name} | {self.exception}>"
