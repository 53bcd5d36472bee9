"""The Twisted transport: ``Agent`` over a persistent ``HTTPConnectionPool``, one per ``Couch``.

The reactor is imported on first use, not at import time, so that importing
``corduroy2.twisted_io`` does not install the default reactor before the application installs
the one it wants (asyncio, epoll...).

Twisted's TLS (``twisted.internet.ssl``, hence pyOpenSSL and service_identity) is imported only
for an HTTPS request, or when the ``Couch`` is given TLS settings: plain HTTP works without the
``twisted[tls]`` extra. (``twisted.web.client`` itself still imports pyOpenSSL when it is
installed; it does without otherwise.)

Only Twisted's public API is used here; the few repairs it needs are in ``_repairs.py``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import defer, error as ierror
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import client as web_client
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.iweb import (
    UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS, IResponse,
)
from zope.interface import implementer

from ..backend import (
    Backend, Cancel, Outcome, SilenceWatch, Sink, Start, Transfer, TransportOptions, tls_meaning,
)
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.bodies import BodySource
from ..protocol.requests import Request, check_headers
from ..protocol.responses import Headers
from . import _repairs
from .tls import MissingTLS, TLSPolicy, is_https, is_tls_error, twisted_ssl

__all__ = ["DeferredBackend", "TwistedBackend", "Gate", "StreamProducer", "ATTEMPT_DELAY",
           "refusal"]

log = logging.getLogger("corduroy2")


class Gate:
    """The pause state of a producer that writes from a coroutine: the consumer shuts it
    (``pauseProducing``) and opens it (``resumeProducing``); the writing loop, finding it
    shut, awaits :meth:`opened`. :meth:`release` wakes that loop without opening
    (``stopProducing``: the loop then sees that it was stopped)."""

    def __init__(self) -> None:
        self.shut = False
        self._waiter: defer.Deferred[None] | None = None

    async def opened(self) -> None:
        """Return once the gate is opened or released."""
        self._waiter = defer.Deferred()
        await self._waiter

    def open(self) -> None:
        self.shut = False
        self.release()

    def release(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)


@implementer(IBodyProducer)
class _BytesProducer:
    """Writes a body that is already in memory, at once (FileBodyProducer would go through a
    cooperator task per request for no benefit)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        consumer.write(self.body)
        return defer.succeed(None)

    # The body is written in one call above, so there is never anything to pause or stop.
    def pauseProducing(self) -> None:
        return None

    def resumeProducing(self) -> None:
        return None

    def stopProducing(self) -> None:
        return None


@implementer(IBodyProducer)
class StreamProducer:
    """Writes a :class:`~corduroy2.protocol.bodies.BodySource` piece by piece: a piece is
    taken only while the connection wants more. Twisted registers a body producer as a
    streaming producer, so the transport calls ``pauseProducing`` when its send buffer is full
    and ``resumeProducing`` once it has drained: at most a piece or so waits in memory. An
    async source's pieces are awaited on the reactor (its iterator may await Deferreds)."""

    def __init__(self, source: BodySource) -> None:
        self._source = source
        self.length = UNKNOWN_LENGTH if source.length is None else source.length
        self._gate = Gate()
        self._stopped = False
        self._finished: defer.Deferred[None] = defer.Deferred()

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        writing = defer.Deferred.fromCoroutine(self._write_all(consumer))
        writing.addCallbacks(self._ended, self._ended)
        return self._finished

    async def _write_all(self, consumer: IConsumer) -> None:
        source = self._source
        while not self._stopped:
            if self._gate.shut:
                await self._gate.opened()
                continue
            piece = await source.anext_piece() if source.is_async else source.next_piece()
            if piece is None or self._stopped:
                return
            consumer.write(piece)

    def _ended(self, result: Any) -> None:
        # After stopProducing the Deferred must never fire (IBodyProducer): the request has
        # already ended some other way.
        if self._stopped:
            return
        self._stopped = True
        if isinstance(result, Failure):
            self._finished.errback(result)
        else:
            self._finished.callback(None)

    def pauseProducing(self) -> None:
        self._gate.shut = True

    def resumeProducing(self) -> None:
        self._gate.open()

    def stopProducing(self) -> None:
        self._stopped = True
        self._gate.release()


