"""``_changes``: request building, the streamed-feed sink, and corduroy's ``ChangesFeed``.

``normal``/``longpoll`` answers are row bodies (``{"results": [...], "last_seq": ...}``) and go
through the row parser; ``continuous``/``eventsource`` feeds go through
:class:`~corduroy2.protocol.changes.ChangesStream`. Seqs are opaque: they are passed back to the
server exactly as it sent them, never parsed or compared.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from ..backend import Cancel, StopTransfer, Transfer
from ..pipeline.exchange import Sender
from ..protocol.changes import NEED_DATA, ChangesStream, FeedEnd, Heartbeat
from ..protocol.requests import Request, resume_feed
from ..protocol.responses import Headers
from .sinks import Finished, RowConsumer, RowSink

__all__ = ["HEARTBEAT_MS", "with_heartbeat", "longpoll_timeout", "feed_limit", "feed_result", "Delivered", "ChangesSink",
           "ChangesFeed"]

log = logging.getLogger("corduroy2")

#: The heartbeat asked of a longpoll, continuous or eventsource feed unless the caller gives
#: one: well inside the default idle timeout (:data:`corduroy2.api.couch.IDLE_TIMEOUT`), so a
#: quiet feed is not taken for a dead one.
HEARTBEAT_MS = 60_000


def with_heartbeat(opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` with the default heartbeat for the feeds that wait for changes."""
    if opts.get("feed", "normal") != "normal" and "heartbeat" not in opts:
        return {**opts, "heartbeat": HEARTBEAT_MS}
    return opts


#: CouchDB's default longpoll timeout (``[chttpd] changes_timeout``), and the grace given to a
#: server past it before a longpoll is given up on.
LONGPOLL_DEFAULT_MS = 60_000
LONGPOLL_GRACE = 60.0


def longpoll_timeout(opts: dict[str, Any]) -> float:
    """The time a longpoll may take in all: the ``timeout`` asked of the server (or its
    default) and a grace. Heartbeats keep a longpoll from going idle, so without this bound a
    server that ignores ``timeout`` (pouchdb-server does) would hold the call forever."""
    asked = opts.get("timeout")
    if not isinstance(asked, (int, float)) or isinstance(asked, bool):
        asked = LONGPOLL_DEFAULT_MS
    return asked / 1000 + LONGPOLL_GRACE


