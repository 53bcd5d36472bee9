"""``Couch``: one CouchDB server, its settings and its transport. Written once for every backend."""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ..backend import Backend, TransportOptions
from ..errors import NotFound, PreconditionFailed
from ..pipeline.auth import AuthArg, CookieAuth, as_auth
from ..pipeline.exchange import Sender
from ..pipeline.retry import Retry, as_retry
from ..protocol import requests
from ..protocol.requests import Origin, check_headers
from ..protocol.responses import Response, decode_json
from ..protocol.urls import split_credentials, validate_db_name
from .calls import Op, Runner, Wait
from .front_door import FrontDoor
from .replies import checked_response
from .status import Status

if TYPE_CHECKING:
    from .database import Database

__all__ = ["Couch", "Callback", "UNCHANGED", "CONNECT_TIMEOUT", "IDLE_TIMEOUT"]

Callback = Callable[[Any, Status], Any] | None
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
        url: str = DEFAULT_URL,
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
        self.url, url_auth = split_credentials(url)
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
        self.sender = Sender(self.backend, self.url, self._auth, self._retry, base)
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
        return f"<{type(self).__module__}.Couch {self.url}{who}>"


def _login(step: Wait, url: str) -> Op[Any]:
    response: Response = yield step
    return decode_json(response.body, method="POST", url=url) if response.body else None
