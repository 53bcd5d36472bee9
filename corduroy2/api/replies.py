"""What the less common endpoints' replies become: a rev from an ETag, a revision list, the
results of ``_bulk_get`` and of view ``queries``, and whole responses for the design functions
and ``couch.request(raw=True)``. Pure functions and one small operation; no framework."""

from __future__ import annotations

from typing import Any

from ..errors import DecodeError
from ..protocol.requests import Request
from ..protocol.responses import Response, make_error
from .calls import Op, Raw
from .documents import Document
from .views import Row, ViewResult

__all__ = ["checked_response", "current_rev", "rev_list", "bulk_get_results", "view_results"]


def checked_response(request: Request) -> Op[Response]:
    """The whole :class:`Response` to ``request``: status, headers, body as bytes. An error
    status still raises its typed error, like every other call."""
    response: Response = yield Raw(request)
    if response.status >= 400:
        raise make_error(response.status, response.headers, response.body,
                         method=request.method, url=request.url)
    return response


def current_rev(request: Request) -> Op[str | None]:
    """The rev in the ETag of a document's ``HEAD`` (CouchDB sends ``"<rev>"``), or None when
    the document does not exist (or is deleted)."""
    response: Response = yield Raw(request)
    if response.status == 404:
        return None
    if response.status >= 400:
        raise make_error(response.status, response.headers, response.body,
                         method=request.method, url=request.url)
    etag = response.headers.get("ETag", "")
    if len(etag) < 3 or not (etag.startswith('"') and etag.endswith('"')):
        # A weak validator (W/"...") is a hash of the body, not a rev: pouchdb-server sends one.
        raise DecodeError(f"the server's HEAD of {request.url} carries no rev in its ETag "
                          f"({etag or 'none'!s}): this server does not give revs by HEAD")
    return etag[1:-1]


def rev_list(doc: dict[str, Any]) -> list[str]:
    """The rev strings of a document's ``_revisions``, newest first."""
    revisions = doc.get("_revisions")
    if not isinstance(revisions, dict) or "start" not in revisions:
        raise DecodeError(f"the server sent no _revisions for {doc.get('_id')!r}")
    start = revisions["start"]
    return [f"{start - n}-{digest}" for n, digest in enumerate(revisions["ids"])]


def bulk_get_results(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """``_bulk_get``'s results, one per requested doc and in that order: ``{"id", "docs": [...]}``
    where each entry is ``{"ok": Document}`` or ``{"error": {"id", "rev", "error",
    "reason"}}`` (several entries when ``open_revs``-like answers hold conflicts)."""
    results = reply["results"]
    for result in results:
        result["docs"] = [{"ok": Document(d["ok"])} if "ok" in d else d for d in result["docs"]]
    return results  # type: ignore[no-any-return]


def view_results(reply: dict[str, Any]) -> list[ViewResult]:
    """One :class:`ViewResult` per query of a view's ``queries`` request."""
    results = []
    for result in reply["results"]:
        rows = result.pop("rows", [])
        results.append(ViewResult(list(map(Row, rows)), result))
    return results

