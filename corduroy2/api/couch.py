"""``Couch``: one CouchDB server, its settings and its transport. Written once for every backend."""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ..backend import Backend, TransportOptions
from ..errors import NotFound, PreconditionFailed
from ..pipeline.auth import AuthArg, CookieAuth, as_auth
from ..pipeline.exchange import Sender
from ..pipeline.nodes import Nodes
from ..pipeline.retry import Retry, as_retry
from ..protocol import requests
from ..protocol.requests import Origin, check_headers
from ..protocol.responses import Response, decode_json
from ..protocol.urls import split_credentials, validate_db_name
from .calls import Op, Runner, Stream, Wait
from .changes import ChangesSink, feed_limit, feed_result, longpoll_timeout, with_heartbeat
from .front_door import FrontDoor
from .replication import (DEFAULT_REPLICATOR_DB, Replication, replication_body,
                          write_replicator_doc)
from .replies import checked_response
from .status import Status
from .views import Keep, keep_raw

if TYPE_CHECKING:
    from .database import Database

__all__ = ["Couch", "Callback", "URLs", "UNCHANGED", "CONNECT_TIMEOUT", "IDLE_TIMEOUT"]

Callback = Callable[[Any, Status], Any] | None
#: What ``Couch(url)`` takes: one server's URL, or the URLs of a cluster's nodes.
URLs = str | Sequence[str]
C = TypeVar("C", bound="Couch")


class _Unchanged(enum.Enum):
    UNCHANGED = "unchanged"


#: ``with_options`` default: leave this setting as it is.
UNCHANGED: Literal[_Unchanged.UNCHANGED] = _Unchanged.UNCHANGED

#: Default transport time limits (seconds). A connection that cannot be made fails after
#: CONNECT_TIMEOUT; a reply that stops sending bytes for IDLE_TIMEOUT fails with ``Timeout``,
#: so that no call waits forever on a server that ignores ``timeout`` or ``limit``. Feeds ask
#: the server for a heartbeat well inside it (:data:`corduroy2.api.changes.HEARTBEAT_MS`).
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0

DEFAULT_URL = "http://127.0.0.1:5984"
USER_AGENT = "corduroy2/0.1"


