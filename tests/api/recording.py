"""Moved to :mod:`corduroy2.testing.recording` (public); kept so older imports still work."""

from corduroy2.testing.recording import RecordingBackend, Reply, Script

__all__ = ["RecordingBackend", "Reply", "Script"]
