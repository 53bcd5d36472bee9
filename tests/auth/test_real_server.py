"""Basic and cookie auth against the real server (pouchdb-server, or ``COUCHDB_URL``), as a user
who is the only member of a database, on every backend and calling style.

Only the admin creates databases: an unauthenticated ``PUT /newdb`` crashes pouchdb-server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from corduroy2 import BasicAuth, CookieAuth, Forbidden, Unauthorized
from corduroy2.protocol.requests import encode_json

from ..behaviour.conftest import Client, make_couch
from ..behaviour.conftest import admin, c, couches, dbname  # noqa: F401  (fixtures: backend x style)
from ..conftest import LOOP, Server


def _put(admin: Any, path: str, body: Any) -> Any:
    return admin.runner.call(admin.origin.request("PUT", path, body=encode_json(body)), None)


class Users:
    """Users created in ``_users`` for one test, removed afterwards."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.made: list[str] = []

    def make(self, name: str, password: str) -> None:
        _put(self.admin, f"/_users/org.couchdb.user:{name}",
             {"name": name, "password": password, "roles": [], "type": "user"})
        self.made.append(name)

    def remove(self) -> None:
        users = self.admin.database("_users")
        for name in self.made:
            try:
                users.delete(users.get(f"org.couchdb.user:{name}"))
            except Exception:
                pass


@pytest.fixture
def setup(admin: Any, dbname: str) -> Iterator[dict[str, str]]:
    """A member user (only member of the fresh db), an outsider, and their passwords."""
    tag = uuid.uuid4().hex[:8]
    names = {"member": f"member{tag}", "member_pw": f"pw-m-{tag}",
             "outsider": f"outsider{tag}", "outsider_pw": f"pw-o-{tag}", "db": dbname}
    users = Users(admin)
    users.make(names["member"], names["member_pw"])
    users.make(names["outsider"], names["outsider_pw"])
    _put(admin, f"/{dbname}/_security", {
        "admins": {"names": [], "roles": []},
        "members": {"names": [names["member"]], "roles": []},
    })
    yield names
    users.remove()


def _as(c: Client, server: Server, auth: Any) -> Client:
    return Client(c.backend, c.style, make_couch(c.backend, server.url, auth))


def _close(client: Client) -> None:
    closing = client.couch.close()
    if closing is not None and hasattr(closing, "asFuture"):
        LOOP.run_until_complete(closing.asFuture(LOOP))


@pytest.fixture
def clients(c: Client, server: Server) -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        _close(client)


@pytest.mark.parametrize("kind", ["basic", "cookie"])
async def test_member_reads_and_writes(c: Client, server: Server, setup: dict[str, str],
                                       clients: list[Client], kind: str) -> None:
    user, password = setup["member"], setup["member_pw"]
    auth = BasicAuth(user, password) if kind == "basic" else CookieAuth(user, password)
    me = _as(c, server, auth)
    clients.append(me)
    db = me.couch.database(setup["db"])
    doc = await me.call(db.save, {"_id": "hello", "by": user})
    assert doc["_rev"].startswith("1-")
    assert (await me.call(db.get, "hello"))["by"] == user
    session = await me.call(me.couch.session)
    assert session["userCtx"]["name"] == user


async def test_anonymous_is_refused(c: Client, server: Server, setup: dict[str, str],
                                    clients: list[Client]) -> None:
    anonymous = _as(c, server, None)
    clients.append(anonymous)
    with pytest.raises(Unauthorized):
        await anonymous.call(anonymous.couch.database(setup["db"]).get, "hello")


@pytest.mark.parametrize("kind", ["basic", "cookie"])
async def test_wrong_password(c: Client, server: Server, setup: dict[str, str],
                              clients: list[Client], kind: str) -> None:
    user = setup["member"]
    auth = BasicAuth(user, "wrong") if kind == "basic" else CookieAuth(user, "wrong")
    me = _as(c, server, auth)
    clients.append(me)
    with pytest.raises(Unauthorized) as info:
        await me.call(me.couch.database(setup["db"]).info)
    assert info.value.status == 401 and info.value.error == "unauthorized"


@pytest.mark.parametrize("kind", ["basic", "cookie"])
async def test_user_without_access(c: Client, server: Server, setup: dict[str, str],
                                   clients: list[Client], kind: str) -> None:
    user, password = setup["outsider"], setup["outsider_pw"]
    auth = BasicAuth(user, password) if kind == "basic" else CookieAuth(user, password)
    other = _as(c, server, auth)
    clients.append(other)
    # CouchDB 3 answers 403 to an authenticated non-member; pouchdb-server answers 401
    # (pouchdb-server.md, section 6).
    with pytest.raises((Forbidden, Unauthorized)) as info:
        await other.call(other.couch.database(setup["db"]).get, "hello")
    if not server.pouchdb:
        assert isinstance(info.value, Forbidden)
    assert (await other.call(other.couch.session))["userCtx"]["name"] == user


async def test_cookie_login_session_logout(c: Client, server: Server, setup: dict[str, str],
                                           clients: list[Client]) -> None:
    user, password = setup["member"], setup["member_pw"]
    me = _as(c, server, CookieAuth(user, password))
    clients.append(me)
    reply = await me.call(me.couch.login)
    assert reply["ok"] is True and reply["name"] == user
    assert (await me.call(me.couch.session))["userCtx"]["name"] == user
    await me.call(me.couch.logout)
    assert (await me.call(me.couch.session))["userCtx"]["name"] is None
    with pytest.raises(Unauthorized):
        await me.call(me.couch.database(setup["db"]).info)
    await me.call(me.couch.login)
    assert (await me.call(me.couch.database(setup["db"]).info))["db_name"] == setup["db"]
