"""Request bodies that are read while they are sent: :class:`BodySource`.

Most request bodies are small JSON, built whole (``Request.body`` is ``bytes``). An attachment
upload may be larger than memory, so its body is a :class:`BodySource`: pieces taken one at a
time from an iterator (a file's reads, a generator) or an async iterator, as the transport is
ready for them. The adapters pull the pieces (curl's ``READFUNCTION``, Tornado's
``body_producer``, Twisted's ``IBodyProducer``, ``http.client``'s iterable body), which is what
bounds memory: nothing is read before the socket can take it.

A source is read once. Once a piece has been taken it cannot be sent again, so a request
carrying it is no longer :attr:`~corduroy2.protocol.requests.Request.replayable`: the retry
decision never sends it twice (pipeline/decision.py).

No IO here: reading happens when an adapter asks for a piece.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..errors import TransportError

__all__ = ["BodySource"]


class BodySource:
    """A request body read piece by piece while it is sent; ``length`` is its size in bytes
    when known (sent as ``Content-Length``), else None (sent with chunked transfer coding).

    ``is_async``: the pieces come from an async iterator, and only :meth:`anext_piece` (on an
    event loop) can take them. ``taken``: a piece has been taken, so the body cannot be sent
    again. Empty pieces are skipped: an empty chunk would end a chunked body (and an empty
    read tells libcurl the body is over). A piece that is not bytes, or a failure of the
    iterator itself, raises :class:`~corduroy2.errors.TransportError` (the cause chained), which
    fails the request.
    """

    __slots__ = ("length", "is_async", "taken", "_pieces")

    def __init__(self, pieces: Iterator[Any] | AsyncIterator[Any],
                 length: int | None = None) -> None:
        self.is_async = hasattr(pieces, "__anext__")
        if not self.is_async and not hasattr(pieces, "__next__"):
            raise TypeError(f"a body source needs an iterator, not {type(pieces).__name__}")
        self._pieces = pieces
        self.length = length
        self.taken = False

    def next_piece(self) -> bytes | None:
        """The next non-empty piece of a synchronous source; None at its end."""
        if self.is_async:
            raise TypeError("an async iterator's pieces must be awaited (anext_piece)")
        pieces: Iterator[Any] = self._pieces  # type: ignore[assignment]
        while True:
            try:
                piece = next(pieces)
            except StopIteration:
                return None
            except Exception as exc:
                raise _failed(exc) from exc
            if piece := _checked(piece):
                self.taken = True
                return piece

    async def anext_piece(self) -> bytes | None:
        """The next non-empty piece, from either kind of source; None at its end."""
        if not self.is_async:
            return self.next_piece()
        pieces: AsyncIterator[Any] = self._pieces  # type: ignore[assignment]
        while True:
            try:
                piece = await pieces.__anext__()
            except StopAsyncIteration:
                return None
            except Exception as exc:
                raise _failed(exc) from exc
            if piece := _checked(piece):
                self.taken = True
                return piece

    def __iter__(self) -> Iterator[bytes]:
        """The pieces of a synchronous source (for ``http.client``'s iterable body)."""
        while (piece := self.next_piece()) is not None:
            yield piece

    def __repr__(self) -> str:
        size = "unknown length" if self.length is None else f"{self.length} bytes"
        return f"<BodySource {size}{', taken' if self.taken else ''}>"


def _checked(piece: Any) -> bytes:
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, (bytearray, memoryview)):
        return bytes(piece)
    raise _failed(TypeError(f"a body piece must be bytes, not {type(piece).__name__}"))


def _failed(exc: BaseException) -> TransportError:
    if isinstance(exc, TransportError):
        return exc
    error = TransportError(f"reading the request body failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
