"""Tables for corduroy2.protocol.responses and corduroy2.errors: headers, status -> error,
error bodies, error text, JSON decoding. No IO."""

from __future__ import annotations

from typing import Any

import pytest

from corduroy2 import errors
from corduroy2.protocol.responses import (
    Headers, check_status, decode_json, error_class, line_slices, make_error,
)

# -- Headers ------------------------------------------------------------------------------------


def test_headers_are_case_insensitive() -> None:
    h = Headers([("Content-Type", "application/json"), ("ETag", '"1-a"')])
    assert h["content-type"] == h["CONTENT-TYPE"] == h["Content-Type"] == "application/json"
    assert h.get("etag") == '"1-a"'
    assert "eTaG" in h
    assert "missing" not in h
    assert 1 not in h
    assert h.get("missing") is None
    with pytest.raises(KeyError):
        h["missing"]


def test_headers_join_repeated_fields_and_keep_them_apart_in_get_list() -> None:
    h = Headers([("Vary", "Accept"), ("vary", "Accept-Encoding"),
                 ("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2015"), ("Set-Cookie", "b=2")])
    assert h["vary"] == "Accept, Accept-Encoding"
    assert h.get_list("VARY") == ["Accept", "Accept-Encoding"]
    assert h.get_list("set-cookie") == ["a=1; Expires=Wed, 21 Oct 2015", "b=2"]
    assert h.get_list("missing") == []
    assert len(h) == 2
    assert sorted(h) == ["set-cookie", "vary"]
    assert dict(h) == {"vary": "Accept, Accept-Encoding",
                       "set-cookie": "a=1; Expires=Wed, 21 Oct 2015, b=2"}


def test_headers_get_list_returns_a_copy() -> None:
    h = Headers([("A", "1")])
    h.get_list("a").append("2")
    assert h.get_list("a") == ["1"]


def test_empty_headers() -> None:
    h = Headers()
    assert len(h) == 0 and list(h) == [] and h.get("x") is None


@pytest.mark.parametrize("name", ["Set-Cookie", "Authorization", "Cookie", "set-cookie"])
def test_headers_repr_hides_secrets(name: str) -> None:
    h = Headers([(name, "AuthSession=s3cr3t"), ("Server", "CouchDB/3.3.3")])
    text = repr(h)
    assert "s3cr3t" not in text
    assert "<hidden>" in text
    assert "CouchDB/3.3.3" in text  # the rest is shown


# -- status -> error class ----------------------------------------------------------------------

STATUS_TABLE: list[tuple[int, type[errors.HTTPError]]] = [
    (400, errors.BadRequest),
    (401, errors.Unauthorized),
    (403, errors.Forbidden),
    (404, errors.NotFound),
    (405, errors.MethodNotAllowed),
    (409, errors.Conflict),
    (412, errors.PreconditionFailed),
    (413, errors.RequestEntityTooLarge),
    (415, errors.UnsupportedMediaType),
    (416, errors.RangeNotSatisfiable),
    (429, errors.TooManyRequests),
    (500, errors.ServerError),
    (501, errors.ServerError),
    (502, errors.ServerError),
    (503, errors.ServerError),
    (504, errors.ServerError),
    (599, errors.ServerError),
    (402, errors.HTTPError),
    (406, errors.HTTPError),
    (410, errors.HTTPError),
    (417, errors.HTTPError),
    (418, errors.HTTPError),
    (499, errors.HTTPError),
]


@pytest.mark.parametrize(("status", "cls"), STATUS_TABLE)
def test_error_class(status: int, cls: type[errors.HTTPError]) -> None:
    assert error_class(status) is cls


@pytest.mark.parametrize(("status", "cls"), STATUS_TABLE)
def test_make_error_builds_the_mapped_class(status: int, cls: type[errors.HTTPError]) -> None:
    exc = make_error(status, Headers(), b'{"error":"e","reason":"r"}')
    assert type(exc) is cls
    assert isinstance(exc, errors.HTTPError) and isinstance(exc, errors.CouchError)
    assert exc.status == status


@pytest.mark.parametrize("status", [200, 201, 202, 204, 301, 304, 399])
def test_check_status_passes_below_400(status: int) -> None:
    assert check_status(status, Headers(), b"not json at all") is None


