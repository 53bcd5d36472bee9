"""The Twisted transport: ``Agent`` over a persistent ``HTTPConnectionPool``, one per ``Couch``.

The reactor is imported on first use, not at import time, so that importing
``corduroy2.twisted_io`` does not install the default reactor before the application installs
the one it wants (asyncio, epoll...).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error as ierror
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import client as web_client
from twisted.web._newclient import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from ..backend import Backend, Cancel, Outcome, Sink, Start, Transfer, TransportOptions
from ..errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from ..protocol.requests import Request
from ..protocol.responses import Headers

__all__ = ["TwistedBackend"]


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


@implementer(IPolicyForHTTPS)
class _NoVerifyPolicy:
    """The explicit ``verify_tls=False`` opt-out: TLS without certificate checks."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        from twisted.internet.ssl import CertificateOptions

        return CertificateOptions(verify=False)


def _tls_policy(options: TransportOptions) -> IPolicyForHTTPS:
    if not options.verify_tls:
        return _NoVerifyPolicy()
    if options.ca_file:
        from twisted.internet.ssl import Certificate

        with open(options.ca_file, "rb") as pem:
            root = Certificate.loadPEM(pem.read())
        return web_client.BrowserLikePolicyForHTTPS(trustRoot=root)
    return web_client.BrowserLikePolicyForHTTPS()


class _Exchange(Protocol):
    """One request: its Deferred, then its body, then exactly one sink end call."""

    def __init__(self, request: Request, sink: Sink, reactor: IReactorTime,
                 timeout: float | None) -> None:
        self.request = request
        self.sink = sink
        self.finished = False
        self.paused = False
        self.requesting: defer.Deferred[IResponse] | None = None
        self.timer: IDelayedCall | None = None
        if timeout:
            self.timer = reactor.callLater(timeout, self._timed_out)

    # -- response start ---------------------------------------------------------------------

    def got_response(self, response: IResponse) -> None:
        self.requesting = None
        if self.finished:
            response.deliverBody(_Discard())
            return
        fields = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, values in response.headers.getAllRawHeaders()
            for value in values
        ]
        self.sink.on_start(response.code, Headers(fields))
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
            self.sink.on_data(data)

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
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if exc is None:
            self.sink.on_end()
        else:
            self.sink.on_error(exc)

    def _abort(self) -> None:
        # Before the response: cancelling the request Deferred aborts the connection. During
        # the body: stopProducing on the body transport aborts it. Either way it is not reused.
        if self.requesting is not None:
            self.requesting.cancel()
        elif self.transport is not None:
            self.transport.stopProducing()

    def _timed_out(self) -> None:
        self.timer = None
        if not self.finished:
            self._end(Timeout("request timed out", method=self.request.method,
                              url=self.request.url))
            self._abort()

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self._abort()

    def pause(self) -> None:
        # Before the body starts there is nothing to pause; got_response honours the flag.
        self.paused = True
        if self.transport is not None and not self.finished:
            self.transport.pauseProducing()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if self.transport is not None and not self.finished:
                self.transport.resumeProducing()


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


class TwistedBackend(Backend):
    """``reactor`` defaults to the global reactor, looked up on first use."""

    def __init__(self, options: TransportOptions | None = None, reactor: Any = None) -> None:
        super().__init__(options)
        self._reactor = reactor
        self._agent: web_client.Agent | None = None
        self._pool: web_client.HTTPConnectionPool | None = None

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _get_agent(self) -> web_client.Agent:
        if self._agent is None:
            self._pool = web_client.HTTPConnectionPool(self.reactor, persistent=True)
            self._pool.maxPersistentPerHost = self.options.max_connections
            self._agent = web_client.Agent(
                self.reactor,
                contextFactory=_tls_policy(self.options),
                connectTimeout=self.options.connect_timeout,
                pool=self._pool,
            )
        return self._agent

    def send(self, request: Request, sink: Sink) -> Transfer:
        exchange = _Exchange(request, sink, self.reactor,
                             request.timeout or self.options.request_timeout)
        headers = TwistedHeaders()
        for name, value in request.headers:
            headers.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        producer = None if request.body is None else _BytesProducer(request.body)
        requesting = self._get_agent().request(
            request.method.encode("ascii"), request.url.encode("ascii"), headers, producer
        )
        exchange.requesting = requesting
        requesting.addCallbacks(exchange.got_response, exchange.request_failed)
        return exchange

    def run(self, start: Start) -> defer.Deferred[Any]:
        handle: list[Cancel] = []
        deferred: defer.Deferred[Any] = defer.Deferred(lambda _: handle[0].cancel() if handle else None)

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

    def close(self) -> defer.Deferred[None]:
        """Close cached connections; the Deferred fires when they are closed."""
        pool, self._pool, self._agent = self._pool, None, None
        if pool is None:
            return defer.succeed(None)
        return pool.closeCachedConnections()


def _reasons(failure: Failure) -> list[Failure]:
    """The underlying failures of Twisted's wrapper exceptions, or the failure itself."""
    value = failure.value
    if isinstance(value, (ResponseFailed, RequestTransmissionFailed)) and value.reasons:
        return list(value.reasons)
    return [failure]


def _map_failure(failure: Failure, request: Request) -> CouchError:
    """One map from Twisted's errors to corduroy2's transport errors."""
    where: dict[str, str] = {"method": request.method, "url": request.url}
    reasons = _reasons(failure)
    causes = [r.value for r in reasons]
    text = "; ".join(f"{type(c).__name__}: {c}" for c in causes)
    err: CouchError
    if any(isinstance(c, (ierror.TimeoutError, defer.TimeoutError)) for c in causes):
        err = Timeout(f"timed out: {text}", **where)
    elif isinstance(failure.value, (ierror.ConnectError, ierror.DNSLookupError)) or any(
        isinstance(c, ierror.ConnectError) or _is_tls_error(c) for c in causes
    ):
        err = ConnectError(f"cannot connect: {text}", **where)
    elif isinstance(failure.value, (ResponseNeverReceived, ResponseFailed)):
        err = ResponseCut(f"connection lost before the response was complete: {text}", **where)
    elif isinstance(failure.value, (RequestTransmissionFailed, RequestNotSent)):
        err = TransportError(f"request could not be sent: {text}", **where)
    elif isinstance(failure.value, ierror.ConnectionLost):
        err = ResponseCut(f"connection lost: {text}", **where)
    else:
        err = TransportError(f"unexpected transport failure: {text}", **where)
    err.__cause__ = failure.value
    return err


def _is_tls_error(exc: BaseException | None) -> bool:
    return exc is not None and type(exc).__module__.startswith("OpenSSL")
