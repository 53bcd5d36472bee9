"""``ChangesFollower``: a changes feed for services, that never loses a change.

It keeps one continuous feed open and, whatever happens to it, opens it again from the last
seq whose handler completed:

* any transport error, a 5xx/429, a malformed line, or the end of the feed: reconnect after an
  exponential, fully jittered, capped delay (reset once data flows again);
* a stalled connection: the server is asked for heartbeats and the request carries an idle
  timeout a few heartbeats long, so silence ends in ``Timeout`` and a reconnect;
* errors that another try cannot fix (400, 401, 403, 404 such as a deleted database): reported
  to ``on_error``, then the follower stops instead of looping forever;
* a change handled already (the same document id and rev) is not handed over again: CouchDB's
  feed is at-least-once, and on a cluster a feed resumed on another node (or kept on one while
  others restart) can repeat changes (:class:`~corduroy2.api.changes.Delivered`).

Changes are handed to ``handler(change)`` one at a time, in order. A handler may return a
Future/Deferred/coroutine: the next change waits for it, and the transport is paused when
``high_water`` changes are queued, so memory stays bounded. A handler that raises (or whose
promise fails) stops the follower; its change is not counted as delivered.

With ``checkpoint="name"``, the last delivered seq is stored in ``_local/name`` (as CouchDB's
replicator does) every ``checkpoint_every`` changes, at least every ``checkpoint_interval``
seconds while changes or heartbeats arrive, and on ``stop()``; the next follower with that name
starts there. ``stop()`` returns the backend's promise, fired once the last checkpoint is written.

The logic is written once and driven by events; only the loop that waits between connections
differs in blocking mode (:class:`corduroy2.blocking.BlockingFollower`).
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..backend import Cancel, Outcome, Transfer
from ..errors import Conflict, HTTPError, NotFound
from ..protocol import requests
from .calls import Op
from .changes import ChangesSink, Delivered
from .status import Status

if TYPE_CHECKING:
    from .database import Database

__all__ = ["ChangesFollower", "FATAL_STATUSES"]

log = logging.getLogger("corduroy2")

#: Answers that the same request will get again: following cannot go on.
FATAL_STATUSES = frozenset({400, 401, 403, 404, 405, 415})

Handler = Callable[[dict[str, Any]], Any]
OnError = Callable[[BaseException], Any] | None


class ChangesFollower:
    """Follows ``db``'s changes; see the module docstring. Made by :meth:`Database.follow`."""

    def __init__(
        self,
        db: Database,
        handler: Handler,
        *,
        since: Any = 0,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        checkpoint_interval: float = 10.0,
        heartbeat: float = 10.0,
        stall_timeout: float | None = None,
        backoff_base: float = 0.2,
        backoff_cap: float = 30.0,
        high_water: int = 1000,
        on_error: OnError = None,
        **opts: Any,
    ) -> None:
        if not callable(handler):
            raise TypeError("handler must be callable")
        if heartbeat <= 0 or backoff_base <= 0 or backoff_cap < backoff_base:
            raise ValueError("heartbeat and backoff_base must be > 0, backoff_cap >= base")
        if checkpoint_every < 1 or high_water < 1:
            raise ValueError("checkpoint_every and high_water must be at least 1")
        for name in ("feed", "callback", "heartbeat_ms"):
            if name in opts:
                raise TypeError(f"follow() does not take {name!r}")
        self.db = db
        self._sender = db.couch.sender
        self._backend = db.couch.backend
        self._runner = db.couch.runner
        self.seq = since
        self.running = False
        self.connections = 0
        self._handler = handler
        self._on_error = on_error
        self._opts = opts
        self._heartbeat = heartbeat
        # Three missed heartbeats (plus slack for a slow server) mean the connection is dead.
        self._stall = stall_timeout if stall_timeout is not None else 3 * heartbeat + 5
        self._base, self._cap = backoff_base, backoff_cap
        self._high = high_water
        self._attempt = 0
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._delivered = Delivered()  # changes handled lately, not handed over again
        self._busy = False
        self._paused = False
        self._end_seq: Any = None
        self._transfer: Transfer | None = None
        self._timer: Cancel | None = None
        self._stopping = False
        self._stop_waiters: list[Callable[[Outcome], None]] = []
        # checkpoints
        self._ckpt_id = None if checkpoint is None else "_local/" + checkpoint
        self._ckpt_every = checkpoint_every
        self._ckpt_interval = checkpoint_interval
        self._ckpt_rev: str | None = None
        self._ckpt_seq: Any = None  # the seq last written
        self._ckpt_pending = 0  # changes delivered since then
        self._ckpt_time = time.monotonic()
        self._ckpt_writing = False

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ChangesFollower {self.db.name!r} {state} seq={self.seq!r}>"

    # -- starting and connecting --------------------------------------------------------------

    def start(self) -> ChangesFollower:
        """Start following (load the checkpoint first, if any). Returns self."""
        if self.running:
            raise RuntimeError("this follower is already running")
        self.running = True
        if self._ckpt_id is None:
            self._connect()
        else:
            self._runner.run(self._load_checkpoint(), self._checkpoint_loaded)
        return self

    def _load_checkpoint(self) -> Op[Any]:
        assert self._ckpt_id is not None
        try:
            doc = yield requests.get_doc(self.db.couch.origin, self.db.name, self._ckpt_id)
        except NotFound:
            return None
        self._ckpt_rev = doc.get("_rev")
        return doc.get("seq")

    def _checkpoint_loaded(self, seq: Any, status: Status) -> None:
        error = status.exception
        if isinstance(error, HTTPError) and error.status in FATAL_STATUSES:
            self._fail(error)
            return
        if error is not None:  # a broken connection or a busy server: try again later
            log.info("corduroy2: loading checkpoint %s failed (%s); trying again",
                     self._ckpt_id, error)
            self._attempt += 1
            self._timer = self._backend.call_later(self._delay(), self._reload_checkpoint)
            return
        if seq is not None:
            self.seq = self._ckpt_seq = seq
        self._connect()

    def _reload_checkpoint(self) -> None:
        self._timer = None
        if not self._stopping:
            self._runner.run(self._load_checkpoint(), self._checkpoint_loaded)

    def _connect(self) -> None:
        self._timer = None
        if self._stopping:
            return
        self._queue.clear()
        self._paused = False
        self._end_seq = None
        opts = {**self._opts, "feed": "continuous", "since": self.seq,
                "heartbeat": int(self._heartbeat * 1000)}
        request = replace(requests.changes(self.db.couch.origin, self.db.name, opts),
                          idle_timeout=self._stall)
        sink = ChangesSink(request, self, self._feed_ended, "continuous", beat=self._beat)
        self.connections += 1
        self._transfer = sink.keep_transfer(self._sender.send(request, sink))

    # -- the feed (sink consumer) ---------------------------------------------------------------

    def header(self, fields: dict[str, Any]) -> None:
        return None

    def rows(self, changes: list[dict[str, Any]]) -> None:
        if self._stopping:
            self._halt_blocking_read()
            return
        self._attempt = 0  # data flows: the next failure starts the backoff afresh
        self._queue.extend(changes)
        if len(self._queue) >= self._high and not self._paused and self._transfer is not None:
            self._paused = True
            self._transfer.pause()
        self._pump()

    def end(self, fields: dict[str, Any]) -> None:
        self._end_seq = fields.get("last_seq")

    def _beat(self) -> None:
        if self._stopping:
            self._halt_blocking_read()
            return
        self._attempt = 0
        self._maybe_checkpoint()

    def _halt_blocking_read(self) -> None:
        """Hook for synchronous backends, whose read loop is stopped by raising."""
        return None

    def _feed_ended(self, value: Any, error: BaseException | None, *_: Any) -> None:
        self._transfer = None
        if self._stopping:
            self._settle_stop()
            return
        if isinstance(error, HTTPError) and error.status in FATAL_STATUSES:
            self._fail(error)
            return
        if error is not None:
            log.info("corduroy2: changes feed of %r broke (%s); reconnecting", self.db.name, error)
        if not self._busy and not self._queue:
            self._resume_after_end_seq()
        self._attempt += 1
        delay = 0.0 if error is None and self._attempt == 1 else self._delay()
        self._reconnect_after(delay)

    def _delay(self) -> float:
        # Exponential backoff with full jitter (AWS architecture blog): spreads the reconnects
        # of many followers after a server restart.
        return random.uniform(0, min(self._cap, self._base * 2 ** min(self._attempt, 32)))

    def _reconnect_after(self, delay: float) -> None:
        """Open the feed again later; blocking mode overrides this (its loop waits)."""
        if self._busy or self._queue:
            return  # _pump reconnects once the changes already received are handled
        self._timer = self._backend.call_later(delay, self._connect)

    def _resume_after_end_seq(self) -> None:
        # Everything up to last_seq was delivered or filtered out by the server: resume after it.
        if self._end_seq is not None:
            self.seq = self._end_seq
            self._end_seq = None

    # -- delivery -------------------------------------------------------------------------------

    def _pump(self) -> None:
        while self._queue and not self._busy and not self._stopping:
            change = self._queue.popleft()
            if self._paused and len(self._queue) <= self._high // 2 and self._transfer:
                self._paused = False
                self._transfer.resume()
            if change in self._delivered:  # a repeat: the feed's position moves on only
                self.seq = change.get("seq", self.seq)
                continue
            try:
                result = self._handler(change)
            except Exception as exc:
                self._fail(exc)
                return
            self._busy = True
            if not self._backend.when_done(result, self._handler_done(change)):
                self._handled(change, Outcome(value=result))
        if not self._queue and not self._busy and self._transfer is None and self.running \
                and not self._stopping and self._timer is None:
            self._resume_after_end_seq()
            self._reconnect_after(self._delay() if self._attempt > 1 else 0.0)

    def _handler_done(self, change: dict[str, Any]) -> Callable[[Outcome], None]:
        return lambda outcome: self._handled(change, outcome)

    def _handled(self, change: dict[str, Any], outcome: Outcome) -> None:
        self._busy = False
        if outcome.error is not None:
            self._fail(outcome.error)
            return
        self.seq = change.get("seq", self.seq)
        self._delivered.add(change)
        self._ckpt_pending += 1
        if self._stopping:
            self._settle_stop()
            return
        self._maybe_checkpoint()
        self._pump()

    # -- checkpoints ----------------------------------------------------------------------------

    def _maybe_checkpoint(self, force: bool = False) -> None:
        if self._ckpt_id is None or self._ckpt_writing or self.seq == self._ckpt_seq:
            return
        due = self._ckpt_pending >= self._ckpt_every
        late = time.monotonic() - self._ckpt_time >= self._ckpt_interval
        if force or due or late:
            self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        self._ckpt_writing = True
        self._runner.run(self._put_checkpoint(self.seq), self._checkpoint_written)

    def _put_checkpoint(self, seq: Any) -> Op[Any]:
        assert self._ckpt_id is not None
        origin, db = self.db.couch.origin, self.db.name
        for _ in range(3):
            doc: dict[str, Any] = {"_id": self._ckpt_id, "seq": seq}
            if self._ckpt_rev:
                doc["_rev"] = self._ckpt_rev
            try:
                reply = yield requests.put_doc(origin, db, doc)
            except Conflict:
                # Someone else (an earlier run of this follower?) wrote it: take its rev.
                try:
                    current = yield requests.get_doc(origin, db, self._ckpt_id)
                    self._ckpt_rev = current.get("_rev")
                except NotFound:
                    self._ckpt_rev = None
                continue
            self._ckpt_rev = reply.get("rev")
            return seq
        raise Conflict(409, "conflict", f"could not write checkpoint {self._ckpt_id}")

    def _checkpoint_written(self, seq: Any, status: Status) -> None:
        self._ckpt_writing = False
        if status.ok:
            self._ckpt_seq = seq
            self._ckpt_pending = 0
            self._ckpt_time = time.monotonic()
        else:
            log.warning("corduroy2: checkpoint %s not written: %s", self._ckpt_id,
                        status.exception)
        if self._stopping:
            self._settle_stop()

    # -- stopping -------------------------------------------------------------------------------

    def stop(self) -> Any:
        """Stop following; the backend's promise fires once the handler in progress has
        finished and the last checkpoint is written."""
        return self._backend.run(self._request_stop)

    def _request_stop(self, done: Callable[[Outcome], None]) -> ChangesFollower:
        self._stop_waiters.append(done)
        if not self._stopping:
            self._stopping = True
            self._queue.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._transfer is not None:
                transfer, self._transfer = self._transfer, None
                transfer.cancel()
        self._settle_stop()
        return self

    def cancel(self) -> None:
        """Cancel-handle contract of :meth:`stop`'s promise: nothing more to do."""
        return None

    def _settle_stop(self) -> None:
        if self._busy or self._transfer is not None:
            return  # wait for the handler / the read loop
        if self._ckpt_id is not None and self.running and self.seq != self._ckpt_seq:
            if not self._ckpt_writing:
                self._write_checkpoint()
            return  # _checkpoint_written comes back here
        if self._ckpt_writing:
            return
        self.running = False
        waiters, self._stop_waiters = self._stop_waiters, []
        for done in waiters:
            done(Outcome(value=self.seq))

    def _fail(self, error: BaseException | None) -> None:
        """An error following cannot recover from: report it, then stop (checkpointing what
        was delivered)."""
        if self._on_error is not None and error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("corduroy2: exception in on_error %r", self._on_error)
        elif error is not None:
            log.error("corduroy2: follower of %r stopped: %s", self.db.name, error)
        self._busy = False
        self._request_stop(lambda outcome: None)