class Couch:
    """A CouchDB server. Creating it sends nothing.

    ``url`` may carry ``user:password@``; it is removed from the URL (so it can never show up in
    a repr or an error) and used like ``auth=(user, password)``. ``auth`` is ``(user,
    password)`` or a provider (:class:`~corduroy2.pipeline.auth.BasicAuth`,
    :class:`~corduroy2.pipeline.auth.CookieAuth`, :class:`~corduroy2.pipeline.auth.ProxyAuth`,
    :class:`~corduroy2.pipeline.auth.JWTAuth`). ``retry`` is a
    :class:`~corduroy2.pipeline.retry.Retry` policy, True (the default policy: a few quick
    retries of what is safe to repeat) or False. ``connect_timeout`` and ``idle_timeout``
    (silence allowed within a reply) default to :data:`CONNECT_TIMEOUT` and
    :data:`IDLE_TIMEOUT`; ``request_timeout`` bounds a whole exchange (None: no bound).
    :meth:`with_options` makes a handle with other settings over the same connections. Every
    network method accepts ``callback=``; see the calling-conventions chapter of the guide.

    ``url`` may be a list of a cluster's nodes (``Couch([url1, url2, url3])``): requests go to
    the first node that answers; a node that refuses connections or sends nothing within the
    timeouts is set aside for a while, and the request goes to the next node (at once for
    what is safe to send twice; a POST only when it never reached a server). ``url`` is then
    the first node's URL and ``nodes`` lists them all. See the guide's chapter on clusters.

    Each handle has its plumbing in public attributes, for :class:`Database` and extensions:
    ``backend`` (the transport), ``sender`` (the pipeline: credentials, retries), ``origin``
    (what its requests are built from) and ``runner`` (runs calls in every calling style).
    """

    backend_name: ClassVar[str] = "abstract"
    database_class: ClassVar[type[Database]]
    #: How this front door reads streams (iterators, feeds, followers, pages).
    front_door: ClassVar[FrontDoor]

    def __init__(
        self,
        url: URLs = DEFAULT_URL,
        auth: AuthArg = None,
        *,
        retry: Retry | bool = True,
        connect_timeout: float | None = CONNECT_TIMEOUT,
        request_timeout: float | None = None,
        idle_timeout: float | None = IDLE_TIMEOUT,
        max_connections: int = 10,
        verify_tls: bool = True,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.nodes, url_auth = _split_nodes(url)
        self.url = self.nodes[0]
        # One health record per cluster, shared by every handle made from this one.
        self._nodes = Nodes(self.nodes) if len(self.nodes) > 1 else None
        self._auth = as_auth(auth if auth is not None else url_auth)
        self._retry = as_retry(retry)
        # Per-handle overrides of the transport's timeouts (None: the backend's own).
        self._timeout: float | None = None
        self._idle_timeout: float | None = None
        options = TransportOptions(
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            idle_timeout=idle_timeout,
            max_connections=max_connections,
            verify_tls=verify_tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )
        self.backend = backend if backend is not None else self._make_backend(options)
        self._configure()

    def _configure(self) -> None:
        """Derive what requests are built and sent with from this handle's settings."""
        base = (("Accept", "application/json"), ("User-Agent", USER_AGENT))
        # Fixed credentials go on every request as it is built; changing ones (a cookie, a JWT
        # from a callable) are added by the Sender as the request goes out.
        static = self._auth.static_headers() if self._auth is not None else ()
        check_headers(static)  # a fixed credential that cannot be sent fails here, not per call
        self.origin = Origin(self.url, base + static, self._timeout, self._idle_timeout)
        self.sender = Sender(self.backend, self.url, self._auth, self._retry, base, self._nodes)
        self.runner = Runner(self.sender)

    @property
    def _user(self) -> str | None:
        return self._auth.user if self._auth is not None else None

    def with_options(
        self: C,
        *,
        auth: AuthArg | Literal[_Unchanged.UNCHANGED] = UNCHANGED,
        retry: Retry | bool | Literal[_Unchanged.UNCHANGED] = UNCHANGED,
        timeout: float | None | Literal[_Unchanged.UNCHANGED] = UNCHANGED,
        idle_timeout: float | None | Literal[_Unchanged.UNCHANGED] = UNCHANGED,
    ) -> C:
        """A handle on the same server with other settings, sharing this one's connections
        (the per-call override: ``await couch.with_options(retry=False).info()``). Settings not
        given are kept. ``timeout``/``idle_timeout`` replace the transport's request and idle
        timeouts (seconds; None: the transport's) for calls made through the new handle.
        ``auth=None`` makes it anonymous. Closing any handle closes the shared connections."""
        clone = copy.copy(self)
        if auth is not UNCHANGED:
            clone._auth = as_auth(auth)
        if retry is not UNCHANGED:
            clone._retry = as_retry(retry)
        if timeout is not UNCHANGED:
            clone._timeout = timeout
        if idle_timeout is not UNCHANGED:
            clone._idle_timeout = idle_timeout
        clone._configure()
        return clone

    def _make_backend(self, options: TransportOptions) -> Backend:
        raise TypeError(
            "corduroy2.api.Couch is abstract: use corduroy2.tornado_io.Couch, "
            "corduroy2.twisted_io.Couch or corduroy2.blocking.Couch"
        )

    # -- public API --------------------------------------------------------------------------

    def database(self, name: str) -> Database:
        """A handle on database ``name`` sharing this server's client and settings; no request."""
        return self.database_class(self, validate_db_name(name))

    def info(self, *, callback: Callback = None) -> Any:
        """``GET /``: the welcome object (``version``, ``vendor``, ``features``...)."""
        return self.runner.call(requests.server_info(self.origin), callback)

    def version(self, *, callback: Callback = None) -> Any:
        """The server's version string."""
        return self.runner.call(requests.server_info(self.origin), callback,
                                lambda info: info["version"])

    def all_dbs(self, *, callback: Callback = None, **opts: Any) -> Any:
        """Names of all databases (``_all_dbs``; admin only on CouchDB 3)."""
        return self.runner.call(requests.all_dbs(self.origin, opts), callback)

    def uuids(self, count: int = 1, *, callback: Callback = None) -> Any:
        """``count`` fresh uuids from the server."""
        return self.runner.call(requests.uuids(self.origin, count), callback,
                                lambda reply: reply["uuids"])

    def request(self, method: str, path: str, query: Mapping[str, Any] | None = None,
                body: Any = None, headers: Mapping[str, str] | None = None, *,
                raw: bool = False, callback: Callback = None) -> Any:
        """Any endpoint, with this handle's credentials, retries, timeouts and typed errors:
        ``await couch.request("GET", "/_node/_local/_versions")``.

        ``path`` goes on the wire as given: quoted already, starting with ``/``
        (:func:`~corduroy2.protocol.urls.doc_path` builds document paths). ``query`` is encoded
        like every call's (``key``, ``startkey``... as JSON). ``body``: bytes or str as they
        are, anything else as JSON; a ``Content-Type`` in ``headers`` wins. Returns the decoded
        JSON reply, or with ``raw=True`` the
        :class:`~corduroy2.protocol.responses.Response` itself (for a reply that is not JSON,
        or to read its headers). An error status raises its typed error either way. Only
        ``GET``/``HEAD`` (and ``PUT``/``DELETE`` with a ``rev``) are retried."""
        request = requests.endpoint(self.origin, method, path, query, body, headers)
        if raw:
            return self.runner.run(checked_response(request), callback)
        return self.runner.call(request, callback)

    def create(self, name: str, *, callback: Callback = None, **opts: Any) -> Any:
        """Create database ``name`` and return its :class:`Database`. ``PreconditionFailed`` if
        it exists. ``opts`` go to the query (``q``, ``n``, ``partitioned``)."""
        database = self.database(name)
        return self.runner.call(requests.create_db(self.origin, name, opts), callback,
                                lambda _: database)

    def delete(self, name: str, *, callback: Callback = None) -> Any:
        """Delete database ``name``. ``NotFound`` if it does not exist."""
        return self.runner.call(requests.delete_db(self.origin, name), callback)

    def db(self, name: str, create_if_missing: bool = False, *, callback: Callback = None) -> Any:
        """Return the :class:`Database` ``name`` after checking that it exists (``NotFound``
        otherwise), or creating it when ``create_if_missing``."""
        database = self.database(name)
        check = requests.db_info(self.origin, name)
        create = requests.create_db(self.origin, name)

        def op() -> Op[Database]:
            try:
                yield check
            except NotFound:
                if not create_if_missing:
                    raise
                try:
                    yield create
                except PreconditionFailed:
                    pass  # created by someone else meanwhile: that is what we wanted
            return database

        return self.runner.run(op(), callback)

    # -- sessions ----------------------------------------------------------------------------

    def session(self, *, callback: Callback = None) -> Any:
        """``GET /_session``: who the server takes this handle for. The reply's ``userCtx``
        holds ``name`` (None when anonymous) and ``roles``; ``info.authenticated`` says how."""
        return self.runner.call(requests.session(self.origin), callback)

    def login(self, *, callback: Callback = None) -> Any:
        """Log in now with the handle's :class:`~corduroy2.pipeline.auth.CookieAuth` (joining a
        login already under way) and return the server's reply (``{"ok", "name", "roles"}``).
        Not needed before other calls, which log in when they must; it re-enables automatic
        logins after :meth:`logout`. ``TypeError`` for other kinds of auth."""
        auth = self._auth
        if not isinstance(auth, CookieAuth):
            raise TypeError(f"login() needs CookieAuth, this handle has {auth!r}")
        sender = self.sender
        step = Wait(lambda done: auth._login(sender, done))
        return self.runner.run(_login(step, self.url + "/_session"), callback)

    def logout(self, *, callback: Callback = None) -> Any:
        """``DELETE /_session``. With :class:`~corduroy2.pipeline.auth.CookieAuth` the cookie is
        dropped at once and nothing logs in automatically until :meth:`login`: calls made
        meanwhile are anonymous. CouchDB keeps no server-side state for a cookie session, so
        ending it is the client forgetting the cookie."""
        cookie = self._auth._logout() if isinstance(self._auth, CookieAuth) else None
        return self.runner.call(requests.end_session(self.origin, cookie), callback)

    def close(self) -> Any:
        """Close the connections. Returns what the backend's close returns (a Deferred on
        Twisted, fired once the connections are closed)."""
        return self.backend.close()

    def __repr__(self) -> str:
        who = f" as {self._user}" if self._user else ""
        where = self.url if len(self.nodes) == 1 else " ".join(self.nodes)
        return f"<{type(self).__module__}.Couch {where}{who}>"

    # -- server administration -----------------------------------------------------------------

    def up(self, *, callback: Callback = None) -> Any:
        """``GET /_up``: ``{"status": "ok"}`` while the node serves requests (``ServerError``
        503 in maintenance mode)."""
        return self.runner.call(requests.up(self.origin), callback)

    def dbs_info(self, names: list[str], *, callback: Callback = None) -> Any:
        """The info of several databases in one request: a list of ``{"key": name, "info":
        {...}}``, or ``{"key", "error": "not_found"}`` for a missing one."""
        return self.runner.call(requests.dbs_info(self.origin, names), callback)

    def tasks(self, *, callback: Callback = None) -> Any:
        """``_active_tasks``: what the server is busy with (indexing, compaction,
        replication...)."""
        return self.runner.call(requests.active_tasks(self.origin), callback)

    def membership(self, *, callback: Callback = None) -> Any:
        """``_membership``: ``{"all_nodes": [...], "cluster_nodes": [...]}``."""
        return self.runner.call(requests.membership(self.origin), callback)

    def config(self, section: str | None = None, key: str | None = None, *,
               node: str = "_local", callback: Callback = None) -> Any:
        """A node's configuration: all of it, one ``section`` (a dict) or one ``key`` (a str).
        ``node`` is a name from :meth:`membership` or ``"_local"`` (the node answering)."""
        return self.runner.call(requests.config(self.origin, node, section, key), callback)

    def set_config(self, section: str, key: str, value: str, *, node: str = "_local",
                   callback: Callback = None) -> Any:
        """Set one configuration value (a str) on ``node``; returns the previous value
        (``""`` when there was none)."""
        request = requests.set_config(self.origin, node, section, key, value)
        return self.runner.call(request, callback)

    def delete_config(self, section: str, key: str, *, node: str = "_local",
                      callback: Callback = None) -> Any:
        """Delete one configuration value on ``node``; returns the value it had (``NotFound``
        if it had none)."""
        request = requests.delete_config(self.origin, node, section, key)
        return self.runner.call(request, callback)

    def stats(self, path: str | None = None, *, node: str = "_local",
              callback: Callback = None) -> Any:
        """A node's statistics (``_stats``): all of them, or the group or metric at ``path``
        (``"couchdb/request_time"``)."""
        return self.runner.call(requests.stats(self.origin, node, path), callback)

    def system(self, *, node: str = "_local", callback: Callback = None) -> Any:
        """A node's Erlang VM figures (``_system``: memory, run queues, uptime...)."""
        return self.runner.call(requests.system(self.origin, node), callback)

    def scheduler_jobs(self, *, callback: Callback = None, **opts: Any) -> Any:
        """``_scheduler/jobs``: the replications running now (``{"jobs": [...],
        "total_rows"...}``); ``opts``: ``limit``, ``skip``."""
        return self.runner.call(requests.scheduler_jobs(self.origin, opts), callback)

    def scheduler_docs(self, replicator_db: str | None = DEFAULT_REPLICATOR_DB,
                       id: str | None = None, *, callback: Callback = None,
                       **opts: Any) -> Any:
        """``_scheduler/docs``: the state of the replications described by the documents of
        ``replicator_db`` (None: of every replicator database), or with ``id`` of that one
        document (a dict with ``state``, ``info``...)."""
        request = requests.scheduler_docs(self.origin, replicator_db, id, opts)
        return self.runner.call(request, callback)

    @property
    def users(self) -> Database:
        """The ``_users`` database (no request)."""
        return self.database("_users")

    def create_user(self, name: str, password: str, roles: Iterable[str] = (), *,
                    callback: Callback = None) -> Any:
        """Create user ``name`` in ``_users`` (CouchDB hashes the password); returns the
        server's reply ``{"ok", "id", "rev"}``. ``Conflict`` if the user exists."""
        request = requests.create_user(self.origin, name, password, roles)
        return self.runner.call(request, callback)

    def db_updates(self, *, callback: Callback = None, **opts: Any) -> Any:
        """``_db_updates``: which databases were created, updated or deleted, as
        ``{"results": [{"db_name", "type", "seq"}...], "last_seq": ...}``. ``feed="normal"``
        (default) or ``"longpoll"``; ``since``, ``limit``, ``timeout``, ``heartbeat`` as for
        :meth:`Database.changes`. For a continuous feed use :meth:`iter_db_updates`."""
        feed = opts.get("feed", "normal")
        if feed not in ("normal", "longpoll"):
            raise ValueError(f"db_updates() reads a normal or longpoll feed, not {feed!r}: "
                             "use iter_db_updates() for a continuous one")
        request = requests.db_updates(self.origin, with_heartbeat(opts))
        if feed == "longpoll" and request.timeout is None:
            request = replace(request, timeout=longpoll_timeout(opts))
        return self.runner.stream(Stream(request, Keep(keep_raw, feed_result)), callback)

    def iter_db_updates(self, *, high_water: int = 1000, **opts: Any) -> Any:
        """Iterate a continuous (or eventsource) ``_db_updates`` feed as its events arrive
        (``async for``; ``for`` in blocking mode), in bounded memory, like
        :meth:`Database.iter_changes`."""
        feed = opts.setdefault("feed", "continuous")
        if feed not in ("continuous", "eventsource"):
            raise ValueError("iter_db_updates() reads a continuous or eventsource feed")
        request = requests.db_updates(self.origin, with_heartbeat(opts))
        limit = feed_limit(opts)
        return self.front_door.iterate(
            self.sender, request, keep_raw, high_water,
            lambda req, consumer, done: ChangesSink(req, consumer, done, feed, limit=limit))

    # -- replication ---------------------------------------------------------------------------

    def replicate(self, source: Any, target: Any, *, continuous: bool = False,
                  create_target: bool = False, doc_ids: Iterable[str] | None = None,
                  selector: dict[str, Any] | None = None, filter: str | None = None,
                  cancel: bool = False, callback: Callback = None, **opts: Any) -> Any:
        """``POST /_replicate``: replicate ``source`` to ``target`` (each a
        :class:`Database`, a database name on this server, a URL or CouchDB's endpoint dict;
        a Database's credentials travel in CouchDB's ``auth`` form, never in a URL). A one-shot
        replication answers when it is done (``{"ok", "history"...}``); a continuous one
        when it has started; ``cancel=True`` with the same arguments stops that one. ``opts``
        are CouchDB's other fields (``query_params``, ``since_seq``, ``use_checkpoints``...).
        For a replication that outlives this call and can be watched, see
        :meth:`start_replication`."""
        body = replication_body(self, source, target, continuous=continuous,
                                create_target=create_target, doc_ids=doc_ids,
                                selector=selector, filter=filter, cancel=cancel, **opts)
        return self.runner.call(requests.replicate(self.origin, body), callback)

    def start_replication(self, source: Any, target: Any, id: str | None = None, *,
                          continuous: bool = False, create_target: bool = False,
                          doc_ids: Iterable[str] | None = None,
                          selector: dict[str, Any] | None = None, filter: str | None = None,
                          replicator_db: str = DEFAULT_REPLICATOR_DB,
                          callback: Callback = None, **opts: Any) -> Any:
        """Start a replication by writing a document (id ``id``, or a new uuid) into
        ``replicator_db``, the way CouchDB recommends; returns its
        :class:`~corduroy2.api.replication.Replication`, whose ``state()``, ``wait()`` and
        ``cancel()`` follow and stop it. Arguments as for :meth:`replicate`."""
        body = replication_body(self, source, target, continuous=continuous,
                                create_target=create_target, doc_ids=doc_ids,
                                selector=selector, filter=filter, **opts)
        validate_db_name(replicator_db)
        return self.runner.run(write_replicator_doc(self, id, replicator_db, body), callback)

    def replication(self, id: str, replicator_db: str = DEFAULT_REPLICATOR_DB) -> Replication:
        """The :class:`~corduroy2.api.replication.Replication` of an existing ``_replicator``
        document (no request)."""
        return Replication(self, id, replicator_db)


def _split_nodes(url: URLs) -> tuple[tuple[str, ...], tuple[str, str] | None]:
    """The node URLs without credentials, and the ``(user, password)`` they carried (the
    same in every URL that has some)."""
    urls = [url] if isinstance(url, str) else url
    if not isinstance(urls, Sequence) or not urls or not all(isinstance(u, str) for u in urls):
        raise TypeError("url must be a str or a non-empty list of str (a cluster's nodes)")
    nodes: list[str] = []
    found: set[tuple[str, str]] = set()
    for one in urls:
        node, creds = split_credentials(one)
        if node in nodes:
            raise ValueError(f"node {node} is listed twice")
        nodes.append(node)
        if creds is not None:
            found.add(creds)
    if len(found) > 1:
        raise ValueError("the node URLs carry different credentials: give auth= instead")
    return tuple(nodes), next(iter(found), None)


def _login(step: Wait, url: str) -> Op[Any]:
    response: Response = yield step
    return decode_json(response.body, method="POST", url=url) if response.body else None
