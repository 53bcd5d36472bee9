"""The Tornado transport: ``AsyncHTTPClient`` (curl or simple), one instance per ``Couch``.

Never ``AsyncHTTPClient.configure``: that would change every client of the process. The
implementation class is instantiated directly with ``force_instance=True``. The instance is made
lazily on the first request, on the loop that is current then (Tornado binds a client to the
IOLoop it was made on), and made again if the caller moves to another loop.

A request is one ``AsyncHTTPClient.fetch(request, raise_error=False)``, reported by the client's
callback rather than the Future (``_repairs.fetch``, a measured fast path): the response comes
whatever its status; code 599 is a failed exchange. What Tornado has no public API for
(aborting one request, a reset after the headers on the simple client) is repaired in
``_repairs.py``, the only module that touches Tornado's internals.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tornado import gen, httputil
from tornado.concurrent import Future
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError

from ..backend import (
    Backend, Cancel, Outcome, SilenceWatch, Sink, Start, TransportOptions, missing_package,
    ssl_context, tls_meaning,
)
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.bodies import BodySource
from ..protocol.requests import Request, check_headers
from ..protocol.responses import Headers
from ._repairs import CurlRun, SimpleClient, abandon_with, fetch

try:
    import pycurl
    from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError
except ImportError:  # pycurl is optional: the simple client is used without it
    pycurl = None
    CurlAsyncHTTPClient = None  # type: ignore[assignment,misc]
    CurlError = None  # type: ignore[assignment,misc]

__all__ = ["LoopBackend", "TornadoBackend", "make_backend", "CLIENTS", "HAS_CURL"]

HAS_CURL = CurlAsyncHTTPClient is not None

T = TypeVar("T")

# Both clients apply max_body_size to streamed bodies as well: a long view or feed would die at
# Tornado's 100 MiB default. Memory is bounded by streaming, not by this.
_MAX_BODY = 1 << 62

# What a READFUNCTION answers to abort the transfer, or to pause it until curl_easy_pause.
_READ_ABORT: int = pycurl.READFUNC_ABORT if pycurl is not None else 0
_READ_PAUSE: int = pycurl.READFUNC_PAUSE if pycurl is not None else 0

# libcurl's upload buffer (its default is 64 KiB): fewer READFUNCTION calls per megabyte.
_UPLOAD_BUFFER = 256 * 1024
# libcurl's receive buffer for streamed replies (see _Transfer.prepare_curl).
_STREAM_BUFFER = 256 * 1024
# What a WRITEFUNCTION answers to have libcurl stop receiving and keep the piece it offered.
_WRITE_PAUSE: int = pycurl.WRITEFUNC_PAUSE if pycurl is not None else 0
# At most this much of a streamed reply waits in a _CurlBody before libcurl is told to stop
# reading (and more, one receive buffer, waits in libcurl meanwhile).
_CURL_QUEUE = 1024 * 1024
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


class _Upload:
    """A streamed request body (a :class:`~corduroy2.protocol.bodies.BodySource`) for either
    client, each piece taken only when the connection wants more.

    Simple client: :meth:`produce` is the request's ``body_producer``; it awaits each
    ``write``, whose Future resolves once the piece is on its way, so that at most a piece or
    so waits in memory. Curl: :meth:`prepare_curl` gives libcurl a ``READFUNCTION``, which
    libcurl calls when its upload buffer has room. A synchronous source is read right there
    (a file read); an async one is awaited on the loop meanwhile: the read answers
    ``READFUNC_PAUSE`` and the transfer is resumed (``curl_easy_pause``) when the piece has
    come, and the next piece is asked for as soon as one has been handed over.
    """

    def __init__(self, source: BodySource, heard: Callable[[], None]) -> None:
        self._source = source
        self._heard = heard
        self._pending = memoryview(b"")  # what is left of the piece being sent (curl)
        self._ended = False
        self._fetching = False
        self._run: CurlRun | None = None
        #: Why the curl transfer was aborted by :meth:`_read` (the source failed).
        self.error: CouchError | None = None

    async def produce(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        source = self._source
        while True:
            piece = await source.anext_piece() if source.is_async else source.next_piece()
            if piece is None:
                return
            self._heard()
            await write(piece)

    def prepare_curl(self, curl: Any, run: CurlRun) -> None:
        self._run = run
        length = self._source.length
        curl.setopt(pycurl.READFUNCTION, self._read)
        # libcurl rewinds a body to send it again on a fresh connection; this one cannot be.
        curl.setopt(pycurl.SEEKFUNCTION, lambda offset, origin: pycurl.SEEKFUNC_CANTSEEK)
        curl.setopt(pycurl.INFILESIZE_LARGE, -1 if length is None else length)
        curl.setopt(pycurl.UPLOAD_BUFFERSIZE, _UPLOAD_BUFFER)

    def _read(self, size: int) -> bytes | int:
        """libcurl's ``READFUNCTION``: up to ``size`` bytes; b"" at the end."""
        if not self._pending:
            if self._source.is_async:
                if self.error is not None:
                    return _READ_ABORT
                if self._ended:
                    return b""
                self._fetch()
                return _READ_PAUSE
            try:
                piece = self._source.next_piece()
            except CouchError as exc:
                self.error = exc
                return _READ_ABORT
            if piece is None:
                return b""
            self._pending = memoryview(piece)
        self._heard()
        out, self._pending = self._pending[:size], self._pending[size:]
        if not self._pending and self._source.is_async:
            self._fetch()  # ask for the next piece while libcurl sends this one
        return bytes(out)

    def _fetch(self) -> None:
        if self._fetching or self._ended:
            return
        self._fetching = True
        gen.convert_yielded(self._source.anext_piece()).add_done_callback(self._fetched)

    def _fetched(self, future: Future[bytes | None]) -> None:
        self._fetching = False
        try:
            piece = future.result()
        except CouchError as exc:
            self.error, piece = exc, None
        if piece is None:
            self._ended = True
        else:
            self._pending = memoryview(piece)
        if self._run is not None:
            self._run.resume()  # PAUSE_CONT: libcurl reads again


