"""``Couch``: one CouchDB server, its settings and its transport. Written once for every backend."""

from __future__ import annotations

import copy
import enum
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ..backend import Backend, TransportOptions
from ..errors import NotFound, PreconditionFailed
from ..protocol.requests import JSON_HEADERS, Request, check_headers
from ..protocol.responses import decode_json
from ..protocol.urls import db_path, encode_query, split_credentials, validate_db_name
from .auth import AuthArg, CookieAuth, as_auth
from .calls import Op, Response, Wait, invoke, invoke_one
from .retry import Retry, Sender, as_retry
from .status import Status
from .calls import RowSink
from .changes import ChangesFeed
from .follower import ChangesFollower
from .views import MakeSink, RowIterator

if TYPE_CHECKING:
    from .database import Database

__all__ = ["Couch", "Callback", "KEEP"]

Callback = Callable[[Any, Status], Any] | None
C = TypeVar("C", bound="Couch")


class _Keep(enum.Enum):
    KEEP = "keep"


#: ``with_options`` default: keep this setting as it is.
KEEP: Literal[_Keep.KEEP] = _Keep.KEEP

DEFAULT_URL = "http://127.0.0.1:5984"
USER_AGENT = "corduroy2/0.1"


class Couch:
    """A CouchDB server. Creating it sends nothing.

    ``url`` may carry ``user:password@``; it is removed from the URL (so it can never show up in
    a repr or an error) and used like ``auth=(user, password)``. ``auth`` is ``(user,
    password)`` or a provider (:class:`~corduroy2.api.auth.BasicAuth`,
    :class:`~corduroy2.api.auth.CookieAuth`, :class:`~corduroy2.api.auth.ProxyAuth`,
    :class:`~corduroy2.api.auth.JWTAuth`). ``retry`` is a
    :class:`~corduroy2.api.retry.Retry` policy, True (the default policy: a few quick retries
    of what is safe to repeat) or False. :meth:`with_options` makes a handle with other
    settings over the same connections. Every network method accepts ``callback=``; see the
    calling-conventions chapter of the guide.
    """

    backend_name: ClassVar[str] = "abstract"
    database_class: ClassVar[type[Database]]

    def __init__(
        self,
        url: str = DEFAULT_URL,
        auth: AuthArg = None,
        *,
        retry: Retry | bool = True,
        connect_timeout: float | None = 10.0,
        request_timeout: float | None = None,
        idle_timeout: float | None = None,
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
        self._backend = backend if backend is not None else self._make_backend(options)
        self._configure()

    def _configure(self) -> None:
        """Derive what requests are built and sent with from this handle's settings."""
        base = (("Accept", "application/json"), ("User-Agent", USER_AGENT))
        # Fixed credentials go on every request as it is built; changing ones (a cookie, a JWT
        # from a callable) are added by the Sender as the request goes out.
        static = self._auth.static_headers() if self._auth is not None else ()
        check_headers(static)  # a fixed credential that cannot be sent fails here, not per call
        self._headers = base + static
        self._sender = Sender(self._backend, self.url, self._auth, self._retry, base)
        #: ``_simple(request, callback, post=None)``: one request through the Sender, whose
        #: value is ``post(reply)`` (the reply when ``post`` is None). A partial rather than a
        #: method: it is on nearly every call's path, and a partial adds no Python frame.
        self._simple: Callable[..., Any] = functools.partial(invoke_one, self._sender)

    @property
    def _user(self) -> str | None:
        return self._auth.user if self._auth is not None else None

    def with_options(
        self: C,
        *,
        auth: AuthArg | Literal[_Keep.KEEP] = KEEP,
        retry: Retry | bool | Literal[_Keep.KEEP] = KEEP,
        timeout: float | None | Literal[_Keep.KEEP] = KEEP,
        idle_timeout: float | None | Literal[_Keep.KEEP] = KEEP,
    ) -> C:
        """A handle on the same server with other settings, sharing this one's connections
        (the per-call override: ``await couch.with_options(retry=False).info()``). Settings not
        given are kept. ``timeout``/``idle_timeout`` replace the transport's request and idle
        timeouts (seconds; None: the transport's) for calls made through the new handle.
        ``auth=None`` makes it anonymous. Closing any handle closes the shared connections."""
        clone = copy.copy(self)
        if auth is not KEEP:
            clone._auth = as_auth(auth)
        if retry is not KEEP:
            clone._retry = as_retry(retry)
        if timeout is not KEEP:
            clone._timeout = timeout
        if idle_timeout is not KEEP:
            clone._idle_timeout = idle_timeout
        clone._configure()
        return clone

    def _make_backend(self, options: TransportOptions) -> Backend:
        raise TypeError(
            "corduroy2.api.Couch is abstract: use corduroy2.tornado_io.Couch, "
            "corduroy2.twisted_io.Couch or corduroy2.blocking.Couch"
        )

    # -- plumbing shared with Database ------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        query: Any = None,
        body: bytes | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        idempotent: bool | None = None,
    ) -> Request:
        all_headers = self._headers + headers
        if body is not None:
            all_headers += JSON_HEADERS
        elif method in ("PUT", "POST"):
            body = b""
        url = self.url + path + encode_query(query) if query else self.url + path
        return Request(method, url, all_headers, body, False,
                       self._timeout, self._idle_timeout, idempotent)

    def _invoke(self, op: Op[Any], callback: Callback) -> Any:
        # Through the Sender: credentials, their renewal and retries apply to every request.
        return invoke(self._sender, op, callback)

    def _iterate(self, request: Request, wrap: Callable[[Any], Any], high_water: int,
                 make_sink: MakeSink = RowSink) -> Any:
        """The row iterator for this front door (``async for``; blocking overrides it)."""
        return RowIterator(self._sender, request, wrap, high_water, make_sink)

    def _feed(self, db: Database, request: Request, feed: str,
              callback: Callable[[Any, list[dict[str, Any]]], Any],
              latency: float, max_batch: int, since: Any,
              on_error: Callable[[BaseException], Any] | None) -> Any:
        """Start corduroy's callback feed for this front door (blocking overrides it)."""
        return ChangesFeed(db, request, feed, callback, latency, max_batch, since,
                           on_error).start()

    def _follower(self, db: Database, handler: Callable[[dict[str, Any]], Any],
                  **kwargs: Any) -> Any:
        """Make and start the follower for this front door (blocking overrides it)."""
        return ChangesFollower(db, handler, **kwargs).start()

    # -- public API --------------------------------------------------------------------------

    def database(self, name: str) -> Database:
        """A handle on database ``name`` sharing this server's client and settings; no request."""
        return self.database_class(self, validate_db_name(name))

    def info(self, *, callback: Callback = None) -> Any:
        """``GET /``: the welcome object (``version``, ``vendor``, ``features``...)."""
        return self._simple(self._request("GET", "/"), callback)

    def version(self, *, callback: Callback = None) -> Any:
        """The server's version string."""
        return self._simple(self._request("GET", "/"), callback, lambda info: info["version"])

    def all_dbs(self, *, callback: Callback = None, **opts: Any) -> Any:
        """Names of all databases (``_all_dbs``; admin only on CouchDB 3)."""
        return self._simple(self._request("GET", "/_all_dbs", opts), callback)

    def uuids(self, count: int = 1, *, callback: Callback = None) -> Any:
        """``count`` fresh uuids from the server."""
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        return self._simple(
            self._request("GET", "/_uuids", {"count": count}), callback, lambda r: r["uuids"]
        )

    def create(self, name: str, *, callback: Callback = None, **opts: Any) -> Any:
        """Create database ``name`` and return its :class:`Database`. ``PreconditionFailed`` if
        it exists. ``opts`` go to the query (``q``, ``n``, ``partitioned``)."""
        database = self.database(name)
        request = self._request("PUT", db_path(name), opts)
        return self._simple(request, callback, lambda _: database)

    def delete(self, name: str, *, callback: Callback = None) -> Any:
        """Delete database ``name``. ``NotFound`` if it does not exist."""
        validate_db_name(name)
        return self._simple(self._request("DELETE", db_path(name)), callback)

    def db(self, name: str, create_if_missing: bool = False, *, callback: Callback = None) -> Any:
        """Return the :class:`Database` ``name`` after checking that it exists (``NotFound``
        otherwise), or creating it when ``create_if_missing``."""
        database = self.database(name)
        check = self._request("GET", db_path(name))
        create = self._request("PUT", db_path(name))

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

        return self._invoke(op(), callback)

    # -- sessions ----------------------------------------------------------------------------

    def session(self, *, callback: Callback = None) -> Any:
        """``GET /_session``: who the server takes this handle for. The reply's ``userCtx``
        holds ``name`` (None when anonymous) and ``roles``; ``info.authenticated`` says how."""
        return self._simple(self._request("GET", "/_session"), callback)

    def login(self, *, callback: Callback = None) -> Any:
        """Log in now with the handle's :class:`~corduroy2.api.auth.CookieAuth` (joining a login
        already under way) and return the server's reply (``{"ok", "name", "roles"}``).
        Not needed before other calls, which log in when they must; it re-enables automatic
        logins after :meth:`logout`. ``TypeError`` for other kinds of auth."""
        auth = self._auth
        if not isinstance(auth, CookieAuth):
            raise TypeError(f"login() needs CookieAuth, this handle has {auth!r}")
        sender = self._sender
        step = Wait(lambda done: auth._login(sender, done))
        return self._invoke(_login(step, self.url + "/_session"), callback)

    def logout(self, *, callback: Callback = None) -> Any:
        """``DELETE /_session``. With :class:`~corduroy2.api.auth.CookieAuth` the cookie is
        dropped at once and nothing logs in automatically until :meth:`login`: calls made
        meanwhile are anonymous. CouchDB keeps no server-side state for a cookie session, so
        ending it is the client forgetting the cookie."""
        headers: tuple[tuple[str, str], ...] = ()
        if isinstance(self._auth, CookieAuth):
            cookie = self._auth._logout()
            if cookie is not None:
                headers = (("Cookie", f"AuthSession={cookie}"),)
        request = self._request("DELETE", "/_session", headers=headers, idempotent=True)
        return self._simple(request, callback)

    def close(self) -> Any:
        """Close the connections. Returns what the backend's close returns (a Deferred on
        Twisted, fired once the connections are closed)."""
        return self._backend.close()

    def __repr__(self) -> str:
        who = f" as {self._user}" if self._user else ""
        return f"<{type(self).__module__}.Couch {self.url}{who}>"


def _login(step: Wait, url: str) -> Op[Any]:
    response: Response = yield step
    return decode_json(response.body, method="POST", url=url) if response.body else None
