"""The blocking adapter's repairs (``corduroy2/blocking/_repairs.py``), checked against the
installed ``http.client``.

Each repair reaches past ``http.client``'s public API; these tests assert that what it reaches
is still there and still does what the repair assumes, and that the repair still makes the
difference it exists for. A failure here after upgrading Python means: look at the repair
again (it may have become unnecessary, or need another way in).
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from corduroy2.blocking import _repairs

# -- put_header_lines: HTTPConnection._output ------------------------------------------------


class _Capture:
    """A stand-in socket that keeps what is sent."""

    def __init__(self) -> None:
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data


def _request_bytes(add_headers: Callable[[http.client.HTTPConnection], None]) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", 5984)
    capture = _Capture()
    conn.sock = capture  # type: ignore[assignment]
    conn.putrequest("GET", "/db/doc")
    add_headers(conn)
    conn.endheaders()
    return capture.sent


HEADERS = [("Accept", "application/json"), ("User-Agent", "corduroy2/0 (Python)"),
           ("Cookie", "AuthSession=abc: def")]
LINES = b"\r\n".join(f"{name}: {value}".encode("latin-1") for name, value in HEADERS)


def _one_by_one(conn: http.client.HTTPConnection) -> None:
    for name, value in HEADERS:
        conn.putheader(name, value)


def test_blocking_put_header_lines_is_still_http_client_output() -> None:
    """The repair is in use: ``_output`` is still there (else the fallback would be)."""
    output = http.client.HTTPConnection._output  # type: ignore[attr-defined]
    assert _repairs.put_header_lines is output


@pytest.mark.parametrize("way", ["repair", "fallback"])
def test_blocking_put_header_lines_writes_what_putheader_writes(way: str) -> None:
    put = _repairs.put_header_lines if way == "repair" else _repairs._put_header_lines
    expected = _request_bytes(_one_by_one)
    assert expected.count(b"\r\n") == 3 + len(HEADERS) + 1  # request line, Host, Accept-Encoding
    assert _request_bytes(lambda conn: put(conn, LINES)) == expected


# -- Response, StreamResponse: HTTPResponse.fp made by sock.makefile("rb") --------------------

CHUNK = 60_000  # more than makefile()'s 8 KiB buffer, less than the repair's 64 KiB


@pytest.fixture
def chunked_reply() -> Iterator[socket.socket]:
    """The client end of a connection whose server end has sent a whole chunked reply: one
    CHUNK-byte chunk."""
    client, server = socket.socketpair()
    server.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n0\r\n\r\n")
    try:
        yield client
    finally:
        client.close()
        server.close()


def _first_read(response_class: Callable[..., http.client.HTTPResponse],
                sock: socket.socket) -> int:
    response = response_class(sock, method="GET")
    response.begin()
    first = len(response.read1(256 * 1024))
    rest = response.read()
    assert first + len(rest) == CHUNK
    return first


def test_blocking_stream_response_reads_a_big_chunk_at_once(chunked_reply: socket.socket) -> None:
    assert _first_read(_responses(_repairs.StreamResponse, chunked_reply), chunked_reply) == CHUNK


def test_blocking_plain_response_still_splits_a_big_chunk(chunked_reply: socket.socket) -> None:
    """What the repair is for: without it ``read1`` stops where makefile()'s 8 KiB buffer ends
    (if this fails, http.client buffers more itself and the repair may go)."""
    assert _first_read(http.client.HTTPResponse, chunked_reply) <= 8192


def _responses(response_class: type[_repairs.Response],
               sock: socket.socket) -> Callable[..., http.client.HTTPResponse]:
    """What the backend sets as a connection's ``response_class``."""
    return functools.partial(response_class, reader=_repairs.TimedReader(sock))


def test_blocking_responses_read_through_their_connection_reader() -> None:
    """``HTTPResponse.__init__`` still makes ``fp`` with ``sock.makefile("rb")`` and nothing
    else of the socket: the repair hands it a stand-in whose ``makefile`` makes a buffered
    reader over the connection's TimedReader. A response's end leaves that reader, and the
    socket, open for the next response; ``release()`` closes the reader, and the socket's own
    reader that it holds (which keeps the descriptor)."""
    calls: list[tuple[object, ...]] = []
    client, server = socket.socketpair()
    try:
        class Sock:
            recv_into = client.recv_into

            def makefile(self, *args: object, **kwargs: object) -> object:
                calls.append((args, kwargs))
                return client.makefile(*args, **kwargs)  # type: ignore[call-overload]

        reader = _repairs.TimedReader(Sock())  # type: ignore[arg-type]
        assert calls == [(("rb",), {"buffering": 0})]  # its hold on the descriptor
        for response_class, size in ((_repairs.Response, io.DEFAULT_BUFFER_SIZE),
                                     (_repairs.StreamResponse, _repairs.STREAM_BUFFER)):
            response = response_class(Sock(), method="GET", reader=reader)  # type: ignore[arg-type]
            assert isinstance(response.fp, io.BufferedReader)
            assert response.fp.raw is reader
            response.close()
            assert not reader.closed
        assert len(calls) == 1  # the responses made no reader of the socket's
        server.sendall(b"x")
        assert client.recv(1) == b"x"  # closing the responses left the socket open
        reader.release()
        assert reader.closed
    finally:
        client.close()
        server.close()


