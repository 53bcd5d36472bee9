"""The adapter contract at the IO boundary, for every backend, against a scripted server.

Each test scripts the loopback :class:`FaultServer` and checks what the front door delivers:
the decoded value whatever the framing, and corduroy2's own error classes (never a
framework's) for cuts, garbage, drops, stalls, refused connections and error statuses. The
requests as the server received them are checked too (headers, auth, methods, reuse).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from corduroy2 import JWTAuth, errors
from corduroy2.errors import (
    ConnectError,
    CouchError,
    DecodeError,
    HTTPError,
    ResponseCut,
    Timeout,
    TransportError,
)

from ..support.faultserver import Reply
from .conftest import Harness, WatchedFaultServer, closed_port

USER, PASSWORD = "admin", "pa:ss@w0rd-s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

# Multibyte UTF-8 of every width: 2 (é), 3 (€), 4 (😀) bytes.
VALUE = {"couchdb": "Welcome", "text": "é€😀 ünïcode", "n": [1, 2.5, None, True], "nested": {"a": "ß"}}
BODY = json.dumps(VALUE, ensure_ascii=False).encode()


def _assert_clean(exc: BaseException) -> None:
    """No credential may show up in what an error prints."""
    for text in (str(exc), repr(exc)):
        assert PASSWORD not in text and BASIC not in text, text
        assert "pa%3Ass" not in text, text


# -- framing ---------------------------------------------------------------------------------
#
# "buffered" replies (couch.info) are delivered whole by the transports; "streamed" ones
# (db.all_docs) go through each transport's chunk-by-chunk path (Tornado's header and
# streaming callbacks, http.client's read1), so both are checked.

ROWS = [{"id": f"é{i}", "key": ["€", i], "value": {"rev": f"{i}-😀"}} for i in range(3)]
ROWS_BODY = json.dumps({"total_rows": 3, "offset": 0, "rows": ROWS}, ensure_ascii=False).encode()
SHAPES = ["buffered", "streamed"]


def _route(shape: str) -> str:
    return "/" if shape == "buffered" else "/db/_all_docs"


def _body(shape: str) -> bytes:
    return BODY if shape == "buffered" else ROWS_BODY


async def _fetch(h: Harness, couch: Any, shape: str, **kwargs: Any) -> Any:
    if shape == "buffered":
        return await h.run(couch.info, **kwargs)
    return await h.run(couch.database("db").all_docs, **kwargs)


def _check(shape: str, result: Any) -> None:
    if shape == "buffered":
        assert result == VALUE
    else:
        assert result.total_rows == 3
        assert [(r.id, r.key, r.value) for r in result.rows] == [
            (r["id"], r["key"], r["value"]) for r in ROWS]


@pytest.mark.parametrize("shape", SHAPES)
async def test_json_with_content_length(h: Harness, fault: WatchedFaultServer,
                                        shape: str) -> None:
    fault.add("GET", _route(shape), Reply(headers={"Content-Type": "application/json"},
                                          body=_body(shape)))
    _check(shape, await _fetch(h, h.couch(), shape))
    assert "content-length" not in fault.requests[0].headers  # a GET carries no body


def _mid_char_split(body: bytes) -> list[bytes]:
    """Chunks whose boundaries fall inside each multibyte character."""
    cuts: set[int] = set()
    for char in ("é", "€", "😀"):
        start = body.index(char.encode())
        cuts.update(range(start + 1, start + len(char.encode())))
    bounds = [0, *sorted(cuts), len(body)]
    return [body[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("split", ["1-byte", "mid-utf8"])
async def test_chunked_tiny_chunks(h: Harness, fault: WatchedFaultServer, split: str,
                                   shape: str) -> None:
    body = _body(shape)
    chunks = ([body[i:i + 1] for i in range(len(body))] if split == "1-byte"
              else _mid_char_split(body))
    assert b"".join(chunks) == body and len(chunks) > 3
    fault.add("GET", _route(shape), Reply(headers={"Content-Type": "application/json"},
                                          chunks=chunks))
    _check(shape, await _fetch(h, h.couch(), shape))


# Tornado's simple client never completes a fetch whose connection is reset (RST) after the
# status line: _HTTPConnection.on_connection_close() does `raise self.stream.error` instead of
# reporting it, Tornado logs "Uncaught exception" and the Future is left pending forever.


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("where", ["half", "no-body"])
async def test_body_cut_is_response_cut(request: pytest.FixtureRequest, h: Harness,
                                        fault: WatchedFaultServer, framing: str, how: str,
                                        where: str, shape: str) -> None:
    """A body that ends before its framing says it should: ResponseCut, never a short value
    and never DecodeError."""
    body = _body(shape)
    cut = len(body) // 2 if where == "half" else 0
    reply = Reply(headers={"Content-Type": "application/json"}, body=body,
                  chunked=framing == "chunked", writes=[cut] if cut else None,
                  cut_after=cut, reset=how == "rst")
    fault.add("GET", _route(shape), reply)
    with pytest.raises(ResponseCut) as info:
        await _fetch(h, h.couch(), shape, timeout=1.5)
    assert not isinstance(info.value, DecodeError)


@pytest.mark.parametrize("shape", SHAPES)
async def test_html_200_is_decode_error(h: Harness, fault: WatchedFaultServer,
                                        shape: str) -> None:
    fault.add("GET", _route(shape), Reply(headers={"Content-Type": "text/html"},
                                          body=b"<html><body>It works!</body></html>"))
    with pytest.raises(DecodeError) as info:
        await _fetch(h, h.couch(auth=(USER, PASSWORD)), shape)
    exc = info.value
    assert isinstance(exc, ValueError) and isinstance(exc, CouchError)
    if shape == "buffered":
        assert "It works" in str(exc)
    _assert_clean(exc)




@pytest.mark.parametrize("shape", SHAPES)
async def test_complete_reply_with_truncated_json(request: pytest.FixtureRequest, h: Harness,
                                                  fault: WatchedFaultServer,
                                                  shape: str) -> None:
    """The framing says the body is complete but the JSON stops short (a server bug, not a
    cut connection): DecodeError, not ResponseCut."""
    body = _body(shape)[:-7]
    fault.add("GET", _route(shape), Reply(headers={"Content-Type": "application/json"},
                                          body=body))
    with pytest.raises(CouchError) as info:
        await _fetch(h, h.couch(), shape)
    assert type(info.value) is DecodeError, f"{type(info.value).__name__}: {info.value}"




@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_drop_on_fresh_connection(request: pytest.FixtureRequest, h: Harness,
                                        fault: WatchedFaultServer, how: str, shape: str) -> None:
    """The server reads the request and closes without a word: a TransportError (ideally
    ResponseCut: no complete answer arrived), with no credentials in it and sent only once."""
    fault.add("GET", _route(shape), Reply(drop=True, reset=how == "rst"))
    couch = h.couch(auth=(USER, PASSWORD))
    with pytest.raises(TransportError) as info:
        await _fetch(h, couch, shape, timeout=1.5)
    exc = info.value
    assert type(exc) is ResponseCut, f"{h.backend}: {type(exc).__name__}: {exc}"
    _assert_clean(exc)
    assert len(fault.requests) == 1, "a request on a fresh connection must not be re-sent"


# -- timeouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stall", ["before-headers", "mid-body"])
async def test_request_timeout(h: Harness, fault: WatchedFaultServer, stall: str,
                               shape: str) -> None:
    """``request_timeout`` gives Timeout promptly, the timed-out connection is closed (not
    returned to the pool), and the next call on the same Couch works."""
    body = _body(shape)
    head = {"Content-Type": "application/json"}
    slow = (Reply(headers=head, body=body, stall_before_headers=4.0) if stall == "before-headers"
            else Reply(headers=head, body=body, stall_after_bytes=(5, 4.0)))
    fault.add("GET", _route(shape), [slow, Reply(headers=head, body=body)])
    couch = h.couch(request_timeout=0.5)
    began = time.monotonic()
    with pytest.raises(Timeout) as info:
        await _fetch(h, couch, shape)
    took = time.monotonic() - began
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, TransportError)
    assert 0.4 < took < 2.5, f"Timeout after {took:.2f}s"
    first = fault.requests[0].connection
    assert await fault.hung_up(first), f"{h.backend} kept the timed-out connection open"
    _check(shape, await _fetch(h, couch, shape))
    assert [r.connection for r in fault.requests] == [first, first + 1]


async def test_connect_refused(h: Harness) -> None:
    url = f"http://{USER}:pa%3Ass@127.0.0.1:{closed_port()}"
    exc = await h.fails(ConnectError, h.couch(url).info)
    _assert_clean(exc)


# -- status mapping --------------------------------------------------------------------------

STATUSES = [
    (400, errors.BadRequest), (401, errors.Unauthorized), (403, errors.Forbidden),
    (404, errors.NotFound), (405, errors.MethodNotAllowed), (409, errors.Conflict),
    (412, errors.PreconditionFailed), (413, errors.RequestEntityTooLarge),
    (415, errors.UnsupportedMediaType), (429, errors.TooManyRequests),
    (500, errors.ServerError), (503, errors.ServerError), (418, errors.HTTPError),
]


@pytest.mark.parametrize("status,cls", STATUSES, ids=[str(s) for s, _ in STATUSES])
async def test_status_mapping(h: Harness, fault: WatchedFaultServer,
                              status: int, cls: type[HTTPError]) -> None:
    headers = {"X-Couch-Request-ID": "req-7f3a9c"}
    if status == 429:
        headers["Retry-After"] = "7"
    body = {"error": f"err_{status}", "reason": f"because {status}"}
    fault.add("GET", "/", Reply.json(body, status, headers=headers))
    exc = await h.fails(HTTPError, h.couch(auth=(USER, PASSWORD)).info)
    assert type(exc) is cls
    assert (exc.status, exc.error, exc.reason) == (status, f"err_{status}", f"because {status}")
    assert exc.body == body
    assert exc.headers["x-couch-request-id"] == "req-7f3a9c"
    text = str(exc)
    assert str(status) in text and f"because {status}" in text and "req-7f3a9c" in text
    if status == 429:
        assert exc.headers["retry-after"] == "7"
    _assert_clean(exc)


@pytest.mark.parametrize("status,cls", [(404, errors.NotFound), (429, errors.TooManyRequests),
                                        (503, errors.ServerError)], ids=["404", "429", "503"])
async def test_status_mapping_streamed(h: Harness, fault: WatchedFaultServer,
                                       status: int, cls: type[HTTPError]) -> None:
    """The same mapping when the request was made for a streamed (row-parsing) reply."""
    headers = {"X-Couch-Request-ID": "req-1b2c", "Retry-After": "3"}
    body = {"error": "nope", "reason": "no rows for you"}
    fault.add("GET", "/db/_all_docs", Reply.json(body, status, headers=headers))
    exc = await h.fails(HTTPError, h.couch().database("db").all_docs)
    assert type(exc) is cls
    assert (exc.status, exc.error, exc.reason, exc.body) == (status, "nope", "no rows for you", body)
    assert exc.headers["x-couch-request-id"] == "req-1b2c" and exc.headers["retry-after"] == "3"
    assert "req-1b2c" in str(exc)


async def test_mango_error_body(h: Harness, fault: WatchedFaultServer) -> None:
    fault.add("POST", "/db/_find", Reply.json(
        {"error": "no_usable_index", "message": "No index exists for this sort"}, 400))
    db = h.couch().database("db")
    exc = await h.fails(errors.BadRequest, db.find, {"a": 1}, sort=["a"])
    assert (exc.error, exc.reason) == ("no_usable_index", "No index exists for this sort")


async def test_html_502_from_proxy(h: Harness, fault: WatchedFaultServer) -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    fault.add("GET", "/", Reply(502, headers={"Content-Type": "text/html"}, body=page))
    exc = await h.fails(errors.ServerError, h.couch(auth=(USER, PASSWORD)).info)
    assert exc.status == 502 and exc.error is None
    assert exc.reason is not None and "502 Bad Gateway" in exc.reason
    assert "502 Bad Gateway" in str(exc)
    _assert_clean(exc)


# -- the request as sent ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["auth-arg", "url-userinfo"])
async def test_request_headers_and_auth(h: Harness, fault: WatchedFaultServer,
                                        where: str) -> None:
    fault.add("PUT", "/db/doc1", Reply.json({"ok": True, "id": "doc1", "rev": "1-a"}, 201))
    fault.add("GET", "/db/doc1", Reply.json({"_id": "doc1", "_rev": "1-a"}))
    if where == "auth-arg":
        couch = h.couch(auth=(USER, PASSWORD))
    else:
        couch = h.couch(fault.url.replace("://", f"://{USER}:pa%3Ass%40w0rd-s3cret@"))
    db = couch.database("db")
    await h.run(db.get, "doc1")
    saved = await h.run(db.save, {"_id": "doc1", "x": "é"})
    assert saved["_rev"] == "1-a"
    get, put = fault.requests
    for r in (get, put):
        assert r.headers["accept"] == "application/json"
        assert r.headers["user-agent"].startswith("corduroy2/")
        assert r.headers["authorization"] == BASIC
        assert "@" not in r.headers["host"] and PASSWORD not in r.headers["host"]
        assert PASSWORD not in r.path + r.query and "pa%3Ass" not in r.path + r.query
    assert "content-type" not in get.headers and get.body == b""
    assert put.headers["content-type"] == "application/json"
    assert json.loads(put.body) == {"_id": "doc1", "x": "é"}


async def test_copy_with_destination(h: Harness, fault: WatchedFaultServer) -> None:
    fault.add("COPY", "/db/src", Reply.json({"ok": True, "id": "dst", "rev": "1-b"}, 201))
    rev = await h.run(h.couch().database("db").copy, "src", "dst")
    assert rev == "1-b"
    (r,) = fault.requests
    assert (r.method, r.path, r.headers["destination"]) == ("COPY", "/db/src", "dst")


async def test_head_then_reuse(h: Harness, fault: WatchedFaultServer) -> None:
    """HEAD gets headers (with a Content-Length) and no body; the client must not wait for
    one, and the connection stays usable."""
    fault.add("HEAD", "/db", Reply.json({"db_name": "db", "doc_count": 12345}))
    fault.add("HEAD", "/gone", Reply.json({"error": "not_found", "reason": "missing"}, 404))
    fault.add("GET", "/db", Reply.json({"db_name": "db"}))
    couch = h.couch()
    assert await h.run(couch.database("db").exists) is True
    assert await h.run(couch.database("gone").exists) is False
    assert await h.run(couch.database("db").info) == {"db_name": "db"}
    assert [r.method for r in fault.requests] == ["HEAD", "HEAD", "GET"]
    expected = 1 if h.keepalive else 3
    assert fault.connections_accepted == expected


async def test_put_with_empty_body(h: Harness, fault: WatchedFaultServer) -> None:
    fault.add("PUT", "/newdb", Reply.json({"ok": True}, 201))
    db = await h.run(h.couch().create, "newdb")
    assert db.name == "newdb"
    (r,) = fault.requests
    assert r.method == "PUT" and r.body == b""
    assert r.headers.get("content-length") == "0", r.headers
    assert "transfer-encoding" not in r.headers


# -- connections -----------------------------------------------------------------------------


async def test_connection_reuse(h: Harness, fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply.json(VALUE))
    couch = h.couch()
    for _ in range(20):
        assert await h.run(couch.info) == VALUE
    assert len(fault.requests) == 20
    if h.keepalive:
        assert fault.connections_accepted <= 2
    else:  # Tornado's simple client: one connection per request, by design
        assert fault.connections_accepted == 20


@pytest.mark.parametrize("how", ["connection-close", "drop-connections"])
async def test_server_closes_idle_keepalive(h: Harness, fault: WatchedFaultServer,
                                            how: str) -> None:
    first = Reply.json(VALUE, close=how == "connection-close")
    fault.add("GET", "/", [first, Reply.json(VALUE)])
    couch = h.couch()
    assert await h.run(couch.info) == VALUE
    if how == "drop-connections":
        fault.drop_connections()
    assert await h.run(couch.info) == VALUE
    assert len(fault.requests) == 2 and fault.connections_accepted == 2


async def test_stale_keepalive_get_is_retried(h: Harness, fault: WatchedFaultServer) -> None:
    """The server reads a request on a reused connection and closes it unanswered (the idle
    timeout race): an idempotent GET is sent again once on a fresh connection."""
    fault.add("GET", "/", [Reply.json(VALUE), Reply(drop=True), Reply.json(VALUE)])
    couch = h.couch()
    assert await h.run(couch.info) == VALUE
    if not h.keepalive:  # a fresh connection each time: the drop is a real failure
        await h.fails(ResponseCut, couch.info)
        return
    assert await h.run(couch.info) == VALUE
    conns = [r.connection for r in fault.requests]
    assert conns == [1, 1, 2]


async def test_header_value_with_a_line_break_is_not_sent(h: Harness,
                                                          fault: WatchedFaultServer) -> None:
    """A credential holding a line break would inject a header line. A fixed one is refused
    when the Couch is made; one from a callable fails its call with a TransportError. Neither
    shows the value, nothing is sent, and a good request on the same backend still goes out."""
    fault.add("GET", "/", Reply.json(VALUE))
    token = "s3cret\r\nX-Injected: yes"
    with pytest.raises(ValueError) as info:
        h.couch(auth=JWTAuth(token))  # type: ignore[arg-type]
    exc: BaseException = info.value
    assert "s3cret" not in str(exc) and "X-Injected" not in str(exc)
    couch = h.couch(auth=JWTAuth(lambda: token))  # type: ignore[arg-type]
    exc = await h.fails(TransportError, couch.info)
    assert "s3cret" not in str(exc) and "X-Injected" not in str(exc)
    assert fault.requests == []
    assert await h.run(h.couch().info) == VALUE
    assert [r.path for r in fault.requests] == ["/"]


# -- a Tornado Couch and its event loop --------------------------------------------------------


@pytest.mark.parametrize("client", ["simple", "curl", "aiohttp"])
def test_a_tornado_couch_follows_its_caller_to_a_new_event_loop(
        fault: WatchedFaultServer, client: str) -> None:
    """A script may call asyncio.run() more than once with one Couch: each run has a new loop,
    and the HTTP client made on the first (closed by then) must not be used on the second."""
    pytest.importorskip("tornado", reason="Tornado is not installed")
    if client in ("curl", "aiohttp"):
        pytest.importorskip("pycurl" if client == "curl" else "aiohttp",
                            reason=f"{client} is not installed")
    import asyncio

    from corduroy2.tornado_io import Couch

    fault.add("GET", "/", Reply.json(VALUE))
    couch = Couch(fault.url, client=client)

    async def info() -> Any:
        return await asyncio.wait_for(couch.info(), 10)

    try:
        assert asyncio.run(info()) == VALUE
        assert asyncio.run(info()) == VALUE
    finally:
        couch.close()
    assert len(fault.requests) == 2


async def test_a_header_that_cannot_be_sent_is_refused_every_time(
        h: Harness, fault: WatchedFaultServer) -> None:
    """Every backend refuses a header value with a line break (a header injected by a value)
    before sending, each time it is asked (a backend remembers the header set it checked
    last: a refused one must not pass the second time), and sends good ones in between."""
    from corduroy2.protocol.requests import Request

    fault.add("GET", "/", [Reply.json({"ok": True})])
    couch = h.couch()
    good = Request("GET", fault.url + "/", (("Accept", "application/json"),))
    bad = Request("GET", fault.url + "/", (("X-Note", "a\r\nInjected: yes"),))
    for request in (bad, bad, good, bad):
        if request is bad:
            exc = await h.fails(TransportError, couch.runner.call, request, None)
            assert "X-Note" in str(exc) and "Injected" not in str(exc)
        else:
            assert await h.run(couch.runner.call, request, None) == {"ok": True}
    assert len(fault.received("GET", "/")) == 1


async def test_the_transport_keeps_no_cookies_and_asks_for_no_compression(
        h: Harness, fault: WatchedFaultServer) -> None:
    """Sessions are the pipeline's business: a transport must not store a Set-Cookie and send
    it back by itself (aiohttp's session would, with its default cookie jar). Nor may it ask
    for compression: a compressing server holds a live feed back until its buffer fills."""
    fault.add("GET", "/", Reply.json(VALUE, headers={"Set-Cookie": "AuthSession=abc; Path=/"}))
    # A host name: aiohttp's cookie jar ignores cookies of IP addresses.
    couch = h.couch(fault.url.replace("127.0.0.1", "localhost"))
    assert await h.run(couch.info) == VALUE
    assert await h.run(couch.info) == VALUE
    for received in fault.requests:
        assert "cookie" not in received.headers, received.headers
        # http.client says "identity": no compression, explicitly.
        assert received.headers.get("accept-encoding", "identity") == "identity", received.headers
