"""What the blocking transport takes from ``http.client`` beyond its public API, in one place.

Each repair is checked against the installed Python by
``tests/backends/test_blocking_repairs.py``; a failure there after upgrading Python means: look
at the repair again (it may have become unnecessary, or need another way in).
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

__all__ = ["StreamResponse", "STREAM_BUFFER", "put_header_lines"]

#: The read buffer of a streamed response.
STREAM_BUFFER = 64 * 1024


class StreamResponse(http.client.HTTPResponse):
    """The response class for streamed replies (``HTTPConnection.response_class``, the hook
    ``getresponse()`` documents): a 64 KiB read buffer instead of ``makefile()``'s 8 KiB.

    ``read1`` returns at most the rest of one HTTP chunk, and also stops where the buffered
    bytes end: with an 8 KiB buffer a busy feed's chunks are split in two every few chunks,
    each piece costing the row or change parser a pass of its own.

    The repair: ``HTTPResponse.__init__`` makes its reader (``self.fp``) with
    ``sock.makefile("rb")`` and takes no buffer size, so the reader is replaced right after,
    before anything has been read from it (closing it leaves the socket open).
    """

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()
        self.fp = sock.makefile("rb", STREAM_BUFFER)  # type: ignore[assignment]  # BufferedReader


def _put_header_lines(conn: http.client.HTTPConnection, lines: bytes) -> None:
    """The public way: one ``putheader`` per line."""
    for line in lines.split(b"\r\n"):
        name, _, value = line.partition(b": ")
        conn.putheader(name, value)  # it takes bytes as well as str


#: ``put_header_lines(conn, lines)``: add header lines (``b"Name: value"`` joined by CRLF, each
#: already checked) to the request that ``conn.putrequest()`` began, as ``putheader`` does one
#: at a time.
#:
#: The repair: ``putheader`` checks and encodes each header again on every request (two regular
#: expressions per header), while a Couch sends the same few header sets again and again; the
#: backend checks and encodes each set once (``_header_lines``) and hands its lines to
#: ``HTTPConnection._output``, the method ``putheader`` ends with. Measured with ``python -m bench
#: get --only blocking --instructions`` (callgrind, a document GET with two request headers):
#: 21,600 instructions per request fewer than two ``putheader`` calls, 4% of the request's
#: (raw http.client: 455,000). Without ``_output`` it falls back to ``putheader``.
put_header_lines: Callable[[http.client.HTTPConnection, bytes], None] = getattr(
    http.client.HTTPConnection, "_output", _put_header_lines)
