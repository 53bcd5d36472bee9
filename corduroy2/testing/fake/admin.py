"""Server administration endpoints: the node (``/_node/{node}/...``: config, stats, system),
``_active_tasks``, ``_db_updates``, ``_replicate`` and the ``_scheduler``."""

from __future__ import annotations

from typing import Any

from .couch import GLOBAL_CHANGES
from .endpoints import Context, Reply, Request, Streamed, _changes_feed, _changes_query
from .errors import Refusal, bad_request
from .store import Database, Doc
from .views import parse_options

__all__ = ["node_info", "config", "set_config", "delete_config", "stats", "system",
           "active_tasks", "db_updates", "replicate", "scheduler_jobs", "scheduler_docs"]


def node_info(ctx: Context, req: Request, node: str) -> Reply:
    ctx.couch.node.check(node)
    return Reply(body={"name": ctx.couch.node.name})


def config(ctx: Context, req: Request, node: str, section: str | None = None,
           key: str | None = None) -> Reply:
    ctx.couch.node.check(node)
    return Reply(body=ctx.couch.node.get(section, key))


def set_config(ctx: Context, req: Request, node: str, section: str, key: str) -> Reply:
    ctx.couch.node.check(node)
    return Reply(body=ctx.couch.node.set(section, key, req.json()))


def delete_config(ctx: Context, req: Request, node: str, section: str, key: str) -> Reply:
    ctx.couch.node.check(node)
    return Reply(body=ctx.couch.node.delete(section, key))


def stats(ctx: Context, req: Request, node: str, path: str | None = None) -> Reply:
    """All of a node's statistics, or (``/_stats/couchdb/request_time``) one group or metric."""
    ctx.couch.node.check(node)
    found: Any = ctx.couch.node.stats(len(ctx.couch.dbs), ctx.couch.replicator.gauges())
    for part in path.split("/") if path else ():
        if not isinstance(found, dict) or part not in found:
            raise Refusal(404, "not_found", "Unknown stat")
        found = found[part]
    return Reply(body=found)


def system(ctx: Context, req: Request, node: str) -> Reply:
    ctx.couch.node.check(node)
    return Reply(body=ctx.couch.node.system())


def active_tasks(ctx: Context, req: Request) -> Reply:
    return Reply(body=ctx.couch.replicator.tasks())


# -- _db_updates ------------------------------------------------------------------------------


def _update_row(database: Database, doc: Doc, query: Any) -> dict[str, Any]:
    kind, _, name = doc.id.partition(":")
    return {"db_name": name, "type": kind, "seq": database.seq_string(doc.seq)}


def db_updates(ctx: Context, req: Request) -> Streamed:
    """``_db_updates``: the changes of ``_global_changes`` shown as database events; like
    CouchDB, 404 when that database does not exist. A quiet continuous feed sends heartbeats
    every minute unless told otherwise."""
    log = ctx.couch.db(GLOBAL_CHANGES)
    if req.query.get("feed") in ("continuous", "eventsource") and "heartbeat" not in req.query:
        req.query["heartbeat"] = "60000"
    if "filter" in req.query:
        raise bad_request("_db_updates takes no filter")
    query = _changes_query(ctx, req, log)
    query.row, query.pending = _update_row, False
    return _changes_feed(ctx, log, query)


# -- replication ----------------------------------------------------------------------------------


def replicate(ctx: Context, req: Request) -> Reply:
    req.require_json_type()
    body = req.json_object()
    return Reply(200 if not body.get("continuous") or body.get("cancel") else 202,
                 ctx.couch.replicator.replicate(body, req.user))


def _paged(req: Request, name: str, items: list[dict[str, Any]]) -> Reply:
    options = parse_options({k: v for k, v in req.query.items() if k in ("limit", "skip")})
    end = None if options.limit is None else options.skip + options.limit
    return Reply(body={"total_rows": len(items), "offset": options.skip,
                       name: items[options.skip:end]})


def scheduler_jobs(ctx: Context, req: Request, job_id: str | None = None) -> Reply:
    jobs = ctx.couch.replicator.scheduler_jobs()
    if job_id is not None:
        found = [j for j in jobs if j["id"] == job_id]
        if not found:
            raise Refusal(404, "not_found", "unknown")
        return Reply(body=found[0])
    return _paged(req, "jobs", jobs)


def scheduler_docs(ctx: Context, req: Request, rest: str | None = None) -> Reply:
    """``/_scheduler/docs[/<replicator db>[/<doc id>]]``; the db name may hold ``/``
    (``a/_replicator``), sent quoted or not."""
    replicator = ctx.couch.replicator
    if rest is None:
        return _paged(req, "docs", replicator.scheduler_docs())
    parts = rest.split("/")
    cut = parts.index("_replicator") + 1 if "_replicator" in parts else 1
    db_name, doc_id = "/".join(parts[:cut]), "/".join(parts[cut:]) or None
    if db_name not in ctx.couch.dbs:
        raise Refusal(404, "not_found", "Database does not exist.")
    if doc_id is None:
        return _paged(req, "docs", replicator.scheduler_docs(db_name))
    job = replicator.doc_jobs.get((db_name, doc_id))
    if job is None:
        raise Refusal(404, "not_found", "unknown")
    return Reply(body=replicator.doc_entry(job))
