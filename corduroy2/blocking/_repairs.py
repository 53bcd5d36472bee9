"""What the blocking transport takes from ``http.client`` beyond its public API, in one place.

Each repair is checked against the installed Python by
``tests/backends/test_blocking_repairs.py``; a failure there after upgrading Python means: look
at the repair again (it may have become unnecessary, or need another way in).
"""

from __future__ import annotations

import http.client
import io
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["Response", "StreamResponse", "HeadCut", "TimedReader", "STREAM_BUFFER",
           "put_header_lines"]

#: The read buffer of a streamed response.
STREAM_BUFFER = 64 * 1024


class Response(http.client.HTTPResponse):
    """The response class (``HTTPConnection.response_class``, the hook ``getresponse()``
    documents) that reads the socket through its connection's :class:`TimedReader`
    (``reader``), with a read buffer of ``buffer_size`` bytes, and tells a head cut short
    (:class:`HeadCut`).

    The repairs: ``HTTPResponse.__init__`` makes its reader (``self.fp``) with
    ``sock.makefile("rb")`` and takes no reader of its own, so it is handed a stand-in whose
    ``makefile`` makes ours; ``begin()`` takes the end of the connection for the end of the
    header fields, so the reader says whether it saw the end.
    """

    buffer_size = io.DEFAULT_BUFFER_SIZE

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None, *, reader: TimedReader) -> None:
        self._reader = reader
        super().__init__(_ReaderMaker(reader, self.buffer_size),  # type: ignore[arg-type]
                         debuglevel, method, url)

    def begin(self) -> None:
        super().begin()
        # Reading the head only reads again until it has a whole line: the end of the
        # connection seen meanwhile came before the blank line that ends a head.
        if self._reader.ended:
            raise HeadCut("the connection closed inside the response's head")


class HeadCut(http.client.HTTPException):
    """The connection ended before the response's head did: a status line and perhaps some
    header fields came, but not the blank line after them."""


class StreamResponse(Response):
    """For streamed replies: a 64 KiB read buffer instead of ``makefile()``'s 8 KiB.

    ``read1`` returns at most the rest of one HTTP chunk, and also stops where the buffered
    bytes end: with an 8 KiB buffer a busy feed's chunks are split in two every few chunks,
    each piece costing the row or change parser a pass of its own.
    """

    buffer_size = STREAM_BUFFER


class TimedReader(io.RawIOBase):
    """A connection's bytes, as ``socket.makefile("rb")``'s reader gives them, except that a
    receive that outlasts the socket's ``SO_RCVTIMEO`` raises TimeoutError: ``makefile``'s
    reader takes that for "no data yet" (as on a non-blocking socket), and http.client for a
    connection the server closed.

    One per connection, read by each of its responses in turn: a response that ends closes
    its buffered reader, whose ``close()`` reaches this one and leaves it open for the next
    response; :meth:`release`, when the connection closes, closes it. A reader per response
    instead (with the socket reader it holds) cost 17,000 instructions a request (``bench get
    --instructions --only blocking --concurrency 32``: 5.9 % overhead over raw http.client with
    one per response, 2.6 % with this).
    """

    def __init__(self, sock: socket.socket) -> None:
        # The socket's own unbuffered reader, never read: while it is open, closing the
        # socket (as HTTPConnection does, handing a reply that ends the connection to the
        # response) leaves the descriptor open for this reader.
        self._hold = sock.makefile("rb", buffering=0)
        self._recv_into = sock.recv_into
        self.ended = False  # the connection's end has been read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            count = self._recv_into(buffer)
        except BlockingIOError:
            raise TimeoutError("no data within the socket's receive timeout") from None
        if not count:
            self.ended = True
        return count

    def close(self) -> None:
        """A response's end: the connection's next response reads on through this reader."""

    def release(self) -> None:
        """The connection's end: let go of the descriptor."""
        if not self.closed:
            self._hold.close()
            super().close()


class _ReaderMaker:
    """What ``HTTPResponse.__init__`` is given as its socket: its ``makefile`` is ours."""

    __slots__ = ("_reader", "_size")

    def __init__(self, reader: TimedReader, size: int) -> None:
        self._reader, self._size = reader, size

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self._reader, self._size)


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
