"""``_changes``: request building, the streamed-feed sink, and corduroy's ``ChangesFeed``.

``normal``/``longpoll`` answers are row bodies (``{"results": [...], "last_seq": ...}``) and go
through the row parser; ``continuous``/``eventsource`` feeds go through
:class:`~corduroy2.protocol.changes.ChangesStream`. Seqs are opaque: they are passed back to the
server exactly as it sent them, never parsed or compared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..backend import Cancel, StopTransfer, Transfer
from ..protocol.changes import NEED_DATA, ChangesStream, FeedEnd, Heartbeat
from ..protocol.requests import Request, encode_json
from ..protocol.responses import Headers
from ..protocol.urls import db_path
from .calls import RowSink

if TYPE_CHECKING:
    from .database import Database

__all__ = ["FEEDS", "changes_request", "ChangesSink", "ChangesFeed"]

log = logging.getLogger("corduroy2")

FEEDS = ("normal", "longpoll", "continuous", "eventsource")


def changes_request(db: Database, opts: dict[str, Any]) -> Request:
    """Build a ``_changes`` request. ``doc_ids`` and ``selector`` travel in a POST body (a query
    string has a length limit) and imply their built-in filters; ``heartbeat``/``timeout`` are
    milliseconds (``heartbeat=True`` is the server's default); ``since`` is sent as given."""
    opts = dict(opts)
    feed = opts.setdefault("feed", "normal")
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {', '.join(FEEDS)}, not {feed!r}")
    body: dict[str, Any] = {}
    if "doc_ids" in opts:
        doc_ids = opts.pop("doc_ids")
        if not isinstance(doc_ids, (list, tuple)) or not all(isinstance(i, str) for i in doc_ids):
            raise TypeError("doc_ids must be a list of str")
        body["doc_ids"] = list(doc_ids)
        opts.setdefault("filter", "_doc_ids")
    if "selector" in opts:
        selector = opts.pop("selector")
        if not isinstance(selector, dict):
            raise TypeError("selector must be a dict")
        body["selector"] = selector
        opts.setdefault("filter", "_selector")
    since = opts.get("since")
    if since is not None and not isinstance(since, (str, int)):
        raise TypeError(f"since must be a seq as the server sent it (str or int), not {since!r}")
    path = db_path(db.name) + "/_changes"
    if body:
        request = db._req("POST", path, opts, encode_json(body))
    else:
        request = db._req("GET", path, opts)
    return replace(request, stream=True)


class ChangesSink(RowSink):
    """A :class:`~corduroy2.api.calls.RowSink` for streamed feeds: changes reach the consumer
    per received chunk; a ``last_seq`` line (or the server closing the feed) ends it, and
    ``consumer.end`` gets ``{"last_seq": ..., "pending": ...}``."""

    __slots__ = ("_feed", "beat")

    def __init__(self, request: Request, consumer: Any, done: Any, feed: str,
                 beat: Callable[[], None] | None = None) -> None:
        super().__init__(request, consumer, done)
        self._feed = feed
        self.beat = beat

    def on_start(self, status: int, headers: Headers) -> None:
        self._status, self._headers = status, headers
        if status < 400:
            self._parser = ChangesStream(self._feed, status, headers)  # type: ignore[assignment]

    def on_data(self, chunk: bytes) -> None:
        parser = self._parser
        if self._over or parser is None:
            super().on_data(chunk)  # ignored, or part of an error reply
            return
        try:
            changes = parser.changes_in(chunk)  # type: ignore[attr-defined]
            if changes:  # the usual chunk: only changes, and nothing left to parse
                self._consumer.rows(changes)
            else:
                self._drain(parser)
        except StopTransfer:
            raise
        except Exception as exc:
            self._fail(exc)

    def _drain(self, parser: Any) -> None:
        consumer = self._consumer
        while True:
            changes = parser.changes_ready()
            if changes:
                consumer.rows(changes)
                if parser.idle():  # the usual end of a chunk: one check, not two more calls
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
                consumer.rows([event.value])


class ChangesFeed:
    """corduroy's continuous feed: ``callback(seq, changes)`` with the changes that arrived
    within ``latency`` seconds (0: one call per change), at most ``max_batch`` per call: a
    burst is delivered in batches of that size without waiting, so that memory stays bounded
    (and the collector does not rescan a growing batch). ``seq`` is the last seq delivered,
    ``listening`` is True while the connection is open, ``stop()`` closes it. ``on_error(exc)``
    hears how a feed ended on an error (corduroy 0.9 said nothing); the feed does not
    reconnect: that is :meth:`Database.follow`'s job.
    """

    def __init__(self, db: Database, request: Request, feed: str,
                 callback: Callable[[Any, list[dict[str, Any]]], Any],
                 latency: float, max_batch: int, since: Any,
                 on_error: Callable[[BaseException], Any] | None) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if type(max_batch) is not int or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, not {max_batch!r}")
        self.db = db
        self.seq = since
        self.last_seq: Any = None
        self.listening = False
        self._request = request
        self._feed = feed
        self._callback = callback
        self._latency = latency
        self._max_batch = max_batch
        self._on_error = on_error
        self._batch: list[dict[str, Any]] = []
        self._timer: Cancel | None = None
        self._transfer: Transfer | None = None
        self._stopped = False

    def __repr__(self) -> str:
        state = "listening" if self.listening else "stopped"
        return f"<ChangesFeed {self.db.name!r} {state} seq={self.seq!r}>"

    def start(self) -> ChangesFeed:
        self.listening = True
        sink = ChangesSink(self._request, self, self._finished, self._feed)
        self._transfer = self.db.couch._sender.send(self._request, sink)
        sink.transfer = self._transfer
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
        return self.db.couch._sender.call_later(delay, fn)

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
