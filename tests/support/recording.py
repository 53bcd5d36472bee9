"""Moved to :mod:`corduroy2.testing.recording` (public); kept so older imports still work."""

from corduroy2.testing.recording import record_requests

__all__ = ["record_requests"]
