"""ChangesStream: continuous and eventsource feeds, every split, errors, truncation, memory; no IO."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corduroy2 import errors
from corduroy2.protocol.changes import NEED_DATA, Change, ChangesStream, FeedEnd, Heartbeat

HB = Heartbeat()
CLOSED = FeedEnd(None, None)  # the server closed the feed without a last_seq line


def feed(chunks: list[bytes], *, batch: bool = False, quick: bool = False, end: bool = True,
         **kw: Any) -> list[Any]:
    """Feed ``chunks`` (then the end of the body), draining events after each chunk; with
    ``quick``, each chunk goes through ``changes_in`` (a feed sink's short path) first."""
    stream = ChangesStream(**kw)
    events: list[Any] = []

    def drain() -> None:
        while True:
            if batch:
                events.extend(map(Change, stream.changes_ready()))
            event = stream.next_event()
            if event is NEED_DATA:
                return
            events.append(event)

    for chunk in [*filter(None, chunks), *([b""] if end else [])]:
        if quick:
            changes = stream.changes_in(chunk)
            if changes is not None:
                assert changes and stream.idle()  # all it completed, and nothing left
                events.extend(map(Change, changes))
                continue
        else:
            stream.receive_data(chunk)
        drain()
    return events


def splits(body: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(set(cuts))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]


def bytewise(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


def continuous(items: list[Any], eol: bytes = b"\n") -> bytes:
    """CouchDB/pouchdb continuous framing: dicts are changes or the last_seq line, None a heartbeat."""
    return b"".join(eol if item is None else orjson.dumps(item) + eol for item in items)


def eventsource(items: list[Any], eol: bytes = b"\n", pretty: bool = False) -> bytes:
    """CouchDB's eventsource framing: ``data: {change}`` ``id: "<seq>"`` blank; None a heartbeat."""
    out = []
    for item in items:
        if item is None:
            out.append(b"event: heartbeat" + eol + b"data: " + eol + eol)
            continue
        text = json.dumps(item, indent=1, ensure_ascii=False) if pretty else orjson.dumps(item).decode()
        data = b"".join(b"data: " + line.encode() + eol for line in text.split("\n"))
        out.append(data + b"id: " + orjson.dumps(item["seq"]) + eol + eol)
    return b"".join(out)


def want(items: list[Any]) -> list[Any]:
    """The events for ``items`` as :func:`continuous`/:func:`eventsource` frame them."""
    events = [HB if i is None else FeedEnd(i["last_seq"], i.get("pending")) if "last_seq" in i
              else Change(i) for i in items]
    return events if events and isinstance(events[-1], FeedEnd) else [*events, CLOSED]


SEQ1 = "1-g1AAAACTeJzLYWBgYMpgTmHgzcvPy09JdcjLz8gvLskBCScyJNX___8_K4M5kTEXKMCenGacZGRuaoCsGrcJSQ5AMqkeZEgGcyJLLhAQjzc1srRQP"
COUCH3 = [  # opaque string seqs, include_docs, a deletion, heartbeats, the final line
    {"seq": SEQ1, "id": "a", "changes": [{"rev": "1-967a00dff5e02add41819138abb3284d"}],
     "doc": {"_id": "a", "_rev": "1-967a00dff5e02add41819138abb3284d", "n": 1, "t": ["x", {"y": None}]}},
    {"seq": "2-g1AAAAEzeJzLYWBgYMp", "id": "é中😀", "changes": [{"rev": "1-x"}], "doc": {"s": "a\nb\"c\\"}},
    None,
    {"seq": "3-g1AAAAF", "id": "b", "changes": [{"rev": "2-y"}], "deleted": True,
     "doc": {"_id": "b", "_rev": "2-y", "_deleted": True}},
    None,
    None,
    {"last_seq": "3-g1AAAAF", "pending": 0},
]
POUCH = [  # integer seqs, field order id, changes, [doc], [deleted], seq; no final line
    {"id": "_design/v", "changes": [{"rev": "1-af9a1a87"}], "seq": 21},
    {"id": "lp1", "changes": [{"rev": "1-4c84b5b5"}], "seq": 22},
    None,
    {"id": "lp2", "changes": [{"rev": "2-c"}], "deleted": True, "seq": 23},
    None,
]
SSE = [  # eventsource: string seqs, heartbeat events
    {"seq": "1-g1AA", "id": "a", "changes": [{"rev": "1-x"}]},
    None,
    {"seq": "2-g1AB", "id": "ü \"q\" \\", "changes": [{"rev": "1-y"}], "doc": {"v": [1, {"w": "}\n"}]}},
    {"seq": 7, "id": "c", "changes": [{"rev": "3-z"}], "deleted": True},
]

ESCAPED = (  # as CouchDB writes escapes: astral as a surrogate pair, slashes, controls
    b'{"seq":"4-g1","id":"\\ud83d\\ude00 \\u00e9 \\"q\\" \\\\","changes":[{"rev":"1-a"}],'
    b'"doc":{"t":"\\/\\b\\f\\n\\r\\t\\u0000"}}\n'
)

BODIES: dict[str, tuple[bytes, str, list[Any]]] = {
    "couch3": (continuous(COUCH3), "continuous", want(COUCH3)),
    "couch3-crlf": (continuous(COUCH3, b"\r\n"), "continuous", want(COUCH3)),
    "couch3-no-pending": (b'{"last_seq":"9-g1"}\n', "continuous", [FeedEnd("9-g1", None)]),
    "pouchdb": (continuous(POUCH), "continuous", want(POUCH)),
    "escapes": (ESCAPED + b"  \t\n", "continuous", [Change(orjson.loads(ESCAPED)), HB, CLOSED]),
    "empty": (b"", "continuous", [CLOSED]),
    "sse": (eventsource(SSE), "eventsource", want(SSE)),
    "sse-crlf": (eventsource(SSE, b"\r\n"), "eventsource", want(SSE)),
    "sse-cr": (eventsource(SSE, b"\r"), "eventsource", want(SSE)),
    "sse-pretty": (eventsource(SSE, pretty=True), "eventsource", want(SSE)),
    "sse-fields": (  # comments, retry, event types, no space after the colon, seq only in the id
        b": hello\n\nretry: 3000\nevent: change\ndata:{\"id\":\"a\",\"changes\":[]}\nid: \"5-g1\"\n\n"
        b"id: 6\r\ndata: {\"id\":\"b\",\"changes\":[]}\r\n\r\nid: raw-7\ndata: {\"id\":\"c\",\"changes\":[]}\n\n"
        b"event: x\n\n:\n\n\n",
        "eventsource",
        [HB, Change({"id": "a", "changes": [], "seq": "5-g1"}), Change({"id": "b", "changes": [], "seq": 6}),
         Change({"id": "c", "changes": [], "seq": "raw-7"}), HB, HB, HB, CLOSED],
    ),
}


@pytest.mark.parametrize("name", BODIES)
def test_whole_and_bytewise(name: str) -> None:
    body, kind, expected = BODIES[name]
    assert feed([body], feed=kind) == expected
    assert feed(bytewise(body), feed=kind) == expected
    assert feed(bytewise(body), feed=kind, batch=True) == expected
    assert feed([body], feed=kind, batch=True) == expected
    assert feed([body], feed=kind, quick=True) == expected
    assert feed(bytewise(body), feed=kind, quick=True) == expected


@pytest.mark.parametrize("name", BODIES)
def test_every_two_piece_split(name: str) -> None:
    body, kind, expected = BODIES[name]
    for cut in range(1, len(body)):
        assert feed([body[:cut], body[cut:]], feed=kind) == expected, cut
        assert feed([body[:cut], body[cut:]], feed=kind, quick=True) == expected, cut


def test_seqs_are_opaque() -> None:
    events = feed([continuous(COUCH3), continuous(POUCH)])
    seqs = [e.value["seq"] for e in events if isinstance(e, Change)]
    assert seqs == [SEQ1, "2-g1AAAAEzeJzLYWBgYMp", "3-g1AAAAF", 21, 22, 23]
    assert [type(s) for s in seqs] == [str] * 3 + [int] * 3
    assert FeedEnd("3-g1AAAAF", 0) in events and events[-1] == HB  # lines after last_seq: read on


def test_several_changes_per_chunk_and_batches() -> None:
    stream = ChangesStream()
    stream.receive_data(continuous(COUCH3[:2]) + b"\n" + continuous(COUCH3[3:]))
    assert stream.changes_ready() == COUCH3[:2]
    assert stream.changes_ready() == []  # a heartbeat is next: order is kept
    assert stream.next_event() == HB
    assert stream.changes_ready() == [COUCH3[3]]
    assert stream.next_event() == HB and stream.next_event() == HB
    assert stream.changes_ready() == []
    assert stream.next_event() == FeedEnd("3-g1AAAAF", 0)
    assert stream.next_event() is NEED_DATA
    stream.receive_data(b"")
    assert stream.next_event() is NEED_DATA  # it had its last_seq line: no second FeedEnd
    assert stream.changes_ready() == []


@pytest.mark.parametrize("tail", [[], [None], [{"last_seq": "9-g1", "pending": 0}],
                                  [None, {"seq": 1, "id": "a", "changes": []}]])
@pytest.mark.parametrize("batch", [False, True])
def test_many_changes_in_one_chunk(tail: list[Any], batch: bool) -> None:
    """A busy feed's chunk (many complete lines, decoded at once) gives the same events as the
    same body fed byte by byte (one line at a time), whatever ends the chunk."""
    items = [{"seq": f"{i}-g1", "id": f"d{i}", "changes": [{"rev": "1-a"}]} for i in range(50)] + tail
    body = continuous(items)
    assert feed([body], batch=batch) == feed(bytewise(body), batch=batch) == want(items)
    # changes_in: a chunk completing a partial line, then chunks of whole lines (the body
    # twice: its tail, a heartbeat or the end line, sits in the middle of a chunk)
    third = len(body) // 3
    chunks = [body[:third], body[third:] + body[:third], body[third:]]
    assert feed(chunks, quick=True) == feed(bytewise(b"".join(chunks)))
    stream = ChangesStream()
    stream.receive_data(body[:-1])  # the last line is incomplete: it waits
    ready = stream.changes_ready()
    assert ready == [i for i in items[:-1] if i is not None and "changes" in i][: len(ready)]


def test_clean_end_without_last_seq() -> None:
    stream = ChangesStream()
    stream.receive_data(continuous(POUCH))
    assert [stream.next_event() for _ in range(6)][-1] is NEED_DATA  # the feed is still open
    stream.receive_data(b"")
    assert stream.next_event() == CLOSED
    assert stream.next_event() is NEED_DATA and stream.next_event() is NEED_DATA
    # A complete object lacking only its final LF is taken; a cut one never parses.
    assert feed([b'{"last_seq":5}']) == [FeedEnd(5, None)]
    assert feed([b'{"id":"a","changes":[],"seq":1}']) == [Change({"id": "a", "changes": [], "seq": 1}), CLOSED]


CHANGE = {"seq": 1, "id": "a", "changes": [{"rev": "1-a"}]}
MID_ERRORS = [
    (b'{"error":"not_found","reason":"missing","code":404}', 200, errors.NotFound),
    (b'{"code":500,"error":"badmatch","reason":"{ok,[]}"}', 200, errors.ServerError),
    (b'{"error":"timeout","reason":"x"}', 200, errors.ServerError),
    (b'{"error":"forbidden","reason":"x","code":403}', 200, errors.Forbidden),
]


@pytest.mark.parametrize(("line", "status", "exc"), MID_ERRORS)
@pytest.mark.parametrize("kind", ["continuous", "eventsource"])
def test_error_after_changes(line: bytes, status: int, exc: type[Exception], kind: str) -> None:
    frame = continuous if kind == "continuous" else eventsource
    body = frame([CHANGE, None, CHANGE]) + b"\n" + line + b"\n" + frame([CHANGE])  # send_chunked_error
    for chunks in ([body], bytewise(body)):
        stream = ChangesStream(kind, status=status)
        events = []
        for chunk in chunks:
            stream.receive_data(chunk)
            try:
                while (event := stream.next_event()) is not NEED_DATA:
                    events.append(event)
            except exc as err:
                assert isinstance(err, errors.HTTPError) and err.error
                break
        else:
            pytest.fail("no error")
        assert events[:3] == [Change(CHANGE), HB, Change(CHANGE)]
        with pytest.raises(exc):  # it repeats
            stream.changes_ready()
        with pytest.raises(exc):
            stream.next_event()


def test_error_in_eventsource_data() -> None:
    body = eventsource([CHANGE]) + b'data: {"error":"not_found","reason":"deleted"}\n\n'
    with pytest.raises(errors.ServerError) as info:  # no code: 500
        feed([body], feed="eventsource")
    assert info.value.error == "not_found" and info.value.status == 500


@pytest.mark.parametrize("kind", ["continuous", "eventsource"])
def test_whole_error_reply(kind: str) -> None:
    body = b'{"error":"not_found","reason":"Database does not exist."}'
    stream = ChangesStream(kind, status=404, headers={"x-couch-request-id": "r1"})
    for piece in bytewise(body):
        stream.receive_data(piece)
        assert stream.next_event() is NEED_DATA
    stream.receive_data(b"")
    with pytest.raises(errors.NotFound) as info:
        stream.next_event()
    assert info.value.reason == "Database does not exist." and "r1" in str(info.value)
    with pytest.raises(errors.ServerError):
        feed([b"<html>bad gateway</html>"], feed=kind, status=502)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (continuous([CHANGE]) + b'{"seq":2,"id":"b","chan', "continuous"),
        (continuous([CHANGE]) + b'{"last_seq":', "continuous"),
        (continuous([CHANGE]) + b"12", "continuous"),
        (eventsource([CHANGE]) + b'data: {"seq":2,"id":"b","changes":[]}\n', "eventsource"),
        (eventsource([CHANGE]) + b'data: {"seq":2,"id":"b","chan', "eventsource"),
    ],
)
def test_truncated_feed(body: bytes, kind: str) -> None:
    for chunks in ([body], bytewise(body)):
        stream = ChangesStream(kind)
        for chunk in chunks:
            stream.receive_data(chunk)
        assert stream.next_event() == Change(CHANGE)
        assert stream.next_event() is NEED_DATA
        stream.receive_data(b"")
        with pytest.raises(errors.ResponseCut):
            while stream.next_event() is not NEED_DATA:
                pass


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"<html>proxy error</html>\n", "continuous"),
        (b'{"seq":1,"id":"a",}\n', "continuous"),
        (b"[1,2]\n", "continuous"),
        # Two changes on one line: valid as array items, so the many-lines-at-once decoding
        # must notice that the items outnumber the lines.
        (b'{"seq":2,"id":"b","changes":[]},{"seq":3,"id":"c","changes":[]}\n', "continuous"),
        (b'{"seq":2,"id":"b","changes":[1\n2]}\n', "continuous"),  # one object over two lines
        (b'"a string"\n', "continuous"),
        (b"data: not json\n\n", "eventsource"),
        (b"data: [1]\n\n", "eventsource"),
    ],
)
def test_garbage(line: bytes, kind: str) -> None:
    frame = continuous if kind == "continuous" else eventsource
    stream = ChangesStream(kind)
    stream.receive_data(frame([CHANGE]) + line + frame([CHANGE]))
    assert stream.changes_ready() == [CHANGE]
    with pytest.raises(errors.DecodeError) as info:
        stream.next_event()
    assert len(str(info.value)) < 200 and isinstance(info.value, ValueError)
    with pytest.raises(errors.DecodeError):
        stream.changes_ready()


