"""Serving CouchDB attachments to browsers from a Tornado application, as Motor's
``GridFSHandler`` serves GridFS files::

    from corduroy2.tornado_io import Couch
    from corduroy2.tornado_io.web import AttachmentHandler

    db = Couch("http://127.0.0.1:5984", auth=("app", "secret")).database("files")
    app = tornado.web.Application([
        (r"/files/([^/]+)/(.+)", AttachmentHandler, {"database": db}),
    ])

``GET /files/<doc id>/<attachment name>`` streams the attachment; ``HEAD`` gives its headers.
CouchDB decides what a conditional or ranged request gets, so the browser sees exactly what
CouchDB answers: ``If-None-Match`` is passed on (304 when unchanged), ``Range: bytes=a-b`` too
(206 with ``Content-Range``, 416 outside the attachment; a server that ignores it answers 200
with the whole body, which HTTP allows). Content-Type, Content-Length, ETag and Accept-Ranges
are CouchDB's.

The body is streamed with back-pressure: each chunk is written then ``await self.flush()``
(which waits until the socket has taken it), and while the handler waits, the download's
iterator fills up to ``high_water`` chunks and then pauses the transfer from CouchDB: memory
stays bounded whatever the attachment's size and however slow the browser. A browser that goes
away mid-body ends the download from CouchDB at once.
"""

from __future__ import annotations

import logging
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.web import HTTPError, RequestHandler

from ..api.attachments import parse_range, passed_on
from ..api.database import Database
from ..errors import CouchError, NotFound, RangeNotSatisfiable

__all__ = ["AttachmentHandler"]

log = logging.getLogger("corduroy2")

class AttachmentHandler(RequestHandler):
    """Serves attachments of ``database`` (a Tornado front door's
    :class:`~corduroy2.tornado_io.Database`). The URL pattern's two groups are the document id
    and the attachment name; override :meth:`locate` to map a URL otherwise, and
    :meth:`set_extra_headers` to add headers (caching...)."""

    def initialize(self, database: Database, high_water: int = 8) -> None:
        self.database = database
        self.high_water = high_water
        self._download: Any = None

    def locate(self, *path_args: str) -> tuple[str, str]:
        """The ``(doc id, attachment name)`` a request is for: by default the URL pattern's
        two groups (Tornado has unquoted them)."""
        doc_id, name = path_args
        return doc_id, name

    def set_extra_headers(self, doc_id: str, name: str) -> None:
        """For subclasses: add headers (Cache-Control...) to a response about to start."""

    async def get(self, *path_args: str) -> None:
        doc_id, name = self.locate(*path_args)
        download = self._download = self.database.iter_attachment(
            doc_id, name, range=parse_range(self.request.headers.get("Range")),
            if_none_match=self.request.headers.get("If-None-Match"),
            high_water=self.high_water)
        try:
            try:
                first = await download.__anext__()
            except StopAsyncIteration:
                first = b""
            except CouchError as exc:
                self._refuse(exc)
                return
            self._start(download.fields, doc_id, name)
            if download.fields["status"] == 304:
                return
            self.write(first)
            await self.flush()
            async for chunk in download:
                self.write(chunk)
                await self.flush()  # until the socket has taken it: the back-pressure
        except StreamClosedError:
            pass  # the browser went away: the download is ended below
        finally:
            download.close()

    async def head(self, *path_args: str) -> None:
        doc_id, name = self.locate(*path_args)
        try:
            attachment = await self.database.attachment_info(
                doc_id, name, if_none_match=self.request.headers.get("If-None-Match"))
        except CouchError as exc:
            self._refuse(exc)
            return
        if attachment is None:
            self.set_status(304)
            return
        self._start({"status": attachment.status, "headers": attachment.headers}, doc_id, name)

    def on_connection_close(self) -> None:
        if self._download is not None:
            self._download.close()  # stop the download from CouchDB at once

    def _start(self, fields: dict[str, Any], doc_id: str, name: str) -> None:
        self.set_status(fields["status"])
        if fields["status"] == 304:
            self.clear_header("Content-Type")  # the handler's default one
        for header, value in passed_on(fields["status"], fields["headers"]):
            self.set_header(header, value)
        self.set_extra_headers(doc_id, name)

    def _refuse(self, exc: CouchError) -> None:
        if isinstance(exc, NotFound):
            raise HTTPError(404)
        if isinstance(exc, RangeNotSatisfiable):
            self.set_status(416)
            content_range = exc.headers.get("content-range")
            if content_range:
                self.set_header("Content-Range", content_range)
            return
        log.warning("corduroy2: cannot serve an attachment: %s", exc)
        raise HTTPError(502)