class _CurlBody:
    """A streamed reply's body on the curl client, delivered by libcurl to :meth:`write` (its
    ``WRITEFUNCTION``, set in ``prepare_curl_callback`` in place of the one Tornado sets up),
    so that a paused reader stops libcurl reading.

    Tornado's own ``streaming_callback`` buffer cannot do that: it pauses libcurl itself while
    a megabyte waits in it, and unpauses it after handing that megabyte over whatever the
    reader asked meanwhile. A paused reader was handed up to a megabyte per loop pass, parsed
    into rows that waited in its queue through every collection, and the server was read on.

    libcurl calls :meth:`write` inside the multi handle's ``socket_action``, where nothing may
    reach the sink (a cancel there would remove the handle in the middle of its own callback):
    pieces are queued, and :meth:`flush`, on the loop, hands them over (an iterator's sink
    takes a slice per loop pass of them: :class:`~corduroy2.api.pacing.Paced`). While the
    reader is paused, or while ``_CURL_QUEUE`` bytes wait here, ``write`` answers ``WRITEFUNC_PAUSE``:
    libcurl stops reading the socket and keeps the piece, to offer it again once it is
    unpaused (``PAUSE_CONT``), which :meth:`flush` does from the loop once half the queue is
    handed over and the reader is not paused. The end of the fetch waits behind queued
    pieces.
    """

    def __init__(self, deliver: Callable[[bytes], None], heard: Callable[[], None]) -> None:
        self._deliver = deliver
        self._heard = heard
        self._loop = IOLoop.current()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0  # bytes in _chunks
        self._flush_due = False
        self._refused = False  # libcurl keeps a piece write() answered WRITEFUNC_PAUSE to
        self._paused = False  # by the reader
        self._stopped = False  # cancelled: nothing more is delivered
        self._end: Callable[[], None] | None = None  # the fetch's end, behind queued pieces
        #: The transfer, to unpause; set by ``prepare_curl``.
        self.run: CurlRun | None = None

    def write(self, chunk: bytes) -> int | None:
        """libcurl's ``WRITEFUNCTION`` (None: the whole piece is taken)."""
        if self._paused or self._size >= _CURL_QUEUE:
            self._refused = True
            return _WRITE_PAUSE
        self._heard()
        self._chunks.append(chunk)
        self._size += len(chunk)
        if not self._flush_due:
            self._flush_due = True
            self._loop.add_callback(self.flush)
        return None

    def flush(self) -> None:
        """On the loop: hand queued pieces over until the reader pauses; once all are, the end
        if it came; and let libcurl read on if it was stopped, once half the queue is handed
        over."""
        self._flush_due = False
        chunks = self._chunks
        while chunks and not self._paused and not self._stopped:
            chunk = chunks.popleft()
            self._size -= len(chunk)
            self._deliver(chunk)
        if self._stopped:
            return
        if not chunks and self._end is not None:  # paused or not: nothing more can come
            end, self._end = self._end, None
            end()
            return
        if (self._refused and not self._paused and self._size <= _CURL_QUEUE // 2
                and self.run is not None):
            # Half the queue is handed over: libcurl reads on meanwhile. It may offer what it
            # kept to write() right here, and it reads on after that by itself (it asks the
            # client for a timer, as it does after any unpause).
            self._refused = False
            self.run.resume()

    def end_after(self, end: Callable[[], None]) -> bool:
        """Call ``end`` once the queued pieces are handed over (True), or not at all if
        none wait (False: the caller ends now)."""
        if not self._chunks:
            return False
        self._end = end
        return True

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        if not self._flush_due and (self._chunks or self._refused):
            self._flush_due = True
            self._loop.add_callback(self.flush)  # not here: the reader may be in the sink

    def stop(self) -> None:
        self._stopped = True
        self._chunks.clear()
        self._end = None


