"""The Tornado transport: ``AsyncHTTPClient`` (curl or simple), one instance per ``Couch``.

Never ``AsyncHTTPClient.configure``: that would change every client of the process. The
implementation class is instantiated directly with ``force_instance=True``. The instance is made
lazily on the first request, on the loop that is current then (Tornado binds a client to the
IOLoop it was made on), and made again if the caller moves to another loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tornado import gen, httputil
from tornado.concurrent import Future
from tornado.httpclient import (
    AsyncHTTPClient,
    HTTPClientError,
    HTTPRequest,
    HTTPResponse,
    _RequestProxy,
)
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import (
    HTTPStreamClosedError,
    HTTPTimeoutError,
    SimpleAsyncHTTPClient,
    _HTTPConnection,
)

from ..backend import (
    Backend, Cancel, Collector, Outcome, Reply, Sink, Start, Transfer, TransportOptions,
    ssl_context, tls_meaning,
)
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.requests import Request, check_headers
from ..protocol.responses import Headers

try:
    import pycurl
    from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError
except ImportError:  # pycurl is optional: the simple client is used without it
    pycurl = None
    CurlAsyncHTTPClient = None  # type: ignore[assignment,misc]
    CurlError = None  # type: ignore[assignment,misc]

__all__ = ["TornadoBackend", "HAS_CURL"]

log = logging.getLogger("corduroy2")

HAS_CURL = CurlAsyncHTTPClient is not None

T = TypeVar("T")

# Both clients apply max_body_size to streamed bodies as well: a long view or feed would die at
# Tornado's 100 MiB default. Memory is bounded by streaming, not by this.
_MAX_BODY = 1 << 62

# libcurl error numbers (curl/curl.h), by what they mean for the caller.
_CURL_CONNECT = {5, 6, 7, 35, 51, 53, 54, 58, 59, 60, 77, 80, 83, 90, 91}
_CURL_TIMEOUT = {28}
_CURL_CUT = {18, 52, 56, 92}
# TLS: handshake/connect (35), bad server certificate (60, 51), CA file (77), client
# certificate or key files (58); and a receive error (56) carrying a TLS alert (the server
# refused the session after a TLS 1.3 handshake, typically for want of a client certificate).
_CURL_TLS = {35, 51, 58, 60, 77, 83, 90, 91}
# Socket errors that mean the connection was never made.
_CONNECT_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH,
                   errno.EADDRNOTAVAIL, errno.ETIMEDOUT}


class _Pending:
    """Handle for one fetch.

    Tornado has no per-request abort, so cancelling stops all delivery at once and tears the
    transfer down where it can: simple closes the connection's stream; curl aborts streamed
    transfers from the progress callback (a buffered curl request runs to its end, unseen).

    Back-pressure: the simple client awaits what ``streaming_callback`` returns before reading
    on, so a paused transfer hands it a Future that ``resume()`` resolves. For curl, the easy
    handle is paused with ``curl_easy_pause``; Tornado's own curl buffer only unpauses what it
    paused itself, and a chunk it had already queued re-applies our pause when it arrives.

    Idle timeout: ``watch`` starts a loop timer that fires after ``idle`` seconds without
    ``heard()`` (called for every header line and body chunk). Hearing only stamps the time;
    the timer, when it fires early, re-arms itself for what is left. It stops while paused
    (that silence is ours) and once cancelled.
    """

    # Class-level defaults and no __init__ (nor __slots__, which would forbid them): one is
    # made per request, and a plain GET sets none of these.
    cancelled = False
    paused = False
    curl: Any = None
    curl_client: Any = None
    connection: _SimpleConnection | None = None
    _waiter: Future[None] | None = None
    _loop: IOLoop | None = None
    _idle = 0.0
    _expired: Callable[[], None] | None = None
    _timer: object | None = None
    _heard = 0.0

    def watch(self, idle: float, expired: Callable[[], None]) -> None:
        self._loop, self._idle, self._expired = IOLoop.current(), idle, expired
        self.heard()
        self._arm(idle)

    def unwatch(self) -> None:
        """The fetch has ended: no more idle checks."""
        self._disarm()
        self._loop = None

    def heard(self) -> None:
        if self._loop is not None:
            self._heard = self._loop.time()

    def _arm(self, delay: float) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(delay, self._check)

    def _disarm(self) -> None:
        if self._timer is not None:
            assert self._loop is not None
            self._loop.remove_timeout(self._timer)
            self._timer = None

    def _check(self) -> None:
        assert self._loop is not None and self._expired is not None
        self._timer = None
        if self.cancelled or self.paused:
            return
        left = self._heard + self._idle - self._loop.time()
        if left > 0:
            self._arm(left)
        else:
            self._expired()

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self._disarm()
        self.resume()
        if self.connection is not None:
            self.connection.abandon()
        if self.curl is not None:
            curl, self.curl = self.curl, None
            _abort_curl(self.curl_client, curl)

    def pause(self) -> None:
        if self.paused or self.cancelled:
            return
        self.paused = True
        self._disarm()
        if self.curl is not None:
            try:
                self.curl.pause(pycurl.PAUSE_RECV)
            except pycurl.error:
                pass  # the transfer already ended; its result is on its way

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self._loop is not None and not self.cancelled:
            self.heard()  # the silence starts now
            self._arm(self._idle)
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            if not waiter.done():
                waiter.set_result(None)
        if self.curl is not None:
            try:
                self.curl.pause(pycurl.PAUSE_CONT)
            except pycurl.error:
                pass

    def wait(self) -> Future[None] | None:
        """For the simple client's streaming_callback: a Future while paused, else None."""
        if not self.paused or self.curl is not None:
            return None
        if self._waiter is None:
            self._waiter = Future()
        return self._waiter


