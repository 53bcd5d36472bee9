"""The cluster's health policy (corduroy2.pipeline.nodes), as tables: which failures set a
node aside, for how long, and which node the next attempt goes to. Pure: the clock is passed
in."""

from __future__ import annotations

import pytest

from corduroy2.errors import ConnectError, CouchError, ResponseCut, Timeout
from corduroy2.pipeline.nodes import HEALTHY, Backoff, Health, Nodes, choose, node_down, set_aside
from corduroy2.protocol.requests import Request

NODE_DOWN: list[tuple[str, int | None, CouchError | None, bool]] = [
    ("refused", None, ConnectError("refused"), True),
    ("no reply within the timeout", None, Timeout("slow"), True),
    ("a reply that went silent", 200, Timeout("idle"), False),
    ("a cut body", 200, ResponseCut("cut"), False),
    ("a connection lost before the reply", None, ResponseCut("reset"), False),
    ("an error status", 503, None, False),
    ("a reply", 200, None, False),
    ("not a transport failure", None, CouchError("credentials"), False),
]


@pytest.mark.parametrize("status, error, down", [row[1:] for row in NODE_DOWN],
                         ids=[row[0] for row in NODE_DOWN])
def test_node_down(status: int | None, error: CouchError | None, down: bool) -> None:
    assert node_down(status, error) is down


BACKOFF = Backoff(base=1.0, cap=5.0)
SET_ASIDE: list[tuple[str, Health, float, Health]] = [
    ("first failure", HEALTHY, 100.0, Health(1, 101.0)),
    ("second in a row: twice as long", Health(1, 101.0), 101.5, Health(2, 103.5)),
    ("third in a row", Health(2, 103.5), 104.0, Health(3, 108.0)),
    ("capped", Health(5, 0.0), 200.0, Health(6, 205.0)),
    # Requests under way when the node died fail together: they count once.
    ("already set aside", Health(1, 101.0), 100.2, Health(1, 101.0)),
]


@pytest.mark.parametrize("health, now, after", [row[1:] for row in SET_ASIDE],
                         ids=[row[0] for row in SET_ASIDE])
def test_set_aside(health: Health, now: float, after: Health) -> None:
    assert set_aside(health, now, BACKOFF) == after


DOWN = Health(1, 110.0)  # set aside until 110
LATER = Health(2, 120.0)
NOW = 100.0
# (healths, tried bits) -> node
CHOOSE: list[tuple[str, list[Health], int, int]] = [
    ("all healthy: the first", [HEALTHY, HEALTHY, HEALTHY], 0b000, 0),
    ("the first is down: the next", [DOWN, HEALTHY, HEALTHY], 0b000, 1),
    ("the first was tried: the next", [HEALTHY, HEALTHY, HEALTHY], 0b001, 1),
    ("tried and down skipped", [DOWN, HEALTHY, HEALTHY], 0b010, 2),
    ("its time out is over: used again", [Health(1, 99.0), HEALTHY, HEALTHY], 0b000, 0),
    ("every untried one down: back soonest", [HEALTHY, LATER, DOWN], 0b001, 2),
    ("all tried: the available one", [DOWN, HEALTHY, LATER], 0b111, 1),
    ("all tried and down: back soonest", [LATER, DOWN, LATER], 0b111, 1),
]


@pytest.mark.parametrize("healths, tried, node", [row[1:] for row in CHOOSE],
                         ids=[row[0] for row in CHOOSE])
def test_choose(healths: list[Health], tried: int, node: int) -> None:
    assert choose(healths, NOW, tried) == node


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_nodes_set_aside_then_back() -> None:
    clock = Clock()
    nodes = Nodes(["http://a:1", "http://b:2/couch"], Backoff(base=1.0, cap=4.0), clock)
    assert nodes.pick(0) == 0
    nodes.failed(0, ConnectError("refused"))
    assert nodes.pick(0) == 1
    clock.now = 1.5  # its second is over: the next request tries it again
    assert nodes.pick(0) == 0
    nodes.failed(0, ConnectError("refused"))  # still down: two seconds now
    clock.now = 3.0
    assert nodes.pick(0) == 1 and nodes.health(0) == Health(2, 3.5)
    nodes.answered(0)  # a reply sent before it went down: it stays set aside
    assert nodes.health(0) == Health(2, 3.5)
    clock.now = 3.6
    nodes.answered(0)
    assert nodes.pick(0) == 0 and nodes.health(0) is HEALTHY


URLS: list[tuple[str, str, int, str]] = [
    ("the first node: as built", "http://a:1/db/x?rev=1", 0, "http://a:1/db/x?rev=1"),
    ("another node", "http://a:1/db/x?rev=1", 1, "http://b:2/couch/db/x?rev=1"),
    ("another server altogether: left alone", "http://c:3/db", 1, "http://c:3/db"),
    ("another port: left alone", "http://a:10/db", 1, "http://a:10/db"),
]


@pytest.mark.parametrize("url, node, sent", [row[1:] for row in URLS],
                         ids=[row[0] for row in URLS])
def test_request_for(url: str, node: int, sent: str) -> None:
    nodes = Nodes(["http://a:1", "http://b:2/couch"])
    request = Request("PUT", url, (("X", "y"),), b"{}", idempotent=True)
    moved = nodes.request_for(request, node)
    assert moved.url == sent
    assert (moved.method, moved.headers, moved.body, moved.idempotent) == (
        "PUT", (("X", "y"),), b"{}", True)


def test_one_node_is_not_a_cluster() -> None:
    with pytest.raises(ValueError):
        Nodes(["http://a:1"])


