"""What the fake answers, endpoint by endpoint, and the routing table that finds the endpoint.

Each handler takes ``(ctx, req, **path_params)`` and returns a :class:`Reply` (one JSON or byte
body, sent with Content-Length) or a :class:`Streamed` (chunks sent with chunked framing, the way
CouchDB streams rows and feeds). A handler raises :class:`~.errors.Refusal` for an error answer.

The routing table is :data:`.routes.ROUTES`: adding an endpoint is one function and one
line there.
"""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import mango
from .collation import string_key
from .couch import VERSION, FakeCouch, User
from .errors import Refusal, bad_request, conflict, not_found
from .store import Database, Doc, parse_seq, validate_doc_id
from .views import (ViewRow, builtin_reduce, map_docs, parse_options, reduce_rows, select,
                    ViewOptions)

__all__ = ["Request", "Reply", "Streamed", "Context"]


# -- the shapes handlers use ----------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    segments: list[str]
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    user: User = field(default_factory=User)

    def json(self) -> Any:
        if not self.body:
            raise bad_request("Request body must be a JSON object")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise bad_request("invalid UTF-8 JSON") from None

    def json_object(self) -> dict[str, Any]:
        value = self.json()
        if not isinstance(value, dict):
            raise bad_request("Request body must be a JSON object")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        raw = self.query.get(name)
        if raw is None:
            return default
        if raw not in ("true", "false"):
            raise bad_request(f"Invalid boolean parameter: {raw!r}", "query_parse_error")
        return raw == "true"

    def json_param(self, name: str) -> Any:
        raw = self.query.get(name)
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request(f"Invalid JSON in the {name} parameter", "query_parse_error") \
                from None

    def require_json_type(self) -> None:
        ctype = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise Refusal(415, "bad_content_type", "Content-Type must be application/json")


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # bytes are sent as they are; anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Streamed:
    status: int
    chunks: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    couch: FakeCouch
    #: ``await wait(db_name, seconds)``: True when the db changed within ``seconds``
    wait: Callable[[str, float], Awaitable[bool]]


Handler = Callable[..., "Reply | Streamed"]

# access levels
PUBLIC, SERVER_ADMIN, MEMBER, DB_ADMIN = "public", "server_admin", "member", "db_admin"


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# -- access ---------------------------------------------------------------------------------------


def check_access(couch: FakeCouch, user: User, level: str, db_name: str | None) -> None:
    if level == PUBLIC or user.is_admin:
        return
    if level == SERVER_ADMIN or db_name is None:
        raise Refusal(401, "unauthorized", "You are not a server admin.")
    db = couch.db(db_name)
    if _in(user, db.security.get("admins")):
        return
    if level == MEMBER and (_public(db) or _in(user, db.security.get("members"))):
        return
    if user.name is None:
        raise Refusal(401, "unauthorized", "You are not authorized to access this db.")
    if level == DB_ADMIN:
        raise Refusal(403, "forbidden", "You are not a db or server admin.")
    raise Refusal(403, "forbidden", "You are not allowed to access this db.")


def _in(user: User, group: Any) -> bool:
    if not isinstance(group, dict):
        return False
    return (user.name is not None and user.name in (group.get("names") or [])) or bool(
        set(user.roles) & set(group.get("roles") or []))


def _public(db: Database) -> bool:
    members = db.security.get("members") or {}
    return not (members.get("names") or members.get("roles"))


def is_db_admin(couch: FakeCouch, user: User, db_name: str) -> bool:
    return user.is_admin or _in(user, couch.db(db_name).security.get("admins"))


# -- server ---------------------------------------------------------------------------------------


def welcome(ctx: Context, req: Request) -> Reply:
    return Reply(body={
        "couchdb": "Welcome", "version": VERSION, "git_sha": "fake", "uuid": ctx.couch.uuid,
        "features": ["access-ready", "partitioned", "pluggable-storage-engines", "reshard",
                     "scheduler"],
        "vendor": {"name": "corduroy2.testing.FakeCouch"}})


def up(ctx: Context, req: Request) -> Reply:
    return Reply(body={"status": "ok", "seeds": {}})


def all_dbs(ctx: Context, req: Request) -> Reply:
    names = sorted(ctx.couch.dbs)
    rows = [ViewRow(n, n, None, (n, n)) for n in names]
    options = parse_options(req.query)
    _, picked = select(rows, options, _raw_key, _raw_key)
    picked = _page(picked, options)
    return Reply(body=[r.key for r in picked])


def dbs_info(ctx: Context, req: Request) -> Reply:
    if req.method == "GET":
        names = sorted(ctx.couch.dbs)
    else:
        keys = req.json_object().get("keys")
        if not isinstance(keys, list):
            raise bad_request("`keys` member must exist.")
        names = keys
    out = []
    for name in names:
        db = ctx.couch.dbs.get(name) if isinstance(name, str) else None
        out.append({"key": name, "info": db.info()} if db else {"key": name,
                                                                "error": "not_found"})
    return Reply(body=out)


def uuids(ctx: Context, req: Request) -> Reply:
    raw = req.query.get("count", "1")
    if not raw.isdigit():
        raise bad_request("Invalid count parameter")
    count = int(raw)
    if count > 1000:
        raise bad_request("count parameter too large")
    return Reply(body={"uuids": ctx.couch.uuids(count)},
                 headers={"Cache-Control": "must-revalidate, no-cache",
                          "Pragma": "no-cache"})


def membership(ctx: Context, req: Request) -> Reply:
    return Reply(body={"all_nodes": [ctx.couch.node.name],
                       "cluster_nodes": [ctx.couch.node.name]})


# -- sessions ---------------------------------------------------------------------------------------


def session_info(ctx: Context, req: Request) -> Reply:
    user = req.user
    info: dict[str, Any] = {"authentication_handlers": ["cookie", "default"]}
    if user.name is not None:
        info["authenticated"] = user.via or "default"
    return Reply(body={"ok": True, "userCtx": {"name": user.name, "roles": list(user.roles)},
                       "info": info})


