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
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

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


# -- server administration and replication ------------------------------------------------

def up(origin: Origin) -> Request:
    return origin.request("GET", "/_up")


def dbs_info(origin: Origin, names: Any) -> Request:
    """``POST /_dbs_info``: the info of several databases in one call (a read)."""
    if not isinstance(names, (list, tuple)):
        raise TypeError("dbs_info() takes a list of database names")
    body = encode_json({"keys": [validate_db_name(n) for n in names]})
    return origin.request("POST", "/_dbs_info", None, body, idempotent=True)


def active_tasks(origin: Origin) -> Request:
    return origin.request("GET", "/_active_tasks")


def membership(origin: Origin) -> Request:
    return origin.request("GET", "/_membership")


def _node(node: str) -> str:
    """``/_node/<node>``; a node name keeps its ``@`` (``couchdb@10.0.0.1``)."""
    if not isinstance(node, str) or not node:
        raise ValueError(f"node must be a non-empty str like '_local', got {node!r}")
    return "/_node/" + quote(node, safe="@")


def _config_path(node: str, section: str | None, key: str | None) -> str:
    path = _node(node) + "/_config"
    if section is None:
        if key is not None:
            raise ValueError("a config key needs its section")
        return path
    for name, part in (("section", section), ("key", key)):
        if part is not None and (not isinstance(part, str) or not part):
            raise ValueError(f"config {name} must be a non-empty str, got {part!r}")
    path += "/" + quote(section, safe="")
    return path + "/" + quote(key, safe="") if key is not None else path


def config(origin: Origin, node: str, section: str | None, key: str | None) -> Request:
    """``GET /_node/<node>/_config[/<section>[/<key>]]``."""
    return origin.request("GET", _config_path(node, section, key))


def set_config(origin: Origin, node: str, section: str, key: str, value: str) -> Request:
    """``PUT`` of one config value; CouchDB stores config values as strings (sent as JSON)."""
    if section is None or key is None:
        raise ValueError("set_config() needs a section and a key")
    if not isinstance(value, str):
        raise TypeError(f"config values are str (CouchDB stores strings), not "
                        f"{type(value).__name__}")
    # Setting the same value twice leaves the same config: safe to send again.
    return origin.request("PUT", _config_path(node, section, key), None, encode_json(value),
                          idempotent=True)


def delete_config(origin: Origin, node: str, section: str, key: str) -> Request:
    if section is None or key is None:
        raise ValueError("delete_config() needs a section and a key")
    return origin.request("DELETE", _config_path(node, section, key))


def stats(origin: Origin, node: str, path: str | None) -> Request:
    """``GET /_node/<node>/_stats[/<group>/<metric>...]``; ``path`` like ``"couchdb/request_time"``."""
    url = _node(node) + "/_stats"
    if path is not None:
        parts = path.strip("/").split("/") if isinstance(path, str) else None
        if not parts or not all(parts):
            raise ValueError(f"stats path must look like 'couchdb/request_time', got {path!r}")
        url += "".join("/" + quote(p, safe="") for p in parts)
    return origin.request("GET", url)


def system(origin: Origin, node: str) -> Request:
    return origin.request("GET", _node(node) + "/_system")


def scheduler_jobs(origin: Origin, opts: Mapping[str, Any]) -> Request:
    return origin.request("GET", "/_scheduler/jobs", opts)


def scheduler_docs(origin: Origin, replicator_db: str | None, doc_id: str | None,
                   opts: Mapping[str, Any]) -> Request:
    """``GET /_scheduler/docs[/<replicator db>[/<doc id>]]``: the state of the replications
    that ``_replicator`` documents describe (a db like ``a/_replicator`` travels as
    ``a%2F_replicator``)."""
    path = "/_scheduler/docs"
    if replicator_db is not None:
        path += db_path(validate_db_name(replicator_db))
        if doc_id is not None:
            path += "/" + quote(validate_doc_id(doc_id), safe="")
    elif doc_id is not None:
        raise ValueError("a replication document id needs its replicator database")
    return origin.request("GET", path, opts)


