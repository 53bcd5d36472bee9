"""Repairs of Tornado's HTTP clients that its public API does not allow: the only module of the
adapter that touches Tornado's internals (DESIGN.md §9). Each repair says why it is needed and
what happens without it; tests/backends/test_tornado_repairs.py checks that the internals it
relies on are still there and still behave as assumed, so a Tornado upgrade that changes them
fails a test instead of this adapter.

* :class:`SimpleClient` (``simple_httpclient``): its connections settle the fetch on a reset
  after the headers, and can be abandoned one by one (:func:`abandon_with`).
* :class:`CurlRun` (``curl_httpclient``): resumes and aborts one request's transfer, and only
  while the easy handle is still that request's.
* :func:`without_retries` (aiohttp, for ``client="aiohttp"``): turns off aiohttp's own
  sending again of a request whose connection closed unanswered.
* :func:`fetch`: not a repair but a fast path, measured: ``fetch(raise_error=False)`` with a
  callback in place of its Future, which reports a loop iteration later.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from tornado.httpclient import HTTPRequest, HTTPResponse, _RequestProxy
from tornado.simple_httpclient import SimpleAsyncHTTPClient, _HTTPConnection

try:
    import pycurl
except ImportError:  # pycurl is optional: CurlRun is only made by the curl client
    pycurl = None

__all__ = ["Abandonable", "SimpleClient", "abandon_with", "CurlRun", "fetch", "without_retries"]

# The attribute that carries a request's Abandonable to its connection. fetch() wraps the
# request in a proxy whose attribute lookup falls through to the request, so the connection
# reads it with getattr.
_TAG = "corduroy2_transfer"


class Abandonable(Protocol):
    """What a connection needs of the request it serves: whether the request is cancelled,
    and where to put the function that abandons it."""

    cancelled: bool
    abort: Callable[[], None] | None


def abandon_with(request: HTTPRequest, transfer: Abandonable) -> None:
    """Let the :class:`SimpleClient` connection that will serve ``request`` register its
    ``abandon`` as ``transfer.abort``, and abandon at once if ``transfer`` is cancelled by
    then (it waited in the client's queue)."""
    setattr(request, _TAG, transfer)


class _SimpleConnection(_HTTPConnection):
    """Tornado's simple-client connection (``_HTTPConnection``, one per request) with two
    repairs. It is private: it is put in place by :class:`SimpleClient` through the private
    ``SimpleAsyncHTTPClient._connection_class``.

    1. **A reset after the headers settles the fetch.** When the stream closes with an error
       after the response headers, Tornado's ``on_connection_close`` re-raises the socket error
       instead of ending the request: without this repair the error is logged as uncaught and
       the fetch never settles (the caller waits forever, or until a timeout if it set one).
       Here the error ends the request like any other failure (the adapter maps it to
       ``ResponseCut``).
    2. **Per-request abandon.** Tornado has no public way to abort one request. ``abandon``
       closes the connection's stream (the simple client never reuses a connection), or, while
       still connecting, ends the fetch through Tornado's own timeout path: that frees the
       client's slot at once, and ``run()`` closes the stream as soon as the connect completes,
       before anything is sent. Without it a cancelled request (a cancelled feed, an idle
       timeout) runs on unseen until the server ends it, which a continuous feed never does,
       holding one of ``max_clients`` slots; and one cancelled while it waited in the queue is
       still sent.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        transfer: Abandonable | None = getattr(self.request, _TAG, None)
        if transfer is not None:
            transfer.abort = self.abandon
            if transfer.cancelled:  # while it waited in the client's queue
                self.abandon()

    def abandon(self) -> None:
        stream = getattr(self, "stream", None)  # set once connected
        if stream is not None:
            stream.close()
        elif self.final_callback is not None:
            self._on_timeout("(cancelled by corduroy2)")

    def on_connection_close(self) -> None:
        error = self.stream.error
        if self.final_callback is not None and error is not None:
            self._handle_exception(type(error), error, error.__traceback__)
            return
        super().on_connection_close()


class SimpleClient(SimpleAsyncHTTPClient):
    """``SimpleAsyncHTTPClient`` whose connections are :class:`_SimpleConnection`.
    ``_connection_class`` is the hook Tornado's own tests use to swap the connection class."""

    def _connection_class(self) -> type:
        return _SimpleConnection


class CurlRun:
    """The transfer of one request on a curl easy handle (given to ``prepare_curl_callback``).

    **Abort.** libcurl has no call that ends one transfer of a multi handle at once, and
    Tornado none either. ``abort`` ends it the way Tornado ends a finished transfer:
    ``_finish`` removes the easy handle from the multi (libcurl then closes its connection,
    as it never reuses that of an unfinished transfer) and reports the error to the fetch; and
    ``_process_queue`` starts the requests waiting for a free handle. Without it a cancelled
    transfer (a cancelled feed, an idle timeout) runs on unseen until the server ends it, which
    a continuous feed never does, holding one of ``max_clients`` handles.

    **Still ours.** Tornado resets and reuses an easy handle for the next queued request as
    soon as a transfer ends, before the fetch's Future reports the end. Resuming or aborting
    through a stale handle would act on another request (abort it). Tornado keeps its record
    of a running request in ``curl.info`` (a new dict for each request, None once it has
    ended), so a run acts only while ``curl.info`` is still the record it saw when the request
    was set up.
    """

    __slots__ = ("_client", "_curl", "_info")

    def __init__(self, client: Any, curl: Any) -> None:
        self._client, self._curl = client, curl
        self._info = curl.info  # set by Tornado before it calls prepare_curl_callback

    def running(self) -> bool:
        return self._curl.info is self._info

    def resume(self) -> None:
        """Unpause the transfer (``PAUSE_CONT``): a read or write callback answered PAUSE."""
        if self.running():
            try:
                self._curl.pause(pycurl.PAUSE_CONT)
            except pycurl.error:
                pass  # the transfer has failed meanwhile; its result is on its way

    def abort(self) -> None:
        if self.running():
            self._client._finish(self._curl, pycurl.E_ABORTED_BY_CALLBACK,
                                 "cancelled by corduroy2")
            self._client._process_queue()


def fetch(client: Any, request: HTTPRequest, done: Callable[[HTTPResponse], None]) -> None:
    """``client.fetch(request, raise_error=False)``, but ``done(response)`` is called by the
    client itself when the response is complete, not by fetch()'s Future.

    Not a repair but the one fast path kept (DESIGN.md §9): a Future's done-callback runs one
    loop iteration later, so every request would cost one more pass of the event loop.
    Measured with ``bench get --pairs 40`` (client CPU per request above the raw transport,
    medians of 3 to 6 alternating runs on a shared 2-CPU VM): tornado-curl c=1 32 -> 20 µs,
    c=32 26 -> 20 µs; overhead against raw tornado-curl at c=1 10.5% with the Future (above
    the 10% target) -> 6.0% with this. Without it (``fetch(request, raise_error=False)``, its
    Future's result or exception given to ``done``), each request costs that loop pass more;
    nothing else changes.

    It does what fetch() does around ``fetch_impl`` (the method each client implements): it
    lays the client's defaults under the request with ``_RequestProxy``. fetch() also copies
    the request's headers, which the clients add to; here ``request.headers`` must be an
    ``HTTPHeaders`` of this request's own. The response comes as fetch() gets it: any status;
    a failed exchange is a response with code 599 and its ``error``.
    """
    if request.header_callback is not None:
        # Tornado's curl client queues header lines on the loop but reports the end at once
        # (fetch()'s Future would report it a pass later): the end must come after the lines.
        done = functools.partial(client.io_loop.add_callback, done)
    client.fetch_impl(_RequestProxy(request, client.defaults), done)


def without_retries(session: Any) -> None:
    """Turn off aiohttp's retry in ``session`` (an ``aiohttp.ClientSession``; aiohttp is not
    imported here, so the front door works without it).

    aiohttp sends an idempotent request once more when its connection closes before any
    answer, whether the connection was kept alive (the server may close one while it sits in
    the pool: sending again is right) or new (the server took the request and dropped it: it
    may have acted on it). It has no public switch; ``_retry_connection`` is the attribute its
    own test utilities turn off. The aiohttp transport sends again itself, after a kept-alive
    connection only (``aiohttp_backend._Exchange._may_send_again``). Without this repair a request
    dropped on a new connection is sent twice (tests/backends/test_transport.py,
    ``test_drop_on_fresh_connection``). Setting the attribute costs nothing per request,
    where a client middleware that stopped the retry (and a connector subclass telling new
    connections from kept-alive ones) cost 3% of a GET's instructions at c=1 and 6% at c=32
    (bench get --instructions).
    """
    session._retry_connection = False