class _Fetch:
    """A plain request (not streamed, its body bytes) whose idleness the loop does not watch:
    its handle for the caller, and its reply delivered whole when the fetch ends:
    ``on_start``, one ``on_data`` with the body if it is not empty, then ``on_end``.

    Most requests are these (a document GET on curl, whose idle timeout libcurl watches), so
    they have a class of their own: what a streamed, uploading or watched request needs is in
    :class:`_Transfer`. With this and the header fields set rather than added (``_headers``),
    ``bench get --concurrency 32 --only tornado-curl``, overhead over raw Tornado, timed: 12.7 %
    and 12.8 % -> 10.7 % and 10.8 % (two runs each); by instructions (``--instructions``):
    8.7 % -> 7.4 %.

    Cancelling stops delivery at once. On the simple client it aborts the request too
    (``abort``, set by the client's repair once the request runs: it closes the connection;
    a request cancelled while it waits in the client's queue is never sent). On curl a plain
    request has no ``prepare_curl_callback`` of its own that could abort it: it runs to its
    end, unseen.
    """

    __slots__ = ("_request", "_sink", "_curl_idle", "cancelled", "abort")

    upload = None  # (no streamed request body)

    def __init__(self, request: Request, sink: Sink, curl_idle: int | None = None) -> None:
        self._request = request
        self._sink = sink
        # Whole seconds of silence after which libcurl ends the transfer (None: no limit).
        self._curl_idle = curl_idle
        self.cancelled = False
        self.abort: Callable[[], None] | None = None

    def callbacks(self, curl_client: Any) -> dict[str, Any]:
        """The fetch's callbacks: libcurl told the idle timeout, if there is one."""
        if self._curl_idle is None:
            return {}
        return {"prepare_curl_callback": functools.partial(_quiet_unless_silent,
                                                           self._curl_idle)}

    def fetched(self, response: HTTPResponse) -> None:
        """The fetch's end: its response, whatever its status; Tornado's code 599 is a failure
        of the exchange."""
        if self.cancelled:
            return
        if response.code == 599 and response.error is not None:
            self.fail(_map_error(response.error, self._request))
            return
        sink = self._sink
        sink.on_start(response.code, Headers(response.headers.get_all()))
        if response.body:
            sink.on_data(response.body)
        sink.on_end()

    def fail(self, error: CouchError) -> None:
        """The one way a failure reaches the sink: nothing is delivered after it."""
        self.cancel()
        self._sink.on_error(error)

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self.abort is not None:
            self.abort()

    def pause(self) -> None:
        return None  # the reply comes whole: nothing is read on meanwhile

    def resume(self) -> None:
        return None