def db_updates(origin: Origin, opts: Mapping[str, Any]) -> Request:
    """``GET /_db_updates``, streamed like ``_changes`` (same feeds, same body shapes)."""
    feed = opts.get("feed", "normal")
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {', '.join(FEEDS)}, not {feed!r}")
    since = opts.get("since")
    if since is not None and not isinstance(since, (str, int)):
        raise TypeError(f"since must be a seq as the server sent it (str or int), not {since!r}")
    return origin.request("GET", "/_db_updates", {**opts, "feed": feed}, stream=True)


def replicate(origin: Origin, body: Mapping[str, Any]) -> Request:
    """``POST /_replicate`` with a body made by :func:`corduroy2.api.replication.body`. Not
    safe to repeat by rule: a continuous one would be started twice."""
    if not isinstance(body, Mapping) or "source" not in body or "target" not in body:
        raise TypeError("a replication needs a source and a target")
    return origin.request("POST", "/_replicate", None, encode_json(dict(body)))


USER_PREFIX = "org.couchdb.user:"


def create_user(origin: Origin, name: str, password: str, roles: Any) -> Request:
    """``PUT /_users/org.couchdb.user:<name>``: a user document (CouchDB hashes the
    password)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"user name must be a non-empty str, got {name!r}")
    if not isinstance(password, str) or not password:
        raise ValueError("password must be a non-empty str")
    if isinstance(roles, str) or not all(isinstance(r, str) for r in roles):
        raise TypeError("roles must be a list of str")
    doc = {"_id": USER_PREFIX + name, "name": name, "password": password,
           "roles": list(roles), "type": "user"}
    return put_doc(origin, "_users", doc)


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
    """Rows of view ``"ddoc/view"`` (or ``"_all_docs"``), streamed."""
    return rows_at(origin, view_path(db, name), opts)


def rows_at(origin: Origin, path: str, opts: Mapping[str, Any], stream: bool = True
            ) -> Request:
    """Rows of the view-like endpoint at ``path`` (a view, ``_all_docs``, ``_local_docs``, a
    partition's, a list function's...), streamed unless ``stream`` is False. ``keys`` travel in
    a POST body: a GET query string has a length limit."""
    opts = dict(opts)
    if "keys" in opts:
        keys = opts.pop("keys")
        if not isinstance(keys, (list, tuple)):
            raise TypeError("keys must be a list")
        return origin.request("POST", path, opts, encode_json({"keys": list(keys)}),
                              idempotent=True, stream=stream)
    return origin.request("GET", path, opts, stream=stream)


def find(origin: Origin, db: str, selector: Any, opts: Mapping[str, Any]) -> Request:
    """A Mango query, streamed; options left None are not sent."""
    return mango_at(origin, db_path(db) + "/_find", selector, opts, stream=True)


def explain(origin: Origin, db: str, selector: Any, opts: Mapping[str, Any]) -> Request:
    return mango_at(origin, db_path(db) + "/_explain", selector, opts, stream=False)


def mango_at(origin: Origin, path: str, selector: Any, opts: Mapping[str, Any],
             stream: bool) -> Request:
    """A Mango request (``_find``, ``_explain``) at ``path``; options left None are not sent.
    A read, though a POST: safe to send again."""
    if not isinstance(selector, dict):
        raise TypeError(f"selector must be a dict, not {type(selector).__name__}")
    body = {"selector": selector, **{k: v for k, v in opts.items() if v is not None}}
    return origin.request("POST", path, None, encode_json(body), idempotent=True, stream=stream)


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


# -- revisions, maintenance, design functions, partitions, any endpoint ----------------------

def doc_head(origin: Origin, db: str, doc_id: str) -> Request:
    """``HEAD`` of a document: CouchDB's ETag is its current rev."""
    return origin.request("HEAD", doc_path(db, validate_doc_id(doc_id)))


def revisions(origin: Origin, db: str, doc_id: str, rev: str | None = None) -> Request:
    """A document with its ``_revisions`` (of revision ``rev``, or of the current one)."""
    return origin.request("GET", doc_path(db, validate_doc_id(doc_id)),
                          {"revs": True, "rev": rev})


