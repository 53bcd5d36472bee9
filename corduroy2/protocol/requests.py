"""Requests: the :class:`Request` value, the JSON encoder for bodies, and one pure builder per
CouchDB endpoint.

A builder takes an :class:`Origin` (the server's URL and what every request of a handle
carries) and the endpoint's arguments, checks them (``ValueError``/``TypeError`` at once, in
every calling style), and returns the :class:`Request`. No IO; ``tests/core/test_requests.py``
tables them.""" 

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from .bodies import BodySource
from .urls import db_path, doc_path, encode_query, validate_db_name, validate_doc_id

__all__ = ["Request", "Origin", "encode_json", "check_headers", "JSON_HEADERS", "FEEDS"]


@dataclass(frozen=True, init=False)
class Request:
    """One HTTP request, ready to send. ``url`` is absolute and never holds credentials."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    # bytes, or a BodySource read while it is sent (an attachment upload: see bodies.py).
    body: bytes | BodySource | None = None
    # Streamed responses are fed to the sink chunk by chunk as they arrive; the others may be
    # delivered in one piece, which lets a transport skip its per-chunk machinery.
    stream: bool = False
    # Per-request overrides of the backend's TransportOptions (None: use the backend's).
    timeout: float | None = field(default=None, compare=False)
    idle_timeout: float | None = field(default=None, compare=False)
    # Safe to send twice? None lets the retry policy decide by rule (GET/HEAD yes; PUT/DELETE
    # when they carry a rev; anything else no); the API sets True/False where it knows better.
    idempotent: bool | None = field(default=None, compare=False)

    def __init__(self, method: str, url: str, headers: tuple[tuple[str, str], ...] = (),
                 body: bytes | BodySource | None = None, stream: bool = False,
                 timeout: float | None = None,
                 idle_timeout: float | None = None, idempotent: bool | None = None) -> None:
        # The generated __init__ of a frozen dataclass goes through object.__setattr__ once per
        # field, which made building a Request a tenth of a document GET's cost in corduroy2.
        # Storing into the instance dict does the same (the fields are the same, in order).
        fields = self.__dict__
        fields["method"] = method
        fields["url"] = url
        fields["headers"] = headers
        fields["body"] = body
        fields["stream"] = stream
        fields["timeout"] = timeout
        fields["idle_timeout"] = idle_timeout
        fields["idempotent"] = idempotent

    @property
    def replayable(self) -> bool:
        """Can this request be sent (again)? Not once a piece of a streamed body has been
        taken: the source is read once."""
        body = self.body
        return not isinstance(body, BodySource) or not body.taken

    def __repr__(self) -> str:
        # Headers are left out: they may carry Authorization or Cookie.
        body = self.body
        size = "" if body is None else f", {body!r}" if isinstance(body, BodySource) \
            else f", {len(body)} bytes"
        return f"<Request {self.method} {self.url}{size}>"


JSON_HEADERS = (("Content-Type", "application/json"),)

# RFC 9110: a field name is a token; a field value has no control character but HTAB (a line
# break in one would end the line and start another: a header injected by a value).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search


def check_headers(fields: tuple[tuple[str, str], ...]) -> None:
    """Raise ValueError if a header of ``fields`` cannot be sent as it is. The message names the
    header but never shows the value: it may be a credential. Every backend applies this one
    rule before sending, so none sends what another refuses, and none cleans up a value
    silently (Twisted would turn a line break into a space)."""
    for name, value in fields:
        if not _TOKEN(name):
            raise ValueError(f"invalid header name {name!r}")
        if _CONTROL(value):
            raise ValueError(f"invalid value for header {name!r}: a control character")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"invalid value for header {name!r}: not Latin-1") from None

# datetime is passed through so that it fails like stdlib json does instead of being written as
# a string that comes back as a str: a silent type change is a data loss. Dataclasses too: orjson
# would write them itself, hiding NaN fields from the finiteness check below.
_DUMPS_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _unsupported(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable: {value!r:.80}")


def _check_finite(value: Any) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not allowed in JSON (CouchDB would store null)")
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(item)


def encode_json(value: Any) -> bytes:
    """Serialize ``value`` with orjson; ``TypeError`` if it cannot be, ``ValueError`` for NaN/inf.

    orjson writes NaN and infinities as ``null``, which would silently change the data. They can
    only hide where the output has a ``null``, so the slow walk runs only then.
    """
    try:
        data = orjson.dumps(value, default=_unsupported, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from exc.__cause__
    if b"null" in data:
        _check_finite(value)
    return data


Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Origin:
    """What every request of one handle starts from: the server's URL (without credentials),
    the headers every request carries (Accept, User-Agent, fixed credentials), and the
    per-handle timeouts (None: the transport's own)."""

    url: str
    headers: Headers = ()
    timeout: float | None = None
    idle_timeout: float | None = None

    def request(self, method: str, path: str, query: Any = None, body: bytes | None = None,
                headers: Headers = (), idempotent: bool | None = None,
                stream: bool = False) -> Request:
        """A request for ``path`` (quoted already) with ``query`` encoded; a JSON body gets
        its Content-Type, and a PUT or POST without one an empty body."""
        all_headers = self.headers + headers
        if body is not None:
            all_headers += JSON_HEADERS
        elif method in ("PUT", "POST"):
            body = b""
        url = self.url + path + encode_query(query) if query else self.url + path
        return Request(method, url, all_headers, body, stream, self.timeout, self.idle_timeout,
                       idempotent)


# -- the server -----------------------------------------------------------------------------

def server_info(origin: Origin) -> Request:
    return origin.request("GET", "/")


def all_dbs(origin: Origin, opts: Mapping[str, Any]) -> Request:
    return origin.request("GET", "/_all_dbs", opts)


def uuids(origin: Origin, count: int) -> Request:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    return origin.request("GET", "/_uuids", {"count": count})


def session(origin: Origin) -> Request:
    return origin.request("GET", "/_session")


def end_session(origin: Origin, cookie: str | None) -> Request:
    """``DELETE /_session``, with the cookie being ended (if any). Ending it twice is harmless."""
    headers = () if cookie is None else (("Cookie", f"AuthSession={cookie}"),)
    return origin.request("DELETE", "/_session", headers=headers, idempotent=True)


# -- databases ------------------------------------------------------------------------------

def db_info(origin: Origin, db: str) -> Request:
    return origin.request("GET", db_path(validate_db_name(db)))


def db_head(origin: Origin, db: str) -> Request:
    return origin.request("HEAD", db_path(validate_db_name(db)))


def create_db(origin: Origin, db: str, opts: Mapping[str, Any] | None = None) -> Request:
    return origin.request("PUT", db_path(validate_db_name(db)), opts)


def delete_db(origin: Origin, db: str) -> Request:
    return origin.request("DELETE", db_path(validate_db_name(db)))


def design_info(origin: Origin, db: str, ddoc: str) -> Request:
    return origin.request("GET", doc_path(db, "_design/" + ddoc_name(ddoc)) + "/_info")


# -- documents ------------------------------------------------------------------------------

def get_doc(origin: Origin, db: str, doc_id: str, opts: Mapping[str, Any] | None = None
            ) -> Request:
    return origin.request("GET", doc_path(db, validate_doc_id(doc_id)), opts)


def get_docs(origin: Origin, db: str, ids: list[str], opts: Mapping[str, Any] | None = None
             ) -> Request:
    """Several documents by id: ``POST _all_docs`` with ``keys`` and ``include_docs``."""
    body = encode_json({"keys": [validate_doc_id(i) for i in ids]})
    return origin.request("POST", db_path(db) + "/_all_docs",
                          {"include_docs": True, **(opts or {})}, body,
                          idempotent=True)  # a read, though a POST: safe to send again


def put_doc(origin: Origin, db: str, doc: Mapping[str, Any],
            opts: Mapping[str, Any] | None = None) -> Request:
    """``PUT`` of ``doc``, which must have its ``_id``."""
    return origin.request("PUT", doc_path(db, validate_doc_id(doc.get("_id"))), opts,
                          encode_json(doc))


def delete_doc(origin: Origin, db: str, doc_id: str, rev: Any) -> Request:
    if not rev:
        raise ValueError(f"document {doc_id!r} has no _rev: fetch it before deleting")
    return origin.request("DELETE", doc_path(db, validate_doc_id(doc_id)), {"rev": rev})


def copy_doc(origin: Origin, db: str, source: str, source_rev: str | None, dest: str,
             dest_rev: str | None) -> Request:
    """``COPY``: the Destination header is a doc id, not a path: only characters a header
    cannot carry are escaped, and ``?rev=`` names the revision being overwritten."""
    destination = quote(validate_doc_id(dest), safe="/:@!$&'()*+,;=-._~")
    destination += encode_query({"rev": dest_rev})
    query = {"rev": source_rev} if source_rev else None
    return origin.request("COPY", doc_path(db, validate_doc_id(source)), query,
                          headers=(("Destination", destination),))


def bulk_docs(origin: Origin, db: str, docs: list[dict[str, Any]],
              opts: Mapping[str, Any] | None = None) -> Request:
    """``_bulk_docs``: CouchDB reads its options (``new_edits``) from the body."""
    head = encode_json(opts)[:-1] + b"," if opts else b"{"
    body = head + b'"docs":[' + b",".join(encode_json(d) for d in docs) + b"]}"
    return origin.request("POST", db_path(db) + "/_bulk_docs", None, body)


# -- attachments ----------------------------------------------------------------------------

#: A byte range ``(start, end)``, both inclusive as in HTTP's ``bytes=start-end``; ``end``
#: None reads to the end.
ByteRange = tuple[int, "int | None"]


def validate_attachment_name(name: Any) -> str:
    """An attachment name: a non-empty str not starting with ``_`` (CouchDB reserves those)."""
    if not isinstance(name, str):
        raise TypeError(f"attachment name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("attachment name must not be empty")
    if name.startswith("_"):
        raise ValueError(f"attachment name must not start with '_': {name!r}")
    return name


def attachment_path(db: str, doc_id: str, name: str) -> str:
    """``/db/doc/name``; a ``/`` in the name stays a slash (CouchDB joins the segments)."""
    return (doc_path(db, validate_doc_id(doc_id)) + "/"
            + quote(validate_attachment_name(name), safe="/"))


def range_header(byte_range: Any) -> str:
    """``bytes=start-end`` for ``(start, end)``; ValueError/TypeError for anything else."""
    if not isinstance(byte_range, (tuple, list)) or len(byte_range) != 2:
        raise TypeError(f"range must be a (start, end) tuple, not {byte_range!r}")
    start, end = byte_range
    for value in (start, end):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"range bounds must be ints (or end None), got {byte_range!r}")
    if start is None or start < 0 or (end is not None and end < start):
        raise ValueError(f"range must have 0 <= start <= end, got {byte_range!r}")
    return f"bytes={start}-{'' if end is None else end}"


def put_attachment(origin: Origin, db: str, doc_id: str, rev: str | None, name: str,
                   body: bytes | BodySource, content_type: str) -> Request:
    """``PUT /db/doc/name?rev=``: ``body`` as it is (bytes, or a source streamed while it is
    sent; the transport sets its Content-Length or sends it chunked). Without ``rev`` the
    document is created."""
    if not isinstance(content_type, str) or not content_type:
        raise ValueError(f"content_type must be a non-empty str, got {content_type!r}")
    headers = origin.headers + (("Content-Type", content_type),)
    path = attachment_path(db, doc_id, name)
    url = origin.url + path + (encode_query({"rev": rev}) if rev else "")
    return Request("PUT", url, headers, body, False, origin.timeout, origin.idle_timeout)


def get_attachment(origin: Origin, db: str, doc_id: str, name: str, rev: str | None = None,
                   byte_range: Any = None, if_none_match: str | None = None,
                   stream: bool = False, method: str = "GET") -> Request:
    """``GET`` (or ``HEAD``) of an attachment, with ``Range`` and ``If-None-Match`` when
    given; ``stream`` for a body delivered as it arrives."""
    headers: Headers = ()
    if byte_range is not None:
        headers += (("Range", range_header(byte_range)),)
    if if_none_match is not None:
        if not isinstance(if_none_match, str):
            raise TypeError(f"if_none_match must be an ETag str, not {if_none_match!r}")
        headers += (("If-None-Match", if_none_match),)
    return origin.request(method, attachment_path(db, doc_id, name),
                          {"rev": rev} if rev else None, headers=headers, stream=stream)


def delete_attachment(origin: Origin, db: str, doc_id: str, rev: Any, name: str) -> Request:
    if not rev:
        raise ValueError(f"document {doc_id!r} has no _rev: fetch it before deleting an "
                         "attachment")
    return origin.request("DELETE", attachment_path(db, doc_id, name), {"rev": rev})


# -- views, _all_docs, Mango ----------------------------------------------------------------

def view(origin: Origin, db: str, name: str, opts: Mapping[str, Any]) -> Request:
    """Rows of view ``"ddoc/view"`` (or ``"_all_docs"``), streamed. ``keys`` travel in a POST
    body: a GET query string has a length limit."""
    path = view_path(db, name)
    opts = dict(opts)
    if "keys" in opts:
        keys = opts.pop("keys")
        if not isinstance(keys, (list, tuple)):
            raise TypeError("keys must be a list")
        return origin.request("POST", path, opts, encode_json({"keys": list(keys)}),
                              idempotent=True, stream=True)
    return origin.request("GET", path, opts, stream=True)


def find(origin: Origin, db: str, selector: Any, opts: Mapping[str, Any]) -> Request:
    """A Mango query, streamed; options left None are not sent."""
    if not isinstance(selector, dict):
        raise TypeError(f"selector must be a dict, not {type(selector).__name__}")
    body = {"selector": selector, **{k: v for k, v in opts.items() if v is not None}}
    return origin.request("POST", db_path(db) + "/_find", None, encode_json(body),
                          idempotent=True, stream=True)


def explain(origin: Origin, db: str, selector: Any, opts: Mapping[str, Any]) -> Request:
    if not isinstance(selector, dict):
        raise TypeError(f"selector must be a dict, not {type(selector).__name__}")
    body = encode_json({"selector": selector, **opts})
    return origin.request("POST", db_path(db) + "/_explain", None, body, idempotent=True)


def create_index(origin: Origin, db: str, fields: list[Any], ddoc: str | None,
                 name: str | None, type: str, partial_filter_selector: dict[str, Any] | None,
                 opts: Mapping[str, Any]) -> Request:
    index: dict[str, Any] = {"fields": list(fields)}
    if partial_filter_selector is not None:
        index["partial_filter_selector"] = partial_filter_selector
    body = {"index": index, "type": type, **opts}
    if ddoc is not None:
        body["ddoc"] = ddoc_name(ddoc)
    if name is not None:
        body["name"] = name
    return origin.request("POST", db_path(db) + "/_index", None, encode_json(body))


def indexes(origin: Origin, db: str) -> Request:
    return origin.request("GET", db_path(db) + "/_index")


def delete_index(origin: Origin, db: str, ddoc: str, name: str, type: str) -> Request:
    # "_design/x" travels as one segment, _design%2Fx: CouchDB accepts it, and it is the only
    # form some servers (pouchdb-server) route correctly.
    path = (db_path(db) + "/_index/" + quote("_design/" + ddoc_name(ddoc), safe="") + "/"
            + quote(type, safe="") + "/" + quote(name, safe=""))
    return origin.request("DELETE", path)


# -- _changes -------------------------------------------------------------------------------

FEEDS = ("normal", "longpoll", "continuous", "eventsource")


def changes(origin: Origin, db: str, opts: Mapping[str, Any]) -> Request:
    """A ``_changes`` request, streamed. ``doc_ids`` and ``selector`` travel in a POST body (a
    query string has a length limit) and imply their built-in filters; ``heartbeat`` and
    ``timeout`` are milliseconds (``heartbeat=True`` is the server's default); ``since`` is
    sent as given (seqs are opaque)."""
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
    path = db_path(db) + "/_changes"
    if body:
        return origin.request("POST", path, opts, encode_json(body), stream=True)
    return origin.request("GET", path, opts, stream=True)


# -- names ----------------------------------------------------------------------------------

def view_path(db: str, name: str) -> str:
    """``"ddoc/view"`` -> ``/db/_design/ddoc/_view/view``; ``"_all_docs"`` stays a path."""
    if not isinstance(name, str):
        raise TypeError(f"view name must be a str like 'ddoc/view', not {type(name).__name__}")
    if name == "_all_docs":
        return db_path(db) + "/_all_docs"
    ddoc, sep, view_name = name.partition("/")
    if not sep or not ddoc or not view_name or "/" in view_name:
        raise ValueError(f"view name must look like 'ddoc/view', got {name!r}")
    return doc_path(db, "_design/" + ddoc) + "/_view/" + quote(view_name, safe="")


def ddoc_name(ddoc: str) -> str:
    """A design document's name without ``_design/``."""
    if not isinstance(ddoc, str) or not ddoc:
        raise ValueError(f"design document name must be a non-empty str, got {ddoc!r}")
    return ddoc[len("_design/"):] if ddoc.startswith("_design/") else ddoc
