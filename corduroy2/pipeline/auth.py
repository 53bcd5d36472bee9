"""Auth providers: who a ``Couch`` is, and how its credentials are kept fresh.

Pass one as ``Couch(url, auth=...)``, or per handle with ``couch.with_options(auth=...)``:

* ``(user, password)``, ``user:password@`` in the URL, or :class:`BasicAuth`: HTTP Basic.
* :class:`CookieAuth`: logs in with ``POST /_session`` and sends the ``AuthSession`` cookie;
  adopts the refreshed cookie CouchDB sends back, and logs in again when the cookie's
  ``Max-Age``/``Expires`` has passed or a request is answered 401.
* :class:`ProxyAuth`: ``X-Auth-CouchDB-UserName``/``-Roles``/``-Token`` (a trusted proxy).
* :class:`JWTAuth`: ``Authorization: Bearer``, from a fixed token or a callable that returns a
  fresh one (or a Future/Deferred/coroutine of one).

Fixed credentials (Basic, proxy, a fixed JWT) are put on each request when it is built, so every
code path that sends a :class:`~corduroy2.protocol.requests.Request` is authenticated.
Credentials that change (a cookie, a JWT from a callable) are added as the request goes out, by
the handle's :class:`~corduroy2.pipeline.exchange.Sender`, which also renews them.

Renewal is **single-flight**: the first call that finds the credentials missing, expired or
refused starts one renewal (a login sent through the same pipeline, without this provider, or
a call to the token source), and every call that needs credentials meanwhile waits for that one
renewal and is then sent again once. A provider instance holds the session: share it between handles of one
server (``with_options`` does), not between servers.

Secrets live in private attributes; ``repr``/``str`` show at most the user name.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, Union

import orjson

from ..backend import Cancel, Collector, Outcome, Sink
from ..errors import CouchError, DecodeError
from ..protocol.requests import JSON_HEADERS, Request, encode_json
from ..protocol.responses import Headers, Response, check_status

__all__ = ["Auth", "AuthArg", "BasicAuth", "CookieAuth", "ProxyAuth", "JWTAuth", "as_auth"]

log = logging.getLogger("corduroy2")

HeaderList = tuple[tuple[str, str], ...]


class Sender(Protocol):
    """What a provider needs from the pipeline to renew its credentials (the
    :class:`~corduroy2.pipeline.exchange.Sender` is one): the server, a sender without this
    provider for the login, and a way to wait for a promise the token source returns."""

    url: str
    base_headers: HeaderList

    @property
    def bare(self) -> Sender: ...

    def send(self, request: Request, sink: Sink) -> Cancel: ...

    def when_done(self, value: Any, done: Callable[[Outcome], None]) -> bool: ...

#: What ``auth=`` accepts.
AuthArg = Union["Auth", tuple[str, str], None]
#: What a :class:`JWTAuth` token source may return.
TokenSource = Callable[[], Any]

# Renew a little before the expiry the server announced, so that a request does not leave with
# credentials that lapse on the way: 10% of the lifetime, at most this many seconds.
_EARLY = 5.0


def _early(lifetime: float) -> float:
    return min(_EARLY, lifetime * 0.1)


class Auth:
    """Base of the auth providers. ``user`` is the only thing a provider ever shows."""

    #: True when the credentials change over time and are added as each request goes out.
    dynamic = False

    @property
    def user(self) -> str | None:
        return None

    def static_headers(self) -> HeaderList:
        """Headers put on every request when it is built (fixed credentials)."""
        return ()

    def replicator_credentials(self) -> dict[str, Any]:
        """The members a CouchDB replication endpoint (``{"url": ...}``) needs so that the
        server's replicator acts as this user: ``{"auth": {"basic": {"username",
        "password"}}}`` for a name and password, else the fixed credential headers as
        ``{"headers": {...}}`` (empty without credentials). Never a URL with a password in it.
        ``TypeError`` when the credentials cannot be handed over (a JWT from a callable)."""
        return {"headers": dict(self.static_headers())} if self.static_headers() else {}

    # -- hooks used by the Sender for dynamic credentials -------------------------------------

    def _ready(self, sender: Sender, fresh: bool = False) -> tuple[HeaderList, int] | _Flight:
        """The headers to send now and their generation, or the renewal to wait for first.
        ``fresh``: a renewal was just waited for, so its result is used even if it already
        looks expired (a server-given lifetime shorter than our margin must not loop)."""
        return (), 0

    def _renew(self, sender: Sender, generation: int) -> _Flight | None:
        """After a 401 to a request sent with ``generation``: the renewal to wait for, or None
        when there is nothing to renew (the 401 stands) or it was renewed since (just retry)."""
        return None

    def renewable(self) -> bool:
        """Whether a 401 may be cured by renewing (and retrying once)."""
        return False

    def _observe(self, headers: Mapping[str, str]) -> None:
        """See every response's headers (a refreshed session cookie)."""
        return None

    def __repr__(self) -> str:
        user = self.user
        return f"<{type(self).__name__} {user!r}>" if user is not None else f"<{type(self).__name__}>"

    __str__ = __repr__