def bulk_get(origin: Origin, db: str, docs: Any, opts: Mapping[str, Any]) -> Request:
    """``_bulk_get`` of ``docs``: ids, or ``{"id": ..., "rev": ...}`` (``atts_since`` too).
    A read, though a POST."""
    if not isinstance(docs, (list, tuple)):
        raise TypeError(f"bulk_get takes a list of ids or {{'id', 'rev'}} dicts, not "
                        f"{type(docs).__name__}")
    wanted = []
    for item in docs:
        if isinstance(item, str):
            wanted.append({"id": validate_doc_id(item)})
        elif isinstance(item, Mapping):
            validate_doc_id(item.get("id"))
            if item.get("rev") is not None and not isinstance(item["rev"], str):
                raise TypeError(f"rev must be a str, not {type(item['rev']).__name__}")
            wanted.append(dict(item))
        else:
            raise TypeError(f"bulk_get items are ids or {{'id', 'rev'}} dicts, not "
                            f"{type(item).__name__}")
    return origin.request("POST", db_path(db) + "/_bulk_get", opts,
                          encode_json({"docs": wanted}), idempotent=True)


def _revs_by_id(revs: Any) -> bytes:
    """``{id: [rev, ...]}``, checked: the body of ``_revs_diff``, ``_missing_revs`` and
    ``_purge``."""
    if not isinstance(revs, Mapping):
        raise TypeError(f"expected {{id: [rev, ...]}}, not {type(revs).__name__}")
    for doc_id, doc_revs in revs.items():
        validate_doc_id(doc_id)
        if not isinstance(doc_revs, (list, tuple)) or not all(
                isinstance(r, str) for r in doc_revs):
            raise TypeError(f"the revs of {doc_id!r} must be a list of str")
    return encode_json({k: list(v) for k, v in revs.items()})


def revs_diff(origin: Origin, db: str, revs: Any) -> Request:
    return origin.request("POST", db_path(db) + "/_revs_diff", None, _revs_by_id(revs),
                          idempotent=True)


def missing_revs(origin: Origin, db: str, revs: Any) -> Request:
    return origin.request("POST", db_path(db) + "/_missing_revs", None, _revs_by_id(revs),
                          idempotent=True)


def purge(origin: Origin, db: str, revs: Any) -> Request:
    return origin.request("POST", db_path(db) + "/_purge", None, _revs_by_id(revs))


def get_security(origin: Origin, db: str) -> Request:
    return origin.request("GET", db_path(db) + "/_security")


def put_security(origin: Origin, db: str, security: Any) -> Request:
    if not isinstance(security, Mapping):
        raise TypeError(f"a security object must be a dict, not {type(security).__name__}")
    return origin.request("PUT", db_path(db) + "/_security", None, encode_json(dict(security)),
                          idempotent=True)  # the same object twice is the same state


# CouchDB 3 refuses these POSTs without a JSON Content-Type (415), though they take no body:
# an empty body is sent with it. Doing them twice is harmless.

def compact(origin: Origin, db: str, ddoc: str | None = None) -> Request:
    path = db_path(db) + "/_compact"
    if ddoc is not None:
        path += "/" + quote(ddoc_name(ddoc), safe="")
    return origin.request("POST", path, None, b"", idempotent=True)


def view_cleanup(origin: Origin, db: str) -> Request:
    return origin.request("POST", db_path(db) + "/_view_cleanup", None, b"", idempotent=True)


def sync_shards(origin: Origin, db: str) -> Request:
    return origin.request("POST", db_path(db) + "/_sync_shards", None, b"", idempotent=True)


def shards(origin: Origin, db: str, doc_id: str | None = None) -> Request:
    """The database's shard map, or with ``doc_id`` the shard that holds that document."""
    path = db_path(db) + "/_shards"
    if doc_id is not None:
        path += "/" + quote(validate_doc_id(doc_id), safe="")
    return origin.request("GET", path)


def db_setting(origin: Origin, db: str, name: str, value: int | None = None) -> Request:
    """Read (``value`` None) or set a database's numeric setting ``name``: ``_revs_limit``,
    ``_purged_infos_limit``."""
    path = db_path(db) + "/" + name
    if value is None:
        return origin.request("GET", path)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name.lstrip('_')} must be a positive int, got {value!r}")
    return origin.request("PUT", path, None, encode_json(value), idempotent=True)


def local_docs(origin: Origin, db: str, opts: Mapping[str, Any]) -> Request:
    """``_local_docs``: rows like ``_all_docs``'s, streamed."""
    return rows_at(origin, db_path(db) + "/_local_docs", opts)