class _SimpleConnection(_HTTPConnection):
    """Tornado's simple-client connection with two repairs.

    * On a connection reset after the headers, Tornado's ``on_connection_close`` re-raises the
      socket error instead of ending the request, so the fetch never settles; here the error
      ends the request like any other.
    * It tells its request's :class:`_Pending` about itself, so cancelling can abandon it
      (there is no public per-request abort): close the stream, or, while still connecting,
      end the fetch so that the connection is closed as soon as it is made and the request
      never sent. A request cancelled while it waited in the client's queue is abandoned as
      it leaves the queue.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        original = getattr(self.request, "request", self.request)  # inside _RequestProxy
        pending = getattr(original, "corduroy2_pending", None)
        if isinstance(pending, _Pending):
            pending.connection = self
            if pending.cancelled:
                self.abandon()

    def abandon(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.close()  # drop the connection (the simple client never reuses one)
        elif self.final_callback is not None:
            # Connecting: Tornado's own timeout path settles the fetch, frees its slot, and
            # run() closes the stream once the connect completes, before sending anything.
            self._on_timeout("(cancelled by corduroy2)")

    def on_connection_close(self) -> None:
        error = self.stream.error
        if self.final_callback is not None and error is not None:
            self._handle_exception(type(error), error, error.__traceback__)
            return
        super().on_connection_close()


class _SimpleClient(SimpleAsyncHTTPClient):
    def _connection_class(self) -> type:
        return _SimpleConnection


class _CallFuture(Future[T]):
    """The Future of a call: cancelling it cancels the call. An override of ``cancel`` (which
    asyncio's tasks and ``wait_for`` call too), rather than a done-callback watching for
    cancellation, which had to be added and removed again on every call."""

    call: Cancel | None = None

    def settle(self, outcome: Outcome) -> None:
        """The call's ``done``: its outcome, unless the caller has cancelled this Future."""
        if self.done():
            return
        if outcome.error is not None:
            self.set_exception(outcome.error)
        else:
            self.set_result(outcome.value)

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        if self.call is not None:
            self.call.cancel()
        return True


class _LoopCall:
    __slots__ = ("_loop", "_handle")

    def __init__(self, loop: IOLoop, handle: object) -> None:
        self._loop, self._handle = loop, handle

    def cancel(self) -> None:
        self._loop.remove_timeout(self._handle)


class TornadoBackend(Backend):
    """``client="curl"`` (the default when pycurl imports) or ``"simple"``."""

    def __init__(self, options: TransportOptions | None = None, client: str | None = None) -> None:
        super().__init__(options)
        if client is None:
            client = "curl" if HAS_CURL else "simple"
        if client not in ("curl", "simple"):
            raise ValueError(f"client must be 'curl' or 'simple', not {client!r}")
        if client == "curl" and not HAS_CURL:
            raise ImportError("client='curl' needs pycurl: pip install corduroy2[curl]")
        self.client = client
        self._curl = client == "curl"  # asked on every request: a bool, not a string compare
        self._http: AsyncHTTPClient | None = None
        # The asyncio loop _http was made on. IOLoop.current() is IOLoop's for asyncio's running
        # loop, so comparing the asyncio loops (a C call; asyncio exports it for event loops)
        # tells on every request, without it, whether _http is still the one to use.
        self._asyncio_loop: asyncio.AbstractEventLoop | None = None
        # The last request header set, and its checked plain form (None: a repeated name).
        self._last_headers: tuple[tuple[tuple[str, str], ...], dict[str, str] | None] = ((), None)
        self._loop: IOLoop | None = None
        # Custom TLS settings are checked now, so that bad certificate files fail when the Couch
        # is made. The simple client uses this context (else Tornado's default, which verifies
        # the same way); curl is given the same settings as options (it does its own TLS).
        self._ssl = ssl_context(self.options) if self.options.custom_tls else None

    def _get_http(self) -> AsyncHTTPClient:
        loop = IOLoop.current()
        if self._http is None or self._loop is not loop:
            if self._http is not None:
                self._http.close()
            cls = CurlAsyncHTTPClient if self._curl else _SimpleClient
            self._http = cls(
                force_instance=True,
                max_clients=self.options.max_connections,
                max_body_size=_MAX_BODY,
                defaults=self._defaults(),
            )
            self._loop = loop
            self._asyncio_loop = loop.asyncio_loop  # type: ignore[attr-defined]
        return self._http

    def _defaults(self) -> dict[str, Any]:
        """What every request of this client is sent with (requests leave these unset, and
        the client fills them in: the same for each request, passed once)."""
        opts = self.options
        defaults: dict[str, Any] = dict(
            connect_timeout=opts.connect_timeout or 0,
            follow_redirects=False,
            allow_nonstandard_methods=True,  # COPY, and DELETE/HEAD details
            # No Accept-Encoding, like the other backends: a compressing server or proxy holds
            # back a live feed until its gzip buffer fills (pouchdb-server does exactly that).
            decompress_response=False,
        )
        if self._curl:
            defaults.update(prepare_curl_callback=_quiet, validate_cert=opts.verify_tls,
                            ca_certs=opts.ca_file, client_cert=opts.cert_file,
                            client_key=opts.key_file)
        elif self._ssl is not None:
            defaults["ssl_options"] = self._ssl
        return defaults

    def _headers(self, fields: tuple[tuple[str, str], ...]) -> httputil.HTTPHeaders:
        """A new HTTPHeaders for each request (curl's setup adds to it). A Couch sends the same
        headers again and again: the last set is checked once, then copied without checks."""
        last, plain = self._last_headers
        if fields == last and plain is not None:
            return httputil.HTTPHeaders(plain)
        check_headers(fields)  # ValueError, which does not show the value (Tornado's would)
        headers = _headers(fields)
        # Only when no name repeats can a dict hold them all.
        self._last_headers = (fields, dict(headers) if len(headers) == len(fields) else None)
        return headers

    def _callbacks(self, request: Request, pending: _Pending, sink: Sink | None,
                   started: list[bool], collected: list[bytes] | None) -> dict[str, Any]:
        """The callbacks of a request whose body is streamed: a streamed request (to ``sink``),
        or a buffered one watched for idleness (its progress has to be seen), whose body is
        gathered in ``collected``."""
        kwargs: dict[str, Any] = {}
        if request.stream:
            assert sink is not None
            # Tornado's curl client can deliver body chunks before the header lines (both are
            # queued on the loop separately), so chunks wait here until the headers are in.
            early: list[bytes] = []
            parser = _HeaderParser(sink, started, early)
            watched = bool(request.idle_timeout or self.options.idle_timeout)

            def on_chunk(chunk: bytes) -> Future[None] | None:
                # Called for every chunk of a feed: two calls are spared when they do nothing.
                if pending.cancelled:
                    return None  # being torn down; raising here would only be logged
                if watched:
                    pending.heard()
                if not started[0]:
                    early.append(chunk)
                    return None
                sink.on_data(chunk)
                return pending.wait() if pending.paused else None

            def on_header(line: str) -> None:
                if not pending.cancelled:
                    pending.heard()
                    parser.feed(line)

            kwargs["header_callback"] = on_header
            kwargs["streaming_callback"] = on_chunk
        else:
            assert collected is not None

            def on_piece(chunk: bytes) -> None:
                pending.heard()
                collected.append(chunk)

            kwargs["header_callback"] = lambda _: pending.heard()
            kwargs["streaming_callback"] = on_piece
        if self._curl:
            # In place of the default (_quiet): also aborts the transfer once cancelled.
            kwargs["prepare_curl_callback"] = _abort_when(pending, self._get_http())
        return kwargs

    def send(self, request: Request, sink: Sink) -> Transfer:
        return self._exchange(request, None, sink)

    def _exchange(self, request: Request, reply: Reply | None,
                  sink: Sink | None = None) -> Transfer:
        """One request: its reply whole to ``reply`` (fetch: Tornado has it whole anyway), or
        to ``sink`` (send)."""
        if reply is not None and request.stream:  # fetched whole all the same
            sink, reply = Collector(reply), None
        pending = _Pending()
        started = [False]
        idle = request.idle_timeout or self.options.idle_timeout
        collected: list[bytes] | None = [] if idle and not request.stream else None
        try:
            http = self._http
            # None when no loop runs: _get_http() then does what IOLoop.current() does there.
            if http is None or asyncio._get_running_loop() is not self._asyncio_loop:
                http = self._get_http()
            callbacks = (self._callbacks(request, pending, sink, started, collected)
                         if request.stream or collected is not None else _PLAIN)
            # The settings common to all requests are the client's defaults (_defaults).
            tornado_request = HTTPRequest(
                request.url,
                method=request.method,
                headers=self._headers(request.headers),
                body=request.body,
                # 0 = no limit for both clients; Tornado's own default (20 s) would cut feeds.
                request_timeout=request.timeout or self.options.request_timeout or 0,
                **callbacks,
            )
        except (ValueError, RuntimeError) as exc:
            # Tornado rejects some requests before sending (bad header characters, closed client).
            _fail(reply, sink, TransportError(f"request not sent: {exc}", method=request.method,
                                              url=request.url))
            return pending

        if not self._curl:  # for _SimpleConnection
            tornado_request.corduroy2_pending = pending  # type: ignore[attr-defined]
        if idle:
            def expired() -> None:
                # Nothing more reaches the sink once cancelled; the transfer is torn down (simple:
                # its stream closed now; curl: aborted by the progress callback within a second).
                pending.cancel()
                _fail(reply, sink, Timeout(f"no data for {idle:g} s (idle_timeout)",
                                           method=request.method, url=request.url))

            # Armed before the fetch starts: curl reports a request it cannot set up at once.
            pending.watch(idle, expired)

        def finished(response: HTTPResponse) -> None:
            if pending.curl is not None:
                pending.curl = None  # Tornado reuses the easy handle for other requests
            if pending.cancelled:
                return
            if idle:
                pending.unwatch()
            # What fetch(raise_error=False) raises: a failure, not an HTTP error status.
            exc = None if response._error_is_response_code else response.error
            if exc is not None:
                _fail(reply, sink, _map_error(exc, request))
                return
            if reply is not None:
                reply(response.code, Headers(response.headers.get_all()),
                      b"".join(collected) if collected is not None else response.body, None)
                return
            assert sink is not None
            if not started[0]:
                started[0] = True
                # Read on first use only (the response's headers do not change any more).
                sink.on_start(response.code, Headers(response.headers.get_all()))
                if not request.stream:
                    body = b"".join(collected) if collected is not None else response.body
                    if body:
                        sink.on_data(body)
            sink.on_end()

        # fetch_impl with a callback, as fetch() itself does, rather than fetch()'s Future: the
        # Future's done-callback would run a loop iteration later, once more for every request.
        # The defaults are applied by the same proxy fetch() puts around the request.
        callback: Callable[[HTTPResponse], None] = finished
        if self._curl and tornado_request.header_callback is not None:
            # Tornado's curl client queues header lines on the loop but reports the end at
            # once: the end must wait for the lines queued before it.
            loop = IOLoop.current()
            callback = lambda response: loop.add_callback(finished, response)  # noqa: E731
        http.fetch_impl(_RequestProxy(tornado_request, http.defaults),  # type: ignore[arg-type]
                        callback)
        return pending

    # fetch(request, reply) is _exchange itself: a frame fewer on every call.
    fetch = _exchange

    def run(self, start: Start) -> Future[Any]:
        future: _CallFuture[Any] = _CallFuture()
        future.call = start(future.settle)
        return future

    def when_done(self, value: Any, done: Callable[[Outcome], None]) -> bool:
        if not isinstance(value, Awaitable):
            return False
        future = gen.convert_yielded(value)  # Futures, coroutines, and yieldable lists

        def settled(f: Future[Any]) -> None:
            if f.cancelled():
                done(Outcome(error=asyncio.CancelledError()))
            elif f.exception() is not None:
                done(Outcome(error=f.exception()))
            else:
                done(Outcome(value=f.result()))

        future.add_done_callback(settled)
        return True

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        loop = IOLoop.current()
        return _LoopCall(loop, loop.call_later(delay, fn))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


def _fail(reply: Reply | None, sink: Sink | None, error: CouchError) -> None:
    """An exchange's failure, to its ``reply`` (fetch) or else its ``sink`` (send)."""
    if reply is not None:
        reply(None, None, b"", error)
    else:
        assert sink is not None
        sink.on_error(error)


# The keyword arguments of a request whose body is delivered whole: none beyond the common ones.
_PLAIN: dict[str, Any] = {}


def _headers(fields: tuple[tuple[str, str], ...]) -> httputil.HTTPHeaders:
    headers = httputil.HTTPHeaders()
    for name, value in fields:
        headers.add(name, value)  # checks each name and value (a regex each)
    return headers


class _HeaderParser:
    """Turns ``header_callback`` lines into one ``sink.on_start(status, headers)``, then hands
    over any body chunks that arrived before the headers."""

    __slots__ = ("_sink", "_started", "_early", "_status", "_fields")

    def __init__(self, sink: Sink, started: list[bool], early: list[bytes]) -> None:
        self._sink, self._started, self._early = sink, started, early
        self._status = 0
        self._fields: list[tuple[str, str]] = []

    def feed(self, line: str) -> None:
        if line.startswith("HTTP/"):
            self._status = httputil.parse_response_start_line(line.strip()).code
            self._fields = []
        elif line in ("\r\n", "\n", ""):
            # An interim 100 Continue is followed by the real status line: wait for it.
            if self._status >= 200 and not self._started[0]:
                self._started[0] = True
                # Headers keeps the list (it is indexed lazily): later lines (trailers) go
                # to a new one.
                fields, self._fields = self._fields, []
                self._sink.on_start(self._status, Headers(fields))
                early, self._early[:] = list(self._early), []
                for chunk in early:
                    self._sink.on_data(chunk)
        elif line[0] in " \t" and self._fields:  # obsolete line folding
            name, value = self._fields[-1]
            self._fields[-1] = (name, value + " " + line.strip())
        else:
            name, _, value = line.partition(":")
            self._fields.append((name.strip(), value.strip()))


def _quiet(curl: Any) -> None:
    # Tornado turns on libcurl's verbose trace when its logger is at DEBUG, and that trace
    # prints every request header, Authorization and Cookie included: never let it.
    curl.setopt(pycurl.VERBOSE, 0)


class _Abandoned(Exception):
    """Raised from prepare_curl_callback so that a cancelled request is not started."""


def _abort_curl(client: Any, curl: Any) -> None:
    """End a running curl transfer now: remove its handle from the multi the way Tornado does
    when a transfer ends (``_finish``), which makes libcurl close the connection (that of an
    unfinished transfer is never reused), then let queued requests start. There is no public
    API for this; without these two methods the progress callback below still aborts the
    transfer, but only when libcurl next calls it (at the next byte, when it is silent)."""
    finish = getattr(client, "_finish", None)
    process_queue = getattr(client, "_process_queue", None)
    if finish is None or process_queue is None or getattr(curl, "info", None) is None:
        return  # not running any more, or a Tornado without these internals
    finish(curl, pycurl.E_ABORTED_BY_CALLBACK, "cancelled by corduroy2")
    process_queue()


def _abort_when(pending: _Pending, client: Any) -> Callable[[Any], None]:
    def prepare(curl: Any) -> None:
        if pending.cancelled:
            # Cancelled (or timed out) while queued: Tornado reports a setup error, which
            # nobody sees, and the request is never sent.
            raise _Abandoned()
        _quiet(curl)
        pending.curl = curl
        pending.curl_client = client
        # libcurl calls this at least once a second even on an idle connection, so a cancelled
        # feed is torn down promptly; returning non-zero aborts the transfer.
        curl.setopt(pycurl.NOPROGRESS, 0)
        curl.setopt(pycurl.XFERINFOFUNCTION, lambda *_: 1 if pending.cancelled else 0)

    return prepare


def _map_error(exc: BaseException, request: Request) -> CouchError:
    """One map from Tornado's and libcurl's errors to corduroy2's transport errors."""
    where: dict[str, str] = {"method": request.method, "url": request.url}
    err: CouchError
    if isinstance(exc, HTTPTimeoutError):
        err = Timeout(str(exc), **where)
    elif isinstance(exc, (HTTPStreamClosedError, StreamClosedError)):
        err = ResponseCut(f"connection closed before the response was complete: {exc}", **where)
    elif CurlError is not None and isinstance(exc, CurlError):
        errno = exc.errno
        message = f"curl error {errno}: {exc.message}"
        if errno in _CURL_TIMEOUT:
            err = Timeout(message, **where)
        elif errno in _CURL_TLS or (errno == 56 and "alert" in message.lower()):
            err = ConnectError(f"{tls_meaning(message)}: {message}", **where)
        elif errno in _CURL_CONNECT:
            err = ConnectError(message, **where)
        elif errno in _CURL_CUT:
            err = ResponseCut(message, **where)
        else:
            err = TransportError(message, **where)
    elif isinstance(exc, ssl.SSLError):
        detail = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else exc
        err = ConnectError(f"{tls_meaning(str(exc))}: {detail}", **where)
    elif isinstance(exc, socket.gaierror) or (
        isinstance(exc, OSError) and exc.errno in _CONNECT_ERRNOS
    ):
        err = ConnectError(f"cannot connect: {exc!r}", **where)
    elif isinstance(exc, OSError):
        # A reset or broken pipe: the request may have been sent, so this is not "cannot
        # connect" (that would tell callers it is safe to send again).
        err = ResponseCut(f"connection failed during the exchange: {exc!r}", **where)
    elif isinstance(exc, HTTPClientError):
        err = TransportError(f"HTTP client error: {exc}", **where)
    else:
        err = TransportError(f"unexpected transport failure: {exc!r}", **where)
    err.__cause__ = exc
    return err