@pytest.mark.parametrize(("status", "cls"), STATUS_TABLE)
def test_check_status_raises_the_mapped_error(status: int, cls: type[errors.HTTPError]) -> None:
    with pytest.raises(cls) as info:
        check_status(status, Headers(), b"", method="GET", url="http://h/db")
    assert info.value.method == "GET" and info.value.url == "http://h/db"


# -- error bodies -------------------------------------------------------------------------------

BODIES: list[tuple[Any, str | None, str | None, Any]] = [
    # CouchDB's own shape
    (b'{"error":"not_found","reason":"missing"}', "not_found", "missing",
     {"error": "not_found", "reason": "missing"}),
    (b'{"error":"not_found","reason":"Database does not exist."}', "not_found",
     "Database does not exist.", {"error": "not_found", "reason": "Database does not exist."}),
    # Mango: message instead of reason
    (b'{"error":"invalid_selector","message":"bad selector"}', "invalid_selector",
     "bad selector", {"error": "invalid_selector", "message": "bad selector"}),
    # reason wins over message when both are present
    (b'{"error":"e","reason":"r","message":"m"}', "e", "r",
     {"error": "e", "reason": "r", "message": "m"}),
    # non-string fields are turned into strings
    (b'{"error":42,"reason":["x"]}', "42", "['x']", {"error": 42, "reason": ["x"]}),
    (b'{"error":null}', None, None, {"error": None}),
    (b'{"ok":false}', None, None, {"ok": False}),
    # not an object
    (b'["error"]', None, None, ["error"]),
    (b'"plain string"', None, "plain string", "plain string"),
    # HTML from a proxy
    (b"<html><body>Bad Gateway</body></html>", None, "<html><body>Bad Gateway</body></html>",
     "<html><body>Bad Gateway</body></html>"),
    # empty body (HEAD, or a proxy)
    (b"", None, None, None),
    # invalid JSON
    (b'{"error": "trunc', None, '{"error": "trunc', '{"error": "trunc'),
    # invalid UTF-8 does not crash
    (b"\xff\xfe oops", None, "\ufffd\ufffd oops", "\ufffd\ufffd oops"),
    # an already decoded body (an error met mid-stream)
    ({"error": "forbidden", "reason": "no"}, "forbidden", "no",
     {"error": "forbidden", "reason": "no"}),
]


@pytest.mark.parametrize(("body", "error", "reason", "decoded"), BODIES)
def test_make_error_reads_the_body(body: Any, error: str | None, reason: str | None,
                                   decoded: Any) -> None:
    exc = make_error(404, Headers(), body)
    assert type(exc) is errors.NotFound
    assert exc.error == error
    assert exc.reason == reason
    assert exc.body == decoded


def test_make_error_accepts_bytearray_and_memoryview() -> None:
    for body in (bytearray(b'{"error":"conflict"}'), memoryview(b'{"error":"conflict"}')):
        exc = make_error(409, None, body)
        assert exc.error == "conflict"
        assert exc.headers == {}


def test_make_error_truncates_a_long_non_json_body() -> None:
    exc = make_error(502, Headers(), b"x" * 10_000)
    assert type(exc) is errors.ServerError
    assert exc.reason == "x" * 500


def test_make_error_keeps_headers() -> None:
    headers = Headers([("Retry-After", "3")])
    exc = make_error(429, headers, b"")
    assert isinstance(exc, errors.TooManyRequests)
    assert exc.headers["retry-after"] == "3"


# -- error text ---------------------------------------------------------------------------------


def test_http_error_str_names_request_and_request_id() -> None:
    headers = Headers([("X-Couch-Request-ID", "c0ffee1234")])
    exc = make_error(404, headers, b'{"error":"not_found","reason":"missing"}',
                     method="GET", url="http://127.0.0.1:5984/db/doc")
    assert str(exc) == (
        "404 not_found: missing (GET http://127.0.0.1:5984/db/doc) [request c0ffee1234]"
    )
    assert repr(exc) == "NotFound(404, 'not_found', 'missing')"


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (errors.HTTPError(418), "418 error"),
        (errors.ServerError(500, "internal_server_error"), "500 internal_server_error"),
        (errors.Conflict(409, "conflict", "Document update conflict."),
         "409 conflict: Document update conflict."),
        (errors.NotFound(404, "not_found", None, None, None, method="GET"), "404 not_found"),
        (errors.NotFound(404, "not_found", None, None, None, method="HEAD", url="http://h/db"),
         "404 not_found (HEAD http://h/db)"),
    ],
)
def test_http_error_str(exc: errors.HTTPError, text: str) -> None:
    assert str(exc) == text


