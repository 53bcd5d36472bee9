"""Attachments, written once: uploads streamed from bytes, str, files and (async) iterators;
downloads whole, by byte range, to a callback, or iterated in bounded memory.

An upload's data becomes the request body as it is (bytes) or a
:class:`~corduroy2.protocol.bodies.BodySource` that the transport reads while it sends, so a
file or a generator is never read whole. Such a body can be sent once only: a reply that would
otherwise be retried (a 503) is final once a piece has gone (``Request.replayable``).

A download is a streamed reply read by :class:`AttachmentSink`: its head becomes the
attachment's metadata (type, length, digest, ETag) and its chunks go to a consumer: one that
keeps them (:func:`get`), one that hands each to ``on_data``, or the front door's iterator,
which pauses the transfer while its reader is behind (``Database.iter_attachment``).

:class:`Database <corduroy2.api.database.Database>` methods are thin wrappers over this module.
"""

from __future__ import annotations

import base64
import hashlib
import io
import mimetypes
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocol import requests
from ..protocol.bodies import BodySource
from ..protocol.requests import Origin, Request
from ..protocol.responses import Headers, make_error
from .calls import Op, Raw, Runner, Stream
from .sinks import RowConsumer, RowSink

__all__ = ["Attachment", "AttachmentSink", "upload_body", "put", "get", "info", "delete",
           "download_request", "parse_range", "passed_on", "FILE_PIECE"]

#: What one read of an uploaded file asks for.
FILE_PIECE = 256 * 1024

OnData = Callable[[bytes], Any]


@dataclass(frozen=True)
class Attachment:
    """An attachment as the server sent it. ``data`` is None when the body was streamed
    elsewhere (``on_data``) or not asked for (``info``).

    ``length`` is this response's Content-Length (for a range, the range's); ``digest`` is
    CouchDB's ``md5-<base64>`` when the server reports it (from ``Content-MD5`` or the ETag,
    which for an attachment is the quoted base64 MD5); ``status`` is 200, or 206 for a range,
    whose ``content_range`` is ``bytes start-end/total``. CouchDB stores compressible types
    (``text/*``, JSON...) gzipped: it then ignores ``Range`` (200, whole body), and ``digest``
    is not the MD5 of the data sent.
    """

    data: bytes | None
    content_type: str | None
    length: int | None
    digest: str | None
    etag: str | None
    status: int = 200
    content_range: str | None = None
    headers: Headers = field(default_factory=Headers, repr=False, compare=False)


def _meta(status: int, headers: Headers) -> dict[str, Any]:
    """The fields of an :class:`Attachment` (all but ``data``) from a reply's head."""
    length = headers.get("content-length")
    etag = headers.get("etag")
    md5 = headers.get("content-md5")
    digest = None
    if md5:
        digest = "md5-" + md5
    elif etag and not etag.startswith("W/"):
        inner = etag.strip('"')
        if len(inner) == 24 and inner.endswith("=="):  # base64 of 16 bytes: an MD5
            digest = "md5-" + inner
    return {"content_type": headers.get("content-type"),
            "length": int(length) if length and length.isdigit() else None,
            "digest": digest, "etag": etag, "status": status,
            "content_range": headers.get("content-range"), "headers": headers}


class AttachmentSink(RowSink):
    """Reads an attachment reply for a consumer (a
    :class:`~corduroy2.api.sinks.RowConsumer`): ``header(fields)`` with the metadata (the
    keyword arguments of :class:`Attachment` but ``data``) once the head is in, ``rows([chunk])``
    per chunk as it arrives, ``end(fields)`` at the end, whose value is the call's. An error
    reply (>= 400) is collected whole and mapped. A consumer that raises aborts the transfer
    (the rest of the body is unwanted) and fails the call with that exception.
    """

    __slots__ = ("_fields",)

    #: Bytes, which the collector does not traverse: handed over as they come (a slice per
    #: loop pass took a fifth off iter_attachment's rate on curl, bench attachments).
    PACED = False

    #: A chunk is worth a reader's wake-up on its own (deferring it to batch chunks cost
    #: Twisted's download 30% more instructions per MiB, a loop call per chunk).
    WAKE_AT = 1

    def on_start(self, status: int, headers: Headers) -> None:
        self._status, self._headers = status, headers
        if status >= 400:
            return
        self._fields = _meta(status, headers)
        try:
            self._consumer.header(self._fields)
        except Exception as exc:
            self._fail(exc)

    def on_data(self, chunk: bytes) -> None:
        if self._over:
            return
        if self._status >= 400:
            self._error_chunks.append(chunk)
            return
        try:
            self._consumer.rows([chunk])
        except Exception as exc:  # the consumer failed: the download is aborted
            self._fail(exc)

    def on_end(self) -> None:
        if self._over:
            return
        if self._status >= 400:
            self._report(None, self._error_reply())
            return
        try:
            value = self._consumer.end(self._fields)
        except Exception as exc:
            self._report(None, exc)
            return
        self._report(value, None)