class _Transfer:
    """A streamed request, one whose body is a stream (an upload), or a plain one whose
    idleness the loop watches: its handle for the caller (cancel, pause, resume) and its
    delivery to the sink, from Tornado's callbacks.

    A streamed reply is delivered as it comes, from ``header_callback`` lines and
    ``streaming_callback`` chunks. A plain request under an idle timeout has its body
    gathered from ``streaming_callback``, so that each piece counts as progress, and delivered
    whole when the fetch ends, as :class:`_Fetch` delivers it.

    Cancelling stops all delivery at once and aborts the transport through ``abort``, set by
    the client's repair once the request runs: simple closes the connection; curl ends the
    transfer. A request cancelled while it waits in the client's queue is never sent.

    Back-pressure: the simple client awaits what ``streaming_callback`` returns before reading
    on, so while paused it is handed a Future that ``resume()`` resolves. On curl a streamed
    body comes through a :class:`_CurlBody` (no ``streaming_callback``), which stops libcurl
    reading while paused.
    """

    def __init__(self, request: Request, sink: Sink, idle: float | None,
                 silences: SilenceWatch, curl: bool = False) -> None:
        self._request = request
        self._sink = sink
        self.cancelled = False
        self.abort: Callable[[], None] | None = None
        self._paused = False
        self._waiter: Future[None] | None = None  # simple client, while paused
        self._curl: CurlRun | None = None
        # A streamed body on curl: libcurl's WRITEFUNCTION, which delivers it on the loop.
        self._curl_body = _CurlBody(self._deliver, self.heard) if curl and request.stream else None
        # A streamed request body (an attachment upload): pieces read as they are sent.
        self.upload = (_Upload(request.body, self.heard)
                       if isinstance(request.body, BodySource) else None)
        # Silence allowed from the server, counted by the backend's watch from now to the end
        # of the body, but not while paused (that silence is the caller's).
        self.idle_timeout = idle
        self.heard_at = 0.0
        self._silences = silences
        watched = bool(self.idle_timeout)
        if watched:
            silences.watch(self)
        self._started = False
        # Streamed: body chunks that came before the end of the header lines, kept for after
        # on_start. A guard: both clients hand the lines over first (Tornado's curl client
        # queues each line on the loop, and _CurlBody queues its flush behind them).
        self._early: list[bytes] = []
        self._head = _HeadParser() if request.stream else None
        # A plain request's body, gathered here when it is watched for idleness.
        self._body: list[bytes] | None = [] if watched and not request.stream else None

    def callbacks(self, curl_client: Any) -> dict[str, Any]:
        """The fetch's callbacks: a streamed request's, or those that watch a plain one for
        idleness (its progress has to be seen). For the curl client (``curl_client``), a
        ``prepare_curl_callback`` too, in place of the client's default (_quiet), so that the
        transfer can be paused and aborted."""
        if self._curl_body is not None:  # the body goes to libcurl's WRITEFUNCTION
            callbacks: dict[str, Any] = dict(header_callback=self.on_header)
        elif self._request.stream:
            callbacks = dict(header_callback=self.on_header, streaming_callback=self.on_chunk)
        elif self._body is not None:
            # The head is not watched: it comes with the first piece of the body, whose
            # silence is watched from the start. A header_callback (Tornado formats a line per
            # header for it) cost the simple client 5% of a GET's instructions (bench get
            # --instructions, tornado-simple c=1: 6.5% overhead with it, 1.2% without).
            callbacks = dict(streaming_callback=self.on_piece)
        else:
            callbacks = {}  # an upload: curl's transfer needs prepare_curl
        if curl_client is not None:
            callbacks["prepare_curl_callback"] = functools.partial(self.prepare_curl,
                                                                   curl_client)
        return callbacks

    # -- from Tornado --------------------------------------------------------------------

    def on_header(self, line: str) -> None:
        """``header_callback`` of a streamed request."""
        if self.cancelled:
            return
        self.heard()
        assert self._head is not None
        head = self._head.feed(line)
        if head is not None:
            self._start(*head)

    def on_chunk(self, chunk: bytes) -> Future[None] | None:
        """``streaming_callback`` of a streamed request on the simple client."""
        if self.cancelled:
            return None  # being torn down; raising here would only be logged
        self.heard()
        self._deliver(chunk)
        if not self._paused:
            return None
        if self._waiter is None:
            self._waiter = Future()
        return self._waiter

    def _deliver(self, chunk: bytes) -> None:
        """A piece of a streamed body, from either client."""
        if self._started:
            self._sink.on_data(chunk)
        else:
            self._early.append(chunk)

    def on_piece(self, chunk: bytes) -> None:
        """``streaming_callback`` of a plain request watched for idleness."""
        assert self._body is not None
        self.heard_at = time.monotonic()
        self._body.append(chunk)

    def heard(self) -> None:
        """Something came from the server."""
        # The clock of asyncio's loops (IOLoop.time() goes to it through two calls): this is
        # called for every piece of a feed.
        self.heard_at = time.monotonic()

    def prepare_curl(self, client: Any, curl: Any) -> None:
        """``prepare_curl_callback`` of a streamed or watched request (with the client bound)."""
        if self.cancelled:
            # Cancelled while queued: Tornado reports the setup error to the fetch (which
            # nobody awaits any more) and never sends the request.
            raise _Abandoned()
        _quiet(curl)
        self._curl = CurlRun(client, curl)
        self.abort = self._curl.abort
        if self.upload is not None:
            self.upload.prepare_curl(curl, self._curl)
        if self._curl_body is not None:
            self._curl_body.run = self._curl
            curl.setopt(pycurl.WRITEFUNCTION, self._curl_body.write)
            # libcurl hands a streamed body over in pieces of at most BUFFERSIZE (16 KiB by
            # default): each piece costs a trip through the sink and the iterator. Measured
            # with bench attachments (256 MiB down through iter_attachment): 0.75x the raw
            # transport's MB/s with 16 KiB, 0.93-1.01x with this. A piece is still handed over
            # as soon as it is read, so a feed's lines are not held back.
            curl.setopt(pycurl.BUFFERSIZE, _STREAM_BUFFER)

    def fetched(self, response: HTTPResponse) -> None:
        """The fetch's end: its response, whatever its status; Tornado's code 599 is a failure
        of the exchange."""
        if self.cancelled:
            return
        if self._curl_body is not None and self._curl_body.end_after(
                functools.partial(self.fetched, response)):
            return  # what came before the end is handed over first
        if response.code == 599 and response.error is not None:
            upload_error = self.upload.error if self.upload is not None else None
            self.fail(upload_error or _map_error(response.error, self._request))
            return
        if self.idle_timeout:
            self._silences.unwatch(self)
        if not self._started:
            self._start(response.code, Headers(response.headers.get_all()))
            if not self._request.stream:
                body = b"".join(self._body) if self._body is not None else response.body
                if body:
                    self._sink.on_data(body)
        self._sink.on_end()

    def fail(self, error: CouchError) -> None:
        """The one way a failure reaches the sink: the transfer is cancelled first, so that
        nothing more is delivered and the transport is torn down if it still runs."""
        self.cancel()
        self._sink.on_error(error)

    def silence_expired(self) -> None:
        request = self._request
        self.fail(Timeout(f"no data for {self.idle_timeout:g} s (idle_timeout)",
                          method=request.method, url=request.url))

    def _start(self, status: int, headers: Headers) -> None:
        self._started = True
        self._sink.on_start(status, headers)
        early, self._early = self._early, []
        for chunk in early:
            self._sink.on_data(chunk)

    # -- for the caller (Transfer) -------------------------------------------------------

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self.idle_timeout:
            self._silences.unwatch(self)
        if self._curl_body is not None:
            self._curl_body.stop()
        self.resume()
        if self.abort is not None:
            self.abort()

    def pause(self) -> None:
        if self._paused or self.cancelled:
            return
        self._paused = True
        if self.idle_timeout:
            self._silences.unwatch(self)
        if self._curl_body is not None:
            self._curl_body.pause()

    def resume(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self.idle_timeout and not self.cancelled:
            self._silences.watch(self)  # the silence starts now
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            if not waiter.done():
                waiter.set_result(None)
        if self._curl_body is not None:
            self._curl_body.resume()


class _CallFuture(Future[T]):
    """The Future of a call: cancelling it cancels the call, whoever cancels it (the caller,
    or asyncio's tasks and ``wait_for``, which call ``cancel`` too)."""

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
        call, self.call = self.call, None  # a cancelled Future holds nothing of its call
        if call is not None:
            call.cancel()
        return True


class _LoopCall:
    __slots__ = ("_loop", "_handle")

    def __init__(self, loop: IOLoop, handle: object) -> None:
        self._loop, self._handle = loop, handle

    def cancel(self) -> None:
        self._loop.remove_timeout(self._handle)


class LoopBackend(Backend):
    """What every transport of the Tornado front door shares: its promises are
    asyncio-compatible Tornado Futures, and its timers run on the current loop. A transport
    adds ``send`` and ``close``."""

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
        if delay <= 0:
            # The loop's next pass: asyncio's ready queue, not Tornado's timeout through its
            # timer heap. An ``async for`` reader's loop passes (api/pacing.py): ``bench
            # changes --instructions``, 8,905 -> 8,818 instructions a change on curl, 8,608
            # -> 8,380 on httptools, 15,804 -> 15,584 on simple, 9,057 -> 8,973 on aiohttp.
            return loop.asyncio_loop.call_soon(fn)  # type: ignore[attr-defined,no-any-return]
        return _LoopCall(loop, loop.call_later(delay, fn))


#: The transports of the Tornado front door, by the name ``Couch(client=...)`` takes.
CLIENTS = ("curl", "simple", "aiohttp", "httptools")


def make_backend(options: TransportOptions, client: str | None) -> LoopBackend:
    """The transport ``client`` names (None: curl when pycurl imports, else simple). aiohttp
    and httptools are imported only when asked for, so the front door works without them."""
    if client is not None and client not in CLIENTS:
        raise ValueError(f"client must be one of {', '.join(map(repr, CLIENTS))}, "
                         f"not {client!r}")
    if client == "aiohttp":
        try:
            from .aiohttp_backend import AiohttpBackend
        except ImportError as exc:
            raise missing_package(exc, "aiohttp")
        return AiohttpBackend(options)
    if client == "httptools":
        try:
            from .httptools_client import HttptoolsBackend
        except ImportError as exc:
            raise missing_package(exc, "httptools")
        return HttptoolsBackend(options)
    return TornadoBackend(options, client)


class TornadoBackend(LoopBackend):
    """``client="curl"`` (the default when pycurl imports) or ``"simple"``: Tornado's
    ``AsyncHTTPClient``."""

    def __init__(self, options: TransportOptions | None = None, client: str | None = None) -> None:
        super().__init__(options)
        if client is None:
            client = "curl" if HAS_CURL else "simple"
        if client not in ("curl", "simple"):
            raise ValueError(f"TornadoBackend's client is 'curl' or 'simple', not {client!r}")
        if client == "curl" and not HAS_CURL:
            raise ImportError("client='curl' needs pycurl: pip install corduroy2[curl]")
        self.client = client
        self._curl = client == "curl"
        self._http: AsyncHTTPClient | None = None
        self._loop: IOLoop | None = None  # the loop _http is bound to
        self._silences = SilenceWatch(self.call_later)  # its timer runs on that loop too
        self._checked: tuple[tuple[str, str], ...] | None = None  # the headers checked last
        # Custom TLS settings are checked now, so that bad certificate files fail when the Couch
        # is made. The simple client uses this context (else Tornado's default, which verifies
        # the same way); curl is given the same settings as options (it does its own TLS).
        self._ssl = ssl_context(self.options) if self.options.custom_tls else None

    def _client(self) -> AsyncHTTPClient:
        """This Couch's client for the current loop (made again when the loop changes)."""
        loop = IOLoop.current()
        if self._http is None or self._loop is not loop:
            if self._http is not None:
                self._http.close()
                self._silences.close()
                self._silences = SilenceWatch(self.call_later)
            cls = CurlAsyncHTTPClient if self._curl else SimpleClient
            self._http = cls(
                force_instance=True,
                max_clients=self.options.max_connections,
                max_body_size=_MAX_BODY,
                defaults=self._defaults(),
            )
            self._loop = loop
        return self._http

    def _defaults(self) -> dict[str, Any]:
        """What every request of this client is sent with (requests leave these unset, and
        the client fills them in)."""
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

    def send(self, request: Request, sink: Sink) -> _Fetch | _Transfer:
        transfer: _Fetch | _Transfer | None = None
        try:
            http = self._client()  # first: the silence watch belongs to the client's loop
            transfer = _transfer_for(request, sink,
                                     request.idle_timeout or self.options.idle_timeout,
                                     self._silences, self._curl)
            fetch(http, self._tornado_request(request, transfer, http), transfer.fetched)
        except (ValueError, RuntimeError, httputil.HTTPInputError) as exc:
            # Refused before sending: a bad header, a closed client, no loop.
            if transfer is None:
                transfer = _Fetch(request, sink)
            transfer.fail(TransportError(f"request not sent: {exc}", method=request.method,
                                         url=request.url))
        return transfer

    def _tornado_request(self, request: Request, transfer: _Fetch | _Transfer,
                         http: AsyncHTTPClient) -> HTTPRequest:
        """The HTTPRequest for ``request``; what all requests share is in the client's
        defaults (_defaults)."""
        if request.headers != self._checked:
            # ValueError, which does not show the value (Tornado's would). Checked once per
            # header set, as Twisted's backend does: a handle sends the same one again and again.
            check_headers(request.headers)
            self._checked = request.headers
        headers = _headers(request.headers)
        body = request.body
        upload: dict[str, Any] = {}
        if isinstance(body, BodySource):
            length, body = body.length, None
            if self._curl:  # libcurl is given the length itself (_Upload.prepare_curl)
                if length is None:
                    headers["Transfer-Encoding"] = "chunked"
            else:
                assert transfer.upload is not None
                upload["body_producer"] = transfer.upload.produce
                if length is not None:  # else Tornado sends it chunked
                    headers["Content-Length"] = str(length)
        tornado_request = HTTPRequest(
            request.url,
            method=request.method,
            headers=headers,
            body=body,
            **upload,
            # 0 = no limit for both clients; Tornado's own default (20 s) would cut feeds.
            request_timeout=request.timeout or self.options.request_timeout or 0,
            **transfer.callbacks(http if self._curl else None),
        )
        if not self._curl:
            abandon_with(tornado_request, transfer)
        return tornado_request

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self._silences.close()


def _transfer_for(request: Request, sink: Sink, idle: float | None, silences: SilenceWatch,
                  curl: bool) -> _Fetch | _Transfer:
    """What carries ``request`` under the idle timeout ``idle``: a :class:`_Fetch` when its
    reply can come whole and nothing has to watch it on the loop (no idle timeout, or one long
    enough for libcurl to watch: ``CURL_IDLE_MIN``), else a :class:`_Transfer`.

    libcurl watching (``LOW_SPEED_LIMIT``/``LOW_SPEED_TIME``, whole seconds) spares a loop
    timer and a Python call per header line and piece: with the default idle timeout,
    ``bench get --instructions`` tornado-curl c=1 24.9 % -> 6.1 % overhead."""
    if not request.stream and not isinstance(request.body, BodySource):
        if not idle:
            return _Fetch(request, sink)
        if curl and idle >= CURL_IDLE_MIN:
            return _Fetch(request, sink, math.ceil(idle))
    return _Transfer(request, sink, idle, silences, curl)


def _headers(fields: tuple[tuple[str, str], ...]) -> httputil.HTTPHeaders:
    """A new HTTPHeaders for each request (the clients add to it). The fields have been
    checked (``check_headers``), so each is set as it is; ``add()`` would check it again, two
    regular expressions a field, and is left for a repeated one."""
    headers = httputil.HTTPHeaders()
    for name, value in fields:
        if name in headers:
            headers.add(name, value)
        else:
            headers[name] = value
    return headers


class _HeadParser:
    """Reads ``header_callback`` lines; ``feed`` returns the status and headers once the
    final head is complete (an interim 100 Continue is skipped), else None."""

    def __init__(self) -> None:
        self._status = 0
        self._fields: list[tuple[str, str]] = []

    def feed(self, line: str) -> tuple[int, Headers] | None:
        if line.startswith("HTTP/"):
            self._status = httputil.parse_response_start_line(line.strip()).code
            self._fields = []
        elif line in ("\r\n", "\n", ""):
            if self._status >= 200:
                # Headers keeps the list (it reads it lazily): later lines (trailers) go to a
                # new one.
                fields, self._fields = self._fields, []
                status, self._status = self._status, 0
                return status, Headers(fields)
        elif line[0] in " \t" and self._fields:  # obsolete line folding
            name, value = self._fields[-1]
            self._fields[-1] = (name, value + " " + line.strip())
        else:
            name, _, value = line.partition(":")
            self._fields.append((name.strip(), value.strip()))
        return None


def _quiet(curl: Any) -> None:
    # Tornado turns on libcurl's verbose trace when its logger is at DEBUG, and that trace
    # prints every request header, Authorization and Cookie included: never let it.
    curl.setopt(pycurl.VERBOSE, 0)


#: The shortest idle timeout (seconds) left to libcurl for a plain request. libcurl counts
#: whole seconds and judges the speed averaged over its last five seconds, so its timeout may
#: come a few seconds late: a shorter one is watched on the loop.
CURL_IDLE_MIN = 30.0


def _quiet_unless_silent(seconds: int, curl: Any) -> None:
    """``_quiet``, and the transfer fails (curl error 28, a Timeout) when less than a byte a
    second arrives for ``seconds``: the idle timeout."""
    _quiet(curl)
    curl.setopt(pycurl.LOW_SPEED_LIMIT, 1)
    curl.setopt(pycurl.LOW_SPEED_TIME, seconds)


class _Abandoned(Exception):
    """Raised from prepare_curl_callback so that a cancelled request is not started."""



def _map_error(exc: BaseException, request: Request) -> CouchError:
    """One map from Tornado's and libcurl's errors to corduroy2's transport errors."""
    if isinstance(exc, CouchError):  # a streamed request body failed (BodySource)
        return exc
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
            if "too slow" in message.lower():  # the idle timeout left to libcurl
                message = f"no data for too long (idle_timeout): {message}"
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
