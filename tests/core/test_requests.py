"""Tables for corduroy2.protocol.requests: the JSON encoder for bodies and Request. No IO."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import uuid
from typing import Any

import orjson
import pytest

from corduroy2.protocol import requests as requests_module
from corduroy2.protocol.requests import JSON_HEADERS, Request, check_headers, encode_json

NAN = float("nan")
INF = float("inf")

# -- encode_json --------------------------------------------------------------------------------

ROUND_TRIPS: list[Any] = [
    {},
    [],
    {"a": 1, "b": "two", "c": [1, 2.5, True, False], "d": {"e": "føø \U0001d11e"}},
    {"none": None},
    {"nested": {"deep": [None, {"x": None}]}},
    {"text": "null"},  # the word null in a string triggers the slow walk, harmlessly
    {"null": 1},
    [1.0, -0.0, 1e300, -1e-300],
    {"big": 2**63 - 1, "neg": -(2**63)},
    ("a", "tuple"),
]


@pytest.mark.parametrize("value", ROUND_TRIPS)
def test_encode_json_round_trips(value: Any) -> None:
    data = encode_json(value)
    assert isinstance(data, bytes)
    expected = list(value) if isinstance(value, tuple) else value
    assert orjson.loads(data) == expected


def test_encode_json_is_compact_utf8() -> None:
    assert encode_json({"a": [1, "ø"]}) == '{"a":[1,"ø"]}'.encode()


NOT_FINITE: list[Any] = [
    NAN,
    INF,
    -INF,
    {"x": NAN},
    {"x": INF},
    {"x": -INF},
    [1, 2, NAN],
    {"a": {"b": {"c": [0, {"d": INF}]}}},
    {"ok": None, "bad": NAN},  # a real null next to the NaN
    ("t", NAN),
    [[[[-INF]]]],
]


@pytest.mark.parametrize("value", NOT_FINITE)
def test_encode_json_rejects_nan_and_infinity_anywhere(value: Any) -> None:
    with pytest.raises(ValueError, match="not allowed in JSON"):
        encode_json(value)


def test_encode_json_refuses_dataclasses_so_no_nan_can_hide_in_one() -> None:
    # orjson would serialise a dataclass itself, past the NaN check: dataclasses are refused
    # like stdlib json refuses them, finite or not.
    @dataclasses.dataclass
    class Point:
        x: float

    for value in (Point(NAN), Point(1.0)):
        with pytest.raises(TypeError, match="Point"):
            encode_json({"p": value})


UNSERIALIZABLE: list[Any] = [
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    datetime.date(2024, 1, 2),
    datetime.time(3, 4),
    {"when": datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)},
    [datetime.date(2024, 1, 2)],
    object(),
    {"o": object()},
    {1: "int key"},
    {(1, 2): "tuple key"},
    {None: "none key"},
    {"nested": {2.5: "float key"}},
    {1, 2},
    b"bytes",
    decimal.Decimal("1.5"),
    2**64,
    lambda: None,
]


@pytest.mark.parametrize("value", UNSERIALIZABLE, ids=lambda v: type(v).__name__)
def test_encode_json_raises_type_error_for_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(TypeError):
        encode_json(value)


def test_encode_json_datetime_error_names_the_type() -> None:
    with pytest.raises(TypeError, match="datetime"):
        encode_json({"when": datetime.datetime(2024, 1, 2)})


def test_encode_json_skips_the_finiteness_walk_without_null(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = requests_module._check_finite

    def spy(value: Any) -> None:
        calls.append(value)
        real(value)

    monkeypatch.setattr(requests_module, "_check_finite", spy)
    doc = {"a": [1, 2.5, "x"], "b": {"c": True}}
    assert encode_json(doc) == orjson.dumps(doc)
    assert calls == []  # the fast path: no null in the output, so no NaN can hide
    encode_json({"a": None})
    assert calls[0] == {"a": None}  # the slow walk ran, from the top


def test_encode_json_accepts_uuid_as_a_string() -> None:
    # orjson writes UUIDs natively; it comes back as the canonical string.
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert orjson.loads(encode_json({"u": u})) == {"u": str(u)}


# -- Request ------------------------------------------------------------------------------------


def test_request_repr_hides_headers_and_body() -> None:
    request = Request(
        "PUT",
        "http://127.0.0.1:5984/db/doc",
        (("Authorization", "Basic c2VjcmV0OnNlY3JldA=="), ("Cookie", "AuthSession=abc")),
        b'{"password":"hunter2"}',
    )
    text = repr(request)
    assert text == "<Request PUT http://127.0.0.1:5984/db/doc, 22 bytes>"
    for secret in ("Authorization", "c2VjcmV0", "AuthSession", "hunter2"):
        assert secret not in text


def test_request_repr_without_body() -> None:
    assert repr(Request("GET", "http://h/")) == "<Request GET http://h/>"


def test_request_is_frozen_and_compares_without_timeout() -> None:
    a = Request("GET", "http://h/", timeout=1.0)
    b = Request("GET", "http://h/", timeout=2.0)
    assert a == b
    assert a.stream is False and a.headers == () and a.body is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.method = "POST"  # type: ignore[misc]


def test_json_headers() -> None:
    assert JSON_HEADERS == (("Content-Type", "application/json"),)


def test_check_headers_accepts_what_couch_clients_send() -> None:
    check_headers((("Accept", "application/json"), ("User-Agent", "corduroy2/1.0"),
                   ("Authorization", "Basic YWRtaW46cGFzcw=="), ("X-Auth-CouchDB-Roles", "a,b"),
                   ("Destination", "doc?rev=1-abc"), ("X-Tab", "a\tb"), ("X-Latin", "é")))


@pytest.mark.parametrize("fields, problem", [
    ((("Authorization", "Bearer s3cret\r\nX-Injected: yes"),), "control character"),
    ((("Authorization", "Bearer s3cret\nX"),), "control character"),
    ((("Cookie", "AuthSession=s3cret\r"),), "control character"),
    ((("Cookie", "AuthSession=s3cret\x00"),), "control character"),
    ((("Authorization", "Bearer s3cret€"),), "not Latin-1"),
    ((("Bad Name", "v"),), "invalid header name"),
    ((("Bad:Name", "v"),), "invalid header name"),
    ((("", "v"),), "invalid header name"),
])
def test_check_headers_refuses_what_cannot_be_sent_without_showing_it(
        fields: tuple[tuple[str, str], ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        check_headers((("Accept", "application/json"),) + fields)
    assert "s3cret" not in str(info.value)