class _Keep:
    """Consumer: the whole attachment (None for 304 Not Modified)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def header(self, fields: dict[str, Any]) -> None:
        return None

    def rows(self, chunks: list[bytes]) -> None:
        self._chunks.extend(chunks)

    def end(self, fields: dict[str, Any]) -> Attachment | None:
        if fields["status"] == 304:
            return None
        return Attachment(b"".join(self._chunks), **fields)


class _Each:
    """Consumer: each chunk to ``on_data`` as it arrives; the metadata at the end."""

    def __init__(self, on_data: OnData) -> None:
        self._on_data = on_data

    def header(self, fields: dict[str, Any]) -> None:
        return None

    def rows(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._on_data(chunk)

    def end(self, fields: dict[str, Any]) -> Attachment | None:
        return None if fields["status"] == 304 else Attachment(None, **fields)


# -- uploads -----------------------------------------------------------------------------------


def upload_body(data: Any, name: str, content_type: str | None,
                async_bodies: bool = True) -> tuple[bytes | BodySource, str]:
    """The request body for ``data`` and its content type (``content_type``, else guessed
    from ``name``; text for a str). ``async_bodies``: the backend can await an async
    iterator's pieces."""
    guessed = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), guessed
    if isinstance(data, str):
        return data.encode(), content_type or "text/plain;charset=utf-8"
    if hasattr(data, "read"):
        return BodySource(_file_pieces(data), _remaining(data)), guessed
    if hasattr(data, "__aiter__"):
        if not async_bodies:
            raise TypeError("an async iterator cannot be uploaded in blocking mode: pass a "
                            "file or a plain iterator of bytes")
        return BodySource(data.__aiter__()), guessed
    if hasattr(data, "__iter__") and not isinstance(data, Mapping):
        return BodySource(iter(data)), guessed
    raise TypeError("attachment data must be bytes, str, a file object or an (async) "
                    f"iterator of bytes, not {type(data).__name__}")


def _file_pieces(f: Any) -> Any:
    """A file's content from where it stands, a piece at a time (text files encoded)."""
    while piece := f.read(FILE_PIECE):
        yield piece.encode() if isinstance(piece, str) else piece


def _remaining(f: Any) -> int | None:
    """The bytes left in a seekable binary file (sent as Content-Length), else None (sent
    chunked). A text file's encoded size is not known before it is read."""
    if isinstance(f, io.TextIOBase):
        return None
    try:
        if not f.seekable():
            return None
        here = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(here)
    except (AttributeError, OSError, ValueError):
        return None
    return int(end - here)