def design_docs(origin: Origin, db: str, opts: Mapping[str, Any]) -> Request:
    """``_design_docs``: rows like ``_all_docs``'s, streamed."""
    return rows_at(origin, db_path(db) + "/_design_docs", opts)


def view_queries(origin: Origin, db: str, name: str, queries: Any) -> Request:
    """Several queries of one view (or ``_all_docs``) in one request: ``POST .../queries``."""
    if not isinstance(queries, (list, tuple)) or not all(isinstance(q, Mapping) for q in queries):
        raise TypeError("queries must be a list of dicts of view options")
    body = encode_json({"queries": [dict(q) for q in queries]})
    return origin.request("POST", view_path(db, name) + "/queries", None, body,
                          idempotent=True)  # a read


def design_function(db: str, kind: str, name: str) -> str:
    """``"ddoc/func"`` -> ``/db/_design/ddoc/<kind>/func`` (``kind``: ``_show``, ``_list``,
    ``_update``)."""
    if not isinstance(name, str):
        raise TypeError(f"{kind[1:]} function name must be a str like 'ddoc/name', not "
                        f"{type(name).__name__}")
    ddoc, sep, func = name.removeprefix("_design/").partition("/")
    if not sep or not ddoc or not func or "/" in func:
        raise ValueError(f"{kind[1:]} function name must look like 'ddoc/name', got {name!r}")
    return doc_path(db, "_design/" + ddoc) + "/" + kind + "/" + quote(func, safe="")


def _doc_segment(doc_id: str | None) -> str:
    return "" if doc_id is None else "/" + quote(validate_doc_id(doc_id), safe="")


def show(origin: Origin, db: str, name: str, doc_id: str | None,
         opts: Mapping[str, Any]) -> Request:
    """Show function ``"ddoc/show"``, of document ``doc_id`` (or of none)."""
    return origin.request("GET", design_function(db, "_show", name) + _doc_segment(doc_id), opts)


def list_view(origin: Origin, db: str, name: str, view_name: str,
              opts: Mapping[str, Any]) -> Request:
    """List function ``"ddoc/list"`` over ``view_name``: a view of the same design document
    (``"view"``) or of another (``"other/view"``). ``keys`` travel by POST, as for views."""
    if not isinstance(view_name, str) or not view_name or view_name.count("/") > 1 or (
            view_name.startswith("/") or view_name.endswith("/")):
        raise ValueError(f"the list's view must be 'view' or 'ddoc/view', got {view_name!r}")
    path = design_function(db, "_list", name) + "/" + "/".join(
        quote(part, safe="") for part in view_name.split("/"))
    return rows_at(origin, path, opts, stream=False)  # a list's output is read whole


def body_of(body: Any, content_type: str | None) -> tuple[bytes | None, Headers]:
    """A request body and its Content-Type: bytes as they are (``application/octet-stream``
    unless told), str as UTF-8 (``text/plain``), anything else as JSON."""
    if body is None:
        return None, ()
    if isinstance(body, (bytes, bytearray, memoryview)):
        data, default = bytes(body), "application/octet-stream"
    elif isinstance(body, str):
        data, default = body.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        data, default = encode_json(body), "application/json"
    return data, (("Content-Type", content_type or default),)


def update(origin: Origin, db: str, name: str, doc_id: str | None, body: Any,
           content_type: str | None, opts: Mapping[str, Any]) -> Request:
    """Update function ``"ddoc/handler"``: ``PUT`` on document ``doc_id``, or ``POST`` without
    one. Never sent twice: what a handler does is its own."""
    path = design_function(db, "_update", name) + _doc_segment(doc_id)
    data, content = body_of(body, content_type)
    check_headers(content)
    request = origin.request("PUT" if doc_id is not None else "POST", path, opts,
                             headers=content, idempotent=False)
    return request if data is None else replace(request, body=data)


def validate_partition(name: Any) -> str:
    """Return ``name`` if it can name a partition: a non-empty str without ``:`` that does not
    start with ``_`` (CouchDB's rule; the ``:`` separates the partition from the doc id)."""
    if not isinstance(name, str):
        raise TypeError(f"partition name must be a str, not {type(name).__name__}")
    if not name or ":" in name or name.startswith("_"):
        raise ValueError(f"invalid partition name {name!r}: it must be non-empty, without ':' "
                         "and not start with '_'")
    return name


