"""decide(): what an attempt's end means, as a table. Pure: no IO, no clock, no randomness
(the jitter is passed in)."""

from __future__ import annotations

from typing import Any

import pytest

from corduroy2.errors import ConnectError, CouchError, ResponseCut, Timeout, TransportError
from corduroy2.pipeline.decision import DELIVER, FAIL, FAILOVER, RENEW, RetryAfter, decide
from corduroy2.pipeline.retry import Retry
from corduroy2.protocol.bodies import BodySource
from corduroy2.protocol.requests import Request
from corduroy2.protocol.responses import Headers

URL = "http://h:5984/db/doc"
GET = Request("GET", URL)
HEAD = Request("HEAD", URL)
POST = Request("POST", "http://h:5984/db", body=b"{}")
POST_READ = Request("POST", "http://h:5984/db/_all_docs", body=b"{}", idempotent=True)
PUT_NEW = Request("PUT", URL, body=b'{"a":1}')
PUT_REV = Request("PUT", URL, body=b'{"_rev":"1-x","a":1}')
DELETE_REV = Request("DELETE", URL + "?rev=1-x")
COPY = Request("COPY", URL)


def streamed(sent: bool) -> Request:
    """An attachment upload (PUT with a rev) whose body is streamed; ``sent``: a piece of it
    has been taken, so it cannot be sent again."""
    source = BodySource(iter([b"piece", b"more"]))
    if sent:
        source.next_piece()
    return Request("PUT", URL + "/att?rev=1-x", body=source)


POLICY = Retry(attempts=3, base=0.1, cap=5.0, deadline=10.0)
POST_TOO = Retry(attempts=3, base=0.1, cap=5.0, deadline=10.0, methods=frozenset({"POST"}))
HALF = 0.5  # the jitter every row uses: backoff n = 0.5 * min(cap, base * 2**(n-1))


def cut() -> CouchError:
    return ResponseCut("cut", method="GET", url=URL)


def refused() -> CouchError:
    return ConnectError("refused", method="GET", url=URL)


def timeout() -> CouchError:
    return Timeout("slow", method="GET", url=URL)


def other() -> CouchError:
    return CouchError("could not get credentials")


def retry_after(value: str) -> Headers:
    return Headers([("Retry-After", value)])


