"""Repairs of Tornado's HTTP clients that its public API does not allow: the only module of the
adapter that touches Tornado's internals (DESIGN.md §9). Each repair says why it is needed and
what happens without it; tests/backends/test_tornado_repairs.py checks that the internals it
relies on are still there and still behave as assumed, so a Tornado upgrade that changes them
fails a test instead of this adapter.

* :class:`SimpleClient` (``simple_httpclient``): its connections settle the fetch on a reset
  after the headers, and can be abandoned one by one (:func:`abandon_with`).
* :class:`CurlRun` (``curl_httpclient``): pauses, resumes and aborts one request's transfer,
  and only while the easy handle is still that request's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient, _HTTPConnection

try:
    import pycurl
except ImportError:  # pycurl is optional: CurlRun is only made by the curl client
    pycurl = None

__all__ = ["Abandonable", "SimpleClient", "abandon_with", "CurlRun"]

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
    soon as a transfer ends, before the fetch's Future reports the end. Pausing, resuming or
    aborting through a stale handle would act on another request (pause it forever, or abort
    it). Tornado keeps its record of a running request in ``curl.info`` (a new dict for each
    request, None once it has ended), so a run acts only while ``curl.info`` is still the
    record it saw when the request was set up.
    """

    __slots__ = ("_client", "_curl", "_info")

    def __init__(self, client: Any, curl: Any) -> None:
        self._client, self._curl = client, curl
        self._info = curl.info  # set by Tornado before it calls prepare_curl_callback

    def running(self) -> bool:
        return self._curl.info is self._info

    def pause(self) -> None:
        self._pause(pycurl.PAUSE_RECV)

    def resume(self) -> None:
        self._pause(pycurl.PAUSE_CONT)

    def _pause(self, how: int) -> None:
        if self.running():
            try:
                self._curl.pause(how)
            except pycurl.error:
                pass  # the transfer has failed meanwhile; its result is on its way

    def abort(self) -> None:
        if self.running():
            self._client._finish(self._curl, pycurl.E_ABORTED_BY_CALLBACK,
                                 "cancelled by corduroy2")
            self._client._process_queue()
