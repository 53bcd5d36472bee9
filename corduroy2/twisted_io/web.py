"""Serving CouchDB attachments to browsers from a Twisted web site::

    from twisted.web.server import Site
    from corduroy2.twisted_io import Couch
    from corduroy2.twisted_io.web import AttachmentResource

    db = Couch("http://127.0.0.1:5984", auth=("app", "secret")).database("files")
    root.putChild(b"files", AttachmentResource(db))   # /files/<doc id>/<attachment name>

``GET`` streams the attachment; ``HEAD`` gives its headers. As with Tornado's
:class:`~corduroy2.tornado_io.web.AttachmentHandler`, CouchDB decides what a conditional or
ranged request gets (``If-None-Match`` -> 304, ``Range`` -> 206 / 416) and its Content-Type,
Content-Length, ETag and Accept-Ranges are passed on.

The body is streamed with back-pressure: an ``IPushProducer`` is registered on the request, so
the web server pauses it when the browser's socket is full; while paused it stops taking
chunks from the download's iterator, which fills up to ``high_water`` chunks and pauses the
transfer from CouchDB. A browser that goes away mid-body ends the download from CouchDB.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ..api.attachments import parse_range, passed_on
from ..api.database import Database
from ..errors import CouchError, NotFound, RangeNotSatisfiable
from .backend import Gate

__all__ = ["AttachmentResource"]

log = logging.getLogger("corduroy2")

@implementer(IPushProducer)
class _Body:
    """Writes a download's chunks to a request while the web server wants them."""

    def __init__(self, request: Request, download: Any) -> None:
        self._request = request
        self._download = download
        self._gate = Gate()
        self.stopped = False

    async def write_all(self, first: bytes) -> None:
        request = self._request
        request.registerProducer(self, True)
        try:
            if first:
                request.write(first)
            while not self.stopped:
                if self._gate.shut:
                    await self._gate.opened()
                    continue
                try:
                    chunk = await self._download.__anext__()
                except StopAsyncIteration:
                    break
                if not self.stopped:
                    request.write(chunk)
        finally:
            self._download.close()
            if not self.stopped:
                request.unregisterProducer()
                request.finish()

    def pauseProducing(self) -> None:
        self._gate.shut = True

    def resumeProducing(self) -> None:
        self._gate.open()

    def stopProducing(self) -> None:
        """The browser went away: end the download from CouchDB at once."""
        self.stopped = True
        self._download.close()
        self._gate.release()


class AttachmentResource(Resource):
    """Serves attachments of ``database`` (a Twisted front door's
    :class:`~corduroy2.twisted_io.Database`) below where it is put: the first path segment is
    the document id, the rest the attachment name. Override :meth:`locate` to map a URL
    otherwise, and :meth:`set_extra_headers` to add headers."""

    isLeaf = True

    def __init__(self, database: Database, high_water: int = 8) -> None:
        super().__init__()
        self.database = database
        self.high_water = high_water
        # Requests whose browser went away (notifyFinish failed): nothing more is written.
        self._gone: weakref.WeakSet[Request] = weakref.WeakSet()

    def locate(self, request: Request) -> tuple[str, str] | None:
        """``(doc id, attachment name)`` for ``request``, or None (404)."""
        segments = [unquote(s.decode("utf-8", "replace")) for s in request.postpath or ()]
        if len(segments) < 2 or not segments[0] or not segments[-1]:
            return None
        return segments[0], "/".join(segments[1:])

    def set_extra_headers(self, request: Request, doc_id: str, name: str) -> None:
        """For subclasses: add headers to a response about to start."""

    def render_GET(self, request: Request) -> Any:
        request.notifyFinish().addErrback(lambda _: self._gone.add(request))
        self._run(request, self._get(request))
        return NOT_DONE_YET

    def render_HEAD(self, request: Request) -> Any:
        request.notifyFinish().addErrback(lambda _: self._gone.add(request))
        self._run(request, self._head(request))
        return NOT_DONE_YET

    def _run(self, request: Request, coro: Any) -> None:
        def failed(failure: Failure) -> None:
            log.error("corduroy2: serving %r failed: %s", request.uri, failure.getTraceback())
            self._finish(request, 500)

        defer.Deferred.fromCoroutine(coro).addErrback(failed)

    async def _get(self, request: Request) -> None:
        where = self.locate(request)
        if where is None:
            self._finish(request, 404)
            return
        doc_id, name = where
        download = self.database.iter_attachment(
            doc_id, name, range=parse_range(_text(request.getHeader(b"range"))),
            if_none_match=_text(request.getHeader(b"if-none-match")),
            high_water=self.high_water)
        body = _Body(request, download)
        request.notifyFinish().addErrback(lambda _: body.stopProducing())
        try:
            first = await download.__anext__()
        except StopAsyncIteration:
            first = b""
        except CouchError as exc:
            download.close()
            self._refuse(request, exc)
            return
        if body.stopped or request in self._gone:
            return
        self._start(request, download.fields, doc_id, name)
        if download.fields["status"] == 304:
            download.close()
            request.finish()
            return
        await body.write_all(first)

    async def _head(self, request: Request) -> None:
        where = self.locate(request)
        if where is None:
            self._finish(request, 404)
            return
        doc_id, name = where
        try:
            attachment = await self.database.attachment_info(
                doc_id, name, if_none_match=_text(request.getHeader(b"if-none-match")))
        except CouchError as exc:
            self._refuse(request, exc)
            return
        if request in self._gone:
            return
        if attachment is None:
            self._finish(request, 304)
            return
        self._start(request, {"status": attachment.status, "headers": attachment.headers},
                    doc_id, name)
        request.finish()

    def _start(self, request: Request, fields: dict[str, Any], doc_id: str, name: str) -> None:
        request.setResponseCode(fields["status"])
        for header, value in passed_on(fields["status"], fields["headers"]):
            request.setHeader(header, value)
        self.set_extra_headers(request, doc_id, name)

    def _refuse(self, request: Request, exc: CouchError) -> None:
        if isinstance(exc, NotFound):
            self._finish(request, 404)
        elif isinstance(exc, RangeNotSatisfiable):
            content_range = exc.headers.get("content-range")
            if content_range:
                request.setHeader("Content-Range", content_range)
            self._finish(request, 416)
        else:
            log.warning("corduroy2: cannot serve an attachment: %s", exc)
            self._finish(request, 502)

    def _finish(self, request: Request, status: int) -> None:
        if request.finished or request in self._gone:
            return
        request.setResponseCode(status)
        request.setHeader("Content-Length", "0")
        request.finish()


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
