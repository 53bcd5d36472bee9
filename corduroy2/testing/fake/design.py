"""Show, list and update functions: design-doc functions whose answer is a whole response.

Like map functions, each JavaScript source is looked up in the fake's function table and a
Python callable runs instead:

* show: ``fn(doc, req)`` (``doc`` None without a doc id or when the doc is missing);
* list: ``fn(head, req, get_row, send, start)``; ``get_row()`` gives the next view row (None
  at the end), ``send(text)`` adds to the body, ``start({"headers", "code"})`` sets them;
* update: ``fn(doc, req)`` returns ``[doc_to_save_or_None, response]``.

``req`` is CouchDB's request object (``query``, ``headers``, ``body`` — ``"undefined"`` when
none was sent —, ``id``, ``uuid``, ``method``, ``path``, ``userCtx``, ``info``...). A response
is a string (HTML, as CouchDB sends it) or ``{"body" | "json" | "base64", "headers", "code"}``.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import orjson

from .endpoints import (Context, Reply, Request, Streamed, _check_ddoc_write, _view_body, dumps,
                        view_result)
from .errors import Refusal, bad_request, not_found
from .store import Database, Doc
from .views import parse_options

__all__ = ["show", "list_view", "update"]

_HTML = "text/html; charset=utf-8"


def _function(ctx: Context, database: Database, ddoc: str, kind: str, name: str) -> Any:
    design = database.docs.get("_design/" + ddoc)
    if design is None or design.deleted:
        raise not_found("missing")
    source = ((design.winner.body or {}).get(kind) or {}).get(name)
    if source is None:
        raise not_found(f"missing {kind[:-1]} function {name} on design doc _design/{ddoc}")
    return ctx.couch.functions.lookup(source, f"{kind[:-1]} function")


def _req(ctx: Context, req: Request, database: Database, doc_id: str | None) -> dict[str, Any]:
    form: dict[str, str] = {}
    if req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = dict(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace")))
    return {
        "info": database.info(), "id": doc_id, "uuid": ctx.couch.uuids(1)[0],
        "method": req.method, "requested_path": req.segments, "path": req.segments,
        "raw_path": req.path + ("?" + urllib.parse.urlencode(req.query) if req.query else ""),
        "query": dict(req.query),
        "headers": {"-".join(p.capitalize() for p in k.split("-")): v
                    for k, v in req.headers.items()},
        "body": req.body.decode("utf-8", "replace") if req.body else "undefined",
        "peer": "127.0.0.1", "form": form, "cookie": {},
        "userCtx": {"db": database.name, "name": req.user.name, "roles": list(req.user.roles)},
        "secObj": database.security,
    }


def _doc(database: Database, doc_id: str | None) -> dict[str, Any] | None:
    found: Doc | None = database.docs.get(doc_id) if doc_id is not None else None
    if found is None or found.deleted:
        return None
    copy: dict[str, Any] = orjson.loads(dumps(found.render(found.winner)))  # the fn's own
    return copy


def _reply(response: Any, status: int, headers: dict[str, str] | None = None) -> Reply:
    """A function's response as the HTTP answer CouchDB makes of it."""
    out = dict(headers or {})
    if isinstance(response, str):
        return Reply(status, response.encode(), {"Content-Type": _HTML, **out})
    if not isinstance(response, dict):
        raise Refusal(500, "render_error", "function raised error: invalid response")
    out.update(response.get("headers") or {})
    status = response.get("code", status)
    if "json" in response:
        body = dumps(response["json"])
        default = "application/json"
    elif "base64" in response:
        body = base64.b64decode(response["base64"])
        default = "application/binary"
    else:
        body = str(response.get("body", "")).encode()
        default = _HTML
    if not any(k.lower() == "content-type" for k in out):
        out["Content-Type"] = default
    return Reply(status, body, out)


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Refusal:
        raise
    except Exception as exc:
        raise Refusal(500, "render_error", f"function raised error: {exc!r}") from None


def show(ctx: Context, req: Request, db: str, ddoc: str, name: str,
         doc_id: str | None = None) -> Reply:
    database = ctx.couch.db(db)
    fn = _function(ctx, database, ddoc, "shows", name)
    return _reply(_call(fn, _doc(database, doc_id), _req(ctx, req, database, doc_id)), 200)


def list_view(ctx: Context, req: Request, db: str, ddoc: str, name: str, view: str,
              other: str | None = None) -> Streamed:
    """``_list/<name>/<view>`` (a view of the same design doc) or
    ``_list/<name>/<other ddoc>/<view>``; view options as for the view itself."""
    database = ctx.couch.db(db)
    fn = _function(ctx, database, ddoc, "lists", name)
    view_ddoc, view_name = (view, other) if other is not None else (ddoc, view)
    options = parse_options({k: v for k, v in req.query.items()}, _view_body(req))
    result = view_result(ctx, database, view_ddoc, view_name, options)
    head = {k: v for k, v in result.body().items() if k != "rows"}
    rows = iter(result.rows)
    sent: list[str] = []
    started: dict[str, Any] = {}

    def get_row() -> dict[str, Any] | None:
        return next(rows, None)

    def send(chunk: str) -> None:
        sent.append(str(chunk))

    def start(response: dict[str, Any] | None = None) -> None:
        started.update(response or {})

    tail = _call(fn, head, _req(ctx, req, database, None), get_row, send, start)
    if tail is not None:
        sent.append(str(tail))
    headers = {"Content-Type": _HTML, **(started.get("headers") or {})}
    body = "".join(sent).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield body
    return Streamed(int(started.get("code", 200)), chunks(), headers)


def update(ctx: Context, req: Request, db: str, ddoc: str, name: str,
           doc_id: str | None = None) -> Reply:
    database = ctx.couch.db(db)
    fn = _function(ctx, database, ddoc, "updates", name)
    result = _call(fn, _doc(database, doc_id), _req(ctx, req, database, doc_id))
    if not isinstance(result, (list, tuple)) or len(result) != 2:
        raise Refusal(500, "render_error", "undefined response from update function")
    new_doc, response = result
    if new_doc is None:
        return _reply(response, 200)
    if not isinstance(new_doc, dict) or "_id" not in new_doc:
        raise bad_request("Document must have an _id", "doc_validation")
    _check_ddoc_write(ctx, req, db, new_doc["_id"])
    rev = database.save(ctx.couch.prepare(db, dict(new_doc)))
    return _reply(response, 201, {"X-Couch-Id": str(new_doc["_id"]),
                                  "X-Couch-Update-NewRev": rev})