# (request, status, headers, error, policy, retries, elapsed, renewable) -> decision
TABLE: list[tuple[str, tuple[Any, ...], Any]] = [
    # Successes are delivered, whatever else holds.
    ("200", (GET, 200, None, None, POLICY, 0, 0.0, True), DELIVER),
    ("304", (GET, 304, None, None, POLICY, 0, 0.0, False), DELIVER),
    ("201 POST", (POST, 201, None, None, None, 0, 0.0, False), DELIVER),
    # Error statuses not in the policy are delivered (the API maps them to their exception).
    ("404", (GET, 404, None, None, POLICY, 0, 0.0, True), DELIVER),
    ("409", (PUT_REV, 409, None, None, POLICY, 0, 0.0, True), DELIVER),
    ("500", (GET, 500, None, None, POLICY, 0, 0.0, False), DELIVER),
    # 401: renew once when the credentials can be renewed, else deliver it.
    ("401 renewable", (GET, 401, None, None, POLICY, 0, 0.0, True), RENEW),
    ("401 renewable POST", (POST, 401, None, None, None, 0, 0.0, True), RENEW),
    ("401 not renewable", (GET, 401, None, None, POLICY, 0, 0.0, False), DELIVER),
    # 503/429: retried for requests safe to repeat, after the backoff or Retry-After.
    ("503 GET", (GET, 503, None, None, POLICY, 0, 0.0, False), RetryAfter(0.05)),
    ("503 GET second retry", (GET, 503, None, None, POLICY, 1, 0.0, False), RetryAfter(0.1)),
    ("503 GET attempts spent", (GET, 503, None, None, POLICY, 2, 0.0, False), DELIVER),
    ("429 HEAD", (HEAD, 429, None, None, POLICY, 0, 0.0, False), RetryAfter(0.05)),
    ("503 Retry-After 2", (GET, 503, retry_after("2"), None, POLICY, 0, 0.0, False),
     RetryAfter(2.0)),
    ("503 Retry-After capped", (GET, 503, retry_after("60"), None, POLICY, 0, 0.0, False),
     RetryAfter(5.0)),
    ("503 Retry-After past the deadline", (GET, 503, retry_after("2"), None, POLICY, 0, 9.0,
                                           False), DELIVER),
    ("503 PUT with a rev", (PUT_REV, 503, None, None, POLICY, 0, 0.0, False), RetryAfter(0.05)),
    ("503 DELETE with a rev", (DELETE_REV, 503, None, None, POLICY, 0, 0.0, False),
     RetryAfter(0.05)),
    ("503 PUT creating", (PUT_NEW, 503, None, None, POLICY, 0, 0.0, False), DELIVER),
    ("503 POST", (POST, 503, None, None, POLICY, 0, 0.0, False), DELIVER),
    ("503 POST marked idempotent", (POST_READ, 503, None, None, POLICY, 0, 0.0, False),
     RetryAfter(0.05)),
    ("503 POST, POST allowed", (POST, 503, None, None, POST_TOO, 0, 0.0, False),
     RetryAfter(0.05)),
    ("503 COPY", (COPY, 503, None, None, POLICY, 0, 0.0, False), DELIVER),
    ("503 without a policy", (GET, 503, None, None, None, 0, 0.0, False), DELIVER),
    # A refused connection never reached the server: retried whatever the method.
    ("refused GET", (GET, None, None, refused(), POLICY, 0, 0.0, False), RetryAfter(0.05)),
    ("refused POST", (POST, None, None, refused(), POLICY, 0, 0.0, False), RetryAfter(0.05)),
    ("refused, attempts spent", (GET, None, None, refused(), POLICY, 2, 0.0, False), FAIL),
    ("refused past the deadline", (GET, None, None, refused(), POLICY, 0, 9.99, False), FAIL),
    ("refused without a policy", (GET, None, None, refused(), None, 0, 0.0, False), FAIL),
    # A connection lost mid-exchange may come after the server applied the request.
    ("cut GET", (GET, None, None, cut(), POLICY, 0, 0.0, False), RetryAfter(0.05)),
    ("cut POST", (POST, None, None, cut(), POLICY, 0, 0.0, False), FAIL),
    ("cut POST, POST allowed", (POST, None, None, cut(), POST_TOO, 0, 0.0, False),
     RetryAfter(0.05)),
    ("cut PUT creating", (PUT_NEW, None, None, cut(), POLICY, 0, 0.0, False), FAIL),
    ("transport GET", (GET, None, None, TransportError("x"), POLICY, 0, 0.0, False),
     RetryAfter(0.05)),
    # The time allowed was spent: never retried.
    ("timeout GET", (GET, None, None, timeout(), POLICY, 0, 0.0, False), FAIL),
    # A streamed body read in part cannot be sent again, whatever else would allow it.
    ("503 streamed, unread", (streamed(False), 503, None, None, POLICY, 0, 0.0, False),
     RetryAfter(0.05)),
    ("503 streamed, sent", (streamed(True), 503, None, None, POLICY, 0, 0.0, False), DELIVER),
    ("refused streamed", (streamed(False), None, None, refused(), POLICY, 0, 0.0, False),
     RetryAfter(0.05)),
    ("cut streamed, sent", (streamed(True), None, None, cut(), POLICY, 0, 0.0, False), FAIL),
    ("401 renewable, streamed unread", (streamed(False), 401, None, None, POLICY, 0, 0.0,
                                        True), RENEW),
    ("401 renewable, streamed sent", (streamed(True), 401, None, None, POLICY, 0, 0.0, True),
     DELIVER),
    # Not a transport failure (the credentials could not be had): final.
    ("credentials", (GET, None, None, other(), POLICY, 0, 0.0, True), FAIL),
]


