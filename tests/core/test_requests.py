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


# -- builders per endpoint ----------------------------------------------------------------------

from corduroy2.protocol import requests as rq  # noqa: E402
from corduroy2.protocol.requests import Origin  # noqa: E402

BASE = (("Accept", "application/json"),)
ORIGIN = Origin("http://h:5984", BASE, timeout=30.0, idle_timeout=5.0)
H = "http://h:5984"

# (name, built request, method, url, body (None: no body), idempotent, stream)
BUILDERS: list[tuple[str, Any, str, str, Any, Any, bool]] = [
    ("info", lambda: rq.server_info(ORIGIN), "GET", f"{H}/", None, None, False),
    ("all_dbs", lambda: rq.all_dbs(ORIGIN, {"limit": 2}), "GET", f"{H}/_all_dbs?limit=2", None,
     None, False),
    ("uuids", lambda: rq.uuids(ORIGIN, 3), "GET", f"{H}/_uuids?count=3", None, None, False),
    ("session", lambda: rq.session(ORIGIN), "GET", f"{H}/_session", None, None, False),
    ("end_session", lambda: rq.end_session(ORIGIN, None), "DELETE", f"{H}/_session", None,
     True, False),
    ("db_info", lambda: rq.db_info(ORIGIN, "a/b"), "GET", f"{H}/a%2Fb", None, None, False),
    ("db_head", lambda: rq.db_head(ORIGIN, "db"), "HEAD", f"{H}/db", None, None, False),
    ("create_db", lambda: rq.create_db(ORIGIN, "db", {"q": 2}), "PUT", f"{H}/db?q=2", b"",
     None, False),
    ("delete_db", lambda: rq.delete_db(ORIGIN, "db"), "DELETE", f"{H}/db", None, None, False),
    ("design_info", lambda: rq.design_info(ORIGIN, "db", "_design/d"), "GET",
     f"{H}/db/_design/d/_info", None, None, False),
    ("get_doc", lambda: rq.get_doc(ORIGIN, "db", "a/b", {"rev": "1-x"}), "GET",
     f"{H}/db/a%2Fb?rev=1-x", None, None, False),
    ("get_doc design", lambda: rq.get_doc(ORIGIN, "db", "_design/d"), "GET",
     f"{H}/db/_design/d", None, None, False),
    ("get_docs", lambda: rq.get_docs(ORIGIN, "db", ["a", "b"]), "POST",
     f"{H}/db/_all_docs?include_docs=true", {"keys": ["a", "b"]}, True, False),
    ("put_doc", lambda: rq.put_doc(ORIGIN, "db", {"_id": "x", "v": 1}, {"batch": "ok"}), "PUT",
     f"{H}/db/x?batch=ok", {"_id": "x", "v": 1}, None, False),
    ("delete_doc", lambda: rq.delete_doc(ORIGIN, "db", "x", "2-y"), "DELETE",
     f"{H}/db/x?rev=2-y", None, None, False),
    ("copy_doc", lambda: rq.copy_doc(ORIGIN, "db", "a", "1-a", "b c", "3-b"), "COPY",
     f"{H}/db/a?rev=1-a", None, None, False),
    ("bulk_docs", lambda: rq.bulk_docs(ORIGIN, "db", [{"_id": "a"}], {"new_edits": False}),
     "POST", f"{H}/db/_bulk_docs", {"new_edits": False, "docs": [{"_id": "a"}]}, None, False),
    ("view", lambda: rq.view(ORIGIN, "db", "d/v", {"key": "k", "limit": 1}), "GET",
     f"{H}/db/_design/d/_view/v?key=%22k%22&limit=1", None, None, True),
    ("view keys", lambda: rq.view(ORIGIN, "db", "d/v", {"keys": [1, 2]}), "POST",
     f"{H}/db/_design/d/_view/v", {"keys": [1, 2]}, True, True),
    ("all_docs", lambda: rq.view(ORIGIN, "db", "_all_docs", {}), "GET", f"{H}/db/_all_docs",
     None, None, True),
    ("find", lambda: rq.find(ORIGIN, "db", {"a": 1}, {"limit": 2, "bookmark": None}), "POST",
     f"{H}/db/_find", {"selector": {"a": 1}, "limit": 2}, True, True),
    ("explain", lambda: rq.explain(ORIGIN, "db", {"a": 1}, {}), "POST", f"{H}/db/_explain",
     {"selector": {"a": 1}}, True, False),
    ("create_index", lambda: rq.create_index(ORIGIN, "db", ["a"], "_design/i", "n", "json",
                                             None, {}), "POST", f"{H}/db/_index",
     {"index": {"fields": ["a"]}, "type": "json", "ddoc": "i", "name": "n"}, None, False),
    ("indexes", lambda: rq.indexes(ORIGIN, "db"), "GET", f"{H}/db/_index", None, None, False),
    ("delete_index", lambda: rq.delete_index(ORIGIN, "db", "i", "n", "json"), "DELETE",
     f"{H}/db/_index/_design%2Fi/json/n", None, None, False),
    # -- revisions, maintenance, design functions, partitions, any endpoint
    ("doc_head", lambda: rq.doc_head(ORIGIN, "db", "a/b"), "HEAD", f"{H}/db/a%2Fb", None, None,
     False),
    ("revisions", lambda: rq.revisions(ORIGIN, "db", "_design/d", "2-b"), "GET",
     f"{H}/db/_design/d?revs=true&rev=2-b", None, None, False),
    ("bulk_get", lambda: rq.bulk_get(ORIGIN, "db", ["a", {"id": "b", "rev": "1-b"}],
                                     {"revs": True}), "POST", f"{H}/db/_bulk_get?revs=true",
     {"docs": [{"id": "a"}, {"id": "b", "rev": "1-b"}]}, True, False),
    ("revs_diff", lambda: rq.revs_diff(ORIGIN, "db", {"a": ["1-a"]}), "POST",
     f"{H}/db/_revs_diff", {"a": ["1-a"]}, True, False),
    ("missing_revs", lambda: rq.missing_revs(ORIGIN, "db", {"a": ("1-a", "2-b")}), "POST",
     f"{H}/db/_missing_revs", {"a": ["1-a", "2-b"]}, True, False),
    ("purge", lambda: rq.purge(ORIGIN, "db", {"a": ["1-a"]}), "POST", f"{H}/db/_purge",
     {"a": ["1-a"]}, None, False),
    ("get_security", lambda: rq.get_security(ORIGIN, "db"), "GET", f"{H}/db/_security", None,
     None, False),
    ("put_security", lambda: rq.put_security(ORIGIN, "db", {"members": {"roles": ["r"]}}),
     "PUT", f"{H}/db/_security", {"members": {"roles": ["r"]}}, True, False),
    ("shards", lambda: rq.shards(ORIGIN, "db"), "GET", f"{H}/db/_shards", None, None, False),
    ("shards of a doc", lambda: rq.shards(ORIGIN, "db", "a/b"), "GET", f"{H}/db/_shards/a%2Fb",
     None, None, False),
    ("revs_limit", lambda: rq.db_setting(ORIGIN, "db", "_revs_limit"), "GET",
     f"{H}/db/_revs_limit", None, None, False),
    ("set revs_limit", lambda: rq.db_setting(ORIGIN, "db", "_revs_limit", 5), "PUT",
     f"{H}/db/_revs_limit", 5, True, False),
    ("set purged_infos_limit", lambda: rq.db_setting(ORIGIN, "db", "_purged_infos_limit", 9),
     "PUT", f"{H}/db/_purged_infos_limit", 9, True, False),
    ("local_docs", lambda: rq.local_docs(ORIGIN, "db", {"limit": 2}), "GET",
     f"{H}/db/_local_docs?limit=2", None, None, True),
    ("design_docs keys", lambda: rq.design_docs(ORIGIN, "db", {"keys": ["_design/a"]}), "POST",
     f"{H}/db/_design_docs", {"keys": ["_design/a"]}, True, True),
    ("view_queries", lambda: rq.view_queries(ORIGIN, "db", "d/v", [{"limit": 1}, {"key": 2}]),
     "POST", f"{H}/db/_design/d/_view/v/queries", {"queries": [{"limit": 1}, {"key": 2}]},
     True, False),
    ("all_docs queries", lambda: rq.view_queries(ORIGIN, "db", "_all_docs", []), "POST",
     f"{H}/db/_all_docs/queries", {"queries": []}, True, False),
    ("show", lambda: rq.show(ORIGIN, "db", "d/s", None, {"q": "x"}), "GET",
     f"{H}/db/_design/d/_show/s?q=x", None, None, False),
    ("show a doc", lambda: rq.show(ORIGIN, "db", "_design/d/s", "a/b", {}), "GET",
     f"{H}/db/_design/d/_show/s/a%2Fb", None, None, False),
    ("list", lambda: rq.list_view(ORIGIN, "db", "d/l", "v", {"limit": 1}), "GET",
     f"{H}/db/_design/d/_list/l/v?limit=1", None, None, False),
    ("list other ddoc keys", lambda: rq.list_view(ORIGIN, "db", "d/l", "e/v", {"keys": [1]}),
     "POST", f"{H}/db/_design/d/_list/l/e/v", {"keys": [1]}, True, False),
    ("update new", lambda: rq.update(ORIGIN, "db", "d/u", None, {"a": 1}, None, {}), "POST",
     f"{H}/db/_design/d/_update/u", {"a": 1}, False, False),
    ("update a doc", lambda: rq.update(ORIGIN, "db", "d/u", "x", None, None, {"f": 1}), "PUT",
     f"{H}/db/_design/d/_update/u/x?f=1", b"", False, False),
    ("partition_info", lambda: rq.partition_info(ORIGIN, "db", "p 1"), "GET",
     f"{H}/db/_partition/p%201", None, None, False),
    ("partition all_docs", lambda: rq.partition_view(ORIGIN, "db", "p", "_all_docs",
                                                     {"limit": 1}), "GET",
     f"{H}/db/_partition/p/_all_docs?limit=1", None, None, True),
    ("partition view keys", lambda: rq.partition_view(ORIGIN, "a/b", "p", "d/v", {"keys": [1]}),
     "POST", f"{H}/a%2Fb/_partition/p/_design/d/_view/v", {"keys": [1]}, True, True),
    ("partition find", lambda: rq.partition_find(ORIGIN, "db", "p", {"a": 1}, {"limit": None}),
     "POST", f"{H}/db/_partition/p/_find", {"selector": {"a": 1}}, True, True),
    ("partition explain", lambda: rq.partition_explain(ORIGIN, "db", "p", {"a": 1}, {}),
     "POST", f"{H}/db/_partition/p/_explain", {"selector": {"a": 1}}, True, False),
    ("endpoint", lambda: rq.endpoint(ORIGIN, "GET", "/_node/_local/_versions"), "GET",
     f"{H}/_node/_local/_versions", None, None, False),
    ("endpoint query body", lambda: rq.endpoint(ORIGIN, "POST", "/db/_find",
                                                {"key": "k", "n": None}, {"selector": {}}),
     "POST", f"{H}/db/_find?key=%22k%22", {"selector": {}}, None, False),
    ("changes", lambda: rq.changes(ORIGIN, "db", {"since": "3-a", "limit": 1}), "GET",
     f"{H}/db/_changes?since=3-a&limit=1&feed=normal", None, None, True),
    ("changes doc_ids", lambda: rq.changes(ORIGIN, "db", {"doc_ids": ["a"]}), "POST",
     f"{H}/db/_changes?feed=normal&filter=_doc_ids", {"doc_ids": ["a"]}, None, True),
    ("changes selector", lambda: rq.changes(ORIGIN, "db", {"selector": {"a": 1},
                                                            "feed": "continuous"}),
     "POST", f"{H}/db/_changes?feed=continuous&filter=_selector", {"selector": {"a": 1}},
     None, True),
]


