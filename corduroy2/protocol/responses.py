"""Response headers, JSON decoding, and the one status -> error mapping."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .. import errors

__all__ = ["Headers", "NO_HEADERS", "Response", "error_class", "make_error", "decode_json",
           "check_status", "piece_end", "line_slices"]


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only response headers that keep repeated fields.

    ``headers["etag"]`` joins repeats with ``", "``; :meth:`get_list` returns them apart (needed
    for ``Set-Cookie``, whose values contain commas).

    ``fields`` is read on first use, not at once: every response gets a ``Headers``, and most
    are never read (a document GET looks at none). So it must not change afterwards.

    On a cluster (``Couch([url1, url2...])``) the pipeline sets ``node``, the node that
    answered (its base URL), and ``url``, the URL it answered; both are None otherwise (the
    request's own URL answered).
    """

    __slots__ = ("_pairs", "_index", "node", "url")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs = fields
        self._index: dict[str, list[str]] | None = None
        self.node: str | None = None
        self.url: str | None = None

    @property
    def _fields(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self._pairs:
                index.setdefault(name.lower(), []).append(value)
            self._index = index  # only once complete: another thread may be looking
        return index

    def __getitem__(self, name: str) -> str:
        return ", ".join(self._fields[name.lower()])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def get_list(self, name: str) -> list[str]:
        return list(self._fields.get(name.lower(), ()))

    def __repr__(self) -> str:
        # Cookies are secrets: never show them.
        shown = {
            k: ("<hidden>" if k in ("set-cookie", "authorization", "cookie") else self[k])
            for k in self._fields
        }
        return f"Headers({shown!r})"


#: The headers of "no response yet". Headers are read-only, so one empty instance serves all.
NO_HEADERS = Headers()


@dataclass(frozen=True)
class Response:
    """A whole response, for callers that need more than the decoded body (``raw=True``)."""

    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON (``DecodeError`` if it is not)."""
        return decode_json(self.body)


_BY_STATUS: dict[int, type[errors.HTTPError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    412: errors.PreconditionFailed,
    413: errors.RequestEntityTooLarge,
    415: errors.UnsupportedMediaType,
    416: errors.RangeNotSatisfiable,
    429: errors.TooManyRequests,
}


def error_class(status: int) -> type[errors.HTTPError]:
    """The exception class for an HTTP status >= 400."""
    if status >= 500:
        return errors.ServerError
    return _BY_STATUS.get(status, errors.HTTPError)


def make_error(
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes | Any,
    *,
    method: str | None = None,
    url: str | None = None,
) -> errors.HTTPError:
    """Build the typed error for a reply with status >= 400.

    ``body`` may be the raw bytes or an already decoded object (an error met mid-stream).
    CouchDB sends ``{"error", "reason"}``; Mango sends ``{"error", "message"}``; anything else
    (HTML from a proxy, an empty body) still gives the right class.

    ``url`` is the request's; when the reply came from a cluster's node (:class:`Headers`
    with ``url`` set), the error names the URL that node answered instead.
    """
    if isinstance(headers, Headers) and headers.url:
        url = headers.url
    decoded: Any = body
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            decoded = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            decoded = bytes(body).decode("utf-8", "replace")[:500]
    error = reason = None
    if isinstance(decoded, dict):
        error = decoded.get("error")
        reason = decoded.get("reason", decoded.get("message"))
        error = None if error is None else str(error)
        reason = None if reason is None else str(reason)
    elif isinstance(decoded, str) and decoded:
        reason = decoded
    return error_class(status)(status, error, reason, headers, decoded, method=method, url=url)


def decode_json(body: bytes, *, method: str | None = None, url: str | None = None) -> Any:
    """Parse a JSON body; ``DecodeError`` (a ``ValueError``) if it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        preview = bytes(body[:80]).decode("utf-8", "replace")
        where = f" ({method} {url})" if method and url else ""
        raise errors.DecodeError(f"expected JSON, got {preview!r}{where}: {exc}") from exc


def check_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str | None = None,
    url: str | None = None,
) -> None:
    """Raise the mapped error when ``status`` >= 400."""
    if status >= 400:
        raise make_error(status, headers, body, method=method, url=url)


# -- pieces of a line-framed body (a feed's lines, a view's rows) ---------------------------

def piece_end(data: bytes, start: int, size: int) -> int:
    """Where the piece of ``data`` that begins at ``start`` ends when it is to be about
    ``size`` bytes: just after the first line end that makes it at least that long (a line
    longer than ``size`` is a piece of its own), or at the end of ``data``."""
    cut = data.find(b"\n", start + size - 1)
    return len(data) if cut < 0 else cut + 1


def line_slices(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` cut into pieces of about ``size`` bytes (:func:`piece_end`); the tail after
    the last line end is the last piece. A parser given one piece at a time has at most a
    piece's items in hand."""
    start, length = 0, len(data)
    while start < length:
        end = piece_end(data, start, size)
        yield data[start:end] if start or end < length else data
        start = end