@pytest.mark.parametrize("args, expected", [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_decide(args: tuple[Any, ...], expected: Any) -> None:
    request, status, headers, error, policy, retries, elapsed, renewable = args
    decision = decide(request, status, headers, error, policy=policy, retries=retries,
                      elapsed=elapsed, renewable=renewable, jitter=lambda: HALF)
    assert decision == expected


# On a cluster with a node this request has not tried yet (other_node=True):
# (request, status, error, policy, elapsed) -> decision
ELSEWHERE: list[tuple[str, tuple[Any, ...], Any]] = [
    # No connection: it never reached a server, whatever its method.
    ("refused GET", (GET, None, refused(), POLICY, 0.0), FAILOVER),
    ("refused POST", (POST, None, refused(), POLICY, 0.0), FAILOVER),
    ("refused PUT creating", (PUT_NEW, None, refused(), POLICY, 0.0), FAILOVER),
    # Nothing came back within the time allowed: the node is taken for dead.
    ("timeout before a reply, GET", (GET, None, timeout(), POLICY, 0.0), FAILOVER),
    ("timeout before a reply, POST", (POST, None, timeout(), POLICY, 0.0), FAIL),
    ("timeout in a reply", (GET, 200, timeout(), POLICY, 0.0), FAIL),
    # Lost mid-exchange: only what is safe to send twice.
    ("cut GET", (GET, None, cut(), POLICY, 0.0), FAILOVER),
    ("cut GET after its status", (GET, 200, cut(), POLICY, 0.0), FAILOVER),
    ("cut POST", (POST, None, cut(), POLICY, 0.0), FAIL),
    ("cut POST marked idempotent", (POST_READ, None, cut(), POLICY, 0.0), FAILOVER),
    ("cut POST, POST allowed", (POST, None, cut(), POST_TOO, 0.0), FAILOVER),
    ("cut PUT with a rev", (PUT_REV, None, cut(), POLICY, 0.0), FAILOVER),
    # Failing over does not spend the policy's attempts, but keeps to its deadline and to
    # retry=False.
    ("refused, attempts spent", (GET, None, refused(), Retry(attempts=1), 0.0), FAILOVER),
    ("refused past the deadline", (GET, None, refused(), POLICY, 10.5), FAIL),
    ("refused without a policy", (GET, None, refused(), None, 0.0), FAIL),
    ("credentials", (GET, None, other(), POLICY, 0.0), FAIL),
    # A reply is a reply, whichever node sent it.
    ("503 GET", (GET, 503, None, POLICY, 0.0), RetryAfter(0.05)),
    ("404", (GET, 404, None, POLICY, 0.0), DELIVER),
]


@pytest.mark.parametrize("args, expected", [row[1:] for row in ELSEWHERE],
                         ids=[row[0] for row in ELSEWHERE])
def test_decide_with_another_node(args: tuple[Any, ...], expected: Any) -> None:
    request, status, error, policy, elapsed = args
    decision = decide(request, status, None, error, policy=policy, retries=0, elapsed=elapsed,
                      renewable=False, other_node=True, jitter=lambda: HALF)
    assert decision == expected


def test_the_backoff_grows_and_is_capped() -> None:
    policy = Retry(attempts=10, base=1.0, cap=4.0, deadline=100.0)
    delays = [decide(GET, 503, None, None, policy=policy, retries=n, elapsed=0.0,
                     renewable=False, jitter=lambda: 1.0) for n in range(5)]
    assert delays == [RetryAfter(1.0), RetryAfter(2.0), RetryAfter(4.0), RetryAfter(4.0),
                      RetryAfter(4.0)]


def test_full_jitter_spans_zero_to_the_backoff() -> None:
    low = decide(GET, 503, None, None, policy=POLICY, retries=1, elapsed=0.0,
                 renewable=False, jitter=lambda: 0.0)
    assert low == RetryAfter(0.0)
    for _ in range(200):  # the default jitter stays within the full-jitter range
        decision = decide(GET, 503, None, None, policy=POLICY, retries=1, elapsed=0.0,
                          renewable=False)
        assert isinstance(decision, RetryAfter) and 0.0 <= decision.delay <= 0.2