class Delivered:
    """A bounded memory of the changes delivered lately, by document id and rev.

    CouchDB's changes feed is at-least-once: on a cluster, a feed resumed on another node, or
    kept on one while others restart, can send again changes it had sent (shards rewound to a
    checkpoint: reference/couchdb3.md). A change whose id and rev were delivered already is
    such a repeat; the rewinds seen are tens of changes, so the last ``size`` are enough.
    Changes without a rev (``_db_updates`` events) are never taken for repeats.
    """

    __slots__ = ("_keys", "_order", "_size")

    def __init__(self, size: int = 10_000) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._order: collections.deque[tuple[str, str]] = collections.deque()
        self._size = size

    @staticmethod
    def _key(change: dict[str, Any]) -> tuple[str, str] | None:
        try:
            return change["id"], change["changes"][0]["rev"]
        except (KeyError, IndexError, TypeError):
            return None

    def __contains__(self, change: dict[str, Any]) -> bool:
        return self._key(change) in self._keys

    def add(self, change: dict[str, Any]) -> None:
        key = self._key(change)
        if key is None or key in self._keys:
            return
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self._size:
            self._keys.discard(self._order.popleft())

    def fresh(self, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``changes`` without the repeats, each remembered as delivered."""
        kept = []
        for change in changes:
            if change not in self:
                self.add(change)
                kept.append(change)
        return kept



def feed_limit(opts: dict[str, Any]) -> int | None:
    """The ``limit`` asked of a feed, when it is an int (the sink enforces it client-side)."""
    limit = opts.get("limit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def feed_result(rows: list[Any], fields: dict[str, Any]) -> dict[str, Any]:
    """A normal or longpoll feed's value: ``{"results": [...], "last_seq": ..., ...}``."""
    return {"results": rows, **fields}

class ChangesSink(RowSink):
    """A :class:`~corduroy2.api.calls.RowSink` for streamed feeds: changes reach the consumer
    per received chunk; a ``last_seq`` line (or the server closing the feed) ends it, and
    ``consumer.end`` gets ``{"last_seq": ..., "pending": ...}``.

    With ``limit``, a server that sends more changes than asked for (pouchdb-server ignores
    ``limit`` on a continuous feed) is cut off after ``limit`` of them, as if it had ended the
    feed there: ``last_seq`` is then the last delivered change's seq and ``pending`` None. A
    server that honours ``limit`` ends the feed itself, with its own ``last_seq`` line.

    :meth:`request_to_resume` gives the request that picks the feed up after the last change
    received: on a cluster, the pipeline sends it to another node when the feed's node fails,
    and this sink starts over at ``on_start``. With ``remember`` (a cluster's feed) it drops the changes
    it has already handed over (:class:`Delivered`), which CouchDB may send again then.
    """

    __slots__ = ("_feed", "beat", "_left", "_last_seq", "_delivered")

    def __init__(self, request: Request, consumer: RowConsumer, done: Finished, feed: str,
                 beat: Callable[[], None] | None = None, limit: int | None = None,
                 remember: bool = False) -> None:
        super().__init__(request, consumer, done)
        self._feed = feed
        self.beat = beat
        self._left = limit
        self._last_seq: Any = None
        self._delivered = Delivered() if remember else None

    def on_start(self, status: int, headers: Headers) -> None:
        self._status, self._headers = status, headers
        if status < 400:
            self._parser = ChangesStream(self._feed, status, headers)  # type: ignore[assignment]

    def _parse(self, piece: bytes) -> None:
        parser: Any = self._parser
        changes = parser.changes_in(piece)
        if changes:  # the usual piece: only changes, and nothing left to parse
            self._hand_over(changes)
        else:
            self._drain(parser)

    def _drain(self, parser: Any) -> None:
        while not self._over:
            changes = parser.changes_ready()
            if changes:
                self._hand_over(changes)
                if parser.idle():  # the usual end of a chunk
                    return
                continue
            event = parser.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, Heartbeat):
                if self.beat is not None:
                    self.beat()
            elif isinstance(event, FeedEnd):
                self._end = {"last_seq": event.last_seq, "pending": event.pending}
                return
            else:
                self._hand_over([event.value])

    def _hand_over(self, changes: list[dict[str, Any]]) -> None:
        if self._delivered is not None:
            changes = self._delivered.fresh(changes)
            if not changes:
                return
        left = self._left
        if left is None:
            self._consumer.rows(changes)
            self._last_seq = changes[-1].get("seq", self._last_seq)
            return
        if len(changes) > left:  # more than the limit: the server ignored it
            if left:
                self._consumer.rows(changes[:left])
                self._last_seq = changes[left - 1].get("seq", self._last_seq)
            self._end_early({"last_seq": self._last_seq, "pending": None})
            return
        self._left = left - len(changes)
        if changes:
            self._consumer.rows(changes)
            self._last_seq = changes[-1].get("seq", self._last_seq)

    def request_to_resume(self) -> Request:
        """The feed's request again, from the last change received (with what is left of its
        ``limit``)."""
        return resume_feed(self._request, self._last_seq, self._left)

    def _end_early(self, fields: dict[str, Any]) -> None:
        """End the feed here, as if the server had: the consumer's end, then the transfer
        dropped (the rest of the body is unwanted)."""
        try:
            value, error = self._consumer.end(fields), None
        except Exception as exc:
            value, error = None, exc
        transfer = self._report(value, error)
        if transfer is not None:
            transfer.cancel()
        else:
            raise StopTransfer()  # a synchronous backend: stop reading now


