"""Replication endpoints and bodies (corduroy2.api.replication), without IO: what a source or a
target becomes, that no password is ever put inside a URL, and the document states of servers
without a scheduler."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from corduroy2 import CookieAuth, JWTAuth, ProxyAuth, ReplicationFailed
from corduroy2.api.replication import (ReplicationState, endpoint, replication_body,
                                       state_from_doc)
from corduroy2.blocking import Couch

URL = "http://h:5984"
SECRET = "s3cr:t/@pw"  # characters a URL would have to escape
BASIC = {"auth": {"basic": {"username": "ann", "password": SECRET}}}

#: A URL with userinfo: what must never be sent.
USERINFO = re.compile(r"https?://[^/\"]*@")


def couch(auth: Any = None) -> Couch:
    return Couch(URL, auth)  # no request is made


@pytest.mark.parametrize("auth, expected", [
    (None, f"{URL}/src"),
    (("ann", SECRET), {"url": f"{URL}/src", **BASIC}),
    (CookieAuth("ann", SECRET), {"url": f"{URL}/src", **BASIC}),
    (ProxyAuth("ann", ["r"]), {"url": f"{URL}/src", "headers": {
        "X-Auth-CouchDB-UserName": "ann", "X-Auth-CouchDB-Roles": "r"}}),
    (JWTAuth("tok"), {"url": f"{URL}/src", "headers": {"Authorization": "Bearer tok"}}),
], ids=["anonymous", "basic", "cookie", "proxy", "jwt"])
def test_a_database_becomes_its_url_and_its_handles_credentials(auth: Any, expected: Any) -> None:
    other = couch()
    assert endpoint(couch(auth).database("src"), other) == expected


def test_a_database_name_is_a_database_of_the_replicating_server() -> None:
    assert endpoint("a/b", couch(("ann", SECRET))) == {"url": f"{URL}/a%2Fb", **BASIC}
    with pytest.raises(ValueError):
        endpoint("Bad Name", couch())


def test_credentials_in_a_url_move_into_auth() -> None:
    assert endpoint("http://ann:s3cr%3At%2F%40pw@h:5984/db", couch()) == {
        "url": f"{URL}/db", **BASIC}
    assert endpoint("https://h/db?x=1", couch()) == "https://h/db?x=1"  # nothing to move


def test_an_endpoint_dict_is_kept_but_its_url_loses_its_credentials() -> None:
    given = {"url": f"{URL}/db", "headers": {"X-A": "1"}}
    assert endpoint(given, couch()) == given
    assert endpoint({"url": "http://ann:s3cr%3At%2F%40pw@h:5984/db"}, couch()) == {
        "url": f"{URL}/db", **BASIC}
    with pytest.raises(ValueError, match="both"):
        endpoint({"url": "http://a:b@h/db", "auth": {}}, couch())
    with pytest.raises(ValueError):
        endpoint({"headers": {}}, couch())


@pytest.mark.parametrize("value, error", [
    (5, TypeError), ("ftp://h/db", ValueError), (None, TypeError),
])
def test_bad_endpoints_fail_before_sending(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        endpoint(value, couch())


def test_a_jwt_token_source_cannot_be_handed_to_the_replicator() -> None:
    with pytest.raises(TypeError, match="token source"):
        endpoint(couch(JWTAuth(lambda: "t")).database("db"), couch())


def test_no_body_holds_a_url_with_a_password() -> None:
    admin = couch(("ann", SECRET))
    body = replication_body(admin, admin.database("a"), "http://ann:x%40y@h/b",
                            continuous=True, doc_ids=["d"])
    text = orjson.dumps(body).decode()
    assert not USERINFO.search(text)
    assert body == {"source": {"url": f"{URL}/a", **BASIC},
                    "target": {"url": "http://h/b",
                               "auth": {"basic": {"username": "ann", "password": "x@y"}}},
                    "continuous": True, "doc_ids": ["d"]}
    assert SECRET not in repr(admin) + repr(admin.database("a"))


def test_body_sends_only_what_is_asked_for() -> None:
    c = couch()
    assert replication_body(c, "a", "b") == {"source": f"{URL}/a", "target": f"{URL}/b"}
    assert replication_body(c, "a", "b", create_target=True, cancel=True, filter="d/f",
                            query_params={"k": 1}, since_seq="0") == {
        "source": f"{URL}/a", "target": f"{URL}/b", "create_target": True, "cancel": True,
        "filter": "d/f", "query_params": {"k": 1}, "since_seq": "0"}


@pytest.mark.parametrize("opts, error", [
    ({"continuous": 1}, TypeError),
    ({"doc_ids": "a"}, TypeError),
    ({"doc_ids": [1]}, TypeError),
    ({"selector": "x"}, TypeError),
    ({"filter": "nofn"}, ValueError),
    ({"query_params": [1]}, TypeError),
    ({"doc_ids": ["a"], "selector": {"x": 1}}, ValueError),
    ({"since_seq": float("nan")}, ValueError),
    ({"since_seq": object()}, TypeError),
])
def test_bad_replication_arguments_fail_before_sending(opts: dict[str, Any],
                                                      error: type[Exception]) -> None:
    with pytest.raises(error):
        replication_body(couch(), "a", "b", **opts)


@pytest.mark.parametrize("doc, state, reason", [
    ({"_id": "r"}, "initializing", None),
    ({"_id": "r", "_replication_state": "triggered"}, "running", None),
    ({"_id": "r", "_replication_state": "completed", "_replication_stats": {"docs_written": 2}},
     "completed", None),
    ({"_id": "r", "_replication_state": "error", "_replication_state_reason": "boom"},
     "crashing", "boom"),
    ({"_id": "r", "_replication_state": "failed", "_replication_state_reason": "bad doc"},
     "failed", "bad doc"),
])
def test_a_document_state_reads_like_the_scheduler(doc: dict[str, Any], state: str,
                                                   reason: str | None) -> None:
    entry = ReplicationState(state_from_doc(doc, "_replicator"))
    assert (entry.state, entry.reason, entry["doc_id"], entry["database"]) == (
        state, reason, "r", "_replicator")


def test_replication_failed_says_what_and_why() -> None:
    error = ReplicationFailed("crashing", "db_not_found: could not open http://h/missing/",
                              "r1", {"state": "crashing"})
    assert str(error) == ("replication 'r1' crashing: db_not_found: could not open "
                          "http://h/missing/")
    assert (error.state, error.doc_id, error.details) == ("crashing", "r1", {"state": "crashing"})


@pytest.mark.parametrize("call, error", [
    (lambda c: c.create_user("bob", "pw", "admin"), TypeError),  # a str is not a list of roles
    (lambda c: c.set_config("log", "level", 1), TypeError),
    (lambda c: c.dbs_info("db"), TypeError),
    (lambda c: c.db_updates(feed="continuous"), ValueError),
    (lambda c: c.iter_db_updates(feed="normal"), ValueError),
    (lambda c: c.replicate("a", "b", doc_ids="d"), TypeError),
    (lambda c: c.start_replication("a", "b", replicator_db="Bad"), ValueError),
    (lambda c: c.replication("r").wait(interval=0), ValueError),
    (lambda c: c.database("a").push(5), TypeError),
], ids=["roles", "config value", "dbs_info", "db_updates feed", "iter feed", "doc_ids",
        "replicator db", "interval", "push target"])
def test_couch_refuses_bad_arguments_before_sending(call: Any, error: type[Exception]) -> None:
    # Nothing listens at URL: a call that sent anything would fail with ConnectError instead.
    with pytest.raises(error):
        call(couch())
