"""Replication: endpoints, the request body, and the handle of a ``_replicator`` document.

CouchDB replicates between URLs. What the caller names a side with becomes one here:

* a :class:`~corduroy2.api.database.Database`: its URL, and its handle's credentials in
  CouchDB 3's form ``{"url": ..., "auth": {"basic": {"username", "password"}}}`` (other
  credentials, e.g. proxy auth or a fixed JWT, as ``{"url": ..., "headers": {...}}``); a
  handle without credentials is its plain URL;
* a database name: that database on the server doing the replication, as a Database of it;
* a URL: as given, unless it carries ``user:password@``, which is moved into ``auth``;
* a dict: CouchDB's endpoint object, as given (credentials in its ``url`` are moved likewise).

So no URL with a password in it is ever put in a body, a log line or a repr (CouchDB itself
masks passwords only in what it reports back).

A replication started by writing a ``_replicator`` document is followed through
``_scheduler/docs`` (CouchDB >= 2.1). Servers without a scheduler (pouchdb-server, CouchDB 1.x)
write the state into the document itself (``_replication_state``); :meth:`Replication.state`
falls back to reading it there, and answers in the scheduler's words either way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..backend import Cancel, Outcome
from ..errors import Conflict, NotFound, ReplicationFailed, Timeout
from ..protocol import requests
from ..protocol.urls import db_path, validate_db_name, validate_doc_id
from .calls import Op, Wait
from .documents import Document

if TYPE_CHECKING:
    from .couch import Callback, Couch

__all__ = ["Replication", "ReplicationState", "endpoint", "replication_body", "state_from_doc", "UNHEALTHY",
           "DEFAULT_REPLICATOR_DB"]

DEFAULT_REPLICATOR_DB = "_replicator"

#: Scheduler states in which CouchDB retries the replication with a growing backoff: a wait
#: gives up on them unless told to sit them out. ``failed`` is final.
UNHEALTHY = frozenset({"crashing", "error"})

# The 1.x-style words a server without a scheduler writes into the document, in the
# scheduler's vocabulary: "error" was retried there too.
_DOC_STATES = {None: "initializing", "triggered": "running", "completed": "completed",
               "error": "crashing", "failed": "failed"}


def endpoint(value: Any, couch: Couch) -> str | dict[str, Any]:
    """The ``source``/``target`` member for ``value`` (see the module docstring); ``couch`` is
    the server doing the replication, for database names."""
    if isinstance(value, str) and "://" not in value:
        value = couch.database(validate_db_name(value))
    if hasattr(value, "couch") and hasattr(value, "name"):  # a Database, of any front door
        url = value.couch.url + db_path(value.name)
        auth = value.couch.sender.auth
        credentials = auth.replicator_credentials() if auth is not None else {}
        return {"url": url, **credentials} if credentials else url
    if isinstance(value, str):
        url, basic = _split_userinfo(value)
        return {"url": url, **basic} if basic else value
    if isinstance(value, Mapping):
        if not isinstance(value.get("url"), str):
            raise ValueError("a replication endpoint dict needs its 'url'")
        url, basic = _split_userinfo(value["url"])
        if not basic:
            return dict(value)
        if "auth" in value:
            raise ValueError("credentials both in the endpoint's url and in its 'auth'")
        return {**value, "url": url, **basic}
    raise TypeError("a replication source/target is a Database, a database name, a URL or "
                    f"CouchDB's endpoint dict, not {type(value).__name__}")


def _split_userinfo(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without ``user:password@`` and the ``auth`` member holding them (or {})."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"a replication URL must start with http:// or https://, "
                         f"not {parts.scheme!r}")
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, {"auth": {"basic": {"username": unquote(user), "password": unquote(password)}}}


def replication_body(couch: Couch, source: Any, target: Any, *, continuous: bool = False,
                     create_target: bool = False, doc_ids: Iterable[str] | None = None,
                     selector: dict[str, Any] | None = None, filter: str | None = None,
                     query_params: dict[str, Any] | None = None, cancel: bool = False,
                     **opts: Any) -> dict[str, Any]:
    """The JSON object of a replication (``_replicate``'s body, or a ``_replicator`` document's
    fields). Only what is asked for is sent; ``opts`` are CouchDB's other replication fields
    (``since_seq``, ``use_checkpoints``, ``winning_revs_only``, ``create_target_params``...).
    Bad arguments raise here, before anything is sent."""
    body: dict[str, Any] = {"source": endpoint(source, couch), "target": endpoint(target, couch)}
    for name, flag in (("continuous", continuous), ("create_target", create_target),
                       ("cancel", cancel)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, not {flag!r}")
        if flag:
            body[name] = True
    if doc_ids is not None:
        if isinstance(doc_ids, str) or not all(isinstance(i, str) for i in doc_ids):
            raise TypeError("doc_ids must be a list of str")
        body["doc_ids"] = list(doc_ids)
    if selector is not None:
        if not isinstance(selector, dict):
            raise TypeError("selector must be a dict")
        body["selector"] = selector
    if filter is not None:
        if not isinstance(filter, str) or "/" not in filter:
            raise ValueError(f"filter must name a design function like 'ddoc/name', "
                             f"got {filter!r}")
        body["filter"] = filter
    if query_params is not None:
        if not isinstance(query_params, dict):
            raise TypeError("query_params must be a dict")
        body["query_params"] = query_params
    if sum(x is not None for x in (doc_ids, selector, filter)) > 1:
        raise ValueError("give at most one of doc_ids, selector and filter")
    body.update(opts)
    requests.encode_json(body)  # NaN, unserialisable values: now, in every calling style
    return body


def state_from_doc(doc: Mapping[str, Any], replicator_db: str) -> dict[str, Any]:
    """A ``_scheduler/docs`` entry made from a ``_replicator`` document, for servers that
    write the state into the document instead (pouchdb-server, CouchDB 1.x)."""
    state = _DOC_STATES.get(doc.get("_replication_state"), doc.get("_replication_state"))
    reason = doc.get("_replication_state_reason")
    info = {"error": reason} if reason is not None else doc.get("_replication_stats")
    return {"database": replicator_db, "doc_id": doc.get("_id"), "state": state,
            "info": info, "id": doc.get("_replication_id"),
            "last_updated": doc.get("_replication_state_time"),
            "source": doc.get("source"), "target": doc.get("target")}


class ReplicationState(Document):
    """A ``_scheduler/docs`` entry: ``.state`` (CouchDB's word), ``.info`` (the counts, or
    ``{"error": reason}``), ``.reason`` (that reason, or None), and CouchDB's other fields
    (``doc_id``, ``source``, ``target`` with passwords masked, ``node``, ``last_updated``...)."""

    __slots__ = ()

    @property
    def reason(self) -> str | None:
        info = self.get("info")
        if isinstance(info, Mapping) and info.get("error") is not None:
            return str(info["error"])
        return None

    def __repr__(self) -> str:
        info = self.get("info")
        written = (f" docs_written={info['docs_written']}"
                   if isinstance(info, Mapping) and "docs_written" in info else "")
        why = f" ({self.reason})" if self.reason else ""
        return f"<ReplicationState {self.get('doc_id')!r} {self.get('state')}{written}{why}>"


class Replication:
    """A replication described by document ``doc_id`` of ``replicator_db``. Made by
    :meth:`Couch.start_replication` (or, for one that exists, :meth:`Couch.replication`);
    creating it sends nothing.

    :meth:`state` reads where it stands, :meth:`wait` follows it to its end, :meth:`cancel`
    deletes the document (which stops it). Each takes ``callback=`` and answers in every
    calling style, like every network method.
    """

    def __init__(self, couch: Couch, doc_id: str, replicator_db: str = DEFAULT_REPLICATOR_DB
                 ) -> None:
        self.couch = couch
        self.id = validate_doc_id(doc_id)
        self.replicator_db = validate_db_name(replicator_db)

    def __repr__(self) -> str:
        return f"<Replication {self.id!r} in {self.replicator_db} on {self.couch.url}>"

    def state(self, *, callback: Callback = None) -> Any:
        """Where the replication stands: its ``_scheduler/docs`` entry, a
        :class:`ReplicationState` (``.state`` is ``"initializing"``, ``"pending"``,
        ``"running"``, ``"completed"``, ``"crashing"``, ``"error"`` or ``"failed"``; ``.info``
        holds the counts, ``.reason`` CouchDB's reason for an unhealthy state). ``NotFound``
        when there is no such document (cancelled)."""
        return self.couch.runner.run(self._state(), callback)

    def _state(self) -> Op[ReplicationState]:
        origin = self.couch.origin
        try:
            entry = yield requests.scheduler_docs(origin, self.replicator_db, self.id, {})
            return ReplicationState(entry)
        except NotFound:
            # Not seen by the scheduler yet, or a server without one: the document says.
            pass
        doc = yield requests.get_doc(origin, self.replicator_db, self.id)
        return ReplicationState(state_from_doc(doc, self.replicator_db))

    def wait(self, *, on_progress: Callable[[ReplicationState], Any] | None = None,
             until: str | Iterable[str] = "completed", sit_out_crashes: bool = False,
             interval: float = 0.5, max_interval: float = 10.0, timeout: float | None = None,
             callback: Callback = None) -> Any:
        """Follow the replication until its state is one of ``until`` (``"completed"``; for a
        continuous one, ``"running"`` says it has started) and return that state.

        The state is read every ``interval`` seconds, doubling up to ``max_interval`` while
        nothing changes; ``on_progress(state)`` is called with each state that differs from
        the last one read (the counts in ``state.info`` grow as it runs). Fails with
        :class:`~corduroy2.errors.ReplicationFailed` carrying CouchDB's reason when it is
        ``failed``, or ``crashing``/``error`` (CouchDB retries those with a backoff:
        ``sit_out_crashes=True`` keeps waiting through them); with
        :class:`~corduroy2.errors.Timeout` after ``timeout`` seconds; with ``NotFound`` when
        the document is deleted meanwhile."""
        wanted = frozenset([until] if isinstance(until, str) else until)
        if not wanted:
            raise ValueError("until names no state")
        if not interval > 0 or max_interval < interval:
            raise ValueError("need 0 < interval <= max_interval")
        op = self._wait(on_progress, wanted, sit_out_crashes, interval, max_interval, timeout)
        return self.couch.runner.run(op, callback)

    def _wait(self, on_progress: Callable[[ReplicationState], Any] | None, wanted: frozenset[str],
              sit_out_crashes: bool, interval: float, max_interval: float,
              timeout: float | None) -> Op[ReplicationState]:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = interval
        last: ReplicationState | None = None
        while True:
            state = yield from self._state()
            if state != last:
                delay = interval  # it moves: look again soon
                last = state
                if on_progress is not None:
                    on_progress(state)
            word = state.get("state")
            if word in wanted:
                return state
            if word == "failed" or (word in UNHEALTHY and not sit_out_crashes):
                raise ReplicationFailed(word, state.reason, self.id, state)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"replication {self.id!r} still {word} after {timeout} s")
                delay = min(delay, left)
            yield self._sleep(delay)
            delay = min(delay * 2, max_interval)

    def _sleep(self, seconds: float) -> Wait:
        backend = self.couch.backend

        def start(done: Callable[[Outcome], None]) -> Cancel:
            return backend.call_later(seconds, lambda: done(Outcome()))

        return Wait(start)

    def cancel(self, *, callback: Callback = None) -> Any:
        """Stop the replication by deleting its document; returns CouchDB's reply. ``NotFound``
        if there is no such document."""
        return self.couch.runner.run(self._cancel(), callback)

    def _cancel(self) -> Op[Any]:
        origin, db = self.couch.origin, self.replicator_db
        while True:
            doc = yield requests.get_doc(origin, db, self.id)
            try:
                reply = yield requests.delete_doc(origin, db, self.id, doc["_rev"])
            except Conflict:
                continue  # the replicator updated the document meanwhile: its new rev
            return reply


def write_replicator_doc(couch: Couch, doc_id: str | None, replicator_db: str,
             body: dict[str, Any]) -> Op[Replication]:
    """Write the ``_replicator`` document; the handle on it is the operation's value."""
    handle = Replication(couch, doc_id if doc_id is not None else uuid.uuid4().hex,
                         replicator_db)
    yield requests.put_doc(couch.origin, replicator_db, {"_id": handle.id, **body})
    return handle