class BasicAuth(Auth):
    """HTTP Basic: ``Authorization: Basic base64(user:password)`` on every request."""

    __slots__ = ("_user", "_headers")

    def __init__(self, user: str, password: str) -> None:
        if not isinstance(user, str) or not isinstance(password, str):
            raise TypeError("BasicAuth(user, password) takes two str")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._user = user
        self._headers: HeaderList = (("Authorization", f"Basic {token}"),)

    @property
    def user(self) -> str:
        return self._user

    def static_headers(self) -> HeaderList:
        return self._headers

    def replicator_credentials(self) -> dict[str, Any]:
        # The password is not kept apart: it is read back from the header it went into.
        token = self._headers[0][1][len("Basic "):]
        password = base64.b64decode(token).decode().partition(":")[2]
        return _basic(self._user, password)


def _basic(user: str, password: str) -> dict[str, Any]:
    return {"auth": {"basic": {"username": user, "password": password}}}


class ProxyAuth(Auth):
    """CouchDB proxy authentication, for a trusted proxy that has already authenticated the user.

    Sends ``X-Auth-CouchDB-UserName``, ``X-Auth-CouchDB-Roles`` (comma-separated; left out when
    there are none) and, when
    ``secret`` is given (CouchDB's ``[chttpd_auth] secret``), ``X-Auth-CouchDB-Token``: the hex
    HMAC of the user name keyed with the secret. ``hash`` is ``"sha256"`` (CouchDB 3's default)
    or ``"sha1"`` (CouchDB 1.x/2.x).
    """

    __slots__ = ("_user", "_headers")

    def __init__(self, user: str, roles: Iterable[str] | str = (), secret: str | bytes | None = None,
                 *, hash: str = "sha256") -> None:
        if not isinstance(user, str) or not user:
            raise TypeError("ProxyAuth needs a user name (a non-empty str)")
        if hash not in ("sha256", "sha1", "sha224", "sha384", "sha512"):
            raise ValueError(f"unsupported hash {hash!r}: use 'sha256' or 'sha1'")
        role_list = [roles] if isinstance(roles, str) else list(roles)
        if not all(isinstance(r, str) and "," not in r for r in role_list):
            raise ValueError("roles must be str without commas")
        headers = [("X-Auth-CouchDB-UserName", user)]
        if role_list:  # left out when empty: libcurl drops a header with an empty value anyway
            headers.append(("X-Auth-CouchDB-Roles", ",".join(role_list)))
        if secret is not None:
            key = secret.encode() if isinstance(secret, str) else secret
            token = hmac.new(key, user.encode(), getattr(hashlib, hash)).hexdigest()
            headers.append(("X-Auth-CouchDB-Token", token))
        self._user = user
        self._headers: HeaderList = tuple(headers)

    @property
    def user(self) -> str:
        return self._user

    def static_headers(self) -> HeaderList:
        return self._headers