def test_blocking_connection_reads_two_responses_through_one_reader() -> None:
    """Keep-alive: the second response of a connection reads on where the first ended."""
    client, server = socket.socketpair()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", 5984)
        conn.sock = client
        conn.response_class = _responses(_repairs.Response, client)  # type: ignore[assignment]
        for body in (b"one", b"second"):
            conn.putrequest("GET", "/")
            conn.endheaders()
            server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            response = conn.getresponse()
            assert response.read() == body
    finally:
        client.close()
        server.close()


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """The client end of a blocking connection whose server says nothing, with a 50 ms
    kernel receive timeout."""
    client, server = socket.socketpair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 50_000))
    try:
        yield client
    finally:
        client.close()
        server.close()


def test_blocking_response_times_out_on_the_kernel_receive_timeout(
        silent: socket.socket) -> None:
    response = _repairs.Response(silent, reader=_repairs.TimedReader(silent), method="GET")
    with pytest.raises(TimeoutError):
        response.begin()


def test_blocking_makefile_takes_a_kernel_timeout_for_a_closed_connection(
        silent: socket.socket) -> None:
    """What the repair is for: through ``makefile()``'s reader the expired receive looks like
    a connection the server closed (if this fails, http.client raises something telling, and
    the repair may go)."""
    response = http.client.HTTPResponse(silent, method="GET")
    with pytest.raises(http.client.RemoteDisconnected):
        response.begin()


def test_blocking_response_outlives_the_connection_it_ends() -> None:
    """A reply with ``Connection: close``: ``getresponse()`` closes the connection's socket
    and the response reads on (the reader holds the descriptor, as makefile's does)."""
    client, server = socket.socketpair()
    try:
        server.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n")
        conn = http.client.HTTPConnection("127.0.0.1", 5984)
        conn.sock = client
        conn.putrequest("GET", "/")
        conn.endheaders()
        conn.response_class = _responses(_repairs.Response, client)  # type: ignore[assignment]
        response = conn.getresponse()
        assert conn.sock is None  # closed, the reply handed to the response
        server.sendall(b"hello")
        assert response.read() == b"hello"
    finally:
        client.close()
        server.close()


def test_blocking_getresponse_builds_the_response_class(chunked_reply: socket.socket) -> None:
    """``HTTPConnection.getresponse()`` builds its response with ``self.response_class``."""
    conn = http.client.HTTPConnection("127.0.0.1", 5984)
    conn.sock = chunked_reply
    conn.putrequest("GET", "/")
    conn.endheaders()
    conn.response_class = _responses(_repairs.StreamResponse, chunked_reply)  # type: ignore[assignment]
    response = conn.getresponse()
    assert type(response) is _repairs.StreamResponse
    assert len(response.read()) == CHUNK


# -- Response.begin: a head cut short --------------------------------------------------------

CUT_HEAD = b"HTTP/1.1 201 Created\r\nContent-Type: applic"


@pytest.fixture
def cut_head() -> Iterator[socket.socket]:
    """The client end of a connection whose server sent part of a head, then closed."""
    client, server = socket.socketpair()
    server.sendall(CUT_HEAD)
    server.close()
    try:
        yield client
    finally:
        client.close()


def test_blocking_response_refuses_a_head_cut_short(cut_head: socket.socket) -> None:
    response = _repairs.Response(cut_head, reader=_repairs.TimedReader(cut_head), method="PUT")
    with pytest.raises(_repairs.HeadCut):
        response.begin()


def test_blocking_http_client_takes_a_cut_head_for_a_whole_one(cut_head: socket.socket) -> None:
    """What the repair is for: http.client's ``begin()`` takes the end of the connection for
    the end of the head (if this fails, it tells a cut itself and the repair may go)."""
    response = http.client.HTTPResponse(cut_head, method="PUT")
    response.begin()
    assert response.status == 201 and response.read() == b""


def test_blocking_response_takes_a_whole_head_before_the_end(cut_head: socket.socket) -> None:
    """The control: a whole head followed by the end of the connection is no cut."""
    client, server = socket.socketpair()
    server.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    server.close()
    try:
        response = _repairs.Response(client, reader=_repairs.TimedReader(client), method="DELETE")
        response.begin()
        assert response.status == 204 and response.read() == b""
    finally:
        client.close()