def test_misuse() -> None:
    with pytest.raises(ValueError):
        ChangesStream("longpoll")
    stream = ChangesStream()
    stream.receive_data(b"")
    with pytest.raises(RuntimeError):
        stream.receive_data(b"\n")


@pytest.mark.parametrize("kind", ["continuous", "eventsource"])
def test_memory_stays_bounded(kind: str) -> None:
    frame = continuous if kind == "continuous" else eventsource
    change = {"seq": "5-g1AAAA" + "x" * 100, "id": "doc", "changes": [{"rev": "1-abc"}]}
    body = frame([change, change, None, change] * 4000)  # ~2 MB
    stream = ChangesStream(kind)
    count, peak, pos, size = 0, 0, 0, 1
    while pos < len(body):  # chunk sizes 1..1000, so that lines straddle chunks
        stream.receive_data(body[pos : pos + size])
        pos, size = pos + size, size * 7 % 1001 + 1
        count += len(stream.changes_ready())
        while stream.next_event() is not NEED_DATA:
            count += len(stream.changes_ready())
        peak = max(peak, stream.buffered)
    assert peak < 1300 and count == 12000


@pytest.mark.parametrize("kind", ["continuous", "eventsource"])
def test_huge_line_in_one_byte_chunks_is_linear(kind: str) -> None:
    frame = continuous if kind == "continuous" else eventsource
    doc = {"seq": "9-g1", "id": "big", "changes": [{"rev": "1-a"}], "doc": {"blob": "é\\\"" * 350_000}}
    body = frame([doc])
    assert len(body) > 2_000_000
    stream = ChangesStream(kind)
    receive, next_event = stream.receive_data, stream.next_event
    chunks = bytewise(body[:-1])
    started = time.perf_counter()
    for chunk in chunks:  # a parse attempt after every byte: each must cost O(1)
        receive(chunk)
        next_event()
    elapsed = time.perf_counter() - started
    assert stream.next_event() is NEED_DATA and stream.buffered > 2_000_000
    receive(body[-1:])
    assert next_event() == Change(doc)
    assert elapsed < 3
    assert stream.buffered == 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SEQS = st.integers(0, 2**53) | st.builds(lambda n, s: f"{n}-g1{s}", st.integers(0, 999), st.text("AQgx_-", max_size=30))
