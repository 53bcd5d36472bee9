"""Where the httptools core needs more than httptools' documented API (DESIGN.md section 9).

``tests/backends/test_http1.py`` checks each assumption against the installed httptools, so an
upgrade that breaks one fails a test.
"""

from __future__ import annotations

__all__ = ["callback_error"]


def callback_error(exc: BaseException) -> BaseException | None:
    """What a parser callback raised, given the ``HttpParserCallbackError`` that httptools
    raised from ``feed_data`` in its place.

    Why: httptools documents that a callback's exception stops the parser and becomes an
    ``HttpParserCallbackError``, but not where the original goes; it is the new exception's
    implicit context (``__context__``). The core stops the parser after a HEAD response's
    headers this way, and logs a failing sink's own error. Fallback: None (a HEAD response is
    then taken for a failed consumer, which the repair test would show first).
    """
    return exc.__context__