def partition_path(db: str, partition: str, rest: str = "") -> str:
    """``/db/_partition/<p>`` and ``rest``: a path of the database's own (from
    :func:`view_path`) moved into the partition."""
    base = db_path(db)
    if rest and not rest.startswith(base + "/"):
        raise ValueError(f"{rest!r} is not a path of database {db!r}")
    return (base + "/_partition/" + quote(validate_partition(partition), safe="")
            + rest[len(base):])


def partition_info(origin: Origin, db: str, partition: str) -> Request:
    return origin.request("GET", partition_path(db, partition))


def partition_view(origin: Origin, db: str, partition: str, name: str,
                   opts: Mapping[str, Any]) -> Request:
    """A partition's rows of view ``"ddoc/view"`` (or ``"_all_docs"``), streamed."""
    return rows_at(origin, partition_path(db, partition, view_path(db, name)), opts)


def partition_find(origin: Origin, db: str, partition: str, selector: Any,
                   opts: Mapping[str, Any]) -> Request:
    return mango_at(origin, partition_path(db, partition, db_path(db) + "/_find"), selector,
                    opts, stream=True)


def partition_explain(origin: Origin, db: str, partition: str, selector: Any,
                      opts: Mapping[str, Any]) -> Request:
    return mango_at(origin, partition_path(db, partition, db_path(db) + "/_explain"), selector,
                    opts, stream=False)


_METHOD = re.compile(r"[A-Z]+").fullmatch
# A path as it goes on the request line: printable ASCII with no space; the query goes apart.
_PATH = re.compile(r"/[!$&'()*+,\-./0-9:;=@A-Z_a-z~%]*").fullmatch


def endpoint(origin: Origin, method: str, path: str, query: Mapping[str, Any] | None = None,
             body: Any = None, headers: Mapping[str, str] | None = None) -> Request:
    """Any endpoint: ``path`` as it goes on the wire (quoted already, starting with ``/``),
    ``query`` encoded like every other call's (``key``... as JSON), ``body`` as in
    :func:`body_of` (JSON by default), ``headers`` added (a Content-Type there wins). Whether
    it may be sent twice follows the retry policy's rule for its method."""
    if not isinstance(method, str) or not _METHOD(method):
        raise ValueError(f"method must be an upper-case word like 'GET', got {method!r}")
    if not isinstance(path, str) or not _PATH(path):
        raise ValueError(f"path must start with '/' and be quoted already (no space, no '?': "
                         f"use query=), got {path!r}")
    if query is not None and not isinstance(query, Mapping):
        raise TypeError(f"query must be a dict, not {type(query).__name__}")
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict, not {type(headers).__name__}")
    extra = tuple((headers or {}).items())
    check_headers(extra)
    given_type = next((v for k, v in extra if k.lower() == "content-type"), None)
    data, content = body_of(body, given_type)
    if given_type is None:
        extra += content
    request = origin.request(method, path, query, headers=extra)
    return request if data is None else replace(request, body=data)


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
    if body:  # a read, safe to send twice
        return origin.request("POST", path, opts, encode_json(body), stream=True,
                              idempotent=True)
    return origin.request("GET", path, opts, stream=True)


def resume_feed(request: Request, since: Any, limit: int | None = None) -> Request:
    """A ``_changes`` (or ``_db_updates``) feed request made again from ``since`` (the last
    seq received; None: from where it started), and with ``limit`` (what is left of one)
    when given: the feed goes on where a broken connection left it. The other options, the
    order of the query and the body are kept."""
    parts = urlsplit(request.url)
    replaced = {name for name, value in (("since", since), ("limit", limit)) if value is not None}
    # The values kept are as they were sent: quoted again as they are, not re-encoded as
    # options (a "key" passed to a filter function would become JSON twice).
    kept = urlencode([(name, value) for name, value in parse_qsl(parts.query, True)
                      if name not in replaced], quote_via=quote)
    added = encode_query({"since": since, "limit": limit})[1:]
    query = "&".join(q for q in (kept, added) if q)
    return replace(request, url=urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")))


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