def _doc_for_write(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise TypeError(f"{what} needs the document as a dict with _id (and _rev), not "
                        f"{type(doc).__name__}: its _rev is updated")
    if doc.get("_id") is None:
        raise ValueError(f"{what}: the document has no _id")
    return doc


def put(runner: Runner, origin: Origin, db: str, doc: Any, name: str, data: Any,
        content_type: str | None, async_bodies: bool, callback: Any) -> Any:
    """``Database.put_attachment``: the server's reply; ``doc``'s ``_rev`` and stub follow."""
    doc = _doc_for_write(doc, "put_attachment")
    requests.validate_attachment_name(name)
    body, content_type = upload_body(data, name, content_type, async_bodies)
    request = requests.put_attachment(origin, db, doc["_id"], doc.get("_rev"), name, body,
                                      content_type)
    # The stub written into doc, so that saving doc later keeps the attachment. CouchDB
    # matches a stub by name and revpos; PouchDB by digest, known here only for bytes (a
    # streamed body is not hashed: that would cost as much as sending it).
    stub: dict[str, Any] = {"content_type": content_type, "stub": True}
    if isinstance(body, bytes):
        stub["length"] = len(body)
        stub["digest"] = "md5-" + base64.b64encode(hashlib.md5(body).digest()).decode()
    elif body.length is not None:
        stub["length"] = body.length

    def op() -> Op[Any]:
        reply = yield request
        rev = reply.get("rev")
        if rev:
            doc["_rev"] = rev
            stub["revpos"] = int(rev.partition("-")[0])
            doc.setdefault("_attachments", {})[name] = stub
        return reply

    return runner.run(op(), callback)


def delete(runner: Runner, origin: Origin, db: str, doc: Any, name: str,
           callback: Any) -> Any:
    """``Database.delete_attachment``: the server's reply; ``doc``'s ``_rev`` follows and its
    stub goes."""
    doc = _doc_for_write(doc, "delete_attachment")
    request = requests.delete_attachment(origin, db, doc["_id"], doc.get("_rev"), name)

    def op() -> Op[Any]:
        reply = yield request
        if reply.get("rev"):
            doc["_rev"] = reply["rev"]
        stubs = doc.get("_attachments")
        if isinstance(stubs, dict):
            stubs.pop(name, None)
            if not stubs:
                del doc["_attachments"]
        return reply

    return runner.run(op(), callback)


# -- downloads ---------------------------------------------------------------------------------


def download_request(origin: Origin, db: str, doc_or_id: Any, name: str, rev: str | None,
                     byte_range: Any, if_none_match: str | None, stream: bool,
                     method: str = "GET") -> Request:
    """The GET (or HEAD) of an attachment, checked now: the name, and with a document that
    has the attachment's stub, a range starting past its length (ValueError)."""
    doc_id: Any
    stub: Any = None
    if isinstance(doc_or_id, str):
        doc_id = doc_or_id
    elif isinstance(doc_or_id, Mapping):
        doc_id = doc_or_id.get("_id")
        if doc_id is None:
            raise ValueError("the document has no _id")
        stub = (doc_or_id.get("_attachments") or {}).get(name)
    else:
        raise TypeError(f"expected a document id or a document, not {type(doc_or_id).__name__}")
    request = requests.get_attachment(origin, db, doc_id, name, rev, byte_range, if_none_match,
                                      stream=stream, method=method)
    length = stub.get("length") if isinstance(stub, Mapping) else None
    if byte_range is not None and isinstance(length, int) and byte_range[0] >= length:
        raise ValueError(f"range {tuple(byte_range)!r} starts past the end of attachment "
                         f"{name!r} ({length} bytes)")
    return request


def get(runner: Runner, request: Request, on_data: OnData | None, callback: Any) -> Any:
    """``Database.get_attachment``: an :class:`Attachment` (its ``data`` None with
    ``on_data``), or None for 304 Not Modified."""
    consumer: RowConsumer = _Keep() if on_data is None else _Each(on_data)
    return runner.stream(Stream(request, consumer, AttachmentSink), callback)


def info(runner: Runner, request: Request, callback: Any) -> Any:
    """``Database.attachment_info``: a HEAD's metadata as an :class:`Attachment` without data;
    None for 304. ``NotFound`` if there is no such attachment."""

    def op() -> Op[Any]:
        response = yield Raw(request)
        if response.status == 304:
            return None
        if response.status >= 400:
            # A HEAD reply has no body to say why: the status is the error.
            raise make_error(response.status, response.headers, b"", method=request.method,
                             url=request.url)
        return Attachment(None, **_meta(response.status, response.headers))

    return runner.run(op(), callback)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def parse_range(header: str | None) -> tuple[int, int | None] | None:
    """``(start, end)`` of a browser's ``Range: bytes=start-end`` (one range), else None:
    several ranges, suffix ranges (``bytes=-500``) and anything malformed are ignored, so the
    whole body is sent, as HTTP allows. For the web handlers."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None
    start, end = int(match[1]), int(match[2]) if match[2] else None
    return None if end is not None and end < start else (start, end)


#: CouchDB's response headers that a web handler passes on to the browser.
PASSED_ON = ("Content-Type", "Content-Length", "ETag", "Accept-Ranges", "Content-Range",
             "Cache-Control")
#: Those a 304 Not Modified keeps: it has no body for the others to describe.
_NOT_MODIFIED = ("ETag", "Cache-Control")


def passed_on(status: int, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers a web handler sends with a response of ``status`` served from CouchDB's
    reply ``headers``. For the web handlers of both front doors."""
    names = _NOT_MODIFIED if status == 304 else PASSED_ON
    return [(name, headers[name]) for name in names if headers.get(name) is not None]