class _Flight:
    """One renewal in progress; every call that needs the credentials meanwhile waits for it.

    On Tornado and Twisted every call runs on the loop's thread, so waiters are callbacks. The
    blocking backend runs each call on its caller's thread and a renewal inline on the thread
    that started it: a call from another thread blocks on an Event until it ends. That is what
    makes single-flight hold across threads there.
    """

    __slots__ = ("_lock", "_owner", "_ended", "_waiters", "outcome")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = threading.get_ident()
        self._ended = threading.Event()
        self._waiters: list[Callable[[Outcome], None]] = []
        self.outcome: Outcome | None = None

    def join(self, done: Callable[[Outcome], None]) -> Cancel:
        """Call ``done`` with the renewal's outcome once it has ended (now if it has)."""
        with self._lock:
            if self.outcome is None and threading.get_ident() == self._owner:
                self._waiters.append(done)
                return _Leave(self, done)
        if self.outcome is None:
            self._ended.wait()  # another thread renews (blocking backend): wait for it here
        assert self.outcome is not None
        done(_own(self.outcome))
        return _Leave(self, done)

    def leave(self, done: Callable[[Outcome], None]) -> None:
        with self._lock:
            if done in self._waiters:
                self._waiters.remove(done)

    def finish(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcome = outcome
            waiters, self._waiters = self._waiters, []
        self._ended.set()
        for done in waiters:
            done(_own(outcome))


class _Leave:
    __slots__ = ("_flight", "_done")

    def __init__(self, flight: _Flight, done: Callable[[Outcome], None]) -> None:
        self._flight, self._done = flight, done

    def cancel(self) -> None:
        self._flight.leave(self._done)


def _own(outcome: Outcome) -> Outcome:
    """Each waiter gets its own copy of a failure, so tracebacks do not pile up on one object."""
    if outcome.error is None:
        return outcome
    error = outcome.error
    try:
        mine = copy.copy(error)
    except Exception:
        return outcome
    mine.__cause__, mine.__context__ = error.__cause__, error.__context__
    mine.__suppress_context__ = error.__suppress_context__
    return Outcome(error=mine)


class _Renewable(Auth):
    """Credentials obtained by an operation and renewed single-flight (cookie, JWT source).

    ``_generation`` counts credential changes: a request remembers the generation it was sent
    with, so a 401 that arrives after someone else renewed is simply retried, not renewed again.
    """

    dynamic = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: str | None = None  # the credential: a cookie value, a token
        self._renew_at: float | None = None  # monotonic time to renew before sending
        self._generation = 0
        self._flight: _Flight | None = None
        self._stopped = False  # logged out: no automatic renewal until login()

    def _header(self, value: str) -> tuple[str, str]:
        raise NotImplementedError

    def _obtain(self, sender: Sender, done: Callable[[Outcome], None]) -> None:
        """Obtain fresh credentials and install them; then ``done(outcome)``, once."""
        raise NotImplementedError

    def _install(self, value: str | None, lifetime: float | None) -> None:
        with self._lock:
            self._value = value
            self._renew_at = (None if lifetime is None
                              else time.monotonic() + lifetime - _early(lifetime))
            self._generation += 1

    def renewable(self) -> bool:
        return not self._stopped

    def _ready(self, sender: Sender, fresh: bool = False) -> tuple[HeaderList, int] | _Flight:
        # Deciding and claiming the renewal under one lock: two threads that both find the
        # credentials missing must not both start one.
        with self._lock:
            flight = self._flight
            if flight is None:
                value = self._value
                if self._stopped or (fresh and value is None):
                    return (), self._generation
                if value is not None and (fresh or self._renew_at is None
                                          or time.monotonic() < self._renew_at):
                    return (self._header(value),), self._generation
                flight = self._flight = _Flight()
                start = True
            else:
                start = False
        if start:
            self._start(sender, flight)
        return flight

    def _renew(self, sender: Sender, generation: int) -> _Flight | None:
        with self._lock:
            if self._flight is not None:
                return self._flight
            if self._stopped or generation != self._generation:
                return None
            flight = self._flight = _Flight()
        self._start(sender, flight)
        return flight

    def _start(self, sender: Sender, flight: _Flight) -> None:
        def landed(outcome: Outcome) -> None:
            with self._lock:
                if self._flight is flight:
                    self._flight = None
            if outcome.error is not None:
                log.info("corduroy2: renewing %r failed: %s", self, outcome.error)
            flight.finish(outcome)

        self._obtain(sender, landed)


class CookieAuth(_Renewable):
    """A CouchDB cookie session: ``POST /_session`` with the name and password (as JSON), then
    the ``AuthSession`` cookie on every request.

    The first call logs in (or call :meth:`~corduroy2.api.Couch.login`). A refreshed cookie in
    any response is adopted. A new login happens, once for all concurrent calls, when the
    cookie's ``Max-Age``/``Expires`` is (nearly) reached, or when a request is answered 401;
    that request is then sent again once. After :meth:`~corduroy2.api.Couch.logout`, nothing
    logs in automatically until ``login()`` is called again.
    """

    def __init__(self, user: str, password: str) -> None:
        if not isinstance(user, str) or not isinstance(password, str):
            raise TypeError("CookieAuth(user, password) takes two str")
        super().__init__()
        self._user = user
        self._password = password

    @property
    def user(self) -> str:
        return self._user

    def _header(self, value: str) -> tuple[str, str]:
        return ("Cookie", f"AuthSession={value}")

    def replicator_credentials(self) -> dict[str, Any]:
        # The replicator logs in by itself; a cookie would expire under a long replication.
        return _basic(self._user, self._password)

    def _obtain(self, sender: Sender, done: Callable[[Outcome], None]) -> None:
        body = encode_json({"name": self._user, "password": self._password})
        request = Request(
            "POST", sender.url + "/_session", sender.base_headers + JSON_HEADERS, body,
            idempotent=True,  # logging in twice is harmless
        )
        log.info("corduroy2: logging in to %s as %r", sender.url, self._user)

        def replied(status: int | None, headers: Headers | None, body: bytes,
                    error: CouchError | None) -> None:
            if error is not None:
                done(Outcome(error=error))
                return
            assert status is not None and headers is not None
            try:
                check_status(status, headers, body, method=request.method, url=request.url)
                if not self._take_cookie(headers, login=True):
                    raise DecodeError(f"the login answered without an AuthSession cookie "
                                      f"({request.method} {request.url})")
            except CouchError as exc:
                done(Outcome(error=exc))
                return
            # The whole response, for login(): its status is the call's Status.code.
            done(Outcome(value=Response(status, headers, body)))

        # Without this provider (the login carries its own credentials), with the retry
        # policy: a refused connection is retried as for any call.
        sender.bare.send(request, Collector(replied))

    def _observe(self, headers: Mapping[str, str]) -> None:
        if "set-cookie" in headers and not self._stopped:
            self._take_cookie(headers, login=False)

    def _take_cookie(self, headers: Mapping[str, str], login: bool) -> bool:
        """Install the AuthSession cookie of a response; True if there was one to keep."""
        get_list = getattr(headers, "get_list", None)
        values = get_list("set-cookie") if get_list else [headers.get("set-cookie", "")]
        found: tuple[str, float | None] | None = None
        cleared = False
        for line in values:
            parsed = _parse_set_cookie(line)
            if parsed is None:
                continue
            value, lifetime = parsed
            if value and (lifetime is None or lifetime > 0):
                found, cleared = (value, lifetime), False
            else:
                found, cleared = None, True  # an emptied or expired cookie: the session ended
        if found is not None:
            with self._lock:
                unchanged = found[0] == self._value and not login
            if unchanged:
                return True
            self._install(*found)
            return True
        if cleared and not login:
            self._install(None, None)
        return False

    def _login(self, sender: Sender, done: Callable[[Outcome], None]) -> Cancel:
        """Log in now (joining a login already under way)."""
        with self._lock:
            self._stopped = False
            flight = self._flight
            start = flight is None
            if flight is None:
                flight = self._flight = _Flight()
        if start:
            self._start(sender, flight)
        return flight.join(done)

    def _logout(self) -> str | None:
        """Forget the cookie and stop automatic logins; returns the cookie to end with."""
        with self._lock:
            value, self._value = self._value, None
            self._stopped = True
            self._renew_at = None
            self._generation += 1
        return value


class JWTAuth(_Renewable):
    """``Authorization: Bearer <token>`` (CouchDB 3's JWT handler).

    ``token`` is a str, or a callable with no arguments returning a str, or a promise of one (a
    Future, Deferred or coroutine of the front door in use). A callable is called at the first
    request, again (once for all concurrent calls) when the token's ``exp`` claim is near or a
    request is answered 401; that request is then sent again once.
    """

    def __init__(self, token: str | TokenSource) -> None:
        super().__init__()
        if isinstance(token, str):
            if not token:
                raise ValueError("JWTAuth needs a non-empty token")
            self._source: TokenSource | None = None
            self.dynamic = False
            self._static: HeaderList = (self._header(token),)
        elif callable(token):
            self._source = token
            self._static = ()
        else:
            raise TypeError(f"JWTAuth takes a str or a callable, not {type(token).__name__}")

    def static_headers(self) -> HeaderList:
        return self._static

    def renewable(self) -> bool:
        return self._source is not None

    def replicator_credentials(self) -> dict[str, Any]:
        if self._source is not None:
            raise TypeError("a JWTAuth with a token source cannot be handed to the replicator "
                            "(its tokens expire): give the endpoint as a dict instead")
        return super().replicator_credentials()

    def _header(self, value: str) -> tuple[str, str]:
        return ("Authorization", f"Bearer {value}")

    def _obtain(self, sender: Sender, done: Callable[[Outcome], None]) -> None:
        assert self._source is not None
        log.info("corduroy2: fetching a JWT from %r", self._source)

        def settled(outcome: Outcome) -> None:
            token, error = outcome.value, outcome.error
            if error is None and (not isinstance(token, str) or not token):
                error = CouchError(f"the JWT source returned {type(token).__name__}, "
                                   "not a token")
            elif error is not None and not isinstance(error, CouchError):
                error = _source_failed(error)
            if error is None:
                self._install(token, _jwt_lifetime(token))
            done(Outcome(error=error))

        try:
            value = self._source()
        except Exception as exc:
            done(Outcome(error=_source_failed(exc)))
            return
        if not sender.when_done(value, settled):
            settled(Outcome(value=value))


def _source_failed(exc: BaseException) -> CouchError:
    """Reported as a CouchError (sinks expect one); the message names only the type, as the
    exception's own text could quote the token. ``__cause__`` keeps the original."""
    error = CouchError(f"the JWT source failed: {type(exc).__name__}")
    error.__cause__ = exc
    return error


def _jwt_lifetime(token: str) -> float | None:
    """Seconds until the token's ``exp`` claim, read without verifying (the server does that);
    None when it has none or is not a JWT we can read."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) - time.time()
    except Exception:
        return None


def _parse_set_cookie(line: str) -> tuple[str, float | None] | None:
    """``(value, lifetime)`` of an ``AuthSession`` Set-Cookie line, else None. ``lifetime`` comes
    from ``Max-Age`` (which wins) or ``Expires``; None when neither is given."""
    first, _, rest = line.partition(";")
    name, eq, value = first.partition("=")
    if not eq or name.strip() != "AuthSession":
        return None
    value = value.strip().strip('"')
    max_age: float | None = None
    expires: float | None = None
    for attribute in rest.split(";"):
        key, _, arg = attribute.partition("=")
        key = key.strip().lower()
        if key == "max-age":
            try:
                max_age = float(arg.strip())
            except ValueError:
                pass
        elif key == "expires":
            try:
                expires = parsedate_to_datetime(arg.strip()).timestamp() - time.time()
            except (TypeError, ValueError):
                pass
    return value, (max_age if max_age is not None else expires)


def as_auth(value: Any) -> Auth | None:
    """An :class:`Auth` from what ``auth=`` accepts: a provider, ``(user, password)``, or None.
    The error never shows the value (it may hold a password)."""
    if value is None or isinstance(value, Auth):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return BasicAuth(value[0], value[1])
    raise TypeError(
        "auth must be (user, password), BasicAuth, CookieAuth, ProxyAuth, JWTAuth or None, "
        f"not {type(value).__name__}"
    )