#: Seconds between HostnameEndpoint's connection attempts to a host's addresses (Twisted's
#: default: 0.3). It also learns that the last address refused only at its next tick, so a
#: cluster's failover waited that long on every dead node (bench failover, twisted: 312 ms from
#: a node's death to the first success elsewhere; 68 ms with this, medians of 4 deaths).
ATTEMPT_DELAY = 0.05


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """The endpoints ``Agent`` connects through, as Twisted's own factory makes them
    (HostnameEndpoint, TLS-wrapped for https) but with :data:`ATTEMPT_DELAY`."""

    def __init__(self, reactor: Any, tls: IPolicyForHTTPS, connect_timeout: float | None) -> None:
        self._reactor = reactor
        self._tls = tls
        self._timeout = connect_timeout

    def endpointForURI(self, uri: web_client.URI) -> Any:  # noqa: N802 (Twisted's name)
        kwargs: dict[str, Any] = {"attemptDelay": ATTEMPT_DELAY}
        if self._timeout is not None:
            kwargs["timeout"] = self._timeout
        endpoint = HostnameEndpoint(self._reactor, uri.host.decode("ascii"), uri.port, **kwargs)
        if uri.scheme == b"https":
            return wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


class _Transfer(Protocol):
    """One request: its Deferred, then its body, then exactly one sink end call."""

    def __init__(self, request: Request, sink: Sink, reactor: IReactorTime,
                 timeout: float | None, idle_timeout: float | None,
                 silences: SilenceWatch) -> None:
        self.request = request
        self.sink = sink
        self.finished = False
        self.paused = False
        self.delivering = False  # inside sink.on_data, itself inside Twisted's parser
        self.abandon = False
        self.requesting: defer.Deferred[IResponse] | None = None
        self.reactor = reactor
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.timer: IDelayedCall | None = None
        # Silence allowed from the server, from the start of the request until the end of the
        # body; not counted while paused (the silence is then ours): the backend's watch.
        self.silences = silences
        self.heard_at = 0.0
        if timeout:
            self.timer = reactor.callLater(timeout, self._timed_out, "request")
        if idle_timeout:
            silences.watch(self)

    def _heard(self) -> None:
        self.heard_at = time.monotonic()

    def _stop_timers(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.silences.unwatch(self)

    # -- response start ---------------------------------------------------------------------

    def got_response(self, response: IResponse) -> None:
        self.requesting = None
        if self.finished:
            response.deliverBody(_Discard())
            return
        self._heard()
        self.sink.on_start(response.code, Headers(_fields(response)))
        response.deliverBody(self)
        if self.paused and self.transport is not None:
            self.transport.pauseProducing()

    def request_failed(self, failure: Failure) -> None:
        self.requesting = None
        if not self.finished and not failure.check(defer.CancelledError):
            self._end(_map_failure(failure, self.request))

    # -- body (Protocol) ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.finished:
            self._heard()
            self.delivering = True
            try:
                self.sink.on_data(data)
            finally:
                self.delivering = False
            if self.abandon:
                # Cancelled while Twisted was inside its parser: raising makes it give the
                # connection up. Aborting the socket instead would let the parser finish the
                # buffered response and return the doomed connection to the pool.
                raise _Abandoned()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self.finished:
            return
        # PotentialDataLoss: no Content-Length and not chunked, so the end of the connection is
        # the end of the body (HTTP/1.0 style); that is a complete answer.
        if reason.check(ResponseDone, PotentialDataLoss):
            self._end(None)
        else:
            self._end(_map_failure(reason, self.request))

    # -- ending -------------------------------------------------------------------------------

    def _end(self, exc: CouchError | None) -> None:
        self.finished = True
        self._stop_timers()
        if exc is None:
            self.sink.on_end()
        else:
            self.sink.on_error(exc)

    def _abort(self) -> None:
        # The connection of an abandoned transfer is dropped, never reused: its response may
        # still be on the way. Before the response, cancelling the request Deferred does that.
        if self.requesting is not None:
            self.requesting.cancel()
        elif self.delivering:
            self.abandon = True  # dataReceived raises once the sink returns
        elif self.transport is not None:
            _repairs.abort_body(self.transport)

    def silence_expired(self) -> None:
        self._timed_out("idle")

    def _timed_out(self, which: str) -> None:
        if which == "idle":
            message = f"no data for {self.idle_timeout:g} s (idle_timeout)"
        else:
            self.timer = None
            message = f"request timed out after {self.timeout:g} s"
        if not self.finished:
            self._end(Timeout(message, method=self.request.method, url=self.request.url))
            self._abort()

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self._stop_timers()
            self._abort()

    def pause(self) -> None:
        # Before the body starts there is nothing to pause; got_response honours the flag.
        if self.paused or self.finished:
            return
        self.paused = True
        self.silences.unwatch(self)
        if self.transport is not None:
            self.transport.pauseProducing()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if not self.finished:
                if self.idle_timeout:  # the silence starts now
                    self.silences.watch(self)
                if self.transport is not None:
                    self.transport.resumeProducing()


class _Abandoned(Exception):
    """Raised into Twisted's HTTP parser to drop a connection whose response was cancelled."""


class _Discard(Protocol):
    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        return None


class _DelayedCall:
    __slots__ = ("_call",)

    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


class DeferredBackend(Backend):
    """What both Twisted transports share: the reactor (the global one, looked up on first use,
    unless one is given), Deferreds as the native promise, and the reactor's timers."""

    resumes_at_once = True  # Deferred.fromCoroutine goes on inside the Deferred's callback

    def __init__(self, options: TransportOptions | None = None, reactor: Any = None) -> None:
        super().__init__(options)
        self._reactor = reactor

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def run(self, start: Start) -> defer.Deferred[Any]:
        handle: list[Cancel] = []

        def cancel(_: defer.Deferred[Any]) -> None:
            if handle:
                handle[0].cancel()

        deferred: defer.Deferred[Any] = defer.Deferred(cancel)

        def done(outcome: Outcome) -> None:
            if deferred.called:  # cancelled by the caller
                return
            if outcome.error is not None:
                deferred.errback(Failure(outcome.error))
            else:
                deferred.callback(outcome.value)

        handle.append(start(done))
        return deferred

    def when_done(self, value: Any, done: Callable[[Outcome], None]) -> bool:
        if inspect.iscoroutine(value):
            value = defer.Deferred.fromCoroutine(value)
        if not isinstance(value, defer.Deferred):
            return False

        def ok(result: Any) -> None:
            done(Outcome(value=result))

        def failed(failure: Failure) -> None:
            done(Outcome(error=failure.value))

        value.addCallbacks(ok, failed)
        return True

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        return _DelayedCall(self.reactor.callLater(delay, fn))


class TwistedBackend(DeferredBackend):
    """``reactor`` defaults to the global reactor, looked up on first use."""

    def __init__(self, options: TransportOptions | None = None, reactor: Any = None) -> None:
        super().__init__(options, reactor)
        self._agent: web_client.Agent | None = None
        self._pool: web_client.HTTPConnectionPool | None = None
        # The last request headers converted, and their Twisted form: a Couch sends the same
        # ones again and again, and Agent copies them before adding its own.
        self._headers: tuple[tuple[tuple[str, str], ...], TwistedHeaders] = ((), TwistedHeaders())
        # Made now, so that the TLS settings given (a bad certificate file, or pyOpenSSL
        # missing) fail when the Couch is made.
        self._tls = TLSPolicy(self.options)
        self._silences: SilenceWatch | None = None

    def _get_agent(self) -> web_client.Agent:
        if self._agent is None:
            self._pool = web_client.HTTPConnectionPool(self.reactor, persistent=True)
            self._pool.maxPersistentPerHost = self.options.max_connections
            self._agent = web_client.Agent.usingEndpointFactory(
                self.reactor,
                _Endpoints(self.reactor, self._tls, self.options.connect_timeout),
                pool=self._pool,
            )
        return self._agent

    def send(self, request: Request, sink: Sink) -> Transfer:
        if self._silences is None:
            self._silences = SilenceWatch(self.reactor.callLater)
        transfer = _Transfer(request, sink, self.reactor,
                             request.timeout or self.options.request_timeout,
                             request.idle_timeout or self.options.idle_timeout, self._silences)
        try:
            headers = self._twisted_headers(request)
            if is_https(request.url):
                # Checked here: without TLS support, Agent.request would raise out of send()
                # instead of failing this transfer.
                twisted_ssl()
        except (ValueError, MissingTLS) as exc:
            transfer._end(refusal(exc, request))
            return transfer
        body = request.body
        producer: StreamProducer | _BytesProducer | None = (
            None if body is None else StreamProducer(body) if isinstance(body, BodySource)
            else _BytesProducer(body))
        requesting = self._get_agent().request(
            request.method.encode("ascii"), request.url.encode("ascii"), headers, producer
        )
        transfer.requesting = requesting
        requesting.addCallbacks(transfer.got_response, transfer.request_failed)
        return transfer

    def _twisted_headers(self, request: Request) -> TwistedHeaders:
        """The request's headers for Agent; ValueError if one could not be sent as it is."""
        fields, headers = self._headers
        if fields != request.headers:
            check_headers(request.headers)  # Twisted would make a line break a space
            fields, headers = request.headers, TwistedHeaders()
            for name, value in fields:
                headers.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
            self._headers = (fields, headers)
        return headers

    def close(self) -> defer.Deferred[None]:
        """Close cached connections; the Deferred fires when they are closed."""
        if self._silences is not None:
            self._silences.close()
        pool, self._pool, self._agent = self._pool, None, None
        if pool is None:
            return defer.succeed(None)
        return pool.closeCachedConnections()




def _fields(response: IResponse) -> Iterator[tuple[str, str]]:
    """A response's header fields, decoded: read on first use only (most responses' never
    are), when the response's headers do not change any more."""
    headers = response.headers
    for name, values in headers.getAllRawHeaders():
        for value in values:
            yield name.decode("latin-1"), value.decode("latin-1")
    if response.length is not UNKNOWN_LENGTH and response.code not in (204, 304) and \
            not headers.hasHeader(b"content-length"):
        # Twisted keeps Content-Length out of the headers (as response.length; a HEAD's
        # stays): put it back, as the other backends report it (an attachment's length).
        yield "Content-Length", str(response.length)


def refusal(exc: Exception, request: Request) -> CouchError:
    """The error for a request refused before it was sent: a header that cannot be sent as it
    is (ValueError), or HTTPS without Twisted's TLS support (MissingTLS)."""
    where: dict[str, str] = {"method": request.method, "url": request.url}
    err: CouchError
    if isinstance(exc, MissingTLS):
        err = ConnectError(f"cannot connect: {exc}", **where)
    else:
        err = TransportError(f"request not sent: {exc}", **where)
    err.__cause__ = exc
    return err


def _reasons(failure: Failure) -> list[Failure]:
    """The underlying failures of Twisted's wrapper exceptions, or the failure itself."""
    value = failure.value
    if isinstance(value, (ResponseFailed, RequestTransmissionFailed, RequestGenerationFailed)
                  ) and value.reasons:
        return list(value.reasons)
    return [failure]


def _map_failure(failure: Failure, request: Request) -> CouchError:
    """One map from Twisted's errors to corduroy2's transport errors."""
    where: dict[str, str] = {"method": request.method, "url": request.url}
    reasons = _reasons(failure)
    causes = [r.value for r in reasons]
    for cause in causes:
        if isinstance(cause, CouchError):  # a streamed request body failed (BodySource)
            return cause
    text = "; ".join(f"{type(c).__name__}: {c}" for c in causes)
    err: CouchError
    if any(isinstance(c, (ierror.TimeoutError, defer.TimeoutError)) for c in causes):
        err = Timeout(f"timed out: {text}", **where)
    elif any(is_tls_error(c) for c in causes):
        meaning = tls_meaning(" ".join(repr(c) for c in causes))
        err = ConnectError(f"{meaning}: {text}", **where)
    elif isinstance(failure.value, (ierror.ConnectError, ierror.DNSLookupError)) or any(
        isinstance(c, ierror.ConnectError) or is_tls_error(c) for c in causes
    ):
        err = ConnectError(f"cannot connect: {text}", **where)
    elif isinstance(failure.value, (ResponseNeverReceived, ResponseFailed)):
        err = ResponseCut(f"connection lost before the response was complete: {text}", **where)
    elif isinstance(failure.value, (RequestTransmissionFailed, *_repairs.not_sent_errors())):
        err = TransportError(f"request could not be sent: {text}", **where)
    elif isinstance(failure.value, ierror.ConnectionLost):
        err = ResponseCut(f"connection lost: {text}", **where)
    else:
        err = TransportError(f"unexpected transport failure: {text}", **where)
    err.__cause__ = failure.value
    return err
