"""Pacing a streamed body for a reader that takes its rows one at a time (``async for``)."""

from __future__ import annotations

from collections.abc import Callable

from ..backend import Cancel, Sink, Transfer
from ..errors import CouchError
from ..protocol.requests import Request
from ..protocol.responses import Headers, piece_end

__all__ = ["Paced"]

CallLater = Callable[[float, Callable[[], None]], Cancel]


class Paced:
    """A sink in front of another that hands a body on at most about :attr:`SLICE` bytes per
    pass of the event loop (cut after a line's end); it is also the transfer handle the reader
    pauses, resumes and cancels.

    Why: a transport may hand over a quarter of a megabyte in one pass (asyncio reads 256 KiB,
    llhttp gives a feed's 1.5 kB chunks one after the other), which parsed at once is some
    1,700 changes waiting in an iterator's queue while the reader takes them one by one: they
    outlive the collector's young generation and are traversed again and again. A slice per
    pass, the reader runs in between and only a slice's rows wait. What is over the slice is
    held, the transport paused meanwhile, so memory stays bounded by what one read brings. The
    end of the body (or its error) comes after what was held before it.

    Only where a woken reader runs on a later pass (asyncio's Futures): where the backend
    resumes it at once (``Backend.resumes_at_once``: Twisted's Deferreds), it takes the rows
    of each wake before more are parsed, and :class:`~corduroy2.api.views.RowIterator` does
    without this.
    """

    SLICE = 32 * 1024

    def __init__(self, sink: Sink, call_later: CallLater) -> None:
        self._sink = sink
        self._call_later = call_later
        self._spent = 0  # bytes handed on since the last pass began (as far as we know)
        self._held = b""  # what waits for a later pass, from _offset, then _more
        self._offset = 0
        self._more: list[bytes] = []
        self._end: CouchError | bool = False  # True: the end came; an error: it failed
        self._transfer: Transfer | None = None
        self._paused = False  # by the reader
        self._stopped = False  # the transport is paused (for the reader or while holding)
        self._timer: Cancel | None = None
        self._cancelled = False
        #: The sink's own request to pick a broken feed up on another node, if it has one
        #: (:class:`~corduroy2.api.changes.ChangesSink`): the pipeline asks the sink it sends to.
        self.request_to_resume: Callable[[], Request] | None = getattr(
            sink, "request_to_resume", None)

    def keep(self, transfer: Transfer) -> Paced:
        """The transfer that feeds this sink; returns this handle to be used in its place."""
        self._transfer = transfer
        self._settle()
        return self

    # -- the sink's side ---------------------------------------------------------------------

    def on_start(self, status: int, headers: Headers) -> None:
        self._sink.on_start(status, headers)

    def on_data(self, chunk: bytes) -> None:
        if self._cancelled:
            return
        if self._held:  # what arrives behind held bytes waits behind them
            self._more.append(chunk)
            return
        room = self.SLICE - self._spent
        if len(chunk) <= room:
            self._spent += len(chunk)
            self._sink.on_data(chunk)
            return
        # Over this pass's slice: the rest waits for the next pass.
        self._held, self._offset = chunk, 0
        if room > 0:
            self._hand_on(room)
        self._settle()

    def on_end(self) -> None:
        if self._held:
            self._end = True
        elif not self._cancelled:
            self._sink.on_end()

    def on_error(self, exc: CouchError) -> None:
        if self._held:
            self._end = exc
        elif not self._cancelled:
            self._sink.on_error(exc)

    def _hand_on(self, size: int) -> None:
        """Hand on about ``size`` bytes of what is held (to the end of a line)."""
        if self._more:
            self._held = self._held[self._offset:] + b"".join(self._more)
            self._offset, self._more = 0, []
        held, start = self._held, self._offset
        end = piece_end(held, start, size)
        if end >= len(held):
            self._held, self._offset = b"", 0
        else:
            self._offset = end
        self._spent += end - start
        self._sink.on_data(held[start:end] if start or end < len(held) else held)

    def _next_pass(self) -> None:
        self._timer = None
        self._spent = 0
        self._hand_on(self.SLICE)
        if self._cancelled:
            return
        if not self._held and self._end is not False:
            end, self._end = self._end, False
            if isinstance(end, CouchError):
                self._sink.on_error(end)
            else:
                self._sink.on_end()
            return
        self._settle()

    def _settle(self) -> None:
        """Pause the transport while bytes are held or the reader paused, else let it run;
        hand held bytes on at the loop's next pass unless the reader paused."""
        if self._cancelled:
            return
        stop = self._paused or bool(self._held)
        transfer = self._transfer
        if transfer is not None and stop != self._stopped:
            self._stopped = stop
            if stop:
                transfer.pause()
            else:
                transfer.resume()
        if self._held and not self._paused and self._timer is None:
            self._timer = self._call_later(0, self._next_pass)

    # -- the reader's side (Transfer) --------------------------------------------------------

    def pause(self) -> None:
        self._paused = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._settle()

    def resume(self) -> None:
        self._paused = False
        self._settle()

    def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._held, self._more, self._end = b"", [], False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transfer is not None:
            self._transfer.cancel()
