"""The adapter contract: the only thing a framework folder implements.

A backend moves bytes and makes native promises; it knows nothing about CouchDB. It is kept as
small as gidgethub's adapter:

* :meth:`Backend.send` performs one HTTP request and feeds the reply to a :class:`Sink`:
  ``on_start(status, headers)``, ``on_data(chunk)`` zero or more times, then exactly one of
  ``on_end()`` or ``on_error(exc)``. Native exceptions are mapped to corduroy2's
  :class:`~corduroy2.errors.TransportError` subclasses inside ``send``, so nothing
  framework-specific ever reaches the API layer. It returns a :class:`Cancel` handle.
  A request body is bytes, or a :class:`~corduroy2.protocol.bodies.BodySource` that ``send``
  reads piece by piece as the connection takes them (an attachment upload): with its length
  as Content-Length when known, chunked otherwise; a source that fails fails the request
  with the source's :class:`~corduroy2.errors.TransportError`.
* :meth:`Backend.run` turns a callback-driven operation into the framework's native result
  (a Tornado/asyncio ``Future``, a Twisted ``Deferred``, or, for blocking, the value itself):
  Futures are built once over a callback hook, as in Tornado's ``httpclient.py``.
* :meth:`Backend.call_later` schedules a callable; :meth:`Backend.close` frees connections.
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import CouchError
from .protocol.requests import Request
from .protocol.responses import Headers

__all__ = [
    "Sink", "Reply", "Collector", "Cancel", "Transfer", "StopTransfer", "PauseTransfer", "Outcome",
    "Start", "Backend",
    "TransportOptions", "ssl_context", "tls_meaning", "warn_unverified", "Watched", "SilenceWatch",
    "missing_package",
]

log = logging.getLogger("corduroy2")


class Sink(Protocol):
    """Receives one response. Methods are called on the backend's thread/loop.

    A backend calls ``on_start`` once. Through the pipeline's
    :class:`~corduroy2.pipeline.exchange.Sender`, a request that is not streamed may be sent
    again after its reply's body was cut: its sink then sees ``on_start`` again, and starts
    over. A sink of a streamed reply that can be picked up where it broke (a changes feed's)
    has a ``resume()`` method giving the request that continues it: on a cluster, the pipeline
    sends that to another node when the stream's node fails, and the sink sees ``on_start``
    again."""

    def on_start(self, status: int, headers: Headers) -> None: ...

    def on_data(self, chunk: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_error(self, exc: CouchError) -> None: ...


#: ``reply(status, headers, body, error)``: a whole reply (:class:`Collector`). ``error`` is
#: set when the exchange failed; ``status`` and ``headers`` are then those of the response that
#: had begun, if any (None otherwise), and ``body`` is empty.
Reply = Callable[[int | None, Headers | None, bytes, CouchError | None], None]


class Cancel(Protocol):
    """``cancel()`` aborts what was started (idempotent); nothing is delivered afterwards."""

    def cancel(self) -> None: ...


class Transfer(Cancel, Protocol):
    """Handle returned by :meth:`Backend.send`. ``cancel()`` aborts the request and drops its
    connection; ``pause()``/``resume()`` apply back-pressure (idempotent). A synchronous
    transport (blocking) reads in the thread that drives it: ``send()`` reads until the sink
    pauses the transfer or the reply ends, and ``resume()`` reads on the same way."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class StopTransfer(Exception):
    """A sink raises this from ``on_data`` to abort a transfer that has no handle yet (a
    synchronous backend is still inside ``send``). The backend drops the connection and calls
    nothing more on the sink."""


class PauseTransfer(Exception):
    """Raised from ``on_data``, once the piece has been taken, to pause a transfer that has no
    handle yet (a synchronous backend is still inside ``send``): ``send`` then returns the
    transfer paused, and its ``resume()`` reads on."""


class Outcome:
    """How an operation ended: a value, or an exception (never both). Read-only by convention.

    A plain slotted class, not a frozen dataclass: one is made per call, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) costs twice as much.
    """

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error

    def __repr__(self) -> str:
        return f"Outcome(value={self.value!r}, error={self.error!r})"


# start(done) begins an operation that will call done(outcome) exactly once, and returns a
# handle whose cancel() aborts it.
Start = Callable[[Callable[[Outcome], None]], Cancel]


@dataclass(frozen=True)
class TransportOptions:
    """Settings every backend honours. ``None`` means no limit.

    ``request_timeout`` bounds a whole exchange; ``idle_timeout`` bounds the silence between
    two pieces of a response (a stalled stream), and is what long feeds want instead.
    TLS: certificates are verified unless ``verify_tls`` is False (an explicit opt-out);
    ``ca_file`` replaces the system CA bundle; ``cert_file``/``key_file`` present a client
    certificate.
    """

    connect_timeout: float | None = 10.0
    request_timeout: float | None = None
    idle_timeout: float | None = None
    max_connections: int = 10
    verify_tls: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def custom_tls(self) -> bool:
        """True when the TLS settings differ from the defaults (a system-verified connection)."""
        return bool(self.ca_file or self.cert_file or not self.verify_tls)


def missing_package(exc: ImportError, package: str) -> ImportError:
    """What ``Couch(client=package)`` raises when importing its transport failed with ``exc``:
    which package and extra to install, when ``package`` is what is missing; else ``exc``
    itself (the transport's own import failed)."""
    if exc.name != package:
        return exc
    error = ImportError(f"client={package!r} needs {package}, which is not installed: "
                        f"pip install 'corduroy2[{package}]'", name=package)
    error.__cause__ = exc
    return error


def ssl_context(options: TransportOptions) -> ssl.SSLContext:
    """The stdlib client context for ``options`` (blocking and Tornado's simple client).
    Backends make it when the ``Couch`` is made if the settings are custom, so that bad file
    names fail there and not at the first request; the default one is made on first use."""
    context = ssl.create_default_context(cafile=options.ca_file)
    if options.cert_file:
        context.load_cert_chain(options.cert_file, options.key_file)
    if not options.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        warn_unverified()
    return context


def warn_unverified() -> None:
    log.warning("TLS certificate verification is disabled (verify_tls=False): this client's "
                "HTTPS connections accept any certificate, so they can be intercepted")


def tls_meaning(text: str) -> str:
    """What a TLS failure means for the user, from the TLS library's own words: one wording
    for every backend (OpenSSL via ssl, libcurl and pyOpenSSL say it differently)."""
    text = text.lower()
    if "mismatch" in text or "subject name" in text or "not valid for" in text:
        return "TLS certificate verification failed: the certificate is not for this host"
    if "alert" in text:
        return "TLS handshake refused by the server (a client certificate may be required)"
    if "certificate" in text or "issuer" in text:
        return "TLS certificate verification failed"
    return "TLS handshake failed"


class Backend(ABC):
    """One instance per :class:`~corduroy2.api.Couch`; shared by its databases."""

    #: Whether :meth:`send` can read a request body from an async iterator (a
    #: :class:`~corduroy2.protocol.bodies.BodySource` with ``is_async``): an event loop can.
    async_bodies = True
    #: Whether settling a promise :meth:`run` made runs whoever awaits it at once, inside the
    #: call that settles it (a Deferred's callbacks), rather than on a later pass of the loop
    #: (an asyncio Future's). An ``async for`` reader woken by parsed rows then takes them
    #: before more are parsed, so that they need no pacing (:class:`~corduroy2.api.pacing.Paced`).
    resumes_at_once = False

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()

    @abstractmethod
    def send(self, request: Request, sink: Sink) -> Transfer:
        """Start ``request``; report the response to ``sink``."""

    @abstractmethod
    def run(self, start: Start) -> Any:
        """Run an operation and return its result in this framework's native form."""

    @abstractmethod
    def when_done(self, value: Any, done: Callable[[Outcome], None]) -> bool:
        """If ``value`` is this framework's promise (or an awaitable it can run), call ``done``
        once it settles and return True; otherwise return False and call nothing. Lets user
        callbacks return a Future/Deferred that corduroy2 waits for (a follower's handler)."""

    @abstractmethod
    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        """Call ``fn`` after ``delay`` seconds, on the backend's loop."""

    @abstractmethod
    def close(self) -> Any:
        """Close connections (Twisted returns a Deferred that fires when they are closed).
        The backend must not be used afterwards."""


class Collector:
    """A sink that gathers a reply and gives it whole to ``reply`` (like treq's ``content``):
    for whoever wants a reply whole (a login)."""

    __slots__ = ("_reply", "_status", "_headers", "_chunks")

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._status: int | None = None
        self._headers: Headers | None = None
        self._chunks: list[bytes] = []

    def on_start(self, status: int, headers: Headers) -> None:
        # Again after a reply whose body was cut, when the request is sent again: start over.
        self._status, self._headers = status, headers
        self._chunks = []

    def on_data(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def on_end(self) -> None:
        chunks = self._chunks
        self._reply(self._status, self._headers,
                    chunks[0] if len(chunks) == 1 else b"".join(chunks), None)

    def on_error(self, exc: CouchError) -> None:
        self._reply(self._status, self._headers, b"", exc)


class Watched(Protocol):
    """A transfer under a :class:`SilenceWatch`: it stamps ``heard_at`` (``time.monotonic()``)
    whenever the server sends something, and is told when its silence has lasted."""

    idle_timeout: float | None
    heard_at: float

    def silence_expired(self) -> None: ...


class SilenceWatch:
    """Tells the transfers of one backend that hear nothing from the server for their
    ``idle_timeout`` (``silence_expired()``), with one repeating timer for all of them.

    Hearing from the server only notes the time; the timer, every quarter of the shortest idle
    timeout watched, tells those whose silence has lasted, so one is told between its idle
    timeout and a quarter more. A loop timer per request instead cost 7% of a small GET's
    instructions on Twisted (bench get --instructions, twisted c=1: 11.0% overhead with one per
    request, 4.0% with this) and 1.5% on Tornado's simple client (tornado-simple c=1: 8.0% with
    a timer per request, 6.5% with this).
    """

    def __init__(self, call_later: Callable[[float, Callable[[], None]], Cancel]) -> None:
        self._call_later = call_later
        self._watched: set[Watched] = set()
        self._tick = math.inf
        self._timer: Cancel | None = None

    def watch(self, transfer: Watched) -> None:
        """Count ``transfer``'s silence from now (again after an :meth:`unwatch`)."""
        assert transfer.idle_timeout
        transfer.heard_at = time.monotonic()
        self._watched.add(transfer)
        tick = max(transfer.idle_timeout / 4, 0.01)
        if tick < self._tick:
            self._tick = tick
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._timer is None:
            self._timer = self._call_later(self._tick, self._sweep)

    def unwatch(self, transfer: Watched) -> None:
        """Stop counting ``transfer``'s silence (it ended, or it is paused: that silence is
        the caller's)."""
        self._watched.discard(transfer)

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        silent = [t for t in self._watched
                  if now - t.heard_at >= t.idle_timeout]  # type: ignore[operator]
        for transfer in silent:
            self._watched.discard(transfer)
            transfer.silence_expired()
        if self._watched:
            self._timer = self._call_later(self._tick, self._sweep)
        else:
            self._tick = math.inf

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watched.clear()
        self._tick = math.inf