@pytest.mark.parametrize("build, method, url, body, idempotent, stream",
                         [row[1:] for row in BUILDERS], ids=[row[0] for row in BUILDERS])
def test_builder(build: Any, method: str, url: str, body: Any, idempotent: Any,
                 stream: bool) -> None:
    request = build()
    assert (request.method, request.url, request.idempotent, request.stream) == (
        method, url, idempotent, stream)
    if body is None or body == b"":
        assert request.body == body
        assert ("Content-Type", "application/json") not in request.headers
    else:
        assert orjson.loads(request.body) == body
        assert ("Content-Type", "application/json") in request.headers
    assert request.headers[:len(BASE)] == BASE
    assert (request.timeout, request.idle_timeout) == (30.0, 5.0)


# POSTs that take no body, but that CouchDB 3 refuses (415) without a JSON Content-Type.
EMPTY_JSON_POSTS: list[tuple[str, Any, str]] = [
    ("compact", lambda: rq.compact(ORIGIN, "db"), f"{H}/db/_compact"),
    ("compact ddoc", lambda: rq.compact(ORIGIN, "db", "_design/d"), f"{H}/db/_compact/d"),
    ("view_cleanup", lambda: rq.view_cleanup(ORIGIN, "db"), f"{H}/db/_view_cleanup"),
    ("sync_shards", lambda: rq.sync_shards(ORIGIN, "db"), f"{H}/db/_sync_shards"),
]


