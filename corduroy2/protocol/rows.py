r"""Incremental, sans-IO parser for CouchDB's row-bearing JSON bodies.

Views, ``_all_docs``, ``_find`` (``"docs"``) and normal ``_changes`` (``"results"``) answer
``{members..., "rows": [row, ...], members...}``. :class:`RowStream` takes the body split
anywhere and gives a :class:`Header`, a :class:`RowEvent` per row, then :class:`End`, h11-style::

    stream = RowStream(status=resp.status, headers=resp.headers)
    stream.receive_data(chunk)          # b"" once the body has ended
    event = stream.next_event()         # or stream.rows_ready() for a whole batch of rows

Speed comes from decoding many rows per ``orjson.loads`` call: when ``buf[a:b]`` starts where a
row starts and ``b"[" + buf[a:b] + b"]"`` parses, it holds exactly the next rows (JSON can be
read only one way), so guessing ``b`` wrongly costs a failed parse, never a wrong row.

* fast path, CouchDB 3's framing (``[`` CRLF, rows joined by ``,`` CRLF, (CR)LF ``]``): ``b`` is
  the last ``,\r\n`` or the ``\n]`` in the buffer. A raw newline is only ever whitespace in
  JSON, so any other newline, or a batch that does not parse, means another layout.
* general path: ``b`` is one of the last ``},``/``],`` (pouchdb's one-line bodies, pretty JSON);
  otherwise a byte scanner tracking string/escape state and depth finds where one value ends,
  resuming where it stopped so that each byte is scanned once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Union

import orjson

from .. import errors
from .responses import make_error

__all__ = ["NEED_DATA", "NeedData", "Header", "RowEvent", "End", "Event", "RowStream"]


class NeedData:
    """Type of :data:`NEED_DATA`: nothing more can be parsed until more bytes arrive."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True)
class Header:
    """Top-level members seen before the rows array (``total_rows``, ``offset``...)."""

    fields: dict[str, Any]


@dataclass(frozen=True)
class RowEvent:
    """One decoded row."""

    value: Any


@dataclass(frozen=True)
class End:
    """The body is complete; every top-level member except the rows array."""

    fields: dict[str, Any]


Event = Union[Header, RowEvent, End, NeedData]

# Skips to the next bracket or incomplete string. Unrolled (Friedl) so that every byte matches
# one way only: a failed match on an incomplete string backtracks in linear time.
_SKIP = re.compile(rb'[^"{}\[\]]*(?:"[^"\\]*(?:\\.[^"\\]*)*"[^"{}\[\]]*)*', re.S)
_SCALAR = re.compile(rb"[^ \t\r\n,\]}]*")
_WS = re.compile(rb"[ \t\r\n]*")

# Parser states: where we are in ``{ "key" : value , ... "rows" : [ row , ... ] ... }``; the
# punctuation each one accepts, and what it wants when it meets anything else.
_START, _KEY1, _KEY, _COLON, _VALUE, _AFTER, _ROW1, _ROW, _ROWNEXT, _DONE = range(10)
_PUNCT = {(_START, 123): _KEY1, (_KEY1, 125): _DONE, (_COLON, 58): _VALUE, (_AFTER, 44): _KEY,
          (_AFTER, 125): _DONE, (_ROW1, 93): _AFTER, (_ROWNEXT, 44): _ROW, (_ROWNEXT, 93): _AFTER}
_EXPECTED = ("a JSON object", "a member name", "a member name", "':'", "", "',' or '}'", "", "",
             "',' or ']'", "nothing after the JSON body")


