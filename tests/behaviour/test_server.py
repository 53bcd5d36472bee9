"""Server-level calls on every backend and style."""

from __future__ import annotations

import pytest

from corduroy2 import ConnectError, NotFound, PreconditionFailed, Retry

from .conftest import Client, make_couch


async def test_info_and_version(c: Client) -> None:
    info = await c.call(c.couch.info)
    version = await c.call(c.couch.version)
    assert isinstance(version, str) and version == info["version"]


async def test_uuids(c: Client, server) -> None:
    ids = await c.call(c.couch.uuids, 10)
    assert len(ids) == 10 and len(set(ids)) == 10
    if not server.deviates("uuids_dashed"):
        assert all(len(i) == 32 for i in ids)


async def test_create_list_delete(c: Client, admin) -> None:
    name = "c2test-create-" + c.backend + "-" + c.style
    if name in admin.all_dbs():
        admin.delete(name)
    db = await c.call(c.couch.create, name)
    assert db.name == name and type(db) is c.couch.database_class
    assert name in await c.call(c.couch.all_dbs)
    with pytest.raises(PreconditionFailed):
        await c.call(c.couch.create, name)
    await c.call(c.couch.delete, name)
    assert name not in admin.all_dbs()


async def test_delete_missing(c: Client, server) -> None:
    if server.deviates("delete_missing_db_ok"):
        await c.call(c.couch.delete, "c2test-never-created")
        return
    with pytest.raises(NotFound):
        await c.call(c.couch.delete, "c2test-never-created")


async def test_db_checks_existence(c: Client, admin) -> None:
    name = "c2test-dbcheck-" + c.backend + "-" + c.style
    if name in admin.all_dbs():
        admin.delete(name)
    with pytest.raises(NotFound):
        await c.call(c.couch.db, name)
    db = await c.call(c.couch.db, name, create_if_missing=True)
    assert db.name == name
    again = await c.call(c.couch.db, name, create_if_missing=True)  # exists: no error
    assert again.name == name
    assert await c.call(again.exists)
    admin.delete(name)


async def test_connection_refused(c: Client) -> None:
    # Port 1 on loopback: nothing listens there. (Refused connections are retried: once,
    # quickly; Twisted learns of each refusal only ATTEMPT_DELAY later.)
    dead = make_couch(c.backend, "http://127.0.0.1:1", None, retry=Retry(attempts=2, base=0.01))
    with pytest.raises(ConnectError):
        await c.call(dead.info)
    dead.close()
