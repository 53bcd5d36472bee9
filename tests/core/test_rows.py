"""RowStream: every split, every layout, errors, truncation and bounded memory; no IO."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corduroy2 import errors
from corduroy2.protocol.rows import NEED_DATA, End, Header, RowEvent, RowStream

ROWS_KEYS = ("rows", "docs", "results")


def couch_view(rows: list[Any], head: bytes = b'"total_rows":%d,"offset":0,') -> bytes:
    """CouchDB 3 view / _all_docs framing: ``[`` CRLF, rows joined by ``,`` CRLF, CRLF ``]}`` LF."""
    if b"%d" in head:
        head = head % len(rows)
    return b"{" + head + b'"rows":[\r\n' + b",\r\n".join(map(orjson.dumps, rows)) + b"\r\n]}\n"


def couch_find(docs: list[Any], meta: dict[str, Any]) -> bytes:
    """CouchDB 3 _find: metadata after the docs, CRLF-comma-CRLF, a space after each colon."""
    tail = b",\r\n".join(json.dumps(k).encode() + b": " + orjson.dumps(v) for k, v in meta.items())
    body = b'{"docs":[\r\n' + b",\r\n".join(map(orjson.dumps, docs)) + b"\r\n]\r\n,\r\n"
    return body + tail + b"}\r\n"


def couch_changes(results: list[Any], last_seq: str, pending: int) -> bytes:
    """CouchDB 3 normal _changes: mixed LF and CRLF."""
    rows = b",\r\n".join(map(orjson.dumps, results))
    tail = b'"last_seq":' + orjson.dumps(last_seq) + b',"pending":%d}\n' % pending
    return b'{"results":[\n' + rows + b"\n],\n" + tail


def expected(body: bytes) -> list[Any]:
    """The events a correct parser gives, from ``json.loads`` of the whole body."""
    obj = json.loads(body)
    key = next(k for k in obj if k in ROWS_KEYS and isinstance(obj[k], list))
    names = list(obj)
    before = {k: obj[k] for k in names[: names.index(key)]}
    fields = {k: v for k, v in obj.items() if k != key}
    return [Header(before), *map(RowEvent, obj[key]), End(fields)]


def feed(chunks: list[bytes], *, batch: bool = False, **kw: Any) -> list[Any]:
    """Feed ``chunks`` then end of body, draining events after each (or rows in batches)."""
    stream = RowStream(**kw)
    events: list[Any] = []

    def drain() -> None:
        while True:
            if batch:
                events.extend(map(RowEvent, stream.rows_ready()))
            event = stream.next_event()
            if event is NEED_DATA:
                return
            events.append(event)

    for chunk in [*filter(None, chunks), b""]:  # b"" would mean the end of the body
        stream.receive_data(chunk)
        drain()
    return events


def splits(body: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(set(cuts))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]


def bytewise(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


TRICKY = [
    {"id": "a", "key": ["t0", 1], "value": {"n": 1, "s": "text"}},
    {"id": "q", "key": 'say "hi" \\', "value": "]},\r\n{\"id\": 1},\r\n]\n", "x": "\\"},
    {"id": "é中😀", "key": "😀 astral 𝄞", "value": ["ünï", {"k": "\u20ac\u0000\t"}]},
    {"id": "deep", "key": None, "value": [[[[[[{"a": [[{"b": "}]"}]]}]]]]]], "t": True},
    {"id": "n", "key": [-1.5e-7, 0, 12345678901234], "value": False},
]

ALL_DOCS_KEYS = (
    b'{"total_rows":3,"offset":null,"rows":[\r\n'
    b'{"id":"a","key":"a","value":{"rev":"1-967a00dff5e02add41819138abb3284d"}},\r\n'
    b'{"key":"nope","error":"not_found"}\r\n]}\n'
)

BODIES = {
    "view": couch_view(TRICKY),
    "view-escapes": (  # as CouchDB writes escapes: astral as a surrogate pair, CRLF text escaped
        b'{"total_rows":2,"offset":0,"rows":[\r\n{"id":"e","key":"\\ud83d\\ude00 \\u00e9 \\"q\\" \\\\",'
        b'"value":"]},\\r\\n{\\"id\\":"},\r\n{"id":"\\\\","key":"\\/\\b\\f\\n\\t","value":1}\r\n]}\n'
    ),
    "view-empty": couch_view([]),
    "reduce": couch_view([{"key": ["a"], "value": 3}, {"key": ["b"], "value": 1}], head=b""),
    "reduce-empty": couch_view([], head=b""),
    "update-seq": couch_view(TRICKY[:2], head=b'"total_rows":2,"offset":1,"update_seq":"9-g1AA",'),
    "all-docs-keys": ALL_DOCS_KEYS,
    "find": couch_find(TRICKY, {"bookmark": "g1AAAA", "warning": "No matching index found"}),
    "find-stats": couch_find(
        TRICKY[:2],
        {"bookmark": "nil", "execution_stats": {"total_keys_examined": 0, "docs": [1, {"a": "]"}]}},
    ),
    "find-empty": couch_find([], {"bookmark": "nil"}),
    "changes": couch_changes(
        [{"seq": "1-g1AAAA", "id": "a", "changes": [{"rev": "1-x"}]}, {"seq": "2-g1B", "id": "b",
         "changes": [{"rev": "2-y"}], "deleted": True}], "2-g1B", 0),
    "changes-empty": couch_changes([], "0", 0),
    "pouch-view": (
        b'{"total_rows":20,"offset":0,"rows":[{"key":["t0",0],"id":"d00","value":0},'
        b'{"key":["t0",3],"id":"d03","value":3},{"key":["t0",6],"id":"d06","value":6}]}\n'
    ),
    "pouch-longpoll": b'{"results":[\n{"id":"lp2","changes":[{"rev":"1-a"}],"seq":79}\n],\n"last_seq":79}\n',
    "one-line": json.dumps({"total_rows": 5, "offset": 0, "rows": TRICKY}).encode(),
    "one-line-raw": json.dumps({"rows": TRICKY, "x": 1}, ensure_ascii=False).encode(),
    "indent-2": json.dumps({"total_rows": 5, "rows": TRICKY, "z": [1]}, indent=2).encode(),
    "indent-0": json.dumps({"offset": 0, "rows": TRICKY}, indent=0).encode(),
    "indent-tab-crlf": json.dumps({"rows": TRICKY}, indent="\t").replace("\n", "\r\n").encode(),
    "spacey": b' \r\n{ "total_rows" :\t2 ,\n"rows" : [ 1 ,\t"two" , [3] , {"4":4} , null ] , "x" : { } }\r\n ',
    "scalar-rows-crlf": b'{"rows":[\r\n1,\r\n"a\\"b",\r\ntrue,\r\n[],\r\n-2.5e3\r\n]}\n',
}


@pytest.mark.parametrize("name", BODIES)
def test_whole_and_bytewise(name: str) -> None:
    body = BODIES[name]
    want = expected(body)
    assert feed([body]) == want
    assert feed(bytewise(body)) == want
    assert feed(bytewise(body), batch=True) == want


@pytest.mark.parametrize("name", BODIES)
def test_every_two_piece_split(name: str) -> None:
    body = BODIES[name]
    want = expected(body)
    for i in range(1, len(body)):
        assert feed([body[:i], body[i:]]) == want, i


@pytest.mark.parametrize("name", BODIES)
def test_truncated_body_never_ends(name: str) -> None:
    body = BODIES[name]
    last = body.rindex(b"}") + 1
    for i in range(last):
        with pytest.raises(errors.ResponseCut, match="ended early"):
            feed([body[: i // 2], body[i // 2 : i]])
    for i in range(last, len(body) + 1):  # only trailing whitespace is missing
        assert feed([body[:i]])[-1] == End(expected(body)[-1].fields)


@pytest.mark.parametrize("name", ["view", "view-escapes", "find", "changes", "all-docs-keys", "one-line", "indent-0"])
def test_couch_framing_takes_the_fast_path(name: str) -> None:
    # Speed, not correctness, depends on this: every layout is also right on the general path.
    for chunks in ([BODIES[name]], bytewise(BODIES[name])):
        stream = RowStream()
        for chunk in chunks:
            stream.receive_data(chunk)
            while stream.next_event() is not NEED_DATA:
                pass
        assert stream._fast is (not name.startswith(("one", "indent")))


def test_rows_key_and_shapes() -> None:
    view = couch_view([{"id": "a"}])
    assert feed([view])[0] == Header({"total_rows": 1, "offset": 0})
    assert feed([BODIES["reduce"]])[0] == Header({})
    assert feed([b'{"rows":5,"docs":[{"a":1}]}'], rows_key="docs") == [
        Header({"rows": 5}), RowEvent({"a": 1}), End({"rows": 5})]
    # Only the first rows array is the rows; a second one is an ordinary member.
    assert feed([b'{"rows":[1],"docs":[2]}'])[-1] == End({"docs": [2]})
    with pytest.raises(errors.DecodeError, match="no rows"):
        feed([b'{"ok":true}'])


def test_error_rows_stay_rows() -> None:
    events = feed(bytewise(ALL_DOCS_KEYS))
    assert events[2] == RowEvent({"key": "nope", "error": "not_found"})
    assert events[-1] == End({"total_rows": 3, "offset": None})
    lone = couch_view([{"error": "x", "reason": "y"}, {"id": "b"}])
    assert [e for e in feed([lone]) if isinstance(e, RowEvent)][0].value == {"error": "x", "reason": "y"}


def rows_then_error(body: bytes, chunks: list[bytes], **kw: Any) -> tuple[list[Any], Exception]:
    stream = RowStream(**kw)
    events: list[Any] = []
    for chunk in [*filter(None, chunks), b""]:
        stream.receive_data(chunk)
        try:
            while (event := stream.next_event()) is not NEED_DATA:
                events.append(event)
        except errors.CouchError as exc:
            with pytest.raises(type(exc)):  # the error sticks
                stream.next_event()
            return events, exc
    raise AssertionError("no error raised")


ERROR_AFTER_ROWS = (
    b'{"total_rows":9,"offset":0,"rows":[\r\n{"id":"a"},\r\n{"id":"b"}\r\n],\r\n'
    b'"error":"timeout","reason":"The request could not be processed in a reasonable amount of time."}\n'
)
# chttpd:send_chunked_error: where a row or a comma should be, then the body ends
ERROR_APPENDED = (
    b'{"total_rows":9,"offset":0,"rows":[\r\n{"id":"a"},\r\n{"id":"b"}\n'
    b'{"code":500,"error":"x","reason":"y"}\n'
)


@pytest.mark.parametrize("body", [ERROR_AFTER_ROWS, ERROR_APPENDED])
def test_error_after_rows(body: bytes) -> None:
    for i in range(1, len(body)):
        events, exc = rows_then_error(body, [body[:i], body[i:]])
        assert events == [Header({"total_rows": 9, "offset": 0}), RowEvent({"id": "a"}), RowEvent({"id": "b"})]
        assert type(exc) is errors.ServerError and exc.status == 500 and exc.reason
    _, exc = rows_then_error(body, bytewise(body), status=404)
    assert isinstance(exc, errors.NotFound)
    # rows_ready gives the rows first, then raises
    stream = RowStream()
    stream.receive_data(body)
    assert stream.next_event() == Header({"total_rows": 9, "offset": 0})
    assert stream.rows_ready() == [{"id": "a"}, {"id": "b"}]
    with pytest.raises(errors.ServerError):
        stream.rows_ready()


def test_couch_chunked_error() -> None:
    # before any row it reads as a row, then the body is cut: the error explains the cut
    body = b'{"total_rows":9,"offset":0,"rows":[\r\n\n{"code":404,"error":"not_found","reason":"m"}\n'
    for i in range(1, len(body)):
        _, exc = rows_then_error(body, [body[:i], body[i:]])
        assert type(exc) is errors.NotFound and exc.reason == "m"
    # a lone row that looks like it, in a complete body, is a row; cut elsewhere, it is a cut
    assert feed([body + b"]}"])[1] == RowEvent({"code": 404, "error": "not_found", "reason": "m"})
    with pytest.raises(errors.ResponseCut):
        feed([body + b","])


def test_whole_error_body() -> None:
    body = b'{"error":"not_found","reason":"missing"}'
    _, exc = rows_then_error(body, [body], status=404, headers={"x-couch-request-id": "r1"})
    assert type(exc) is errors.NotFound and exc.error == "not_found" and exc.reason == "missing"
    assert "r1" in str(exc)
    _, exc = rows_then_error(body, bytewise(body))
    assert type(exc) is errors.ServerError and exc.status == 500
    # raised as soon as error and reason are both known, before the rest (or the end) arrives
    stream = RowStream(status=400)
    stream.receive_data(b'{"error":"bad_request","reason":"x","rows":[{"a"')
    with pytest.raises(errors.BadRequest):
        stream.next_event()


GARBAGE = [
    b"", b"<html>502 Bad Gateway</html>", b"[1,2]", b"{", b'{"rows":[1,]}', b'{"rows":[\r\n{"a":1},\r\n]}',
    b'{"rows":[{"a":1}}]}', b'{"rows":[]}x', b'{"rows":[]} {}', b'{"rows":[]}\n]', b'{rows:[]}',
    b'{"rows" []}', b'{"rows":[],}', b'{"rows":[{"a":tru}]}', b'{"rows":[{"a":"\xff"}]}',
    b'{"rows":[\r\n{"a":1}\r\n{"b":2}\r\n]}', b'{"rows":[01]}', b'{"a":1 "rows":[]}', b'{"rows":[[}]]}',
    b'{"rows":[\r\n{"a":"x\r\ny"}\r\n]}', b'{"rows":[\r\n{"a":1},\r\n,\r\n{"b":2}\r\n]}',
    b'{"rows":[{"a":1},,{"b":2},{"c":3}]}', b'{"rows":[{"a":1}],"x":[1],}',
]


@pytest.mark.parametrize("body", GARBAGE)
def test_garbage(body: bytes) -> None:
    for chunks in ([body], bytewise(body)):
        with pytest.raises((errors.DecodeError, errors.ResponseCut)) as info:
            feed(chunks)
        assert isinstance(info.value, errors.DecodeError) or body in (b"", b"{")


def test_misuse() -> None:
    stream = RowStream()
    stream.receive_data(b"")
    with pytest.raises(RuntimeError):
        stream.receive_data(b"{}")


@pytest.mark.parametrize("layout", ["couch", "one-line", "indent"])
def test_memory_stays_bounded(layout: str) -> None:
    rows = [{"id": f"doc-{i:06d}", "key": ["t0", i], "value": {"n": i, "s": "text"}} for i in range(200_000)]
    if layout == "couch":
        body = couch_view(rows)
    else:
        body = json.dumps({"total_rows": 1, "rows": rows}, indent=1 if layout == "indent" else None).encode()
    stream = RowStream()
    got, biggest = 0, 0
    for i in range(0, len(body), 1490):
        stream.receive_data(body[i : i + 1490])
        got += len(stream.rows_ready())
        biggest = max(biggest, stream.buffered)
        if i == 0:
            assert isinstance(stream.next_event(), Header)
    stream.receive_data(b"")
    assert got + len(stream.rows_ready()) == 200_000
    assert isinstance(stream.next_event(), End)
    assert biggest < 4096


@pytest.mark.parametrize("layout", ["couch", "one-line"])
def test_huge_row_in_small_chunks_is_linear(layout: str) -> None:
    doc = {"id": "big", "value": {"s": "x\\\"]}," * 400_000, "a": [[["]"] * 50_000]]}}
    rows = [{"id": "a"}, doc, {"id": "z"}]
    body = couch_view(rows) if layout == "couch" else json.dumps({"rows": rows}).encode()
    started = time.perf_counter()
    events = feed([body[i : i + 1024] for i in range(0, len(body), 1024)])
    assert [e.value for e in events if isinstance(e, RowEvent)] == rows
    assert time.perf_counter() - started < 5  # a rescan per chunk would take minutes


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
row_values = st.dictionaries(st.sampled_from(["id", "key", "value", "doc", "error", "}],\r\n{"]), json_values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(row_values | json_values, max_size=6),
    layout=st.sampled_from(["view", "reduce", "find", "changes", "dumps", "dumps-ascii", "indent"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    batch=st.booleans(),
)
def test_random_rows_random_splits(rows: list[Any], layout: str, cuts: list[int], batch: bool) -> None:
    if layout == "view":
        body = couch_view(rows)
    elif layout == "reduce":
        body = couch_view(rows, head=b"")
    elif layout == "find":
        body = couch_find(rows, {"bookmark": "b", "execution_stats": {"x": rows[:1]}})
    elif layout == "changes":
        body = couch_changes(rows, "5-g1AAAA", 3)
    else:
        obj = {"total_rows": len(rows), "rows": rows, "after": rows[-1:]}
        indent = 2 if layout == "indent" else None
        body = json.dumps(obj, ensure_ascii=layout != "dumps", indent=indent).encode()
    cuts = [c % (len(body) + 1) for c in cuts]
    assert feed(splits(body, cuts), batch=batch) == expected(body)
