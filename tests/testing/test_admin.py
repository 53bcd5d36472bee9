"""The fake's server administration: the node's config, stats and system figures,
``_db_updates`` (each feed), and a database's purge, limits and shards."""

from __future__ import annotations

import orjson

from corduroy2.testing import FakeServer

from .conftest import Http

CONFIG = "/_node/_local/_config"


def test_config_values_are_json_strings(couch: Http) -> None:
    assert couch("GET", "/_node/_local")[2] == {"name": "couchdb@127.0.0.1"}
    assert couch("GET", f"{CONFIG}/cluster")[2] == {"q": "2", "n": "1"}
    assert couch("PUT", f"{CONFIG}/s/k", "v1")[::2] == (200, "")
    assert couch("PUT", f"{CONFIG}/s/k", "v2")[2] == "v1"
    assert couch("GET", "/_node/couchdb@127.0.0.1/_config/s/k")[2] == "v2"
    assert couch("PUT", f"{CONFIG}/s/k", 3)[0] == 400  # a value must be a JSON string
    assert couch("DELETE", f"{CONFIG}/s/k")[2] == "v2"
    assert couch("GET", f"{CONFIG}/s/k")[::2] == (404, {"error": "not_found",
                                                       "reason": "unknown_config_value"})
    assert couch("GET", f"{CONFIG}/s")[2] == {}
    assert couch("GET", "/_node/other@host/_config")[0] == 404
    assert couch("GET", CONFIG, auth=None)[0] == 401


def test_stats_count_what_was_served_and_system(couch: Http) -> None:
    couch("GET", "/nope")
    stats = couch("GET", "/_node/_local/_stats")[2]["couchdb"]
    assert stats["httpd_status_codes"]["404"]["value"] >= 1
    assert stats["httpd_request_methods"]["GET"]["value"] >= 1  # this one counts once done
    timing = couch("GET", "/_node/_local/_stats/couchdb/request_time")[2]
    assert timing["type"] == "histogram" and timing["value"]["n"] >= 2
    assert couch("GET", "/_node/_local/_stats/couchdb/nope")[0] == 404
    system = couch("GET", "/_node/_local/_system")[2]
    assert system["uptime"] >= 0 and system["memory"]["processes"] > 0


def test_db_updates_each_feed(server: FakeServer, couch: Http) -> None:
    first = couch("GET", "/_db_updates")[2]
    names = {(u["db_name"], u["type"]) for u in first["results"]}
    assert {("_users", "created"), ("_replicator", "created")} <= names
    assert "pending" not in first
    couch("PUT", "/a")
    couch("PUT", "/a/doc", {})
    couch("DELETE", "/a")
    since = first["last_seq"]
    later = couch("GET", f"/_db_updates?since={since}")[2]
    assert [(u["db_name"], u["type"]) for u in later["results"]] == [
        ("a", "created"), ("a", "updated"), ("a", "deleted")]
    # a longpoll answers the next event; a continuous feed ends after its timeout
    other = Http(server)
    try:
        end = later["last_seq"]
        other.conn.request("GET", f"/_db_updates?feed=longpoll&since={end}&timeout=5000",
                           headers=_auth(server))
        couch("PUT", "/b")
        polled = orjson.loads(other.conn.getresponse().read())
        assert [(u["db_name"], u["type"]) for u in polled["results"]] == [("b", "created")]
    finally:
        other.close()
    raw = couch.raw("GET", f"/_db_updates?feed=continuous&since={end}&timeout=50")[2]
    lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    assert lines[0]["db_name"] == "b" and list(lines[-1]) == ["last_seq"]
    couch("DELETE", "/_global_changes")
    assert couch("GET", "/_db_updates")[0] == 404  # as on a node set up without it


def _auth(server: FakeServer) -> dict[str, str]:
    import base64

    assert server.admin is not None
    return {"Authorization": "Basic " + base64.b64encode(":".join(server.admin).encode()).decode()}


def test_purge_limits_and_shards(couch: Http, db: str) -> None:
    rev1 = couch("PUT", f"{db}/a", {})[2]["rev"]
    rev2 = couch("PUT", f"{db}/a", {"_rev": rev1, "n": 1})[2]["rev"]
    conflict = "2-" + "c" * 32
    couch("POST", f"{db}/_bulk_docs", {"new_edits": False, "docs": [
        {"_id": "a", "_rev": conflict, "_revisions": {"start": 2, "ids": ["c" * 32,
                                                                          rev1[2:]]}}]})
    diff = couch("POST", f"{db}/_revs_diff", {"a": [rev2, "3-" + "d" * 32]})[2]
    assert diff["a"]["missing"] == ["3-" + "d" * 32]
    assert sorted(diff["a"]["possible_ancestors"]) == sorted([rev2, conflict])
    status, _, body = couch("POST", f"{db}/_purge", {"a": [rev2, "9-nope"]})
    assert (status, body) == (201, {"purge_seq": None, "purged": {"a": [rev2]}})
    assert couch("GET", f"{db}/a")[2]["_rev"] == conflict  # the other branch is left
    couch("POST", f"{db}/_purge", {"a": [conflict]})
    assert couch("GET", f"{db}/a")[2]["reason"] == "missing"  # gone, not deleted
    assert couch("GET", f"{db}/_all_docs")[2]["rows"] == []
    assert couch("GET", db)[2]["purge_seq"].startswith("2-")

    assert couch("GET", f"{db}/_purged_infos_limit")[2] == 1000
    assert couch("PUT", f"{db}/_purged_infos_limit", 10)[2] == {"ok": True}
    assert couch("GET", f"{db}/_purged_infos_limit")[2] == 10
    assert couch("PUT", f"{db}/_revs_limit", 0)[0] == 400

    shards = couch("GET", f"{db}/_shards")[2]["shards"]
    assert shards == {"00000000-7fffffff": ["couchdb@127.0.0.1"],
                      "80000000-ffffffff": ["couchdb@127.0.0.1"]}
    assert couch("GET", f"{db}/_shards/some%2Fdoc")[2]["range"] in shards
    assert couch("POST", f"{db}/_sync_shards", b"", headers={
        "Content-Type": "application/json"})[::2] == (202, {"ok": True})