class RowStream:
    """Turns the bytes of a row-bearing body into :class:`Header`, rows and :class:`End`.

    A top-level ``"error"`` member (a whole error body, or one appended to a stream) raises the
    typed :class:`~corduroy2.errors.HTTPError`; rows carrying ``"error"`` (``_all_docs?keys``) stay
    rows. Bad JSON raises :class:`~corduroy2.errors.DecodeError`; a body that ends before its
    closing ``}`` raises :class:`~corduroy2.errors.ResponseCut`. Errors come after every row that
    preceded them, and repeat on later calls. :class:`End` comes once ``receive_data(b"")`` has
    said the body is over and nothing but whitespace followed the ``}``.
    """

    def __init__(
        self,
        rows_key: str | tuple[str, ...] = ("rows", "docs", "results"),
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._keys = (rows_key,) if isinstance(rows_key, str) else tuple(rows_key)
        self._status, self._headers = status, headers
        self._buf = bytearray()
        self._base = self._pos = 0  # _base: body offset of _buf[0], for error messages
        self._state, self._key = _START, ""
        self._fields: dict[str, Any] = {}
        self._eof = self._new = self._had_rows = False  # _new: data came since the last parse
        self._fast: bool | None = None  # CouchDB's framing? Decided at the first row.
        self._fscan = 0  # fast path: where the next search starts
        self._scan, self._depth, self._in_str = -1, 0, False  # general path: inside a value
        self._header: Header | None = None
        self._rows: list[Any] = []
        self._ri = 0  # self._rows[:_ri] were handed out
        self._last: Any = None  # the last row the byte scanner found
        self._final: End | Exception | NeedData | None = None  # what follows the queued rows

    @property
    def buffered(self) -> int:
        """Bytes held for values not complete yet."""
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Add body bytes; ``b""`` means the body has ended."""
        if self._eof:
            raise RuntimeError("receive_data() after the end of the body")
        if data:
            self._buf += data
        else:
            self._eof = True
        self._new = True

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA`; raises the body's error when it is reached."""
        if self._new and self._header is None and self._ri >= len(self._rows) and self._final is None:
            self._rows, self._ri = [], 0
            self._advance()
        if self._header is not None:
            header, self._header = self._header, None
            return header
        if self._ri < len(self._rows):
            self._ri += 1
            return RowEvent(self._rows[self._ri - 1])
        final = self._final
        if isinstance(final, Exception):
            raise final
        if isinstance(final, End):
            self._final = NEED_DATA
            return final
        return NEED_DATA

    def rows_ready(self) -> list[Any]:
        """All complete rows that come next, at once; ``[]`` when the next event is not a row."""
        if self._final is None:
            self._advance()
        if self._header is not None:
            return []
        rows = self._rows[self._ri :] if self._ri else self._rows
        self._rows, self._ri = [], 0
        if not rows and isinstance(self._final, Exception):
            raise self._final
        return rows

    def _advance(self) -> None:
        if not self._new:  # each parse runs until it needs more: nothing to do yet
            return
        self._new = False
        try:
            self._parse()
            if self._eof and self._state == _DONE:
                self._final = End(dict(self._fields))
        except errors.CouchError as exc:
            self._final = exc
        # Drop consumed bytes (keep one: the fast path looks at the byte before a row).
        cut = self._pos - 1
        if cut > 0:
            del self._buf[:cut]
            self._base += cut
            self._pos -= cut
            self._fscan = max(0, self._fscan - cut)
            if self._scan >= 0:
                self._scan -= cut

    def _parse(self) -> None:
        buf, fields = self._buf, self._fields
        n, pos, st = len(buf), self._pos, self._state
        guess = True  # once per parse: a failed guess costs a parse of the buffer
        while True:
            pos = _WS.match(buf, pos).end()  # type: ignore[union-attr]
            if pos >= n:
                break
            c = buf[pos]
            punct = _PUNCT.get((st, c))
            if punct is not None:
                if punct == _DONE and "error" in fields:
                    raise self._http_error(fields)
                if punct == _DONE and not self._had_rows:
                    raise errors.DecodeError(f"no {'/'.join(self._keys)} array in the response body")
                pos, st = pos + 1, punct
            elif st == _ROW or st == _ROW1:
                if self._scan < 0:
                    if self._fast is None:
                        self._fast = buf[pos - 1] == 10  # rows start on new lines
                    if self._fast:
                        pos, st = self._fast_rows(buf, pos, n)
                        if st == _ROW and self._fast:
                            break  # the next row is not complete yet
                        continue
                    if guess:
                        guess, new = False, self._guess(buf, pos, n)
                        if new != pos:
                            pos, st = new, _ROW
                            continue
                end = self._value_end(buf, pos, n)
                if end < 0:
                    break
                self._last = self._load(buf, pos, end)
                self._rows.append(self._last)
                pos, st = end, _ROWNEXT
            elif st == _VALUE and c == 91 and not self._had_rows and self._key in self._keys:
                self._had_rows, self._header = True, Header(dict(fields))
                pos, st = pos + 1, _ROW1
            elif (c == 34 and st in (_KEY, _KEY1)) or st == _VALUE or (c == 123 and st in (_ROWNEXT, _AFTER)):
                end = self._value_end(buf, pos, n)
                if end < 0:
                    break
                value = self._load(buf, pos, end)
                if st == _VALUE:
                    fields[self._key] = value
                    if "error" in fields and "reason" in fields:
                        raise self._http_error(fields)
                elif st == _ROWNEXT or st == _AFTER:  # a stray object: CouchDB's mid-stream error?
                    if isinstance(value, dict) and "error" in value:
                        raise self._http_error(value)
                    raise self._bad(pos, "expected ','")
                else:
                    self._key = value
                pos, st = end, (_AFTER if st == _VALUE else _COLON)
            else:
                raise self._bad(pos, f"expected {_EXPECTED[st]}")
        self._pos, self._state = pos, st
        if self._eof and st != _DONE:
            if self._fast:  # e.g. the last row ends without a newline: finish generally
                self._fast = False
                return self._parse()
            if "error" in fields:
                raise self._http_error(fields)
            last = self._last if st == _ROWNEXT else None
            if isinstance(last, dict) and "code" in last and "error" in last:
                raise self._http_error(last)  # it came before any row: it read as one
            raise errors.ResponseCut(f"response body ended early (after {self._base + n} bytes)")

    def _fast_rows(self, buf: bytearray, pos: int, n: int) -> tuple[int, int]:
        """CouchDB's framing from the row at ``pos``: the new position and state.

        ``_ROW`` with ``_fast`` still set means more data is needed.
        """
        while True:
            start = pos if pos > self._fscan else self._fscan
            stop = buf.find(b"\n]", start)  # the end; members after the rows use ,\r\n too
            if stop >= 0:
                after, st = stop + 1, _ROWNEXT
            else:
                stop = buf.rfind(b",\r\n", start)
                after, st = stop + 3, _ROW
                if stop < 0:
                    k = buf.find(b"\n", start)
                    if 0 <= k < n - 1:  # a newline inside a row: not CouchDB's framing
                        self._fast = False
                    else:  # the row goes on (or we cannot yet see what follows a newline)
                        self._fscan = pos if pos > n - 2 else n - 2
                    return pos, _ROW
            batch = self._batch(buf, pos, stop)
            if batch is None:
                self._fast = False
                return pos, _ROW
            if self._rows:
                self._rows += batch
            else:
                self._rows = batch
            if st == _ROWNEXT:
                return after, st
            pos = after

    def _guess(self, buf: bytearray, pos: int, n: int) -> int:
        """General path, many rows at once: rows mostly end at ``},`` or ``],``; try the last few."""
        end = n
        for _ in range(3):
            end = max(buf.rfind(b"},", pos, end), buf.rfind(b"],", pos, end))
            if end <= pos:
                break
            batch = self._batch(buf, pos, end + 1)
            if batch is not None:
                self._rows += batch
                return end + 2
            end += 1  # search before this one
        return pos

    def _batch(self, buf: bytearray, start: int, end: int) -> list[Any] | None:
        """The rows in ``buf[start:end]`` if it parses as ``[...]``: one orjson call for many rows.

        Needs ``start`` to be where a row starts: then a slice that parses holds exactly the next
        rows, since a JSON text can be read only one way.
        """
        if end <= start:  # "[]" would let a stray comma through
            return None
        try:
            return orjson.loads(b"[" + buf[start:end] + b"]")  # type: ignore[no-any-return]
        except orjson.JSONDecodeError:
            return None

    def _value_end(self, buf: bytearray, start: int, n: int) -> int:
        """End offset of the JSON value at ``start``, or -1 until it is complete (resumable)."""
        i = self._scan
        if i < 0:  # a fresh value
            c = buf[start]
            self._depth = 0 if c in b'{["' else -1
            self._in_str = c == 34
            i = start + self._in_str
        depth, in_str = self._depth, self._in_str
        if depth < 0:  # number or literal: complete only once a delimiter follows it
            i = _SCALAR.match(buf, i).end()  # type: ignore[union-attr]  # (matches "" at worst)
            if i == start < n:
                raise self._bad(start, "expected a value")
            self._scan = i if i >= n else -1
            return i if i < n else -1
        while True:
            if in_str:
                j = buf.find(b'"', i)
                if j < 0:
                    i = n
                    break
                k = j
                while buf[k - 1] == 92:  # an odd run of backslashes escapes the quote
                    k -= 1
                i, in_str = j + 1, bool((j - k) & 1)
            else:
                i = _SKIP.match(buf, i).end()  # type: ignore[union-attr]
                if i >= n:
                    break
                c = buf[i]
                i += 1
                if c == 34:
                    in_str = True
                else:
                    depth += 1 if c == 123 or c == 91 else -1
            if depth == 0 and not in_str:
                self._scan = -1
                return i
        self._scan, self._depth, self._in_str = i, depth, in_str
        return -1

    def _load(self, buf: bytearray, start: int, end: int) -> Any:
        try:
            return orjson.loads(buf[start:end])
        except orjson.JSONDecodeError as exc:
            raise self._bad(start, str(exc)) from exc

    def _bad(self, pos: int, what: str) -> errors.DecodeError:
        near = bytes(self._buf[pos : pos + 40]).decode("utf-8", "replace")
        return errors.DecodeError(f"invalid JSON body at byte {self._base + pos}: {what}: {near!r}")

    def _http_error(self, obj: dict[str, Any]) -> errors.HTTPError:
        """The typed error for an error object met in a 2xx body.

        When streaming fails, CouchDB 3 (chttpd:send_chunked_error) writes LF
        ``{"code":500,"error":..,"reason":..}`` LF where a row or a comma should be, and ends the
        body; its ``code`` is the status the error would have had.
        """
        body = {k: obj[k] for k in ("error", "reason") if k in obj}
        code = obj.get("code")
        status = code if type(code) is int and code >= 400 else 500
        return make_error(self._status if self._status >= 400 else status, self._headers, body)
