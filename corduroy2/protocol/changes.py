r"""Incremental, sans-IO parser for streamed ``_changes`` feeds, h11-style like ``rows.RowStream``::

    stream = ChangesStream("continuous", status=resp.status, headers=resp.headers)
    stream.receive_data(chunk)          # b"" once the body has ended
    event = stream.next_event()         # Change | Heartbeat | FeedEnd | NEED_DATA
    batch = stream.changes_ready()      # or: every change available now, as dicts

* ``continuous``: one JSON object per LF-ended line (CRLF tolerated), several per chunk on
  CouchDB 3, one on pouchdb; a blank line is a heartbeat; with ``limit``/``timeout`` CouchDB 3 ends
  with ``{"last_seq":...,"pending":N}``. Each chunk is split on LF once and each line goes to
  ``orjson.loads``: LF occurs neither inside UTF-8 characters nor in JSON text, so any split is safe.
* ``eventsource`` (WHATWG server-sent events): CouchDB writes ``data: {change}`` LF
  ``id: "<seq>"`` LF LF; CR, LF and CRLF line ends are all accepted.

The end: after ``receive_data(b"")``, a body that ended cleanly **without** a ``last_seq`` line
(pouchdb, eventsource, a server closing the feed) gives one ``FeedEnd(last_seq=None,
pending=None)``; a body with one gives only that line's :class:`FeedEnd`. Then :data:`NEED_DATA`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union, cast

import orjson

from .. import errors
from .responses import make_error
from .rows import NEED_DATA, NeedData

__all__ = ["NEED_DATA", "NeedData", "Change", "Heartbeat", "FeedEnd", "ChangesEvent", "ChangesStream"]


@dataclass(frozen=True)
class Change:
    """One change: ``{"seq", "id", "changes", ["doc"], ["deleted"]}``, ``seq`` exactly as sent."""

    value: dict[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    """A sign of life: a blank line (continuous), a comment or an event without data (eventsource)."""


@dataclass(frozen=True)
class FeedEnd:
    """The feed is over. ``last_seq`` is None when the server closed it without a last_seq line."""

    last_seq: Any
    pending: int | None


ChangesEvent = Union[Change, Heartbeat, FeedEnd, NeedData]
_Queued = Union[dict[str, Any], Heartbeat, FeedEnd]  # a dict is a change, wrapped only on demand

_HEARTBEAT = Heartbeat()
_EOL = re.compile(rb"\r\n|\r|\n")  # SSE line ends
_SSE_EOL, _LF = re.compile(rb"[\r\n]"), re.compile(rb"\n")
_has, _CHANGES = dict.__contains__, itertools.repeat("changes")  # "changes" in each, in C


def _loads(data: bytes | bytearray, default: Any = None) -> Any:
    """The JSON value, or ``default`` if ``data`` is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return default


