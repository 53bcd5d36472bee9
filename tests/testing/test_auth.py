"""Users, basic auth, sessions and _security on the fake, as CouchDB 3 has them."""

from __future__ import annotations

from .conftest import Http


def make_user(couch: Http, name: str, password: str) -> None:
    status, _, _ = couch("PUT", f"/_users/org.couchdb.user:{name}",
                         {"name": name, "password": password, "roles": [], "type": "user"})
    assert status == 201


def test_no_admin_party(couch: Http, db: str) -> None:
    assert couch("GET", "/", auth=None)[0] == 200  # public
    assert couch("GET", "/_uuids?count=3", auth=None)[2]["uuids"][2]
    assert couch("GET", "/_all_dbs", auth=None)[2] == {"error": "unauthorized",
                                                       "reason": "You are not a server admin."}
    assert couch("GET", db, auth=None)[0] == 401  # a new db is admin-only
    assert couch("PUT", "/other", auth=None)[0] == 401
    assert couch("GET", db, auth=("admin", "wrong"))[2] == {
        "error": "unauthorized", "reason": "Name or password is incorrect."}
    assert couch("GET", "/_all_dbs")[2] == ["_global_changes", "_replicator", "_users", "db"]


def test_members_basic_and_cookie(couch: Http, db: str) -> None:
    make_user(couch, "mia", "pw")
    make_user(couch, "olaf", "pw2")
    stored = couch("GET", "/_users/org.couchdb.user:mia")[2]
    assert "password" not in stored and stored["password_scheme"] == "pbkdf2"
    assert couch("PUT", f"{db}/_security", {"members": {"names": ["mia"], "roles": []},
                                            "admins": {"names": [], "roles": []}})[0] == 200
    assert couch("PUT", f"{db}/x", {"by": "mia"}, auth=("mia", "pw"))[0] == 201
    assert couch("GET", f"{db}/x", auth=("olaf", "pw2"))[2]["error"] == "forbidden"
    assert couch("PUT", f"{db}/_design/d", {}, auth=("mia", "pw"))[0] == 403  # not a db admin

    status, head, body = couch("POST", "/_session", b"name=mia&password=pw", auth=None,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and body == {"ok": True, "name": "mia", "roles": []}
    cookie = head["set-cookie"].split(";")[0]
    assert "Max-Age=600" in head["set-cookie"]
    session = couch("GET", "/_session", auth=None, headers={"Cookie": cookie})[2]
    assert session["userCtx"] == {"name": "mia", "roles": []}
    assert session["info"]["authenticated"] == "cookie"
    assert couch("GET", f"{db}/x", auth=None, headers={"Cookie": cookie})[2]["by"] == "mia"
    assert couch("POST", "/_session", {"name": "mia", "password": "no"}, auth=None)[2] == {
        "error": "unauthorized", "reason": "Name or password is incorrect."}
    status, head, _ = couch("DELETE", "/_session", auth=None, headers={"Cookie": cookie})
    assert status == 200 and "Max-Age=0" in head["set-cookie"]
    # a forged cookie is no session
    assert couch("GET", "/_session", auth=None, headers={"Cookie": cookie[:-2] + "xx"})[2][
        "userCtx"]["name"] is None


def test_public_db_when_members_are_empty(couch: Http, db: str) -> None:
    couch("PUT", f"{db}/_security", {"members": {"names": [], "roles": []}})
    assert couch("GET", db, auth=None)[0] == 200
