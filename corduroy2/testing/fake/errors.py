"""The one exception the fake's logic raises: an answer CouchDB gives as an error."""

from __future__ import annotations


class Refusal(Exception):
    """CouchDB would answer ``status`` with ``{"error": error, "reason": reason}``."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(status, error, reason)
        self.status = status
        self.error = error
        self.reason = reason

    def body(self) -> dict[str, str]:
        return {"error": self.error, "reason": self.reason}


def bad_request(reason: str, error: str = "bad_request") -> Refusal:
    return Refusal(400, error, reason)


def not_found(reason: str = "missing") -> Refusal:
    return Refusal(404, "not_found", reason)


def conflict() -> Refusal:
    return Refusal(409, "conflict", "Document update conflict.")


NO_DB = "Database does not exist."