CHANGES = st.builds(
    lambda seq, id, revs, doc, deleted: {"seq": seq, "id": id, "changes": [{"rev": r} for r in revs],
                                         **({} if doc is None else {"doc": doc}), **({"deleted": True} if deleted else {})},
    SEQS, st.text(), st.lists(st.text(max_size=12), min_size=1, max_size=3),
    st.none() | st.dictionaries(st.text(max_size=8), JSON, max_size=5), st.booleans(),
)
ITEMS = st.lists(st.none() | CHANGES, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=ITEMS,
    last=st.none() | st.builds(lambda s, p: {"last_seq": s, "pending": p}, SEQS, st.integers(0, 99)),
    layout=st.sampled_from(["lf", "crlf", "sse-lf", "sse-crlf", "sse-cr", "sse-pretty"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    batch=st.booleans(),
    quick=st.booleans(),
)
def test_random_changes_random_splits(items: list[Any], last: Any, layout: str, cuts: list[int], batch: bool,
                                      quick: bool) -> None:
    eol = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r", "pretty": b"\n"}[layout.rpartition("-")[2]]
    if layout.startswith("sse"):
        body, kind = eventsource(items, eol, pretty=layout.endswith("pretty")), "eventsource"
    else:
        items, kind = items + ([last] if last else []), "continuous"
        body = continuous(items, eol)
    cuts = [c % (len(body) + 1) for c in cuts]
    assert feed(splits(body, cuts), feed=kind, batch=batch, quick=quick) == want(items)