@pytest.mark.parametrize("build, url", [row[1:] for row in EMPTY_JSON_POSTS],
                         ids=[row[0] for row in EMPTY_JSON_POSTS])
def test_maintenance_posts_are_empty_json(build: Any, url: str) -> None:
    request = build()
    assert (request.method, request.url, request.body, request.idempotent) == (
        "POST", url, b"", True)
    assert ("Content-Type", "application/json") in request.headers


def test_update_and_endpoint_bodies_carry_their_type() -> None:
    def content_type(request: Request) -> str:
        return dict(request.headers)["Content-Type"]

    text = rq.update(ORIGIN, "db", "d/u", None, "héllo", None, {})
    assert (text.body, content_type(text)) == ("héllo".encode(), "text/plain; charset=utf-8")
    data = rq.update(ORIGIN, "db", "d/u", "x", b"\x00\xff", None, {})
    assert (data.body, content_type(data)) == (b"\x00\xff", "application/octet-stream")
    typed = rq.update(ORIGIN, "db", "d/u", None, "a=1", "application/x-www-form-urlencoded", {})
    assert content_type(typed) == "application/x-www-form-urlencoded"
    raw = rq.endpoint(ORIGIN, "PUT", "/db/_local/x", None, b"{}",
                      {"Content-Type": "application/json", "X-A": "1"})
    assert [k for k, _ in raw.headers].count("Content-Type") == 1
    assert ("X-A", "1") in raw.headers and raw.body == b"{}"