class ChangesStream:
    """Turns a changes feed's bytes into :class:`Change`, :class:`Heartbeat` and :class:`FeedEnd`.

    An object with a top-level ``"error"`` and no ``"changes"`` raises the typed ``HTTPError`` (its
    ``code`` as status, else 500); a line that is not a JSON object raises ``DecodeError``; a body
    ending inside a line or eventsource event raises ``ResponseCut``. Errors come after every event
    before them and repeat on later calls. A reply with status >= 400 is read whole, then raised.
    """

    def __init__(
        self, feed: str = "continuous", status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        if feed not in ("continuous", "eventsource"):
            raise ValueError(f"feed must be 'continuous' or 'eventsource', not {feed!r}")
        self._sse = feed == "eventsource"
        self._quick = not self._sse and status < 400  # changes_in() may take its short path
        self._has_eol = (_SSE_EOL if self._sse else _LF).search  # faster than `in` on tiny chunks
        self._status, self._headers = status, headers
        # Received bytes not parsed yet, as bytes: lines split from bytes are bytes, which are
        # cheaper to make and to give to orjson than bytearray slices (~15% of a feed's time).
        self._held: list[bytes] = []
        self._eof = self._new = False  # _new: data came since the last parse
        self._cr = False  # eventsource: the last line ended with a CR that may pair with an LF
        self._events: list[_Queued] = []
        self._i = 0  # self._events[:_i] were handed out
        self._plain = True  # self._events holds changes only (so far): no need to scan it
        self._final: errors.CouchError | None = None
        self._ended = False  # a FeedEnd was queued
        # eventsource: the event being built; _kind 0 = nothing yet, 1 = comments only, 2 = fields
        self._data: list[bytes] = []
        self._id: bytes | None = None
        self._type, self._kind = b"", 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line (or eventsource event)."""
        return sum(map(len, self._held)) + sum(map(len, self._data))

    def receive_data(self, data: bytes) -> None:
        """Add body bytes; ``b""`` means the body has ended."""
        if self._eof:
            raise RuntimeError("receive_data() after the end of the body")
        if data:
            self._held.append(bytes(data) if type(data) is not bytes else data)
            # Parse only once a line may have ended: a long line in small chunks is joined once.
            # A busy feed's chunks mostly end with their last line: one byte, not a search.
            if data[-1] == 10 or self._has_eol(data):
                self._new = True
        else:
            self._eof = self._new = True

    def changes_in(self, data: bytes) -> list[dict[str, Any]] | None:
        """:meth:`receive_data` then :meth:`changes_ready` in one call, for a feed's hot path:
        the changes ``data`` completes when it ends a line and all it completes are changes
        (a busy continuous feed's usual chunk), after which the stream is idle. Otherwise None:
        ``data`` was received all the same, and :meth:`next_event`/:meth:`changes_ready` give
        what it holds, as usual."""
        if (self._quick and data and data[-1] == 10 and type(data) is bytes
                and self._i >= len(self._events) and not self._new and self._final is None
                and not self._eof):
            held = self._held
            if held:
                held.append(data)
                data = self._take()
            if self._events:  # a new list: the last one was handed out
                self._events, self._i, self._plain = [], 0, True
            if self._changes_at_once(data):
                events = self._events
                self._i = len(events)
                return cast("list[dict[str, Any]]", events)
            self._held.append(data)  # for the line-by-line path
            self._new = True
            return None
        self.receive_data(data)
        return None

    def next_event(self) -> ChangesEvent:
        """The next event, or :data:`NEED_DATA`; raises the feed's error when it is reached."""
        if self._i >= len(self._events):
            self._advance()
        if self._i < len(self._events):
            event = self._events[self._i]
            self._i += 1
            return Change(event) if isinstance(event, dict) else event
        if self._final is not None:
            raise self._final
        return NEED_DATA

    def changes_ready(self) -> list[dict[str, Any]]:
        """All complete changes that come next; ``[]`` when the next event is not a change."""
        if self._i >= len(self._events):
            self._advance()
        events, i = self._events, self._i
        if self._plain and i == 0 and events:  # the common case: hand over the list itself
            self._i = len(events)
            return cast("list[dict[str, Any]]", events)
        j, n = i, len(events)
        while j < n and type(events[j]) is dict:
            j += 1
        if j == i:
            if i >= n and self._final is not None:
                raise self._final
            return []
        self._i = j
        # Only changes are queued most of the time: hand over the list itself (_advance replaces it).
        return cast("list[dict[str, Any]]", events if i == 0 and j == n else events[i:j])

    def idle(self) -> bool:
        """True when nothing is left to hand out until more data arrives: the next call would
        say :data:`NEED_DATA` (a consumer that just took :meth:`changes_ready` can stop there)."""
        return self._i >= len(self._events) and not self._new and self._final is None

    def _advance(self) -> None:
        if self._events:  # a new list: changes_ready() may have handed this one out
            self._events, self._i, self._plain = [], 0, True
        if not self._new or self._final is not None:
            return
        self._new = False
        try:
            self._parse()
        except errors.CouchError as exc:
            self._final = exc

    def _take(self) -> bytes:
        """Everything held, as one bytes object (the held list is emptied)."""
        held = self._held
        data = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        return data

    def _parse(self) -> None:
        if self._status >= 400:  # an error reply, not a feed: wait for all of it
            if self._eof:
                raise make_error(self._status, self._headers, self._take())
            return
        data = self._take()
        if self._sse:
            self._plain = False  # rarely all changes (ids, heartbeats): scan instead of tracking
            if self._cr and data[:1] == b"\n":  # the LF of a CRLF split across chunks
                data = data[1:]
            self._cr = False
            end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            if end:
                self._cr = end == len(data) and data[-1] == 13
                for line in _EOL.split(data[:end])[:-1]:
                    self._sse_line(line)
                data = data[end:]
        else:
            end = data.rfind(b"\n") + 1
            if end:
                complete, data = data[:end], data[end:]  # data: an incomplete line, or b""
                if not self._changes_at_once(complete):
                    self._lines(complete.split(b"\n")[:-1])
        if data:
            self._held.append(data)
        if self._eof:
            self._finish()

    def _changes_at_once(self, complete: bytes) -> bool:
        """Decode several LF-ended lines with one ``orjson.loads``, as the items of one array:
        a busy feed's chunks hold many changes, and one call instead of a Python loop per line
        makes the parser faster than a line-by-line client. True if every line was one change
        (they are queued); False, queueing nothing, for anything else (a heartbeat's blank line
        makes the array invalid, an end or error line is not a change): the line-by-line path
        then gives the exact events and errors."""
        n = len(complete) - len(complete.replace(b"\n", b""))  # twice as fast as count()
        if n < 2:
            return False
        # n - 1 commas: the last LF stays, as whitespace. A line holding a top-level comma (not
        # JSON) could pair with a broken neighbour, so the item count must match the line count.
        try:
            objs = orjson.loads(b"".join((b"[", complete.replace(b"\n", b",", n - 1), b"]")))
            if len(objs) != n or not all(map(_has, objs, _CHANGES)):
                return False
        except (orjson.JSONDecodeError, TypeError):  # TypeError: an item is not an object
            return False
        if self._events:
            self._events.extend(objs)
        else:
            self._events = objs
        return True

    def _lines(self, lines: list[bytes]) -> None:
        """Queue one event per line (the general path: heartbeats, end and error lines)."""
        out, loads = self._events, orjson.loads
        for line in lines:
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                if line.isspace() or not line:  # a heartbeat (or a CR before the LF)
                    self._plain = False
                    out.append(_HEARTBEAT)
                    continue
                raise self._bad(line, exc) from exc
            if type(obj) is dict and "changes" in obj:
                out.append(obj)
            else:
                self._plain = False
                out.append(self._other(obj, line))

    def _finish(self) -> None:
        self._plain = False
        data = self._take()
        if self._sse:
            if data.strip() or (self._kind == 2 and self._data):
                raise errors.ResponseCut("eventsource feed ended inside an event")
        elif data.strip():
            obj = _loads(data)  # an object missing only its LF is safe to take: a cut one never parses
            if type(obj) is not dict:
                raise errors.ResponseCut(f"changes feed ended inside a line ({len(data)} bytes)")
            self._events.append(self._other(obj, data))
        if not self._ended:
            self._events.append(FeedEnd(None, None))
            self._ended = True

    def _other(self, obj: Any, line: bytes | bytearray) -> _Queued:
        """A decoded line that is not a plain change: the end line, an error, or bad data."""
        if type(obj) is not dict:
            raise self._bad(line, "not a JSON object")
        if "error" in obj and "changes" not in obj:
            raise self._http_error(obj)
        if "last_seq" in obj and "id" not in obj and "changes" not in obj:
            self._ended = True
            pending = obj.get("pending")
            return FeedEnd(obj["last_seq"], pending if type(pending) is int else None)
        return obj

    def _sse_line(self, line: bytes | bytearray) -> None:
        if not line:  # a blank line ends (dispatches) the event
            self._dispatch()
            return
        if line[0] == 58:  # ':' a comment, which SSE servers send as a keep-alive
            self._kind = self._kind or 1
            self._events.append(_HEARTBEAT)
            return
        if line[0] == 123:  # '{': CouchDB writes a mid-stream error as a bare JSON line
            obj = _loads(line)
            if type(obj) is dict and "error" in obj:
                raise self._http_error(obj)
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        self._kind = 2
        if name == b"data":
            self._data.append(bytes(value))
        elif name == b"id" and b"\0" not in value:  # the spec ignores ids holding NUL
            self._id = bytes(value)
        elif name == b"event":
            self._type = bytes(value)
        # retry and unknown fields are ignored, as the spec says

    def _dispatch(self) -> None:
        kind, data, sid, etype = self._kind, self._data, self._id, self._type
        self._kind, self._data, self._id, self._type = 0, [], None, b""
        if kind == 1:  # only comments: each already gave its Heartbeat
            return
        text = b"\n".join(data)
        if etype == b"heartbeat" or not text.strip():  # CouchDB: "event: heartbeat\ndata: \n\n"
            self._events.append(_HEARTBEAT)
            return
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise self._bad(text, exc) from exc
        event = self._other(obj, text)
        if type(event) is dict and "seq" not in event and sid is not None:
            # CouchDB sends the seq JSON-quoted; keep anything else as the raw text
            event["seq"] = _loads(sid, sid.decode("utf-8", "replace"))
        self._events.append(event)

    def _bad(self, line: bytes | bytearray, what: object) -> errors.DecodeError:
        near = bytes(line[:60]).decode("utf-8", "replace")  # a preview, not a 10 MB message
        return errors.DecodeError(f"invalid line in the changes feed: {what}: {near!r}")

    def _http_error(self, obj: dict[str, Any]) -> errors.HTTPError:
        """The typed error for an error object in a 2xx feed; its ``code`` is the real status."""
        body = {k: obj[k] for k in ("error", "reason") if k in obj}
        code = obj.get("code")
        status = code if type(code) is int and code >= 400 else 500
        return make_error(self._status if self._status >= 400 else status, self._headers, body)
