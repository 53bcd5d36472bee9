"""The routing table: which handler answers each method on each path, and the access it needs.

Routes are tried in order; the first whose pattern matches the path wins, so a literal segment
(``_all_docs``) comes before the ``{doc_id}`` that would also match it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import admin, design
from . import endpoints as ep
from .endpoints import DB_ADMIN, MEMBER, PUBLIC, SERVER_ADMIN, Handler

__all__ = ["ROUTES", "Route", "match_route"]



@dataclass(frozen=True)
class Route:
    """A path pattern (``{name}`` is one segment, ``{name+}`` the rest) and, per method, the
    handler and the access it needs."""

    pattern: tuple[str, ...]
    methods: dict[str, tuple[Handler, str]]


def _route(pattern: str, **methods: tuple[Handler, str]) -> Route:
    return Route(tuple(pattern.strip("/").split("/")) if pattern != "/" else (),
                 {m.upper(): h for m, h in methods.items()})


def _doc_methods(wrap: Callable[[Handler], Handler] = lambda h: h) -> dict[str, Any]:
    return {"get": (wrap(ep.get_doc), MEMBER), "head": (wrap(ep.get_doc), MEMBER),
            "put": (wrap(ep.put_doc), MEMBER), "delete": (wrap(ep.delete_doc), MEMBER),
            "copy": (wrap(ep.copy_doc), MEMBER)}


def _att_methods(wrap: Callable[[Handler], Handler] = lambda h: h) -> dict[str, Any]:
    return {"get": (wrap(ep.get_attachment), MEMBER), "head": (wrap(ep.get_attachment), MEMBER),
            "put": (wrap(ep.put_attachment), MEMBER), "delete": (wrap(ep.delete_attachment), MEMBER)}


ROUTES: list[Route] = [
    _route("/", get=(ep.welcome, PUBLIC), head=(ep.welcome, PUBLIC)),
    _route("/_up", get=(ep.up, PUBLIC)),
    _route("/_all_dbs", get=(ep.all_dbs, SERVER_ADMIN)),
    _route("/_dbs_info", get=(ep.dbs_info, SERVER_ADMIN), post=(ep.dbs_info, SERVER_ADMIN)),
    _route("/_uuids", get=(ep.uuids, PUBLIC)),
    _route("/_session", get=(ep.session_info, PUBLIC), post=(ep.session_login, PUBLIC),
           delete=(ep.session_logout, PUBLIC)),
    _route("/_active_tasks", get=(admin.active_tasks, SERVER_ADMIN)),
    _route("/_membership", get=(ep.membership, SERVER_ADMIN)),
    _route("/_node/{node}", get=(admin.node_info, SERVER_ADMIN)),
    _route("/_node/{node}/_config", get=(admin.config, SERVER_ADMIN)),
    _route("/_node/{node}/_config/{section}", get=(admin.config, SERVER_ADMIN)),
    _route("/_node/{node}/_config/{section}/{key}", get=(admin.config, SERVER_ADMIN),
           put=(admin.set_config, SERVER_ADMIN), delete=(admin.delete_config, SERVER_ADMIN)),
    _route("/_node/{node}/_stats", get=(admin.stats, SERVER_ADMIN)),
    _route("/_node/{node}/_stats/{path+}", get=(admin.stats, SERVER_ADMIN)),
    _route("/_node/{node}/_system", get=(admin.system, SERVER_ADMIN)),
    _route("/_db_updates", get=(admin.db_updates, SERVER_ADMIN)),
    _route("/_replicate", post=(admin.replicate, PUBLIC)),
    _route("/_scheduler/jobs", get=(admin.scheduler_jobs, SERVER_ADMIN)),
    _route("/_scheduler/jobs/{job_id}", get=(admin.scheduler_jobs, SERVER_ADMIN)),
    _route("/_scheduler/docs", get=(admin.scheduler_docs, SERVER_ADMIN)),
    _route("/_scheduler/docs/{rest+}", get=(admin.scheduler_docs, SERVER_ADMIN)),
    _route("/{db}", get=(ep.db_info, MEMBER), head=(ep.db_info, MEMBER),
           put=(ep.create_db, SERVER_ADMIN), delete=(ep.delete_db, SERVER_ADMIN),
           post=(ep.post_doc, MEMBER)),
    _route("/{db}/_all_docs", get=(ep.all_docs, MEMBER), post=(ep.all_docs, MEMBER)),
    _route("/{db}/_all_docs/queries", post=(ep.view_queries, MEMBER)),
    _route("/{db}/_design_docs", get=(ep.design_docs, MEMBER), post=(ep.design_docs, MEMBER)),
    _route("/{db}/_local_docs", get=(ep.local_docs, MEMBER), post=(ep.local_docs, MEMBER)),
    _route("/{db}/_bulk_docs", post=(ep.bulk_docs, MEMBER)),
    _route("/{db}/_bulk_get", post=(ep.bulk_get, MEMBER)),
    _route("/{db}/_revs_diff", post=(ep.revs_diff, MEMBER)),
    _route("/{db}/_missing_revs", post=(ep.revs_diff, MEMBER)),
    _route("/{db}/_changes", get=(ep.changes, MEMBER), post=(ep.changes, MEMBER)),
    _route("/{db}/_find", post=(ep.find, MEMBER)),
    _route("/{db}/_explain", post=(ep.explain, MEMBER)),
    _route("/{db}/_index", get=(ep.list_indexes, MEMBER), post=(ep.create_index, MEMBER)),
    _route("/{db}/_index/_design/{ddoc}/{kind}/{name}", delete=(ep.delete_index_split, DB_ADMIN)),
    _route("/{db}/_index/{ddoc}/{kind}/{name}", delete=(ep.delete_index, DB_ADMIN)),
    _route("/{db}/_security", get=(ep.security, MEMBER), put=(ep.set_security, DB_ADMIN)),
    _route("/{db}/_revs_limit", get=(ep.revs_limit, MEMBER), put=(ep.revs_limit, DB_ADMIN)),
    _route("/{db}/_purged_infos_limit", get=(ep.purged_infos_limit, MEMBER),
           put=(ep.purged_infos_limit, DB_ADMIN)),
    _route("/{db}/_purge", post=(ep.purge, DB_ADMIN)),
    _route("/{db}/_shards", get=(ep.shards, MEMBER)),
    _route("/{db}/_shards/{doc_id}", get=(ep.shards, MEMBER)),
    _route("/{db}/_sync_shards", post=(ep.sync_shards, SERVER_ADMIN)),
    _route("/{db}/_partition/{partition}", get=(ep.partition_info, MEMBER)),
    _route("/{db}/_partition/{partition}/_all_docs", get=(ep.all_docs, MEMBER),
           post=(ep.all_docs, MEMBER)),
    _route("/{db}/_partition/{partition}/_design/{ddoc}/_view/{view}", get=(ep.view, MEMBER),
           post=(ep.view, MEMBER)),
    _route("/{db}/_partition/{partition}/_find", post=(ep.find, MEMBER)),
    _route("/{db}/_partition/{partition}/_explain", post=(ep.explain, MEMBER)),
    _route("/{db}/_compact", post=(ep.maintenance, DB_ADMIN)),
    _route("/{db}/_compact/{ddoc}", post=(ep.maintenance, DB_ADMIN)),
    _route("/{db}/_view_cleanup", post=(ep.maintenance, DB_ADMIN)),
    _route("/{db}/_ensure_full_commit", post=(ep.maintenance, MEMBER)),
    _route("/{db}/_design/{ddoc}/_info", get=(ep.design_info, MEMBER)),
    _route("/{db}/_design/{ddoc}/_view/{view}", get=(ep.view, MEMBER), post=(ep.view, MEMBER)),
    _route("/{db}/_design/{ddoc}/_view/{view}/queries", post=(ep.view_queries, MEMBER)),
    _route("/{db}/_design/{ddoc}/_show/{name}", get=(design.show, MEMBER),
           post=(design.show, MEMBER)),
    _route("/{db}/_design/{ddoc}/_show/{name}/{doc_id}", get=(design.show, MEMBER),
           post=(design.show, MEMBER)),
    _route("/{db}/_design/{ddoc}/_list/{name}/{view}", get=(design.list_view, MEMBER),
           post=(design.list_view, MEMBER)),
    _route("/{db}/_design/{ddoc}/_list/{name}/{view}/{other}", get=(design.list_view, MEMBER),
           post=(design.list_view, MEMBER)),
    _route("/{db}/_design/{ddoc}/_update/{name}", post=(design.update, MEMBER)),
    _route("/{db}/_design/{ddoc}/_update/{name}/{doc_id}", put=(design.update, MEMBER),
           post=(design.update, MEMBER)),
    _route("/{db}/_design/{ddoc}", **_doc_methods(ep.on_design)),
    _route("/{db}/_design/{ddoc}/{name+}", **_att_methods(ep.ddoc_attachment)),
    _route("/{db}/_local/{local}", **{k: v for k, v in _doc_methods(ep.on_local).items()
                                      if k in ("get", "put", "delete")}),
    _route("/{db}/{doc_id}", **_doc_methods()),
    _route("/{db}/{doc_id}/{name+}", **_att_methods()),
]


def match_route(segments: list[str]) -> tuple[Route, dict[str, str]] | None:
    for route, at, literal in _routes_for(len(segments)):
        if at >= 0 and segments[at] != literal:
            continue  # (the cheap test first: most routes differ in their last literal)
        params = _match(route.pattern, segments)
        if params is not None:
            return route, params
    return None


#: By n: the routes that can match a path of n segments, in the table's order, each with the
#: position and text of its last literal segment (-1: none). A request's path is matched by
#: the few that fit, not tried against each of the table's 60-odd patterns.
_BY_LENGTH: dict[int, list[tuple[Route, int, str]]] = {}


def _routes_for(n: int) -> list[tuple[Route, int, str]]:
    routes = _BY_LENGTH.get(n)
    if routes is None:
        routes = _BY_LENGTH[n] = [(r, *_last_literal(r.pattern)) for r in ROUTES
                                  if _can_match(r.pattern, n)]
    return routes


def _can_match(pattern: tuple[str, ...], n: int) -> bool:
    if pattern and pattern[-1].endswith("+}"):
        return n >= len(pattern)
    return n == len(pattern)


def _last_literal(pattern: tuple[str, ...]) -> tuple[int, str]:
    for at in range(len(pattern) - 1, -1, -1):
        if not pattern[at].startswith("{"):
            return at, pattern[at]
    return -1, ""


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for i, part in enumerate(pattern):
        if part.endswith("+}"):
            if i >= len(segments):
                return None
            params[part[1:-2]] = "/".join(segments[i:])
            return params
        if i >= len(segments):
            return None
        if part.startswith("{"):
            params[part[1:-1]] = segments[i]
        elif part != segments[i]:
            return None
    return params if len(segments) == len(pattern) else None