class ChangesFeed:
    """corduroy's continuous feed: ``callback(seq, changes)`` with the changes that arrived
    within ``latency`` seconds (0: one call per change), at most ``max_batch`` per call: a
    burst is delivered in batches of that size without waiting, so that memory stays bounded
    (and the collector does not rescan a growing batch). ``seq`` is the last seq delivered,
    ``listening`` is True while the connection is open, ``stop()`` closes it. ``on_error(exc)``
    hears how a feed ended on an error (corduroy 0.9 said nothing); the feed does not
    reconnect: that is :meth:`Database.follow`'s job.
    """

    def __init__(self, db_name: str, sender: Sender, request: Request, feed: str,
                 callback: Callable[[Any, list[dict[str, Any]]], Any],
                 latency: float, max_batch: int, since: Any,
                 on_error: Callable[[BaseException], Any] | None,
                 limit: int | None = None) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if type(max_batch) is not int or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, not {max_batch!r}")
        self.db_name = db_name
        self.seq = since
        self.last_seq: Any = None
        self.listening = False
        self._sender = sender
        self._request = request
        self._feed = feed
        self._callback = callback
        self._latency = latency
        self._max_batch = max_batch
        self._on_error = on_error
        self._limit = limit
        self._batch: list[dict[str, Any]] = []
        self._timer: Cancel | None = None
        self._transfer: Transfer | None = None
        self._stopped = False

    def __repr__(self) -> str:
        state = "listening" if self.listening else "stopped"
        return f"<ChangesFeed {self.db_name!r} {state} seq={self.seq!r}>"

    def start(self) -> ChangesFeed:
        self.listening = True
        sink = ChangesSink(self._request, self, self._finished, self._feed, limit=self._limit,
                           remember=self._sender.nodes is not None)
        self._transfer = sink.keep_transfer(self._sender.send(self._request, sink))
        return self

    # -- consumer (called by the sink) ---------------------------------------------------------

    def header(self, fields: dict[str, Any]) -> None:
        return None

    def rows(self, changes: list[dict[str, Any]]) -> None:
        if self._stopped:
            return
        if self._latency <= 0:
            # One call per change, inlined: this loop is the feed's hot path.
            callback, seq = self._callback, self.seq
            for change in changes:
                try:
                    seq = change["seq"]  # (faster than get() when present, as it always is)
                except KeyError:
                    pass  # keep the last one
                self.seq = seq
                try:
                    callback(seq, [change])
                except Exception:
                    log.exception("corduroy2: exception in changes callback %r", callback)
            return
        batch = self._batch
        batch.extend(changes)
        size = self._max_batch
        while len(batch) >= size:  # a burst: hand over full batches now
            full, batch = batch[:size], batch[size:]
            self._batch = batch
            self._deliver(full)
            if self._batch is not batch:  # the callback called stop(), which dropped the rest
                return
        # A timer left running after a full batch flushes whatever has come since (never
        # later than its latency): cheaper than cancelling and re-arming one per batch.
        if batch and self._timer is None:
            self._timer = self._call_later(self._latency, self._flush)

    def end(self, fields: dict[str, Any]) -> None:
        self.last_seq = fields.get("last_seq")

    # -- delivery -----------------------------------------------------------------------------

    def _call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        return self._sender.backend.call_later(delay, fn)

    def _flush(self) -> None:
        self._timer = None
        batch, self._batch = self._batch, []
        if batch and not self._stopped:
            self._deliver(batch)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        self.seq = batch[-1].get("seq", self.seq)
        try:
            self._callback(self.seq, batch)
        except Exception:
            log.exception("corduroy2: exception in changes callback %r", self._callback)

    def _finished(self, value: Any, error: BaseException | None, *_: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        self.listening = False
        if error is not None and not self._stopped and self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("corduroy2: exception in on_error %r", self._on_error)

    def stop(self) -> None:
        """Close the feed; nothing is delivered afterwards."""
        self._stopped = True
        self.listening = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._batch = []
        if self._transfer is not None:
            self._transfer.cancel()
