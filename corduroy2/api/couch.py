"""``Couch``: one CouchDB server, its settings and its transport. Written once for every backend."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ..backend import Backend, TransportOptions
from ..errors import NotFound, PreconditionFailed
from ..protocol.requests import JSON_HEADERS, Request
from ..protocol.urls import db_path, encode_query, split_credentials, validate_db_name
from .calls import Op, invoke
from .status import Status
from .calls import RowSink
from .changes import ChangesFeed
from .views import MakeSink, RowIterator

if TYPE_CHECKING:
    from .database import Database

__all__ = ["Couch", "Callback"]

Callback = Callable[[Any, Status], Any] | None

DEFAULT_URL = "http://127.0.0.1:5984"
USER_AGENT = "corduroy2/0.1"


class Couch:
    """A CouchDB server. Creating it sends nothing.

    ``url`` may carry ``user:password@``; it is removed from the URL (so it can never show up in
    a repr or an error) and used like ``auth=(user, password)``. Every network method accepts
    ``callback=``; see the calling-conventions chapter of the guide.
    """

    backend_name: ClassVar[str] = "abstract"
    database_class: ClassVar[type[Database]]

    def __init__(
        self,
        url: str = DEFAULT_URL,
        auth: tuple[str, str] | None = None,
        *,
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
        auth = auth or url_auth
        headers = [("Accept", "application/json"), ("User-Agent", USER_AGENT)]
        if auth is not None:
            user, password = auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers.append(("Authorization", f"Basic {token}"))
        self._user = auth[0] if auth else None
        self._headers = tuple(headers)
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
    ) -> Request:
        all_headers = self._headers + headers
        if body is not None:
            all_headers += JSON_HEADERS
        elif method in ("PUT", "POST"):
            body = b""
        return Request(method, self.url + path + encode_query(query), all_headers, body)

    def _invoke(self, op: Op[Any], callback: Callback) -> Any:
        return invoke(self._backend, op, callback)

    def _iterate(self, request: Request, wrap: Callable[[Any], Any], high_water: int,
                 make_sink: MakeSink = RowSink) -> Any:
        """The row iterator for this front door (``async for``; blocking overrides it)."""
        return RowIterator(self._backend, request, wrap, high_water, make_sink)

    def _feed(self, db: Database, request: Request, feed: str,
              callback: Callable[[Any, list[dict[str, Any]]], Any], latency: float, since: Any,
              on_error: Callable[[BaseException], Any] | None) -> Any:
        """Start corduroy's callback feed for this front door (blocking overrides it)."""
        return ChangesFeed(db, request, feed, callback, latency, since, on_error).start()

    def _simple(self, request: Request, callback: Callback, post: Callable[[Any], Any] | None = None) -> Any:
        return self._invoke(_one(request, post), callback)

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

    def close(self) -> Any:
        """Close the connections. Returns what the backend's close returns (a Deferred on
        Twisted, fired once the connections are closed)."""
        return self._backend.close()

    def __repr__(self) -> str:
        who = f" as {self._user}" if self._user else ""
        return f"<{type(self).__module__}.Couch {self.url}{who}>"


def _one(request: Request, post: Callable[[Any], Any] | None) -> Op[Any]:
    value = yield request
    return value if post is None else post(value)