def test_copy_destination_header_is_an_id_with_the_rev_overwritten() -> None:
    request = rq.copy_doc(ORIGIN, "db", "a", None, "b c/d", "3-b")
    assert dict(request.headers)["Destination"] == "b%20c/d?rev=3-b"
    assert request.url == f"{H}/db/a"


def test_end_session_ends_the_given_cookie() -> None:
    request = rq.end_session(ORIGIN, "abc")
    assert ("Cookie", "AuthSession=abc") in request.headers


BAD: list[tuple[str, Any, type[Exception]]] = [
    ("uuids 0", lambda: rq.uuids(ORIGIN, 0), ValueError),
    ("uuids bool", lambda: rq.uuids(ORIGIN, True), ValueError),
    ("db name", lambda: rq.db_info(ORIGIN, "Bad"), ValueError),
    ("doc id None", lambda: rq.get_doc(ORIGIN, "db", None), ValueError),  # type: ignore[arg-type]
    ("put without _id", lambda: rq.put_doc(ORIGIN, "db", {"a": 1}), ValueError),
    ("put NaN", lambda: rq.put_doc(ORIGIN, "db", {"_id": "a", "v": NAN}), ValueError),
    ("delete without rev", lambda: rq.delete_doc(ORIGIN, "db", "a", None), ValueError),
    ("view name", lambda: rq.view(ORIGIN, "db", "noslash", {}), ValueError),
    ("view keys not a list", lambda: rq.view(ORIGIN, "db", "d/v", {"keys": "k"}), TypeError),
    ("find selector", lambda: rq.find(ORIGIN, "db", "x", {}), TypeError),
    ("ddoc name", lambda: rq.design_info(ORIGIN, "db", ""), ValueError),
    # -- revisions, maintenance, design functions, partitions, any endpoint
    ("head id None", lambda: rq.doc_head(ORIGIN, "db", None), ValueError),  # type: ignore[arg-type]
    ("bulk_get not a list", lambda: rq.bulk_get(ORIGIN, "db", "a", {}), TypeError),
    ("bulk_get without id", lambda: rq.bulk_get(ORIGIN, "db", [{"rev": "1-a"}], {}), ValueError),
    ("bulk_get item", lambda: rq.bulk_get(ORIGIN, "db", [3], {}), TypeError),
    ("revs_diff not a dict", lambda: rq.revs_diff(ORIGIN, "db", ["1-a"]), TypeError),
    ("revs_diff revs", lambda: rq.revs_diff(ORIGIN, "db", {"a": "1-a"}), TypeError),
    ("purge empty id", lambda: rq.purge(ORIGIN, "db", {"": ["1-a"]}), ValueError),
    ("security", lambda: rq.put_security(ORIGIN, "db", ["admins"]), TypeError),
    ("revs_limit 0", lambda: rq.db_setting(ORIGIN, "db", "_revs_limit", 0), ValueError),
    ("revs_limit str", lambda: rq.db_setting(ORIGIN, "db", "_revs_limit", "5"), ValueError),
    ("compact ddoc", lambda: rq.compact(ORIGIN, "db", ""), ValueError),
    ("view_queries", lambda: rq.view_queries(ORIGIN, "db", "d/v", {"limit": 1}), TypeError),
    ("show name", lambda: rq.show(ORIGIN, "db", "noslash", None, {}), ValueError),
    ("show id", lambda: rq.show(ORIGIN, "db", "d/s", "", {}), ValueError),
    ("list view", lambda: rq.list_view(ORIGIN, "db", "d/l", "a/b/c", {}), ValueError),
    ("update name", lambda: rq.update(ORIGIN, "db", 3, None, None, None, {}), TypeError),
    ("update NaN", lambda: rq.update(ORIGIN, "db", "d/u", None, {"v": NAN}, None, {}),
     ValueError),
    ("partition with :", lambda: rq.partition_info(ORIGIN, "db", "a:b"), ValueError),
    ("partition with _", lambda: rq.partition_info(ORIGIN, "db", "_p"), ValueError),
    ("partition empty", lambda: rq.partition_find(ORIGIN, "db", "", {}, {}), ValueError),
    ("partition int", lambda: rq.partition_view(ORIGIN, "db", 1, "_all_docs", {}), TypeError),
    ("endpoint method", lambda: rq.endpoint(ORIGIN, "get", "/"), ValueError),
    ("endpoint relative path", lambda: rq.endpoint(ORIGIN, "GET", "_all_dbs"), ValueError),
    ("endpoint query in path", lambda: rq.endpoint(ORIGIN, "GET", "/db?x=1"), ValueError),
    ("endpoint space", lambda: rq.endpoint(ORIGIN, "GET", "/a b"), ValueError),
    ("endpoint header", lambda: rq.endpoint(ORIGIN, "GET", "/", None, None, {"X": "a\nb"}),
     ValueError),
    ("endpoint query", lambda: rq.endpoint(ORIGIN, "GET", "/", [("a", 1)]), TypeError),
    ("feed", lambda: rq.changes(ORIGIN, "db", {"feed": "x"}), ValueError),
    ("doc_ids", lambda: rq.changes(ORIGIN, "db", {"doc_ids": "a"}), TypeError),
    ("since", lambda: rq.changes(ORIGIN, "db", {"since": 1.5}), TypeError),
]


