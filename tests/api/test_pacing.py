"""Paced: a body handed on at most a slice per loop pass, in order, with its end last; the
transport paused while bytes are held; the reader's pause, resume and cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corduroy2.api.pacing import Paced
from corduroy2.errors import ResponseCut
from corduroy2.protocol.responses import NO_HEADERS

LINE = b'{"seq":"1-abc","id":"doc","changes":[{"rev":"1-x"}]}\n'  # 54 bytes


class Loop:
    """call_later(0, fn) by hand: run() is one pass of the loop."""

    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        self.due.append(fn)
        loop = self

        class Handle:
            def cancel(self) -> None:
                if fn in loop.due:
                    loop.due.remove(fn)

        return Handle()

    def run(self) -> None:
        due, self.due = self.due, []
        for fn in due:
            fn()


class Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_start(self, status: int, headers: Any) -> None:
        self.events.append(("start", status))

    def on_data(self, chunk: bytes) -> None:
        self.events.append(chunk)

    def on_end(self) -> None:
        self.events.append("end")

    def on_error(self, exc: Exception) -> None:
        self.events.append(exc)

    def data(self) -> bytes:
        return b"".join(e for e in self.events if isinstance(e, bytes))


class Transfer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    def cancel(self) -> None:
        self.calls.append("cancel")


def paced() -> tuple[Paced, Sink, Transfer, Loop]:
    sink, transfer, loop = Sink(), Transfer(), Loop()
    handle = Paced(sink, loop.call_later)  # type: ignore[arg-type]
    assert handle.keep(transfer) is handle  # type: ignore[arg-type]
    handle.on_start(200, NO_HEADERS)
    return handle, sink, transfer, loop


def test_a_big_piece_is_handed_on_a_slice_per_pass_cut_at_line_ends() -> None:
    handle, sink, transfer, loop = paced()
    body = LINE * 2000  # 108,000 bytes
    handle.on_data(body)
    handle.on_end()
    first = sink.events[1]
    assert Paced.SLICE <= len(first) < Paced.SLICE + len(LINE) and first.endswith(b"\n")
    assert transfer.calls == ["pause"]  # held bytes: nothing more is read meanwhile
    passes = 0
    while loop.due:
        loop.run()
        passes += 1
    pieces = [e for e in sink.events if isinstance(e, bytes)]
    assert passes == len(pieces) - 1 == 3
    assert all(len(p) < Paced.SLICE + len(LINE) and p.endswith(b"\n") for p in pieces)
    assert sink.data() == body and sink.events[-1] == "end"
    assert transfer.calls == ["pause"]  # the end came: nothing left to resume


def test_small_pieces_pass_until_a_slice_is_spent_then_wait_behind() -> None:
    handle, sink, transfer, loop = paced()
    count = Paced.SLICE // len(LINE) + 10
    for _ in range(count):
        handle.on_data(LINE)
    handed_now = sink.data()
    assert Paced.SLICE <= len(handed_now) < Paced.SLICE + len(LINE)  # to its line's end
    assert transfer.calls == ["pause"]
    loop.run()
    assert sink.data() == LINE * count
    assert transfer.calls == ["pause", "resume"]  # nothing held: the transport reads again
    assert not loop.due


def test_the_end_or_an_error_comes_after_what_was_held() -> None:
    handle, sink, transfer, loop = paced()
    handle.on_data(LINE * 1000)
    cut = ResponseCut("cut")
    handle.on_error(cut)
    assert cut not in sink.events
    while loop.due:
        loop.run()
    assert sink.events[-1] is cut and sink.data() == LINE * 1000


def test_the_readers_pause_stops_what_is_held_and_resume_goes_on() -> None:
    handle, sink, transfer, loop = paced()
    handle.on_data(LINE * 2000)
    handle.pause()
    assert not loop.due  # paused: nothing handed on
    before = sink.data()
    handle.resume()
    assert transfer.calls == ["pause"]  # still held: the transport stays paused
    while loop.due:
        loop.run()
    assert len(sink.data()) > len(before) and sink.data() == LINE * 2000
    assert transfer.calls == ["pause", "resume"]


def test_a_paused_reader_keeps_the_transport_paused_and_small_pieces_go_through() -> None:
    handle, sink, transfer, loop = paced()
    handle.pause()
    assert transfer.calls == ["pause"]
    handle.on_data(LINE)  # what a transport still hands over once paused goes on
    assert sink.data() == LINE
    handle.resume()
    assert transfer.calls == ["pause", "resume"]


def test_cancel_drops_what_is_held_and_cancels_the_transfer() -> None:
    handle, sink, transfer, loop = paced()
    handle.on_data(LINE * 2000)
    handed = sink.data()
    handle.cancel()
    loop.run()
    handle.on_data(LINE)
    handle.on_end()
    assert sink.data() == handed and "end" not in sink.events
    assert transfer.calls == ["pause", "cancel"]


def test_the_sinks_request_to_resume_a_feed_is_the_pipelines_to_ask_for() -> None:
    class FeedSink(Sink):
        def request_to_resume(self) -> str:
            return "the feed from its last change"

    feed = FeedSink()
    assert Paced(feed, Loop().call_later).request_to_resume == feed.request_to_resume  # type: ignore[arg-type]
    assert Paced(Sink(), Loop().call_later).request_to_resume is None  # type: ignore[arg-type]