def session_login(ctx: Context, req: Request) -> Reply:
    ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        form = dict(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace")))
    elif ctype == "application/json":
        form = req.json_object()
    else:
        raise Refusal(415, "bad_content_type",
                      "Content-Type must be application/x-www-form-urlencoded or "
                      "application/json")
    name, password = form.get("name", form.get("username")), form.get("password")
    user = None
    if isinstance(name, str) and isinstance(password, str):
        user = ctx.couch.authenticate(name, password)
    if user is None:
        raise Refusal(401, "unauthorized", "Name or password is incorrect.")
    cookie = ctx.couch.make_cookie(name)  # type: ignore[arg-type]
    return Reply(body={"ok": True, "name": user.name, "roles": list(user.roles)},
                 headers={"Set-Cookie": session_cookie(cookie, ctx.couch.session_timeout)})


def session_cookie(value: str, max_age: int) -> str:
    expires = time.strftime("%a, %d-%b-%Y %H:%M:%S GMT", time.gmtime(time.time() + max_age))
    return (f"AuthSession={value}; Version=1; Expires={expires}; Max-Age={max_age}; Path=/; "
            "HttpOnly")


def session_logout(ctx: Context, req: Request) -> Reply:
    return Reply(body={"ok": True}, headers={
        "Set-Cookie": "AuthSession=; Version=1; Expires=Thu, 01-Jan-1970 00:00:00 GMT; "
                      "Max-Age=0; Path=/; HttpOnly"})


# -- databases ----------------------------------------------------------------------------------


def db_info(ctx: Context, req: Request, db: str) -> Reply:
    return Reply(body=ctx.couch.db(db).info())


def create_db(ctx: Context, req: Request, db: str) -> Reply:
    options: dict[str, Any] = {}
    for name in ("q", "n"):
        if name in req.query:
            if not req.query[name].isdigit() or int(req.query[name]) < 1:
                raise bad_request(f"{name} must be a positive integer")
            options[name] = int(req.query[name])
    if req.flag("partitioned"):
        options["partitioned"] = True
    ctx.couch.create_db(db, **options)
    return Reply(201, {"ok": True}, {"Location": f"/{urllib.parse.quote(db, safe='')}"})


def delete_db(ctx: Context, req: Request, db: str) -> Reply:
    if "rev" in req.query:
        raise bad_request("You tried to DELETE a database with a ?=rev parameter. Did you mean "
                          "to DELETE a document instead?")
    ctx.couch.delete_db(db)
    return Reply(200, {"ok": True})


def security(ctx: Context, req: Request, db: str) -> Reply:
    return Reply(body=ctx.couch.db(db).security)


def set_security(ctx: Context, req: Request, db: str) -> Reply:
    body = req.json_object()
    for part in ("admins", "members"):
        group = body.get(part, {})
        if not isinstance(group, dict) or not all(
                isinstance(group.get(k, []), list) for k in ("names", "roles")):
            raise bad_request(f"{part} must be a JSON object with names and roles lists")
    ctx.couch.db(db).security = body
    return Reply(200, {"ok": True})


def revs_limit(ctx: Context, req: Request, db: str) -> Reply:
    return _db_setting(ctx.couch.db(db), req, "revs_limit")


def purged_infos_limit(ctx: Context, req: Request, db: str) -> Reply:
    return _db_setting(ctx.couch.db(db), req, "purged_infos_limit")


def _db_setting(database: Database, req: Request, name: str) -> Reply:
    if req.method == "GET":
        return Reply(body=getattr(database, name))
    value = req.json()
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request("Limit must be an integer greater than 0")
    setattr(database, name, value)
    return Reply(body={"ok": True})


def purge(ctx: Context, req: Request, db: str) -> Reply:
    req.require_json_type()
    database = ctx.couch.db(db)
    body = req.json_object()
    if len(body) > 100:
        raise bad_request("Exceeded maximum number of documents.")
    for doc_id, revs in body.items():
        if not isinstance(revs, list) or not all(isinstance(r, str) for r in revs):
            raise bad_request(f"Invalid revs list for {doc_id}")
    purged = {doc_id: database.purge(doc_id, revs) for doc_id, revs in body.items()}
    return Reply(201, {"purge_seq": None, "purged": purged})


def _shard_ranges(database: Database) -> list[tuple[int, int]]:
    q = int(database.options.get("q", 2))
    size = 2 ** 32 // q
    return [(i * size, 2 ** 32 - 1 if i == q - 1 else (i + 1) * size - 1) for i in range(q)]


def _range_name(lo: int, hi: int) -> str:
    return f"{lo:08x}-{hi:08x}"


def shards(ctx: Context, req: Request, db: str, doc_id: str | None = None) -> Reply:
    """One node holds every shard (``q`` of them, 2 unless the db was made with another);
    a doc's shard is found as CouchDB's mem3 does, by the CRC32 of its id (of its partition
    in a partitioned database)."""
    database = ctx.couch.db(db)
    nodes = [ctx.couch.node.name]
    ranges = _shard_ranges(database)
    if doc_id is None:
        return Reply(body={"shards": {_range_name(lo, hi): nodes for lo, hi in ranges}})
    key = doc_id.partition(":")[0] if database.partitioned and ":" in doc_id else doc_id
    point = zlib.crc32(key.encode())
    lo, hi = next((lo, hi) for lo, hi in ranges if lo <= point <= hi)
    return Reply(body={"range": _range_name(lo, hi), "nodes": nodes})


def sync_shards(ctx: Context, req: Request, db: str) -> Reply:
    ctx.couch.db(db)
    return Reply(202, {"ok": True})


def maintenance(ctx: Context, req: Request, db: str, **_: str) -> Reply:
    """``_compact``, ``_view_cleanup``, ``_ensure_full_commit``: nothing to do in memory."""
    req.require_json_type()
    ctx.couch.db(db)
    return Reply(202 if "_ensure_full_commit" not in req.path else 201,
                 {"ok": True} if "_ensure_full_commit" not in req.path else
                 {"ok": True, "instance_start_time": "0"})


# -- documents ----------------------------------------------------------------------------------


def _rev_of(req: Request) -> str | None:
    rev = req.query.get("rev")
    if rev is None:
        match = req.headers.get("if-match")
        if match:
            rev = match.strip('"')
    return rev


def _check_ddoc_write(ctx: Context, req: Request, db: str, doc_id: Any) -> None:
    if isinstance(doc_id, str) and doc_id.startswith("_design/") and not is_db_admin(
            ctx.couch, req.user, db):
        raise Refusal(403, "forbidden", "You are not a db or server admin.")


def get_doc(ctx: Context, req: Request, db: str, doc_id: str) -> Reply:
    database = ctx.couch.db(db)
    if doc_id.startswith("_local/"):
        return Reply(body=database.get_local(doc_id))
    validate_doc_id(doc_id)
    open_revs = req.query.get("open_revs")
    if open_revs is not None:
        return _open_revs(req, database, doc_id, open_revs)
    doc, revision = database.revision(doc_id, req.query.get("rev"))
    etag = f'"{revision.rev}"'
    if req.headers.get("if-none-match") == etag:
        return Reply(304, b"", {"ETag": etag})
    meta = req.flag("meta")
    body = doc.render(
        revision, conflicts=req.flag("conflicts") or meta, revs=req.flag("revs"),
        attachments=req.flag("attachments"),
        deleted_conflicts=req.flag("deleted_conflicts") or meta,
        revs_info=req.flag("revs_info") or meta, atts_since=req.json_param("atts_since"))
    if req.flag("local_seq") or meta:
        body["_local_seq"] = database.seq_string(doc.seq)
    return Reply(body=body, headers={"ETag": etag})


def _open_revs(req: Request, database: Database, doc_id: str, raw: str) -> Reply:
    doc = database.docs.get(doc_id)
    if raw == "all":
        if doc is None:
            raise not_found("missing")
        wanted = sorted(doc.leaves, key=lambda r: doc.revs[r].order, reverse=True)
    else:
        try:
            wanted = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("Invalid open_revs") from None
        if not isinstance(wanted, list):
            raise bad_request("Invalid open_revs")
    out: list[dict[str, Any]] = []
    for rev in wanted:
        revision = doc.revs.get(rev) if doc else None
        if revision is None or revision.body is None:
            out.append({"missing": rev})
        else:
            out.append({"ok": doc.render(revision, revs=req.flag("revs"),  # type: ignore[union-attr]
                                         attachments=req.flag("attachments"))})
    return Reply(body=out)


def put_doc(ctx: Context, req: Request, db: str, doc_id: str) -> Reply:
    database = ctx.couch.db(db)
    body = req.json_object()
    if "_id" in body and body["_id"] != doc_id:
        raise bad_request("Document id must match the URL")  # CouchDB: the URL wins
    body["_id"] = doc_id
    rev = _rev_of(req)
    if doc_id.startswith("_local/"):
        new_rev = database.put_local(doc_id, body, rev)
        return Reply(201, {"ok": True, "id": doc_id, "rev": new_rev})
    validate_doc_id(doc_id)
    _check_ddoc_write(ctx, req, db, doc_id)
    body = ctx.couch.prepare(db, body)
    if req.query.get("new_edits") == "false":
        database.replicate(body)
        return Reply(201, {"ok": True, "id": doc_id, "rev": body.get("_rev")})
    if req.query.get("batch") == "ok":
        try:
            database.save(body, rev)
        except Refusal:
            pass  # batch mode: CouchDB accepted the doc and drops what it cannot write
        return Reply(202, {"ok": True, "id": doc_id})
    new_rev = database.save(body, rev)
    return Reply(201, {"ok": True, "id": doc_id, "rev": new_rev},
                 {"ETag": f'"{new_rev}"', "Location": _location(db, doc_id)})


def _location(db: str, doc_id: str) -> str:
    return f"/{urllib.parse.quote(db, safe='')}/{urllib.parse.quote(doc_id, safe='/')}"


def post_doc(ctx: Context, req: Request, db: str) -> Reply:
    req.require_json_type()
    database = ctx.couch.db(db)
    body = req.json_object()
    if "_id" not in body:
        body["_id"] = ctx.couch.uuids(1)[0]
    doc_id = body["_id"]
    if isinstance(doc_id, str) and doc_id.startswith("_local/"):
        new_rev = database.put_local(doc_id, body, None)
        return Reply(201, {"ok": True, "id": doc_id, "rev": new_rev})
    _check_ddoc_write(ctx, req, db, doc_id)
    body = ctx.couch.prepare(db, body)
    if req.query.get("batch") == "ok":
        try:
            database.save(body)
        except Refusal:
            pass
        return Reply(202, {"ok": True, "id": doc_id})
    new_rev = database.save(body)
    return Reply(201, {"ok": True, "id": doc_id, "rev": new_rev},
                 {"ETag": f'"{new_rev}"', "Location": _location(db, doc_id)})


def delete_doc(ctx: Context, req: Request, db: str, doc_id: str) -> Reply:
    database = ctx.couch.db(db)
    rev = _rev_of(req)
    if doc_id.startswith("_local/"):
        database.get_local(doc_id)
        new_rev = database.put_local(doc_id, {"_deleted": True}, rev)
        return Reply(200, {"ok": True, "id": doc_id, "rev": new_rev})
    validate_doc_id(doc_id)
    database.live(doc_id)  # 404 first, as CouchDB checks
    _check_ddoc_write(ctx, req, db, doc_id)
    if rev is None:
        raise conflict()
    new_rev = database.save({"_id": doc_id, "_rev": rev, "_deleted": True})
    return Reply(200, {"ok": True, "id": doc_id, "rev": new_rev}, {"ETag": f'"{new_rev}"'})


def copy_doc(ctx: Context, req: Request, db: str, doc_id: str) -> Reply:
    database = ctx.couch.db(db)
    destination = req.headers.get("destination")
    if not destination:
        raise bad_request("Destination header is mandatory for COPY.")
    dest_id, _, dest_query = destination.partition("?")
    dest_rev = urllib.parse.parse_qs(dest_query).get("rev", [None])[0]
    doc, revision = database.revision(doc_id, req.query.get("rev"))
    body = {"_id": dest_id, **(revision.body or {})}
    if revision.attachments:
        body["_attachments"] = {name: att.inline() for name, att in revision.attachments.items()}
    _check_ddoc_write(ctx, req, db, dest_id)
    new_rev = database.save(body, dest_rev)
    return Reply(201, {"ok": True, "id": dest_id, "rev": new_rev}, {"ETag": f'"{new_rev}"'})


# -- attachments --------------------------------------------------------------------------------


def get_attachment(ctx: Context, req: Request, db: str, doc_id: str, name: str) -> Reply:
    database = ctx.couch.db(db)
    _, revision = database.revision(doc_id, req.query.get("rev"))
    att = revision.attachments.get(name)
    if att is None:
        raise not_found("Document is missing attachment")
    etag = f'"{att.digest[4:]}"'
    headers = {"Content-Type": att.content_type, "ETag": etag, "Accept-Ranges": "bytes"}
    if req.headers.get("if-none-match") == etag:
        return Reply(304, b"", headers)
    data = att.data
    ranged = req.headers.get("range")
    if ranged and ranged.startswith("bytes=") and "," not in ranged:
        first, _, last = ranged[6:].partition("-")
        try:
            if first == "":
                start, end = max(len(data) - int(last), 0), len(data) - 1
            else:
                start = int(first)
                end = min(int(last), len(data) - 1) if last else len(data) - 1
        except ValueError:
            start, end = 0, len(data) - 1
        if start >= len(data) or start > end:
            return Reply(416, {"error": "requested_range_not_satisfiable",
                               "reason": "Requested range not satisfiable"},
                         {"Content-Range": f"bytes */{len(data)}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return Reply(206, data[start:end + 1], headers)
    return Reply(200, data, headers)


def put_attachment(ctx: Context, req: Request, db: str, doc_id: str, name: str) -> Reply:
    database = ctx.couch.db(db)
    validate_doc_id(doc_id)
    _check_ddoc_write(ctx, req, db, doc_id)
    content_type = req.headers.get("content-type", "application/octet-stream")
    new_rev = database.put_attachment(doc_id, _rev_of(req), name, content_type, req.body)
    return Reply(201, {"ok": True, "id": doc_id, "rev": new_rev}, {"ETag": f'"{new_rev}"'})


def delete_attachment(ctx: Context, req: Request, db: str, doc_id: str, name: str) -> Reply:
    database = ctx.couch.db(db)
    _check_ddoc_write(ctx, req, db, doc_id)
    rev = _rev_of(req)
    if rev is None:
        raise conflict()
    new_rev = database.delete_attachment(doc_id, rev, name)
    return Reply(200, {"ok": True, "id": doc_id, "rev": new_rev})


def ddoc_attachment(handler: Handler) -> Handler:
    def on_ddoc(ctx: Context, req: Request, db: str, ddoc: str, name: str) -> Reply:
        return handler(ctx, req, db=db, doc_id="_design/" + ddoc, name=name)  # type: ignore
    return on_ddoc


def on_design(handler: Handler) -> Handler:
    def design(ctx: Context, req: Request, db: str, ddoc: str) -> Reply:
        return handler(ctx, req, db=db, doc_id="_design/" + ddoc)  # type: ignore
    return design


def on_local(handler: Handler) -> Handler:
    def local(ctx: Context, req: Request, db: str, local: str) -> Reply:
        return handler(ctx, req, db=db, doc_id="_local/" + local)  # type: ignore
    return local


# -- bulk -----------------------------------------------------------------------------------------


def bulk_docs(ctx: Context, req: Request, db: str) -> Reply:
    req.require_json_type()
    database = ctx.couch.db(db)
    body = req.json_object()
    docs = body.get("docs")
    if not isinstance(docs, list):
        raise bad_request("POST body must include `docs` parameter.")
    new_edits = body.get("new_edits", True)
    results: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise bad_request("Document must be a JSON object")
        if new_edits is False:
            _check_ddoc_write(ctx, req, db, doc.get("_id"))
            try:
                database.replicate(ctx.couch.prepare(db, doc))
            except Refusal as refusal:
                results.append({"id": doc.get("_id"), "rev": doc.get("_rev"),
                                "error": refusal.error, "reason": refusal.reason})
            continue
        doc = dict(doc)
        doc.setdefault("_id", ctx.couch.uuids(1)[0])
        doc_id = doc["_id"]
        try:
            _check_ddoc_write(ctx, req, db, doc_id)
            if isinstance(doc_id, str) and doc_id.startswith("_local/"):
                rev = database.put_local(doc_id, doc, None)
            else:
                rev = database.save(ctx.couch.prepare(db, doc))
            results.append({"ok": True, "id": doc_id, "rev": rev})
        except Refusal as refusal:
            results.append({"id": doc_id, "error": refusal.error, "reason": refusal.reason})
    return Reply(201, results)


def bulk_get(ctx: Context, req: Request, db: str) -> Reply:
    database = ctx.couch.db(db)
    docs = req.json_object().get("docs")
    if not isinstance(docs, list):
        raise bad_request("Missing JSON list of 'docs'.")
    revs, attachments = req.flag("revs"), req.flag("attachments")
    results = []
    for spec in docs:
        if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
            results.append({"id": None, "docs": [{"error": {
                "id": None, "rev": None, "error": "bad_request",
                "reason": "document id missed"}}]})
            continue
        doc_id, rev = spec["id"], spec.get("rev")
        doc = database.docs.get(doc_id)
        entry: dict[str, Any]
        if doc is None or (rev is None and doc.deleted and "rev" not in spec):
            reason = "deleted" if doc is not None else "missing"
            entry = {"error": {"id": doc_id, "rev": rev or "undefined", "error": "not_found",
                               "reason": reason}}
        elif rev is not None and (rev not in doc.revs or doc.revs[rev].body is None):
            entry = {"error": {"id": doc_id, "rev": rev, "error": "not_found",
                               "reason": "missing"}}
        else:
            revision = doc.revs[rev] if rev is not None else doc.winner
            entry = {"ok": doc.render(revision, revs=revs, attachments=attachments,
                                      atts_since=spec.get("atts_since"))}
        results.append({"id": doc_id, "docs": [entry]})
    return Reply(body={"results": results})


def revs_diff(ctx: Context, req: Request, db: str) -> Reply:
    database = ctx.couch.db(db)
    body = req.json_object()
    out: dict[str, Any] = {}
    for doc_id, revs in body.items():
        if not isinstance(revs, list):
            raise bad_request("Invalid revs list")
        doc = database.docs.get(doc_id)
        known = {r for r, v in doc.revs.items() if v.body is not None} if doc else set()
        missing = [r for r in revs if r not in known]
        if missing:
            entry: dict[str, Any] = {"missing": missing}
            newest = max((int(r.split("-", 1)[0]) for r in missing
                          if isinstance(r, str) and r.split("-", 1)[0].isdigit()), default=0)
            ancestors = sorted(r for r in doc.leaves if doc.revs[r].generation < newest) \
                if doc else []
            if ancestors:
                entry["possible_ancestors"] = ancestors
            out[doc_id] = entry
    if req.path.endswith("_missing_revs"):
        return Reply(body={"missing_revs": {k: v["missing"] for k, v in out.items()}})
    return Reply(body=out)


# -- rows: _all_docs, _design_docs, _local_docs, views ----------------------------------------


def _raw_key(value: Any) -> Any:
    return value if isinstance(value, str) else ""


def _page(rows: list[Any], options: ViewOptions) -> list[Any]:
    rows = rows[options.skip:]
    return rows if options.limit is None else rows[:options.limit]


def _view_body(req: Request) -> dict[str, Any] | None:
    if req.method != "POST":
        return None
    body = req.json_object()
    if "keys" in body and not isinstance(body["keys"], list):
        raise bad_request("`keys` member must be an array.", "query_parse_error")
    return body


@dataclass
class Rows:
    """A rows answer (``_all_docs``, a view...): streamed as CouchDB frames it, or as one JSON
    object (``.../queries``, list functions)."""

    rows: list[dict[str, Any]]
    total: int | None = None
    offset: int | None = None
    update_seq: str | None = None
    reduced: bool = False

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.reduced else {"total_rows": self.total,
                                                        "offset": self.offset}
        if self.update_seq is not None:
            out["update_seq"] = self.update_seq
        out["rows"] = self.rows
        return out

    def stream(self) -> Streamed:
        head = dumps({**self.body(), "rows": []})[:-3] + b"[\r\n"  # ...,"rows":[
        return Streamed(200, _framed(head, self.rows, b"\r\n]}", b"\n"))


def _query_options(req: Request) -> ViewOptions:
    return parse_options(req.query, _view_body(req))


def all_docs(ctx: Context, req: Request, db: str, partition: str | None = None) -> Streamed:
    if partition is not None:
        prefix = _partitioned(ctx, db, partition) + ":"
        return docs_result(ctx.couch.db(db), _query_options(req),
                           lambda doc_id: doc_id.startswith(prefix)).stream()
    return docs_result(ctx.couch.db(db), _query_options(req), _not_local).stream()


def design_docs(ctx: Context, req: Request, db: str) -> Streamed:
    return docs_result(ctx.couch.db(db), _query_options(req), _is_design).stream()


def _not_local(doc_id: str) -> bool:
    return not doc_id.startswith("_local/")


def _is_design(doc_id: str) -> bool:
    return doc_id.startswith("_design/")


def docs_result(database: Database, options: ViewOptions,
                wanted: Callable[[str], bool]) -> Rows:
    """``_all_docs``'s rows (or ``_design_docs``'s: ``wanted`` picks the ids)."""
    docs = sorted((d for d in database.docs.values() if not d.deleted and wanted(d.id)),
                  key=lambda d: d.id)
    total = len(docs)
    render = _doc_renderer(options)
    if options.keys is not None:
        rows: list[dict[str, Any]] = []
        for key in options.keys:
            doc = database.docs.get(key) if isinstance(key, str) and wanted(key) else None
            if doc is None:
                rows.append({"key": key, "error": "not_found"})
            elif doc.deleted:
                row: dict[str, Any] = {"id": key, "key": key, "value": {
                    "rev": doc.winner.rev, "deleted": True}}
                if options.include_docs:
                    row["doc"] = None
                rows.append(row)
            else:
                row = {"id": key, "key": key, "value": {"rev": doc.winner.rev}}
                if options.include_docs:
                    row["doc"] = render(doc)
                rows.append(row)
        return Rows(_page(rows, options), total, None, _seq(database, options))
    view_rows = [ViewRow(d.id, d.id, d, (d.id, d.id)) for d in docs]
    offset, picked = select(view_rows, options, _raw_key, _raw_key)
    offset += options.skip
    out = []
    for r in _page(picked, options):
        doc = r.value
        row = {"id": doc.id, "key": doc.id, "value": {"rev": doc.winner.rev}}
        if options.include_docs:
            row["doc"] = render(doc)
        out.append(row)
    return Rows(out, total, min(offset, total), _seq(database, options))


def local_docs(ctx: Context, req: Request, db: str) -> Streamed:
    database = ctx.couch.db(db)
    options = _query_options(req)
    docs = sorted(database.local.items())
    rows = [ViewRow(i, i, d, (i, i)) for i, d in docs]
    if options.keys is not None:
        picked = [r for key in options.keys for r in rows if r.id == key]
    else:
        _, picked = select(rows, options, _raw_key, _raw_key)
    out = []
    for r in _page(picked, options):
        row: dict[str, Any] = {"id": r.id, "key": r.id, "value": {"rev": r.value["_rev"]}}
        if options.include_docs:
            row["doc"] = database.get_local(r.id)
        out.append(row)
    return Rows(out).stream()


def _doc_renderer(options: ViewOptions) -> Callable[[Doc], dict[str, Any]]:
    def render(doc: Doc) -> dict[str, Any]:
        return doc.render(doc.winner, conflicts=options.conflicts,
                          attachments=options.attachments)
    return render


def _seq(database: Database, options: ViewOptions) -> str | None:
    return database.update_seq if options.update_seq else None


def view(ctx: Context, req: Request, db: str, ddoc: str, view: str,
         partition: str | None = None) -> Streamed:
    if partition is not None:
        _partitioned(ctx, db, partition)
    return view_result(ctx, ctx.couch.db(db), ddoc, view, _query_options(req),
                       partition).stream()


# -- partitions -----------------------------------------------------------------------------------


def _partitioned(ctx: Context, db: str, partition: str) -> str:
    """``partition``, when ``db`` is partitioned and the name is a partition's."""
    if not ctx.couch.db(db).partitioned:
        raise bad_request("database is not partitioned")
    if not partition or partition.startswith("_"):
        raise bad_request("Partition must not start with an underscore")
    return partition


def partition_info(ctx: Context, req: Request, db: str, partition: str) -> Reply:
    prefix = _partitioned(ctx, db, partition) + ":"
    docs = [d for d in ctx.couch.db(db).docs.values() if d.id.startswith(prefix)]
    live = [d for d in docs if not d.deleted]
    size = sum(len(dumps(d.winner.body)) for d in live)
    return Reply(body={"db_name": db, "sizes": {"active": size, "external": size},
                       "partition": partition, "doc_count": len(live),
                       "doc_del_count": len(docs) - len(live)})


def view_result(ctx: Context, database: Database, ddoc: str, view: str,
                options: ViewOptions, partition: str | None = None) -> Rows:
    """View ``ddoc/view``'s answer to ``options`` (within ``partition`` if given)."""
    design = database.docs.get("_design/" + ddoc)
    if design is None or design.deleted:
        raise not_found("missing")
    ddoc_body = design.winner.body or {}
    spec = (ddoc_body.get("views") or {}).get(view)
    if not isinstance(spec, dict) or "map" not in spec:
        raise not_found("missing_named_view")
    partitioned = database.partitioned and (ddoc_body.get("options") or {}).get(
        "partitioned", True) is not False
    if partition is None and partitioned:
        raise bad_request("`partition` parameter is mandatory for queries to this view.",
                          "query_parse_error")
    if partition is not None and not partitioned:
        raise bad_request("`partition` parameter is not supported in this design doc",
                          "query_parse_error")
    reduce_source = spec.get("reduce")
    reducing = reduce_source is not None and options.reduce is not False
    if reduce_source is None and options.reduce:
        raise bad_request("Reduce is invalid for map-only views.", "query_parse_error")
    if reducing and options.include_docs:
        raise bad_request("`include_docs` is invalid for reduce", "query_parse_error")
    if not reducing and (options.group or options.group_level is not None) \
            and reduce_source is None:
        raise bad_request("Invalid use of grouping on a map view.", "query_parse_error")
    if reducing and options.keys is not None and not (options.group or options.group_level):
        raise bad_request("Multi-key fetches for reduce views must use `group=true`",
                          "query_parse_error")
    rows = _index_rows(ctx, database, design, view, spec)
    if partition is not None:
        prefix = partition + ":"
        rows = [r for r in rows if r.id.startswith(prefix)]
    offset, picked = select(rows, options, _collate_key, string_key)
    if reducing:
        if isinstance(reduce_source, str) and reduce_source.startswith("_"):
            reducer = builtin_reduce(reduce_source)
        else:
            reducer = ctx.couch.functions.lookup(reduce_source, "reduce function")
        if options.keys is not None:
            reduced: list[dict[str, Any]] = []
            for key in options.keys:
                wanted = _collate_key(key)
                reduced.extend(reduce_rows([r for r in rows if r.order[0] == wanted],
                                           reducer, options))
        else:
            reduced = reduce_rows(picked, reducer, options)
        return Rows(_page(reduced, options), update_seq=_seq(database, options), reduced=True)
    out = []
    for r in _page(picked, options):
        row = {"id": r.id, "key": r.key, "value": r.value}
        if options.include_docs:
            linked = r.value.get("_id") if isinstance(r.value, dict) else None
            target = database.docs.get(linked if isinstance(linked, str) else r.id)
            row["doc"] = (None if target is None or target.deleted else
                          _doc_renderer(options)(target))
        out.append(row)
    offset = 0 if options.keys is not None else offset + options.skip
    return Rows(out, len(rows), min(offset, len(rows)), _seq(database, options))


def view_queries(ctx: Context, req: Request, db: str, ddoc: str | None = None,
                 view: str | None = None) -> Reply:
    """``POST .../_view/v/queries`` (and ``_all_docs/queries``): one result per query."""
    database = ctx.couch.db(db)
    queries = req.json_object().get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
        raise bad_request("`queries` member must be an array of objects", "query_parse_error")
    results = []
    for query in queries:
        options = parse_options({}, query)
        if ddoc is None or view is None:
            results.append(docs_result(database, options, _not_local).body())
        else:
            results.append(view_result(ctx, database, ddoc, view, options).body())
    return Reply(body={"results": results})


def _collate_key(value: Any) -> Any:
    from .collation import sort_key
    return sort_key(value)


def _index_rows(ctx: Context, database: Database, design: Doc, name: str,
                spec: dict[str, Any]) -> list[ViewRow]:
    """The view's rows, built on the first query after a change (like CouchDB's index)."""
    cache_key = (design.id, design.winner.rev, name)
    cached = database.view_cache.get(cache_key)
    if cached is not None and cached[0] == database.seq:
        return cached[1]  # type: ignore[no-any-return]
    body = design.winner.body or {}
    source = spec["map"]
    if body.get("language") == "query" and isinstance(source, dict):
        fields = list((source.get("fields") or {}).keys())
        map_fn = _mango_map(fields)
    else:
        map_fn = ctx.couch.functions.lookup(source, "map function")
    include_design = bool((body.get("options") or {}).get("include_design"))
    docs = ((d.id, d.render(d.winner)) for d in database.docs.values()
            if not d.deleted and (include_design or not d.id.startswith("_design/")))
    rows = map_docs(docs, map_fn)
    database.view_cache[cache_key] = (database.seq, rows)
    return rows


def _mango_map(fields: list[str]) -> Callable[..., None]:
    def map_fn(doc: dict[str, Any], emit: Callable[[Any, Any], None]) -> None:
        values = [mango.get_field(doc, f) for f in fields]
        if all(v is not mango.MISSING for v in values):
            emit(values, None)
    return map_fn


def design_info(ctx: Context, req: Request, db: str, ddoc: str) -> Reply:
    database = ctx.couch.db(db)
    design = database.docs.get("_design/" + ddoc)
    if design is None or design.deleted:
        raise not_found("missing")
    body = design.winner.body or {}
    signature = hashlib.md5(dumps(body.get("views") or {})).hexdigest()
    return Reply(body={"name": ddoc, "view_index": {
        "signature": signature, "language": body.get("language", "javascript"),
        "sizes": {"file": 0, "external": 0, "active": 0}, "update_seq": database.seq,
        "purge_seq": 0, "updater_running": False, "compact_running": False,
        "waiting_commit": False, "waiting_clients": 0,
        "updates_pending": {"minimum": 0, "preferred": 0, "total": 0},
        "collator_versions": ["153.112"]}})


async def _framed(head: bytes, items: list[Any], tail: bytes,
                  *more: bytes) -> AsyncIterator[bytes]:
    """CouchDB's row framing: the head, items separated by ``,\\r\\n``, the tail. Items go
    out batched into chunks of about 16 KiB (CouchDB sends one per row; the bytes match)."""
    chunk = bytearray(head)
    for i, item in enumerate(items):
        if i:
            chunk += b",\r\n"
        chunk += dumps(item)
        if len(chunk) >= 16384:
            yield bytes(chunk)
            chunk = bytearray()
    chunk += tail
    yield bytes(chunk)
    for piece in more:
        yield piece


# -- mango ----------------------------------------------------------------------------------------


def _indexes(database: Database) -> list[mango.Index]:
    out = []
    for doc in database.docs.values():
        body = doc.winner.body or {}
        if doc.deleted or not doc.id.startswith("_design/") or body.get("language") != "query":
            continue
        for name, spec in (body.get("views") or {}).items():
            mapping = spec.get("map") if isinstance(spec, dict) else None
            if isinstance(mapping, dict):
                fields = tuple((mapping.get("fields") or {}).keys())
                partial = mapping.get("partial_filter_selector") or None
                out.append(mango.Index(doc.id, name, "json", fields, partial))
    return sorted(out, key=lambda ix: (ix.ddoc or "", ix.name))


@dataclass
class _FindQuery:
    selector: mango.Selector
    limit: int
    skip: int
    sort_fields: list[str]
    descending: bool
    fields: list[str] | None
    bookmark: int
    conflicts: bool
    execution_stats: bool
    use_index: Any
    raw: dict[str, Any]


def _find_query(body: dict[str, Any]) -> _FindQuery:
    if "selector" not in body:
        raise bad_request("Missing required key: selector", "missing_required_key")
    selector = mango.Selector(body["selector"])
    limit = body.get("limit", 25)
    skip = body.get("skip", 0)
    for name, value in (("limit", limit), ("skip", skip)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad_request(f"Invalid value for {name}", "invalid_argument")
    fields = body.get("fields")
    if fields is not None and (not isinstance(fields, list)
                               or not all(isinstance(f, str) for f in fields)):
        raise bad_request("fields must be an array of strings", "invalid_field_json")
    sort_fields, descending = mango.parse_sort(body.get("sort"))
    bookmark = _read_bookmark(body.get("bookmark"))
    return _FindQuery(selector, limit, skip, sort_fields, descending, fields or None,
                      bookmark, bool(body.get("conflicts")), bool(body.get("execution_stats")),
                      body.get("use_index"), body)


def _read_bookmark(raw: Any) -> int:
    if raw in (None, "nil"):
        return 0
    if not isinstance(raw, str):
        raise bad_request("Invalid bookmark value", "invalid_bookmark")
    try:
        value = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return int(value["o"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise bad_request(f"Invalid bookmark value: {raw}", "invalid_bookmark") from None


def _bookmark(position: int) -> str:
    return base64.urlsafe_b64encode(dumps({"o": position})).decode().rstrip("=")


def find(ctx: Context, req: Request, db: str, partition: str | None = None) -> Streamed:
    req.require_json_type()
    database = ctx.couch.db(db)
    prefix = "" if partition is None else _partitioned(ctx, db, partition) + ":"
    query = _find_query(req.json_object())
    started = time.monotonic()
    index, warning = mango.choose_index(_indexes(database), query.selector, query.sort_fields,
                                        query.use_index)
    candidates = [d for d in database.docs.values()
                  if not d.deleted and not d.id.startswith("_design/") and d.id.startswith(prefix)]
    examined = len(candidates)
    rendered = [d.render(d.winner, conflicts=query.conflicts) for d in candidates]
    if index is not mango.ALL_DOCS:
        rendered = [d for d in rendered if mango.has_fields(d, index)]
        if index.partial:
            partial = mango.Selector(index.partial)
            rendered = [d for d in rendered if partial.match(d)]
    matched = [d for d in rendered if query.selector.match(d)]
    ordered = mango.order_docs(matched, index, query.sort_fields, query.descending)
    start = query.bookmark + query.skip
    page = ordered[start:start + query.limit]
    docs = [mango.project(d, query.fields) for d in page]
    tail = b"\r\n]\r\n,\r\n" + b'"bookmark": ' + dumps(_bookmark(start + len(page)))
    if query.execution_stats:
        stats = {"total_keys_examined": 0 if index is mango.ALL_DOCS else examined,
                 "total_docs_examined": examined, "total_quorum_docs_examined": 0,
                 "results_returned": len(docs),
                 "execution_time_ms": round((time.monotonic() - started) * 1000, 3)}
        tail += b',\r\n"execution_stats": ' + dumps(stats)
    if warning:
        tail += b',\r\n"warning": ' + dumps(warning)
    return Streamed(200, _framed(b'{"docs":[\r\n', docs, tail + b"}\r\n"))


def explain(ctx: Context, req: Request, db: str, partition: str | None = None) -> Reply:
    req.require_json_type()
    database = ctx.couch.db(db)
    if partition is not None:
        _partitioned(ctx, db, partition)
    query = _find_query(req.json_object())
    index, _ = mango.choose_index(_indexes(database), query.selector, query.sort_fields,
                                  query.use_index)
    return Reply(body={
        "dbname": db, "index": index.describe(), "partitioned": database.partitioned,
        "selector": query.raw["selector"],
        "opts": {"use_index": [], "bookmark": "nil", "partition": partition or "",
                 "limit": query.limit, "skip": query.skip,
                 "sort": {}, "fields": query.fields or "all_fields", "r": [49],
                 "conflicts": query.conflicts, "execution_stats": query.execution_stats},
        "limit": query.limit, "skip": query.skip, "fields": query.fields or "all_fields",
        "covering": False,
        "mrargs": {"include_docs": True, "view_type": "map", "reduce": False,
                   "direction": "rev" if query.descending else "fwd", "stable": False,
                   "update": True, "conflicts": "undefined"}})


def list_indexes(ctx: Context, req: Request, db: str) -> Reply:
    indexes = [mango.ALL_DOCS, *_indexes(ctx.couch.db(db))]
    return Reply(body={"total_rows": len(indexes), "indexes": [ix.describe() for ix in indexes]})


def create_index(ctx: Context, req: Request, db: str) -> Reply:
    req.require_json_type()
    database = ctx.couch.db(db)
    body = req.json_object()
    index = body.get("index")
    if not isinstance(index, dict) or not isinstance(index.get("fields"), list) \
            or not index["fields"]:
        raise bad_request("Missing required key: index", "missing_required_key")
    if body.get("type", "json") != "json":
        raise bad_request("The fake serves json indexes only", "invalid_index_type")
    fields: dict[str, str] = {}
    for item in index["fields"]:
        if isinstance(item, str):
            fields[item] = "asc"
        elif isinstance(item, dict) and len(item) == 1:
            (name, direction), = item.items()
            fields[name] = direction
        else:
            raise bad_request("Invalid index fields", "invalid_index_fields")
    definition = {"fields": fields, "partial_filter_selector":
                  index.get("partial_filter_selector") or {}}
    digest = hashlib.sha1(dumps(definition)).hexdigest()
    ddoc = body.get("ddoc") or digest
    ddoc_id = ddoc if ddoc.startswith("_design/") else "_design/" + ddoc
    name = body.get("name") or digest
    if not isinstance(name, str) or not isinstance(ddoc_id, str):
        raise bad_request("ddoc and name must be strings")
    existing = database.docs.get(ddoc_id)
    design: dict[str, Any] = {"_id": ddoc_id, "language": "query", "views": {}}
    if existing is not None and not existing.deleted:
        design = {"_id": ddoc_id, "_rev": existing.winner.rev, **(existing.winner.body or {})}
        design.setdefault("views", {})
        current = design["views"].get(name)
        if isinstance(current, dict) and current.get("map") == definition:
            return Reply(200, {"result": "exists", "id": ddoc_id, "name": name})
    design["views"] = {**design["views"], name: {
        "map": definition, "reduce": "_count",
        "options": {"def": {"fields": index["fields"]}}}}
    database.save(design)
    return Reply(200, {"result": "created", "id": ddoc_id, "name": name})


def delete_index(ctx: Context, req: Request, db: str, ddoc: str, kind: str,
                 name: str) -> Reply:
    database = ctx.couch.db(db)
    ddoc_id = ddoc if ddoc.startswith("_design/") else "_design/" + ddoc
    existing = database.docs.get(ddoc_id)
    views = ((existing.winner.body or {}).get("views") or {}) if existing else {}
    if existing is None or existing.deleted or name not in views:
        raise not_found("Index not found")
    body = {"_id": ddoc_id, "_rev": existing.winner.rev, **(existing.winner.body or {})}
    body["views"] = {k: v for k, v in views.items() if k != name}
    if not body["views"]:
        body = {"_id": ddoc_id, "_rev": existing.winner.rev, "_deleted": True}
    database.save(body)
    return Reply(200, {"ok": True})


def delete_index_split(ctx: Context, req: Request, db: str, ddoc: str, kind: str,
                       name: str) -> Reply:
    """``DELETE /db/_index/_design/<ddoc>/json/<name>`` with the slash not quoted."""
    return delete_index(ctx, req, db, "_design/" + ddoc, kind, name)


# -- changes --------------------------------------------------------------------------------------


@dataclass
class _ChangesQuery:
    feed: str
    since: int
    limit: int | None
    descending: bool
    include_docs: bool
    conflicts: bool
    attachments: bool
    all_leaves: bool
    keep: Callable[[Doc], bool]
    heartbeat: float | None
    timeout: float | None
    #: how a change is shown (``_db_updates`` shows its own rows), and whether the feed's end
    #: tells ``pending``
    row: Callable[[Database, Doc, _ChangesQuery], dict[str, Any]] = \
        lambda database, doc, query: _change_row(database, doc, query)
    pending: bool = True


def _changes_query(ctx: Context, req: Request, database: Database) -> _ChangesQuery:
    body = req.json_object() if req.method == "POST" and req.body else {}
    feed = req.query.get("feed", "normal")
    if feed not in ("normal", "longpoll", "continuous", "eventsource"):
        raise bad_request(f"Invalid feed: {feed!r}", "bad_request")
    since_raw: Any = req.query.get("since", "0")
    if feed == "eventsource" and req.headers.get("last-event-id"):
        since_raw = req.headers["last-event-id"].strip('"')
    if since_raw.isdigit():
        since_raw = int(since_raw)
    since = parse_seq(since_raw)
    limit = None
    if "limit" in req.query:
        raw = req.query["limit"]
        if not raw.isdigit():
            raise bad_request("Invalid limit value", "query_parse_error")
        limit = int(raw)
    heartbeat = _millis(req.query.get("heartbeat"), "heartbeat")
    timeout = _millis(req.query.get("timeout"), "timeout")
    descending = req.flag("descending")
    if since is None:
        since = database.seq
    return _ChangesQuery(
        feed, since, limit, descending, req.flag("include_docs"), req.flag("conflicts"),
        req.flag("attachments"), req.query.get("style") == "all_docs",
        _changes_filter(ctx, req, database, body), heartbeat, timeout)


def _millis(raw: str | None, name: str) -> float | None:
    if raw is None:
        return None
    if raw == "true" and name == "heartbeat":
        return 60.0
    if not raw.isdigit():
        raise bad_request(f"Invalid {name} value", "query_parse_error")
    return int(raw) / 1000


def _changes_filter(ctx: Context, req: Request, database: Database,
                    body: dict[str, Any]) -> Callable[[Doc], bool]:
    name = req.query.get("filter")
    if name is None:
        return lambda doc: True
    if name == "_doc_ids":
        ids = body.get("doc_ids") if "doc_ids" in body else req.json_param("doc_ids")
        if not isinstance(ids, list):
            raise bad_request("`doc_ids` filter parameter is not a list of doc ids.")
        wanted = set(ids)
        return lambda doc: doc.id in wanted
    if name == "_selector":
        if "selector" not in body:
            raise bad_request("Selector must be specified in POST payload")
        selector = mango.Selector(body["selector"])
        return lambda doc: selector.match(doc.render(doc.winner))
    if name == "_design":
        return lambda doc: doc.id.startswith("_design/")
    ddoc_name, _, fn_name = name.partition("/")
    if name == "_view":
        ddoc_name, _, fn_name = req.query.get("view", "").partition("/")
        if not ddoc_name or not fn_name:
            raise bad_request("`view` filter parameter is not provided.")
    elif not ddoc_name or not fn_name:
        raise bad_request("`filter` parameter is not correct.")
    design = database.docs.get("_design/" + ddoc_name)
    if design is None or design.deleted:
        raise not_found("missing")
    ddoc_body = design.winner.body or {}
    if name == "_view":
        spec = (ddoc_body.get("views") or {}).get(fn_name)
        if not isinstance(spec, dict) or "map" not in spec:
            raise not_found("missing_named_view")
        map_fn = ctx.couch.functions.lookup(spec["map"], "map function")

        def emits(doc: Doc) -> bool:
            return not doc.deleted and bool(map_docs([(doc.id, doc.render(doc.winner))],
                                                     map_fn))
        return emits
    source = (ddoc_body.get("filters") or {}).get(fn_name)
    if source is None:
        raise not_found(f"missing json key: {fn_name}")
    filter_fn = ctx.couch.functions.lookup(source, "filter function")
    request_object = {"query": dict(req.query), "method": req.method, "headers": req.headers,
                      "userCtx": {"db": database.name, "name": req.user.name,
                                  "roles": list(req.user.roles)}, "body": "undefined"}

    def passes(doc: Doc) -> bool:
        try:
            return bool(filter_fn(doc.render(doc.winner), request_object))
        except Exception:
            return False
    return passes


def _change_row(database: Database, doc: Doc, query: _ChangesQuery) -> dict[str, Any]:
    winner = doc.winner
    revs = [winner.rev]
    if query.all_leaves:
        others = sorted((doc.revs[r] for r in doc.leaves if r != winner.rev),
                        key=lambda r: r.order, reverse=True)
        revs += [r.rev for r in others]
    row: dict[str, Any] = {"seq": database.seq_string(doc.seq), "id": doc.id,
                           "changes": [{"rev": r} for r in revs]}
    if winner.deleted:
        row["deleted"] = True
    if query.include_docs:
        row["doc"] = doc.render(winner, conflicts=query.conflicts,
                                attachments=query.attachments)
    return row


def _pending_changes(database: Database, query: _ChangesQuery, since: int,
                     limit: int | None) -> tuple[list[dict[str, Any]], int, int]:
    """(rows, the seq scanned up to, how many changes remain after it)."""
    docs = list(database.changed_since(0 if query.descending else since))
    if query.descending:
        docs.reverse()
    rows: list[dict[str, Any]] = []
    scanned = since if not query.descending else database.seq
    for doc in docs:
        if limit is not None and len(rows) >= limit:
            break
        scanned = doc.seq
        if query.keep(doc):
            rows.append(query.row(database, doc, query))
    if limit is None or len(rows) < limit:
        scanned = database.seq if not query.descending else scanned
    pending = sum(1 for s in database.by_seq if s > scanned) if not query.descending else 0
    return rows, scanned, pending


def changes(ctx: Context, req: Request, db: str) -> Streamed:
    database = ctx.couch.db(db)
    query = _changes_query(ctx, req, database)
    return _changes_feed(ctx, database, query)


def _changes_feed(ctx: Context, database: Database, query: _ChangesQuery) -> Streamed:
    if query.feed in ("normal", "longpoll"):
        rows, scanned, pending = _pending_changes(database, query, query.since, query.limit)
        if query.feed == "normal" or rows:
            return Streamed(200, _normal_feed(database, rows, scanned,
                                              pending if query.pending else None))
        return Streamed(200, _longpoll(ctx, database, query))
    if query.feed == "continuous":
        return Streamed(200, _continuous(ctx, database, query))
    return Streamed(200, _continuous(ctx, database, query, eventsource=True),
                    {"Content-Type": "text/event-stream"})


async def _normal_feed(database: Database, rows: list[dict[str, Any]], scanned: int,
                       pending: int | None) -> AsyncIterator[bytes]:
    tail = b'\n],\n"last_seq":' + dumps(database.seq_string(scanned))
    if pending is not None:
        tail += b',"pending":' + dumps(pending)
    tail += b"}\n"
    async for chunk in _framed(b'{"results":[\n', rows, tail):
        yield chunk


async def _longpoll(ctx: Context, database: Database,
                    query: _ChangesQuery) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + (query.timeout if query.timeout is not None else 60.0)
    since = query.since
    while True:
        remaining = deadline - time.monotonic()
        changed = remaining > 0 and await ctx.wait(database.name, remaining)
        with ctx.couch.lock:
            gone = ctx.couch.dbs.get(database.name) is not database
            rows, scanned, pending = _pending_changes(database, query, since, query.limit)
        if rows or not changed or gone:
            async for chunk in _normal_feed(database, rows, scanned,
                                            pending if query.pending else None):
                yield chunk
            return


async def _continuous(ctx: Context, database: Database, query: _ChangesQuery,
                      eventsource: bool = False) -> AsyncIterator[bytes]:
    since, sent = query.since, 0
    # A quiet feed ends after `timeout` (couchdb3.md: "with timeout or limit the feed ends");
    # heartbeats alone keep it open for good; neither: CouchDB's default changes_timeout.
    timeout = query.timeout if query.timeout is not None else (
        None if query.heartbeat is not None else 60.0)
    quiet_since = time.monotonic()

    def line(row: dict[str, Any]) -> bytes:
        if eventsource:
            return b"data: " + dumps(row) + b"\nid: " + dumps(row["seq"]) + b"\n\n"
        return dumps(row) + b"\n"

    def end_line(scanned: int, pending: int) -> bytes:
        last: dict[str, Any] = {"last_seq": database.seq_string(scanned)}
        if query.pending:
            last["pending"] = pending
        if eventsource:
            return b"event: end\ndata: " + dumps(last) + b"\n\n"
        return dumps(last) + b"\n"

    while True:
        with ctx.couch.lock:
            if ctx.couch.dbs.get(database.name) is not database:
                return  # the database was deleted: CouchDB ends the feed
            left = None if query.limit is None else query.limit - sent
            rows, scanned, pending = _pending_changes(database, query, since, left)
        if rows:
            quiet_since = time.monotonic()
            yield b"".join(line(row) for row in rows)
            sent += len(rows)
        since = scanned
        if query.limit is not None and sent >= query.limit:
            yield end_line(scanned, pending)
            return
        if query.descending:
            yield end_line(scanned, pending)
            return
        left_quiet = quiet_since + timeout - time.monotonic() if timeout is not None else None
        waits = [w for w in (query.heartbeat, left_quiet) if w is not None]
        wait_for = min(waits) if waits else 60.0
        if wait_for > 0 and await ctx.wait(database.name, wait_for):
            continue
        if left_quiet is not None and left_quiet <= wait_for:
            with ctx.couch.lock:
                _, _, pending = _pending_changes(database, query, since, 0)
            yield end_line(since, pending)
            return
        yield b"\n"
