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
        self._has_eol = (_SSE_EOL if self._sse else _LF).search  # faster than `in` on tiny chunks
        self._status, self._headers = status, headers
        self._buf = bytearray()
        self._scan = 0  # _buf[:_scan] holds no line end: never search it again
        self._eof = self._new = False  # _new: data came since the last parse
        self._cr = False  # eventsource: the last line ended with a CR that may pair with an LF
        self._events: list[_Queued] = []
        self._i = 0  # self._events[:_i] were handed out
        self._final: errors.CouchError | None = None
        self._ended = False  # a FeedEnd was queued
        # eventsource: the event being built; _kind 0 = nothing yet, 1 = comments only, 2 = fields
        self._data: list[bytes] = []
        self._id: bytes | None = None
        self._type, self._kind = b"", 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line (or eventsource event)."""
        return len(self._buf) + sum(map(len, self._data))

    def receive_data(self, data: bytes) -> None:
        """Add body bytes; ``b""`` means the body has ended."""
        if self._eof:
            raise RuntimeError("receive_data() after the end of the body")
        if data:
            self._buf += data
            # Parse only once a line may have ended: a long line in small chunks costs ~nothing.
            if self._has_eol(data):
                self._new = True
        else:
            self._eof = self._new = True

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

    def _advance(self) -> None:
        if self._events:  # a new list: changes_ready() may have handed this one out
            self._events, self._i = [], 0
        if not self._new or self._final is not None:
            return
        self._new = False
        try:
            self._parse()
        except errors.CouchError as exc:
            self._final = exc

    def _parse(self) -> None:
        buf, out = self._buf, self._events
        if self._status >= 400:  # an error reply, not a feed: wait for all of it
            if self._eof:
                raise make_error(self._status, self._headers, bytes(buf))
            return
        if self._cr and buf:
            if buf[0] == 10:  # the LF of a CRLF split across chunks
                del buf[:1]
            self._cr = False
        if self._sse:
            end = max(buf.rfind(b"\n", self._scan), buf.rfind(b"\r", self._scan)) + 1
        else:
            end = buf.rfind(b"\n", self._scan) + 1
        if end:
            segment = buf[:end]
            self._cr = self._sse and end == len(buf) and buf[-1] == 13
            del buf[:end]
            if self._sse:
                for line in _EOL.split(segment)[:-1]:
                    self._sse_line(line)
            else:
                for line in segment.split(b"\n")[:-1]:
                    try:
                        obj = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        if line.isspace() or not line:  # a heartbeat (or a CR before the LF)
                            out.append(_HEARTBEAT)
                            continue
                        raise self._bad(line, exc) from exc
                    if type(obj) is dict and "changes" in obj:
                        out.append(obj)
                    else:
                        out.append(self._other(obj, line))
        self._scan = len(buf)
        if self._eof:
            self._finish()

    def _finish(self) -> None:
        buf = self._buf
        if self._sse:
            if buf.strip() or (self._kind == 2 and self._data):
                raise errors.ResponseCut("eventsource feed ended inside an event")
        elif buf.strip():
            obj = _loads(buf)  # an object missing only its LF is safe to take: a cut one never parses
            if type(obj) is not dict:
                raise errors.ResponseCut(f"changes feed ended inside a line ({len(buf)} bytes)")
            self._events.append(self._other(obj, buf))
        buf.clear()
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