def test_http_error_fields() -> None:
    exc = errors.Conflict(409, "conflict", "r", {"a": "b"}, {"error": "conflict"},
                          method="PUT", url="http://h/db/x")
    assert (exc.status, exc.error, exc.reason, exc.body) == (409, "conflict", "r",
                                                             {"error": "conflict"})
    assert exc.headers == {"a": "b"}
    assert (exc.method, exc.url) == ("PUT", "http://h/db/x")


def test_transport_error_str_names_request() -> None:
    exc = errors.ConnectError("cannot connect to h:1", method="GET", url="http://h:1/")
    assert str(exc) == "cannot connect to h:1 (GET http://h:1/)"
    assert str(errors.ResponseCut("cut")) == "cut"


@pytest.mark.parametrize("cls", [errors.ConnectError, errors.Timeout, errors.ResponseCut])
def test_transport_errors_are_couch_errors(cls: type[errors.TransportError]) -> None:
    exc = cls("x")
    assert isinstance(exc, errors.TransportError)
    assert isinstance(exc, errors.CouchError)
    assert not isinstance(exc, errors.HTTPError)


def test_timeout_is_a_builtin_timeout_error() -> None:
    assert issubclass(errors.Timeout, TimeoutError)
    with pytest.raises(TimeoutError):
        raise errors.Timeout("timed out", method="GET", url="http://h/")


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(errors.DecodeError, ValueError)
    assert issubclass(errors.DecodeError, errors.CouchError)
    assert not issubclass(errors.DecodeError, errors.HTTPError)


def test_every_http_error_class_is_exported() -> None:
    names = {cls.__name__ for _, cls in STATUS_TABLE}
    assert names <= set(errors.__all__)


# -- decode_json --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"ok":true}', {"ok": True}),
        (b"[1,2]", [1, 2]),
        (b'"f\xc3\xb8\xc3\xb8"', "føø"),
        (b"null", None),
        (b' {"a" : 1}\r\n', {"a": 1}),
    ],
)
def test_decode_json(body: bytes, value: Any) -> None:
    assert decode_json(body) == value


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"<html>502</html>", b'{"a":', b"\xff\xfe", b"{'a': 1}", b"NaN", b"[1,]"],
)
def test_decode_json_garbage_raises_decode_error(body: bytes) -> None:
    with pytest.raises(errors.DecodeError) as info:
        decode_json(body, method="GET", url="http://h/db")
    assert isinstance(info.value, ValueError)
    assert "(GET http://h/db)" in str(info.value)
    assert info.value.__cause__ is not None


def test_decode_error_message_previews_the_body() -> None:
    with pytest.raises(errors.DecodeError, match="garbage"):
        decode_json(b"garbage" + b"x" * 1000)


def test_an_error_from_a_clusters_node_names_the_url_that_node_answered() -> None:
    single = Headers([("Content-Type", "application/json")])
    assert make_error(404, single, b"{}", method="GET", url="http://n1/db/x").url == \
        "http://n1/db/x"
    answered = Headers([("Content-Type", "application/json")])
    answered.node, answered.url = "http://n2", "http://n2/db/x"
    assert make_error(404, answered, b"{}", method="GET", url="http://n1/db/x").url == \
        "http://n2/db/x"


@pytest.mark.parametrize("size", [1, 2, 5, 7, 64])
def test_line_slices_cut_after_line_ends_and_lose_nothing(size: int) -> None:
    data = b'{"a":1}\n\n{"bb":22}\nlong line of text\ntail'
    pieces = list(line_slices(data, size))
    assert b"".join(pieces) == data
    assert all(piece.endswith(b"\n") for piece in pieces[:-1])
    assert all(len(piece) < size + len(b"long line of text\n") for piece in pieces)
    # a piece is cut at the first line end that makes it at least ``size`` bytes long
    for piece in pieces[:-1]:
        assert piece.find(b"\n", size - 1) == len(piece) - 1
    assert list(line_slices(b"", size)) == []
    assert list(line_slices(b"no end", size)) == [b"no end"]
