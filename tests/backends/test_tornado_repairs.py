"""The repairs of ``corduroy2/tornado_io/_repairs.py``, against the Tornado installed.

Each repair has two kinds of test. One checks that the Tornado internals it relies on are still
there, with the signatures and the behaviour it assumes (and, where Tornado has a bug, that the
bug is still there): after a Tornado upgrade, a failure here names the repair to revisit. The
other checks, end to end, that the repair does what it is for.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from typing import Any

import pytest

from corduroy2.backend import Transfer, TransportOptions
from corduroy2.errors import CouchError, ResponseCut
from corduroy2.protocol.requests import Request
from corduroy2.protocol.responses import Headers

from ..support.faultserver import Reply
from .conftest import CALL_TIMEOUT, WatchedFaultServer, closed_port
from .test_cancel import _until

pytest.importorskip("tornado", reason="Tornado is not installed")

from tornado.httpclient import HTTPRequest, HTTPResponse  # noqa: E402
from tornado.simple_httpclient import SimpleAsyncHTTPClient, _HTTPConnection  # noqa: E402

from corduroy2.tornado_io import _repairs  # noqa: E402
from corduroy2.tornado_io.backend import HAS_CURL, TornadoBackend  # noqa: E402

JSON = {"Content-Type": "application/json"}
BODY = b'{"_id":"x","pad":"' + b"p" * 200 + b'"}'
ROWS = [b'{"total_rows":8,"offset":0,"rows":[\r\n'] + [
    b'{"id":"d%d","key":%d,"value":null}%s' % (i, i, b",\r\n" if i < 7 else b"\r\n")
    for i in range(8)] + [b"]}\n"]

needs_curl = pytest.mark.skipif(not HAS_CURL, reason="pycurl is not installed")


class Recorder:
    """A sink that records what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.done = asyncio.Event()
        self.transfer: Transfer | None = None

    def on_start(self, status: int, headers: Headers) -> None:
        self.events.append(("start", status))

    def on_data(self, chunk: bytes) -> None:
        self.events.append(("data", chunk))

    def on_end(self) -> None:
        self.events.append(("end", None))
        self.done.set()

    def on_error(self, exc: CouchError) -> None:
        self.events.append(("error", exc))
        self.done.set()

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def _params(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def _backend(client: str, **options: Any) -> TornadoBackend:
    return TornadoBackend(TransportOptions(**options), client=client)


# -- simple client: _SimpleConnection, put in place by SimpleClient ----------------------------


def test_tornado_simple_internals_are_as_assumed() -> None:
    """What _SimpleConnection and SimpleClient use of Tornado's simple client."""
    # The hook: the stock client makes each request's connection from _connection_class().
    assert _params(SimpleAsyncHTTPClient._connection_class) == ["self"]
    assert "self._connection_class()(" in inspect.getsource(SimpleAsyncHTTPClient._handle_request)
    assert issubclass(_repairs.SimpleClient()._connection_class(), _HTTPConnection)
    # The connection's parts that the repairs call or override.
    assert _params(_HTTPConnection.on_connection_close) == ["self"]
    assert _params(_HTTPConnection._on_timeout) == ["self", "info"]
    assert _params(_HTTPConnection._handle_exception) == ["self", "typ", "value", "tb"]
    source = inspect.getsource(_HTTPConnection)
    # final_callback is cleared once the fetch is settled; after a connect, run() closes the
    # stream of a fetch settled meanwhile (abandon relies on it while connecting).
    assert "self.final_callback = None" in source
    assert "if self.final_callback is None:\n                # final_callback is cleared" in source
    assert "self.stream = stream" in source
    # The bug that the first repair works around: the socket error is re-raised.
    assert "raise self.stream.error" in inspect.getsource(_HTTPConnection.on_connection_close)


async def test_tornado_stock_simple_client_never_settles_a_reset_after_headers(
        fault: WatchedFaultServer, caplog: pytest.LogCaptureFixture) -> None:
    """Why _SimpleConnection.on_connection_close is repaired: with Tornado's own connection, a
    reset after the headers leaves the fetch pending for good. If this fails, Tornado has
    fixed it, and the repair can go."""
    fault.add("GET", "/x", Reply(headers=JSON, body=BODY, cut_after=10, reset=True))
    client = SimpleAsyncHTTPClient(force_instance=True)
    try:
        fetching = client.fetch(fault.url + "/x", raise_error=False, request_timeout=0)
        await asyncio.sleep(1.0)
        assert not fetching.done(), "Tornado now settles a reset after headers: drop the repair"
    finally:
        client.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_tornado_simple_reset_after_headers_is_response_cut(fault: WatchedFaultServer,
                                                                  stream: bool) -> None:
    fault.add("GET", "/x", Reply(headers=JSON, body=BODY, cut_after=10, reset=True))
    backend = _backend("simple")
    sink = Recorder()
    try:
        backend.send(Request("GET", fault.url + "/x", stream=stream), sink)
        await asyncio.wait_for(sink.done.wait(), CALL_TIMEOUT)
    finally:
        backend.close()
    assert sink.kinds()[-1] == "error" and sink.kinds().count("error") == 1, sink.events
    assert type(sink.events[-1][1]) is ResponseCut


async def test_tornado_simple_connection_registers_its_abandon(
        fault: WatchedFaultServer) -> None:
    """abandon_with: the connection that serves the request hands its abandon over."""
    fault.add("GET", "/x", Reply.json({"ok": True}))

    class Tagged:
        cancelled = False
        abort: Any = None

    tagged = Tagged()
    client = _repairs.SimpleClient(force_instance=True)
    try:
        request = HTTPRequest(fault.url + "/x")
        _repairs.abandon_with(request, tagged)
        response = await client.fetch(request)
        assert response.code == 200
        assert tagged.abort is not None
        assert isinstance(tagged.abort.__self__, _HTTPConnection)
    finally:
        client.close()


async def test_tornado_simple_cancel_closes_the_connection(fault: WatchedFaultServer) -> None:
    """Abandon, running: the server sees the connection close at once, not at the next
    chunk (there is none for 5 s)."""
    fault.add("GET", "/db/_all_docs",
              Reply(headers=JSON, chunks=ROWS, stall_after_bytes=(60, 5.0)))
    backend = _backend("simple")
    sink = Recorder()
    try:
        transfer = backend.send(Request("GET", fault.url + "/db/_all_docs", stream=True), sink)
        await _until(lambda: "data" in sink.kinds())
        began = time.monotonic()
        transfer.cancel()
        assert await fault.hung_up(fault.requests[0].connection, timeout=1.0)
        assert time.monotonic() - began < 0.5
        await asyncio.sleep(0.1)
        assert "end" not in sink.kinds() and "error" not in sink.kinds()
    finally:
        backend.close()


async def test_tornado_simple_cancelled_in_the_queue_is_never_sent(
        fault: WatchedFaultServer) -> None:
    """Abandon, queued: a request cancelled while it waits for a free slot is never sent,
    and the slot it would have had serves the next request."""
    fault.add("GET", "/slow", Reply.json({"ok": True}, stall_before_headers=0.4))
    fault.add("GET", "/", Reply.json({"ok": True}))
    backend = _backend("simple", max_connections=1)
    slow, cancelled, after = Recorder(), Recorder(), Recorder()
    try:
        backend.send(Request("GET", fault.url + "/slow"), slow)
        backend.send(Request("GET", fault.url + "/"), cancelled).cancel()
        backend.send(Request("GET", fault.url + "/"), after)
        await asyncio.wait_for(after.done.wait(), CALL_TIMEOUT)
        await asyncio.sleep(0.2)
    finally:
        backend.close()
    assert slow.kinds() == ["start", "data", "end"]
    assert after.kinds() == ["start", "data", "end"]
    assert cancelled.events == []
    assert [r.path for r in fault.requests] == ["/slow", "/"]


# -- curl client: CurlRun --------------------------------------------------------------------


@needs_curl
def test_tornado_curl_internals_are_as_assumed() -> None:
    from tornado.curl_httpclient import CurlAsyncHTTPClient

    assert _params(CurlAsyncHTTPClient._finish) == ["self", "curl", "curl_error", "curl_message"]
    assert _params(CurlAsyncHTTPClient._process_queue) == ["self"]
    # _finish clears curl.info first (the transfer is no longer running), then reports the
    # error to the fetch and frees the handle; _process_queue gives each request a new info
    # dict before its prepare_curl_callback.
    finish = inspect.getsource(CurlAsyncHTTPClient._finish)
    assert finish.index("curl.info = None") < finish.index("self._multi.remove_handle(curl)")
    assert "self._free_list.append(curl)" in finish
    assert "curl.info = {" in inspect.getsource(CurlAsyncHTTPClient._process_queue)


@needs_curl
async def test_tornado_curl_info_marks_one_request(fault: WatchedFaultServer) -> None:
    """CurlRun's "still ours" test: curl.info is a new object for each request while it runs,
    and no longer that object once the request's fetch has settled."""
    from tornado.curl_httpclient import CurlAsyncHTTPClient

    fault.add("GET", "/x", Reply.json({"ok": True}))
    client = CurlAsyncHTTPClient(force_instance=True, max_clients=1)
    runs: list[_repairs.CurlRun] = []
    infos: list[Any] = []

    def prepare(curl: Any) -> None:
        infos.append(curl.info)
        runs.append(_repairs.CurlRun(client, curl))

    try:
        for _ in range(2):
            response: HTTPResponse = await client.fetch(fault.url + "/x",
                                                         prepare_curl_callback=prepare)
            assert response.code == 200
            assert not runs[-1].running()
        assert isinstance(infos[0], dict) and isinstance(infos[1], dict)
        assert infos[0] is not infos[1]
    finally:
        client.close()


@needs_curl
async def test_tornado_curl_stale_run_leaves_the_next_request_alone(
        fault: WatchedFaultServer) -> None:
    """A CurlRun whose request has ended does nothing to the request that reuses its handle."""
    from tornado.curl_httpclient import CurlAsyncHTTPClient

    fault.add("GET", "/first", Reply.json({"ok": True}))
    fault.add("GET", "/second", Reply.json({"ok": True}, stall_before_headers=0.3))
    client = CurlAsyncHTTPClient(force_instance=True, max_clients=1)
    runs: list[_repairs.CurlRun] = []

    def prepare(curl: Any) -> None:
        runs.append(_repairs.CurlRun(client, curl))

    try:
        await client.fetch(fault.url + "/first", prepare_curl_callback=prepare)
        second = client.fetch(fault.url + "/second", prepare_curl_callback=prepare)
        await _until(lambda: len(runs) == 2)
        assert runs[1].running() and not runs[0].running()
        runs[0].resume()
        runs[0].abort()
        response = await asyncio.wait_for(second, CALL_TIMEOUT)
        assert response.code == 200
    finally:
        client.close()


@needs_curl
async def test_tornado_curl_cancel_frees_the_slot_at_once(fault: WatchedFaultServer) -> None:
    """CurlRun.abort: a cancelled transfer that the server keeps silent (5 s) ends at once,
    its connection is closed, and the one slot serves the next request without delay."""
    fault.add("GET", "/db/_all_docs",
              Reply(headers=JSON, chunks=ROWS, stall_after_bytes=(60, 5.0)))
    fault.add("GET", "/", Reply.json({"ok": True}))
    backend = _backend("curl", max_connections=1)
    stalled, after = Recorder(), Recorder()
    try:
        transfer = backend.send(Request("GET", fault.url + "/db/_all_docs", stream=True),
                                stalled)
        await _until(lambda: "data" in stalled.kinds())
        began = time.monotonic()
        transfer.cancel()
        backend.send(Request("GET", fault.url + "/"), after)
        await asyncio.wait_for(after.done.wait(), CALL_TIMEOUT)
        assert time.monotonic() - began < 0.3
        assert await fault.hung_up(fault.requests[0].connection, timeout=0.5)
    finally:
        backend.close()
    assert after.kinds() == ["start", "data", "end"]
    assert "end" not in stalled.kinds() and "error" not in stalled.kinds()


@needs_curl
async def test_tornado_curl_writefunction_set_in_prepare_curl_callback_is_used(
        fault: WatchedFaultServer) -> None:
    """Not a repair, but what _CurlBody stands on: Tornado calls ``prepare_curl_callback``
    after its own ``setopt`` calls, so a ``WRITEFUNCTION`` set there is the one libcurl gives
    the body to (Tornado's buffer stays empty); and ``WRITEFUNC_PAUSE`` makes libcurl keep a
    piece and offer it again once unpaused (``CurlRun.resume``)."""
    import pycurl
    from tornado.curl_httpclient import CurlAsyncHTTPClient

    fault.add("GET", "/db/_all_docs", Reply(headers=JSON, chunks=ROWS))
    client = CurlAsyncHTTPClient(force_instance=True, max_clients=1)
    offered: list[bytes] = []
    taken: list[bytes] = []
    runs: list[_repairs.CurlRun] = []

    def write(chunk: bytes) -> int | None:
        offered.append(chunk)
        if len(offered) == 1:  # refused once, then offered again after resume()
            asyncio.get_running_loop().call_later(0.05, runs[0].resume)
            return pycurl.WRITEFUNC_PAUSE  # type: ignore[no-any-return]
        taken.append(chunk)
        return None

    def prepare(curl: Any) -> None:
        runs.append(_repairs.CurlRun(client, curl))
        curl.setopt(pycurl.WRITEFUNCTION, write)

    try:
        response = await asyncio.wait_for(
            client.fetch(fault.url + "/db/_all_docs", prepare_curl_callback=prepare),
            CALL_TIMEOUT)
    finally:
        client.close()
    assert response.code == 200 and response.body == b""
    # the refused piece was offered again: nothing lost, nothing twice
    assert len(offered) == len(taken) + 1 and b"".join(taken) == b"".join(ROWS)


# -- fetch: fetch(raise_error=False) with a callback (a fast path) -------------------------------


def test_tornado_fetch_internals_are_as_assumed() -> None:
    """_repairs.fetch does what AsyncHTTPClient.fetch does around fetch_impl."""
    from tornado.httpclient import AsyncHTTPClient, _RequestProxy

    assert _params(AsyncHTTPClient.fetch_impl) == ["self", "request", "callback"]
    assert _params(_RequestProxy) == ["request", "defaults"]
    source = inspect.getsource(AsyncHTTPClient.fetch)
    assert "request_proxy = _RequestProxy(request, self.defaults)" in source
    assert "self.fetch_impl(cast(HTTPRequest, request_proxy), handle_response)" in source


CLIENTS = [pytest.param("curl", marks=needs_curl), "simple"]


async def _fetched(client: str, request: HTTPRequest) -> HTTPResponse:
    backend = _backend(client)
    http = backend._client()
    responses: list[HTTPResponse] = []
    try:
        _repairs.fetch(http, request, responses.append)
        await _until(lambda: responses, timeout=CALL_TIMEOUT)
    finally:
        backend.close()
    return responses[0]


@pytest.mark.parametrize("client", CLIENTS)
async def test_tornado_fetch_reports_a_status_and_a_failure(fault: WatchedFaultServer,
                                                            client: str) -> None:
    """Any status is a response; a failed exchange is a response with code 599 and its error
    (what the adapter tells them apart by)."""
    fault.add("GET", "/missing", Reply.json({"error": "not_found"}, status=404))
    missing = await _fetched(client, HTTPRequest(fault.url + "/missing"))
    assert missing.code == 404 and missing.body.startswith(b'{"error"')
    refused = await _fetched(client, HTTPRequest(f"http://127.0.0.1:{closed_port()}/"))
    assert refused.code == 599 and refused.error is not None


def _answer_once(response: bytes) -> str:
    """A server for one request that writes ``response`` in one send (so that the client reads
    the head and the end of the body together); its URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(response)
            conn.recv(1)  # until the client closes

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/x"


@pytest.mark.parametrize("client", CLIENTS)
async def test_tornado_fetch_ends_after_the_header_lines(client: str) -> None:
    """With a header_callback, the end is reported after every header line, even when the
    whole response is read at once."""
    fields = "".join(f"X-Field-{i}: {'v' * 50}\r\n" for i in range(40))
    url = _answer_once(f"HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok".encode())
    events: list[str] = []
    request = HTTPRequest(url, header_callback=lambda line: events.append("line"),
                          streaming_callback=lambda chunk: events.append("chunk"))
    backend = _backend(client)
    try:
        _repairs.fetch(backend._client(), request, lambda response: events.append("end"))
        await _until(lambda: "end" in events, timeout=CALL_TIMEOUT)
        await asyncio.sleep(0.05)
    finally:
        backend.close()
    assert events.count("line") == 43 and events[-1] == "end", events


def test_a_long_idle_timeout_on_a_plain_curl_request_is_left_to_libcurl() -> None:
    """With the default idle timeout (300 s), a plain curl request is watched by libcurl's
    LOW_SPEED options (whole seconds), with no loop timer nor callback per piece; a short one,
    or a streamed request, is watched on the loop."""
    pycurl = pytest.importorskip("pycurl")
    from corduroy2.api.couch import IDLE_TIMEOUT
    from corduroy2.backend import SilenceWatch
    from corduroy2.protocol.bodies import BodySource
    from corduroy2.protocol.requests import Request
    from corduroy2.tornado_io.backend import CURL_IDLE_MIN, _Fetch, _Transfer, _transfer_for

    class Easy:
        def __init__(self) -> None:
            self.options: dict[int, Any] = {}

        def setopt(self, option: int, value: Any) -> None:
            self.options[option] = value

    assert IDLE_TIMEOUT >= CURL_IDLE_MIN
    plain = Request("GET", "http://h/db/doc")
    timers: list[float] = []

    def call_later(delay: float, fn: Any) -> Any:
        timers.append(delay)

    silences = SilenceWatch(call_later)
    transfer = _transfer_for(plain, sink=None, idle=IDLE_TIMEOUT, silences=silences,  # type: ignore[arg-type]
                             curl=True)
    assert isinstance(transfer, _Fetch)
    callbacks = transfer.callbacks(curl_client=object())
    assert set(callbacks) == {"prepare_curl_callback"}
    easy = Easy()
    callbacks["prepare_curl_callback"](easy)
    assert easy.options[pycurl.LOW_SPEED_LIMIT] == 1
    assert easy.options[pycurl.LOW_SPEED_TIME] == 300
    assert easy.options[pycurl.VERBOSE] == 0
    assert timers == []  # not watched on the loop
    for request, idle, curl in [(plain, 5.0, True), (plain, IDLE_TIMEOUT, False),
                                (Request("GET", "http://h/db/_changes", stream=True),
                                 IDLE_TIMEOUT, True)]:
        watched = _transfer_for(request, sink=None, idle=idle, silences=silences,  # type: ignore[arg-type]
                                curl=curl)
        assert isinstance(watched, _Transfer)
        callbacks = watched.callbacks(object() if curl else None)
        # progress is seen piece by piece (a streamed body on curl: through its WRITEFUNCTION)
        assert watched.idle_timeout == idle
        assert "streaming_callback" in callbacks or (curl and request.stream)
    assert timers  # watched on the loop
    # No idle timeout: nothing to watch, on either client; an upload is never a plain fetch.
    for curl in (True, False):
        unwatched = _transfer_for(plain, sink=None, idle=None, silences=silences,  # type: ignore[arg-type]
                                  curl=curl)
        assert isinstance(unwatched, _Fetch) and unwatched.callbacks(None) == {}
    upload = Request("PUT", "http://h/db/doc/att", body=BodySource(iter([b"x"]), length=1))
    assert isinstance(_transfer_for(upload, sink=None, idle=None, silences=silences,  # type: ignore[arg-type]
                                    curl=True), _Transfer)


def test_aiohttp_retry_switch_is_as_assumed() -> None:
    """_repairs.without_retries: ``ClientSession._request`` sends an idempotent request again
    only while ``self._retry_connection`` is true (test_transport.py's
    test_drop_on_fresh_connection[tornado-aiohttp-*] shows the effect)."""
    aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is not installed")
    assert "_retry_connection" in aiohttp.ClientSession.ATTRS
    source = inspect.getsource(aiohttp.ClientSession._request)
    assert "self._retry_connection and method in IDEMPOTENT_METHODS" in source
    assert "if not retry_persistent_connection:" in source
    init = inspect.getsource(aiohttp.ClientSession.__init__)
    assert "self._retry_connection: bool = True" in init