@pytest.mark.parametrize("build, error", [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_builder_refuses_bad_arguments_before_anything_is_sent(build: Any,
                                                               error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


# -- server administration and replication ------------------------------------------------------

ADMIN_BUILDERS: list[tuple[str, Any, str, str, Any, Any, bool]] = [
    ("up", lambda: rq.up(ORIGIN), "GET", f"{H}/_up", None, None, False),
    ("dbs_info", lambda: rq.dbs_info(ORIGIN, ["a", "b/c"]), "POST", f"{H}/_dbs_info",
     {"keys": ["a", "b/c"]}, True, False),
    ("active_tasks", lambda: rq.active_tasks(ORIGIN), "GET", f"{H}/_active_tasks", None, None,
     False),
    ("membership", lambda: rq.membership(ORIGIN), "GET", f"{H}/_membership", None, None, False),
    ("config all", lambda: rq.config(ORIGIN, "_local", None, None), "GET",
     f"{H}/_node/_local/_config", None, None, False),
    ("config section", lambda: rq.config(ORIGIN, "couchdb@10.0.0.1", "log", None), "GET",
     f"{H}/_node/couchdb@10.0.0.1/_config/log", None, None, False),
    ("config key", lambda: rq.config(ORIGIN, "_local", "a b", "c/d"), "GET",
     f"{H}/_node/_local/_config/a%20b/c%2Fd", None, None, False),
    ("set_config", lambda: rq.set_config(ORIGIN, "_local", "log", "level", "debug"), "PUT",
     f"{H}/_node/_local/_config/log/level", "debug", True, False),
    ("delete_config", lambda: rq.delete_config(ORIGIN, "_local", "log", "level"), "DELETE",
     f"{H}/_node/_local/_config/log/level", None, None, False),
    ("stats", lambda: rq.stats(ORIGIN, "_local", None), "GET", f"{H}/_node/_local/_stats", None,
     None, False),
    ("stats path", lambda: rq.stats(ORIGIN, "n@h", "couchdb/request_time"), "GET",
     f"{H}/_node/n@h/_stats/couchdb/request_time", None, None, False),
    ("system", lambda: rq.system(ORIGIN, "_local"), "GET", f"{H}/_node/_local/_system", None,
     None, False),
    ("scheduler_jobs", lambda: rq.scheduler_jobs(ORIGIN, {"limit": 5}), "GET",
     f"{H}/_scheduler/jobs?limit=5", None, None, False),
    ("scheduler_docs all", lambda: rq.scheduler_docs(ORIGIN, None, None, {}), "GET",
     f"{H}/_scheduler/docs", None, None, False),
    ("scheduler_docs db", lambda: rq.scheduler_docs(ORIGIN, "a/_replicator", None, {}), "GET",
     f"{H}/_scheduler/docs/a%2F_replicator", None, None, False),
    ("scheduler_docs doc", lambda: rq.scheduler_docs(ORIGIN, "_replicator", "r 1", {}), "GET",
     f"{H}/_scheduler/docs/_replicator/r%201", None, None, False),
    ("db_updates", lambda: rq.db_updates(ORIGIN, {"since": "now"}), "GET",
     f"{H}/_db_updates?since=now&feed=normal", None, None, True),
    ("db_updates continuous", lambda: rq.db_updates(ORIGIN, {"feed": "continuous"}), "GET",
     f"{H}/_db_updates?feed=continuous", None, None, True),
    ("replicate", lambda: rq.replicate(ORIGIN, {"source": "http://a/s", "target": "http://a/t",
                                                "continuous": True}),
     "POST", f"{H}/_replicate", {"source": "http://a/s", "target": "http://a/t",
                                 "continuous": True}, None, False),
    ("create_user", lambda: rq.create_user(ORIGIN, "bob", "pw", ["r"]), "PUT",
     f"{H}/_users/org.couchdb.user%3Abob", {"_id": "org.couchdb.user:bob", "name": "bob",
                                            "password": "pw", "roles": ["r"], "type": "user"},
     None, False),
]


@pytest.mark.parametrize("build, method, url, body, idempotent, stream",
                         [row[1:] for row in ADMIN_BUILDERS], ids=[row[0] for row in ADMIN_BUILDERS])
def test_admin_builder(build: Any, method: str, url: str, body: Any, idempotent: Any,
                       stream: bool) -> None:
    test_builder(build, method, url, body, idempotent, stream)


ADMIN_BAD: list[tuple[str, Any, type[Exception]]] = [
    ("dbs_info str", lambda: rq.dbs_info(ORIGIN, "a"), TypeError),
    ("dbs_info bad name", lambda: rq.dbs_info(ORIGIN, ["Bad"]), ValueError),
    ("config node", lambda: rq.config(ORIGIN, "", None, None), ValueError),
    ("config key without section", lambda: rq.config(ORIGIN, "_local", None, "k"), ValueError),
    ("config empty key", lambda: rq.config(ORIGIN, "_local", "s", ""), ValueError),
    ("set_config not str", lambda: rq.set_config(ORIGIN, "_local", "s", "k", 5), TypeError),
    ("set_config no key", lambda: rq.set_config(ORIGIN, "_local", "s", None, "v"),  # type: ignore[arg-type]
     ValueError),
    ("delete_config no key", lambda: rq.delete_config(ORIGIN, "_local", "s", None),  # type: ignore[arg-type]
     ValueError),
    ("stats path", lambda: rq.stats(ORIGIN, "_local", "a//b"), ValueError),
    ("scheduler doc without db", lambda: rq.scheduler_docs(ORIGIN, None, "x", {}), ValueError),
    ("db_updates feed", lambda: rq.db_updates(ORIGIN, {"feed": "x"}), ValueError),
    ("db_updates since", lambda: rq.db_updates(ORIGIN, {"since": 1.5}), TypeError),
    ("replicate no target", lambda: rq.replicate(ORIGIN, {"source": "http://a/s"}), TypeError),
    ("user no name", lambda: rq.create_user(ORIGIN, "", "pw", []), ValueError),
    ("user no password", lambda: rq.create_user(ORIGIN, "bob", "", []), ValueError),
    ("user roles str", lambda: rq.create_user(ORIGIN, "bob", "pw", "admin"), TypeError),
]


@pytest.mark.parametrize("build, error", [row[1:] for row in ADMIN_BAD],
                         ids=[row[0] for row in ADMIN_BAD])
def test_admin_builder_refuses_bad_arguments(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()
