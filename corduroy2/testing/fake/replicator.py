"""Replication between the databases of one FakeCouch, as CouchDB 3's replicator does it.

Endpoints are URLs (or ``{"url", "auth": {"basic": ...}, "headers"}`` objects), never bare
names (CouchDB 3 refuses local endpoints). A URL naming the fake itself (any address it is
served on, or a loopback name with its port) is resolved in-process, its credentials checked
against the fake's users and its database's ``_security``; any other host is unreachable from
the fake, reported like a database that cannot be opened.

A run reads the source's changes since the checkpoint (``_local/<replication id>`` in both
databases, as CouchDB keeps it), keeps those that pass ``doc_ids``/``selector``/``filter``,
and copies every leaf revision the target lacks, with its history and attachments
(``new_edits=false``): conflicts replicate as conflicts, deletions as deletions.

``POST /_replicate`` runs a one-shot replication before answering. Continuous ones and those
``_replicator`` documents describe are *jobs*, run by one background thread that wakes on every
change: ``initializing`` -> ``running`` (continuous: until cancelled) -> ``completed``; a job that
cannot open an endpoint is ``crashing`` (CouchDB's reason, e.g. ``db_not_found: could not open
...``) and is retried with a growing backoff; a document that cannot describe a replication is
``failed``. What ``_scheduler/jobs``, ``_scheduler/docs`` and ``_active_tasks`` show is read here.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import mango
from .errors import Refusal, bad_request
from .store import Database, Doc, Revision, parse_seq

if TYPE_CHECKING:
    from .couch import FakeCouch, User

__all__ = ["Replicator", "Spec", "Counts", "is_replicator_db"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_RETRY_FIRST, _RETRY_MAX = 5.0, 300.0


def is_replicator_db(name: str) -> bool:
    return name == "_replicator" or name.endswith("/_replicator")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


@dataclass(frozen=True)
class Endpoint:
    """A side of a replication: the URL as CouchDB shows it (password masked, ending in
    ``/``), the host and port it names, the database and the credentials given."""

    shown: str
    host: str
    port: int
    db: str
    credentials: tuple[str, str] | None

    @property
    def identity(self) -> str:
        """What the replication id depends on: the URL and the user, never the password."""
        user = self.credentials[0] if self.credentials else ""
        return f"{self.host}:{self.port}/{self.db}|{user}"


def parse_endpoint(value: Any) -> Endpoint:
    if isinstance(value, str) and "://" not in value:
        raise bad_request("Local endpoints are not supported since CouchDB 3.x")
    headers: dict[str, Any] = {}
    credentials = None
    if isinstance(value, dict):
        url = value.get("url")
        auth = value.get("auth") or {}
        headers = value.get("headers") or {}
        basic = auth.get("basic") if isinstance(auth, dict) else None
        if isinstance(basic, dict):
            credentials = (str(basic.get("username", "")), str(basic.get("password", "")))
    else:
        url = value
    if not isinstance(url, str):
        raise bad_request("Replication endpoints must be URLs or objects with a url")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request(f"Invalid replication endpoint: {url}")
    if parts.username is not None and credentials is None:
        credentials = (urllib.parse.unquote(parts.username),
                       urllib.parse.unquote(parts.password or ""))
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if credentials is None and isinstance(authorization, str) and \
            authorization[:6].lower() == "basic ":
        try:
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            credentials = (name, password)
        except ValueError:
            pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username is not None:
        netloc = f"{urllib.parse.unquote(parts.username)}:*****@{netloc}"
    path = parts.path.rstrip("/")
    db = urllib.parse.unquote(path.lstrip("/"))
    shown = f"{parts.scheme}://{netloc}{path}/"
    return Endpoint(shown, parts.hostname, port, db, credentials)


@dataclass
class Spec:
    """What a ``_replicate`` body or a ``_replicator`` document asks for."""

    source: Endpoint
    target: Endpoint
    continuous: bool = False
    create_target: bool = False
    create_target_params: dict[str, Any] = field(default_factory=dict)
    doc_ids: list[str] | None = None
    selector: Any = None
    filter: str | None = None
    query_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Spec:
        if "source" not in body or "target" not in body:
            raise bad_request("Replication needs a source and a target")
        spec = cls(parse_endpoint(body["source"]), parse_endpoint(body["target"]),
                   body.get("continuous") is True, body.get("create_target") is True)
        params = body.get("create_target_params")
        if params is not None:
            if not isinstance(params, dict):
                raise bad_request("`create_target_params` must be an object")
            spec.create_target_params = params
        doc_ids = body.get("doc_ids")
        if doc_ids is not None:
            if not isinstance(doc_ids, list) or not all(isinstance(i, str) for i in doc_ids):
                raise bad_request("`doc_ids` must be an array of strings")
            spec.doc_ids = doc_ids
        if body.get("selector") is not None:
            mango.Selector(body["selector"])  # 400 now when malformed
            spec.selector = body["selector"]
        if body.get("filter") is not None:
            if not isinstance(body["filter"], str) or "/" not in body["filter"]:
                raise bad_request("`filter` must name a design function like 'ddoc/name'")
            spec.filter = body["filter"]
            spec.query_params = body.get("query_params") or {}
        if sum(x is not None for x in (spec.doc_ids, spec.selector, spec.filter)) > 1:
            raise bad_request("`doc_ids`, `selector` and `filter` are mutually exclusive")
        return spec

    def replication_id(self, server_uuid: str) -> str:
        """CouchDB's form: a hex digest of what identifies the replication, and the
        ``+continuous``/``+create_target`` suffixes."""
        what = [server_uuid, self.source.identity, self.target.identity, self.doc_ids,
                self.selector, self.filter, self.query_params]
        base = hashlib.md5(repr(what).encode()).hexdigest()
        return base + ("+continuous" if self.continuous else "") + (
            "+create_target" if self.create_target else "")


@dataclass
class Counts:
    revisions_checked: int = 0
    missing_revisions_found: int = 0
    docs_read: int = 0
    docs_written: int = 0
    doc_write_failures: int = 0

    def add(self, other: Counts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Job:
    """A replication the scheduler runs: continuous ``_replicate`` or a ``_replicator`` doc."""

    id: str
    spec: Spec | None
    user: str | None
    doc: tuple[str, str] | None = None  # (replicator db, doc id)
    fingerprint: bytes = b""
    state: str = "initializing"
    error: str | None = None
    error_count: int = 0
    counts: Counts = field(default_factory=Counts)
    source_seq: str | None = None
    checkpointed: str | None = None
    pending: int = 0
    start_time: str = field(default_factory=_now)
    last_updated: str = field(default_factory=_now)
    started_on: int = field(default_factory=lambda: int(time.time()))
    retry_at: float = 0.0
    pid: str = ""

    def info(self) -> dict[str, Any] | None:
        if self.error is not None:
            return {"error": self.error}
        if self.state == "initializing":
            return None
        return {**vars(self.counts), "changes_pending": self.pending,
                "checkpointed_source_seq": self.checkpointed, "source_seq": self.source_seq,
                "through_seq": self.checkpointed}

    @property
    def active(self) -> bool:
        return self.state in ("initializing", "running", "crashing", "pending")


class Replicator:
    """The replicator of one :class:`FakeCouch` (its ``replicator`` attribute)."""

    def __init__(self, couch: FakeCouch) -> None:
        self.couch = couch
        self.jobs: dict[str, Job] = {}  # continuous _replicate jobs, by replication id
        self.doc_jobs: dict[tuple[str, str], Job] = {}  # by (replicator db, doc id)
        self._wake = threading.Condition(couch.lock)
        self._thread: threading.Thread | None = None
        self._dirty = False
        self._pids = 0
        couch.add_listener(self._on_change)

    # -- resolving endpoints --------------------------------------------------------------------

    def _open(self, endpoint: Endpoint, *, create: bool = False,
              params: dict[str, Any] | None = None) -> tuple[Database, User]:
        """The database an endpoint names, as the user its credentials name; Refusals as
        CouchDB's replicator answers them."""
        from .couch import ANONYMOUS, User
        from .endpoints import MEMBER, check_access

        if not self._is_self(endpoint):
            raise Refusal(404, "db_not_found", f"could not open {endpoint.shown}")
        unauthorized = Refusal(401, "unauthorized",
                               f"unauthorized to access or create database {endpoint.shown}")
        if self.couch.admin is None:
            user = User(None, ("_admin",))
        elif endpoint.credentials is None:
            user = ANONYMOUS
        else:
            found = self.couch.authenticate(*endpoint.credentials)
            if found is None:
                raise unauthorized
            user = found
        database = self.couch.dbs.get(endpoint.db)
        if database is None:
            if not create:
                raise Refusal(404, "db_not_found", f"could not open {endpoint.shown}")
            if not user.is_admin:
                raise unauthorized
            database = self.couch.create_db(endpoint.db, **(params or {}))
        try:
            check_access(self.couch, user, MEMBER, endpoint.db)
        except Refusal:
            raise unauthorized from None
        return database, user

    def _is_self(self, endpoint: Endpoint) -> bool:
        ports = {port for _, port in self.couch.addresses}
        hosts = {host for host, _ in self.couch.addresses} | _LOOPBACK
        return endpoint.port in ports and endpoint.host in hosts

    # -- one run --------------------------------------------------------------------------------

    def run(self, spec: Spec, rep_id: str) -> tuple[Counts, dict[str, Any]]:
        """Replicate what changed since the checkpoint; ``(counts, checkpoint facts)``.
        Call with the couch's lock held."""
        source, _ = self._open(spec.source, )
        target, target_user = self._open(spec.target, create=spec.create_target,
                                         params=spec.create_target_params)
        from .endpoints import is_db_admin

        keep = self._keeper(spec, source)
        local_id = "_local/" + rep_id.split("+", 1)[0]
        since = self._checkpoint(source, target, local_id)
        counts = Counts()
        for doc in list(source.changed_since(since)):
            if doc.id.startswith("_local/") or not keep(doc):
                continue
            counts.revisions_checked += len(doc.leaves)
            have = target.docs.get(doc.id)
            missing = sorted(r for r in doc.leaves if have is None or r not in have.revs
                             or have.revs[r].body is None)
            counts.missing_revisions_found += len(missing)
            for rev in missing:
                counts.docs_read += 1
                if doc.id.startswith("_design/") and not is_db_admin(
                        self.couch, target_user, target.name):
                    counts.doc_write_failures += 1
                    continue
                revision = doc.revs[rev]
                target.graft(doc.id, doc.history(rev), Revision(
                    rev, None, revision.deleted, revision.body, revision.attachments))
                counts.docs_written += 1
        facts = {"start_last_seq": source.seq_string(since),
                 "end_last_seq": source.update_seq, "no_changes": since == source.seq}
        if since != source.seq:
            self._save_checkpoint(source, target, local_id, source.update_seq, counts, facts)
        return counts, facts

    def _keeper(self, spec: Spec, source: Database) -> Callable[[Doc], bool]:
        if spec.doc_ids is not None:
            wanted = set(spec.doc_ids)
            return lambda doc: doc.id in wanted
        if spec.selector is not None:
            selector = mango.Selector(spec.selector)
            return lambda doc: selector.match(doc.render(doc.winner))
        if spec.filter is not None:
            ddoc_name, _, name = spec.filter.partition("/")
            design = source.docs.get("_design/" + ddoc_name)
            source_fn = ((design.winner.body or {}).get("filters") or {}).get(name) \
                if design is not None and not design.deleted else None
            if source_fn is None:
                raise Refusal(404, "not_found",
                              f"Couldn't find filter function {spec.filter} in the source")
            fn = self.couch.functions.lookup(source_fn, "filter function")
            req = {"query": spec.query_params, "method": "GET", "headers": {},
                   "userCtx": {"db": source.name, "name": None, "roles": []},
                   "body": "undefined"}

            def passes(doc: Doc) -> bool:
                try:
                    return bool(fn(doc.render(doc.winner), req))
                except Exception:
                    return False
            return passes
        return lambda doc: True

    @staticmethod
    def _checkpoint(source: Database, target: Database, local_id: str) -> int:
        """The source seq both sides recorded last, or 0 (a side recreated starts over)."""
        mine, theirs = source.local.get(local_id), target.local.get(local_id)
        if not mine or not theirs or mine.get("session_id") != theirs.get("session_id"):
            return 0
        try:
            return min(parse_seq(mine.get("source_last_seq")) or 0, source.seq)
        except Refusal:
            return 0

    @staticmethod
    def _save_checkpoint(source: Database, target: Database, local_id: str, seq: str,
                         counts: Counts, facts: dict[str, Any]) -> None:
        session = hashlib.md5(f"{local_id}:{seq}:{time.time()}".encode()).hexdigest()
        entry = {"session_id": session, "start_time": _http_date(), "end_time": _http_date(),
                 "start_last_seq": facts["start_last_seq"], "end_last_seq": seq,
                 "recorded_seq": seq, "missing_checked": counts.revisions_checked,
                 "missing_found": counts.missing_revisions_found,
                 "docs_read": counts.docs_read, "docs_written": counts.docs_written,
                 "doc_write_failures": counts.doc_write_failures,
                 "bulk_get_docs": counts.docs_read, "bulk_get_attempts": counts.docs_read}
        facts["history"] = entry
        for side in (source, target):
            old = side.local.get(local_id) or {}
            history = [entry, *(old.get("history") or [])][:50]
            side.local[local_id] = {"_id": local_id, "_rev": "0-1", "session_id": session,
                                    "source_last_seq": seq, "replication_id_version": 4,
                                    "history": history}

    # -- POST /_replicate ------------------------------------------------------------------------

    def replicate(self, body: dict[str, Any], user: User) -> dict[str, Any]:
        """``POST /_replicate``: a one-shot run's history, or start/cancel a continuous job."""
        rep_id = body.get("replication_id")
        if body.get("cancel") is True and isinstance(rep_id, str):
            return self._cancel(rep_id)
        spec = Spec.parse(body)
        rep_id = spec.replication_id(self.couch.uuid)
        if body.get("cancel") is True:
            return self._cancel(rep_id)
        if spec.continuous:
            if rep_id not in self.jobs:
                self._open(spec.source, )  # CouchDB checks the endpoints first
                self._open(spec.target, create=spec.create_target,
                           params=spec.create_target_params)
                self.jobs[rep_id] = self._new_job(rep_id, spec, user.name)
                self._kick()
            return {"ok": True, "_local_id": rep_id}
        counts, facts = self.run(spec, rep_id)
        if facts["no_changes"]:
            return {"ok": True, "no_changes": True}
        history = facts["history"]
        return {"ok": True, "session_id": history["session_id"],
                "source_last_seq": facts["end_last_seq"], "replication_id_version": 4,
                "history": [history]}

    def _cancel(self, rep_id: str) -> dict[str, Any]:
        if self.jobs.pop(rep_id, None) is None:
            raise Refusal(404, "not_found", rep_id)
        return {"ok": True, "_local_id": rep_id}

    def _new_job(self, rep_id: str, spec: Spec | None, user: str | None,
                 doc: tuple[str, str] | None = None) -> Job:
        self._pids += 1
        return Job(rep_id, spec, user, doc, pid=f"<0.{1000 + self._pids}.0>")

    # -- the _replicator databases ----------------------------------------------------------------

    def _on_change(self, db_name: str) -> None:
        with self.couch.lock:
            if is_replicator_db(db_name):
                self._sync_docs(db_name)
            if self.jobs or any(j.active for j in self.doc_jobs.values()):
                self._kick()

    def _sync_docs(self, db_name: str) -> None:
        """Jobs for the documents of replicator db ``db_name``: new ones start, changed ones
        restart, deleted ones (or a deleted database) stop."""
        database = self.couch.dbs.get(db_name)
        docs = {} if database is None else {
            d.id: d for d in database.docs.values()
            if not d.deleted and not d.id.startswith("_design/")}
        for key in [k for k in self.doc_jobs if k[0] == db_name and k[1] not in docs]:
            del self.doc_jobs[key]
        for doc_id, doc in docs.items():
            body = doc.winner.body or {}
            wanted = {k: v for k, v in body.items() if not k.startswith("_replication_")}
            fingerprint = repr(sorted(wanted.items())).encode()
            job = self.doc_jobs.get((db_name, doc_id))
            if job is not None and job.fingerprint == fingerprint:
                continue
            if "_replication_state" in body and job is None:
                # finished before (CouchDB: a completed or failed document stays so)
                state = body["_replication_state"]
                job = self._new_job("", None, None, (db_name, doc_id))
                job.state = state if state in ("completed", "failed") else "initializing"
                job.error = body.get("_replication_state_reason")
                job.fingerprint = fingerprint
                self.doc_jobs[(db_name, doc_id)] = job
                continue
            try:
                spec: Spec | None = Spec.parse(wanted)
                rep_id = spec.replication_id(self.couch.uuid)  # type: ignore[union-attr]
                reason = None
            except Refusal as refusal:
                spec, rep_id, reason = None, "", refusal.reason
            owner = (body.get("user_ctx") or {}).get("name") if isinstance(
                body.get("user_ctx"), dict) else None
            job = self._new_job(rep_id, spec, owner, (db_name, doc_id))
            job.fingerprint = fingerprint
            if reason is not None:
                job.state, job.error = "failed", reason
                self._write_state(job)
            self.doc_jobs[(db_name, doc_id)] = job
            self._kick()

    def _write_state(self, job: Job) -> None:
        """CouchDB writes a document's final state (completed, failed) into it."""
        assert job.doc is not None
        db_name, doc_id = job.doc
        database = self.couch.dbs.get(db_name)
        doc = database.docs.get(doc_id) if database is not None else None
        if doc is None or doc.deleted:
            return
        body = {k: v for k, v in (doc.winner.body or {}).items()
                if not k.startswith("_replication_")}
        body.update(_id=doc_id, _rev=doc.winner.rev, _replication_state=job.state,
                    _replication_state_time=_now())
        if job.state == "failed":
            body["_replication_state_reason"] = job.error
        else:
            body["_replication_stats"] = {**vars(job.counts), "checkpointed_source_seq":
                                          job.checkpointed, "start_time": job.start_time}
        try:
            database.save(body)  # type: ignore[union-attr]
        except Refusal:  # written meanwhile: CouchDB's replicator skips it too
            pass

    # -- the scheduler ----------------------------------------------------------------------------

    def _kick(self) -> None:
        self._dirty = True
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="FakeCouch replicator",
                                            daemon=True)
            self._thread.start()
        self._wake.notify_all()

    def _work(self) -> None:
        with self._wake:
            while True:
                if not self._dirty:
                    if not any(j.active and j.spec is not None for j in self._all_jobs()):
                        self._thread = None  # nothing to run: the next job starts another
                        return
                    retries = [j.retry_at for j in self._all_jobs() if j.state == "crashing"]
                    wait = min(retries) - time.monotonic() if retries else None
                    if wait is None or wait > 0:
                        self._wake.wait(wait if wait is not None else 60.0)
                self._dirty = False
                for job in self._all_jobs():
                    if job.active and job.spec is not None:
                        self._step(job)

    def _all_jobs(self) -> list[Job]:
        return [*self.jobs.values(), *self.doc_jobs.values()]

    def _step(self, job: Job) -> None:
        if job.state == "crashing" and time.monotonic() < job.retry_at:
            return
        assert job.spec is not None
        try:
            counts, facts = self.run(job.spec, job.id)
        except Exception as exc:  # a Refusal, or a bug: the job crashes, the scheduler goes on
            reason = f"{exc.error}: {exc.reason}" if isinstance(exc, Refusal) else repr(exc)
            job.state, job.error = "crashing", reason
            job.error_count += 1
            job.retry_at = time.monotonic() + min(
                _RETRY_FIRST * 2 ** (job.error_count - 1), _RETRY_MAX)
            job.last_updated = _now()
            return
        if not self._still_there(job):
            return  # cancelled while it ran
        moved = bool(vars(counts) != vars(Counts())) or job.state != "running"
        job.counts.add(counts)
        job.error, job.error_count = None, 0
        job.source_seq = job.checkpointed = facts["end_last_seq"]
        if moved:
            job.last_updated = _now()
        if job.spec.continuous:
            job.state = "running"
        else:
            job.state = "completed"
            if job.doc is not None:
                self._write_state(job)

    def _still_there(self, job: Job) -> bool:
        return (self.jobs.get(job.id) is job) or (
            job.doc is not None and self.doc_jobs.get(job.doc) is job)

    # -- what the scheduler shows -----------------------------------------------------------------

    def _node(self) -> str:
        return self.couch.node.name

    def scheduler_jobs(self) -> list[dict[str, Any]]:
        out = []
        for job in self._all_jobs():
            if not job.active or job.spec is None:
                continue
            history: list[dict[str, Any]] = [{"timestamp": job.start_time, "type": "added"}]
            if job.state == "crashing":
                history.insert(0, {"timestamp": job.last_updated, "type": "crashed",
                                   "reason": job.error})
            elif job.state == "running":
                history.insert(0, {"timestamp": job.start_time, "type": "started"})
            out.append({"database": job.doc[0] if job.doc else None, "id": job.id,
                        "pid": job.pid if job.state == "running" else None,
                        "source": job.spec.source.shown, "target": job.spec.target.shown,
                        "user": job.user, "doc_id": job.doc[1] if job.doc else None,
                        "info": job.info(), "history": history, "node": self._node(),
                        "start_time": job.start_time})
        return sorted(out, key=lambda j: j["start_time"])

    def scheduler_docs(self, db_name: str | None = None) -> list[dict[str, Any]]:
        return [self.doc_entry(job) for key, job in sorted(self.doc_jobs.items())
                if db_name is None or key[0] == db_name]

    def doc_entry(self, job: Job) -> dict[str, Any]:
        assert job.doc is not None
        spec = job.spec
        return {"database": job.doc[0], "doc_id": job.doc[1],
                "id": job.id if job.active and job.id else None, "node": self._node(),
                "source": spec.source.shown if spec else None,
                "target": spec.target.shown if spec else None, "state": job.state,
                "info": job.info(), "error_count": job.error_count,
                "start_time": job.start_time, "last_updated": job.last_updated}

    def tasks(self) -> list[dict[str, Any]]:
        out = []
        for job in self._all_jobs():
            if job.state != "running" or job.spec is None:
                continue
            out.append({"pid": job.pid, "node": self._node(), "type": "replication",
                        "replication_id": job.id, "database": job.doc[0] if job.doc else None,
                        "doc_id": job.doc[1] if job.doc else None, "user": job.user,
                        "source": job.spec.source.shown, "target": job.spec.target.shown,
                        "continuous": job.spec.continuous, "started_on": job.started_on,
                        "updated_on": int(time.time()), "process_status": "waiting",
                        "checkpoint_interval": 30000, "changes_pending": job.pending,
                        "checkpointed_source_seq": job.checkpointed,
                        "source_seq": job.source_seq, "through_seq": job.checkpointed,
                        "bulk_get_docs": job.counts.docs_read,
                        "bulk_get_attempts": job.counts.docs_read, **vars(job.counts)})
        return out

    def gauges(self) -> dict[str, int]:
        jobs = [j for j in self._all_jobs() if j.active]
        return {"running": sum(j.state == "running" for j in jobs),
                "pending": sum(j.state == "initializing" for j in jobs),
                "crashed": sum(j.state == "crashing" for j in jobs), "total": len(jobs)}

