"""Bad arguments raise ``ValueError``/``TypeError`` at the call, before any request, in every
backend, with or without ``callback=`` (which is then never called), and lose nothing: the
caller's document is left exactly as it was.

"Before any request" is proven by pointing the client at a dead port (127.0.0.1:1): a request
would fail with ``ConnectError`` (raised on the blocking backend, delivered later through the
promise or callback on the others), never with a synchronous ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import math
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from corduroy2 import ConnectError, Status

from ..conftest import LOOP
from .conftest import BACKENDS, make_couch

DEAD = "http://127.0.0.1:1"

BAD_DB_NAMES = ["Bad", "1abc", "", "a" * 239, "db\n", "_bad", "with space", "caps/Sub", "ünï"]

NOT_FINITE = [math.nan, math.inf, -math.inf, [1.0, math.nan], {"deep": [{"x": math.inf}]}]
UNSERIALISABLE = [
    datetime.datetime(2020, 1, 2, 3, 4, 5),
    datetime.date(2020, 1, 2),
    object(),
    {1, 2},
    b"bytes",
    decimal.Decimal("1.5"),
    [1, object()],
]
NON_STR_KEYS: list[dict[Any, Any]] = [{1: "a"}, {None: 1}, {("t",): 1}, {1.5: 1}, {"ok": {2: "b"}}]


@pytest.fixture(params=BACKENDS)
def dead(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A ``Couch`` of each backend on a port where nothing listens; a refused connection is
    not retried, so a request that was sent fails within milliseconds."""
    couch = make_couch(request.param, DEAD, None, retry=False)
    yield couch
    closing = couch.close()
    if closing is not None and hasattr(closing, "asFuture"):
        LOOP.run_until_complete(closing.asFuture(LOOP))


class Calls:
    """Checks that a call raises at once, also with ``callback=``, and that no callback runs."""

    def __init__(self) -> None:
        self.called: list[Any] = []

    def callback(self, data: Any, status: Status) -> None:
        self.called.append((data, status))

    def raises(self, exc: type[Exception], method: Callable[..., Any], *args: Any, **kw: Any) -> None:
        with pytest.raises(exc):
            method(*args, **kw)
        with pytest.raises(exc):
            method(*args, callback=self.callback, **kw)

    async def assert_no_callback(self) -> None:
        await asyncio.sleep(0.02)  # a request to the dead port would have failed by now
        assert self.called == []


@pytest.fixture
def calls() -> Calls:
    return Calls()


async def test_dead_port_control(dead: Any) -> None:
    """The control for every test below: a call that does reach the network fails with
    ConnectError, and not at once on the asynchronous backends."""
    if dead.backend_name == "blocking":
        with pytest.raises(ConnectError):
            dead.info()
        return
    done: asyncio.Future[Status] = LOOP.create_future()
    assert dead.info(callback=lambda data, status: done.set_result(status)) is None
    status = await done
    assert not status.ok and status.error is ConnectError


async def test_invalid_db_names(dead: Any, calls: Calls) -> None:
    for name in BAD_DB_NAMES:
        calls.raises(ValueError, dead.create, name)
        calls.raises(ValueError, dead.delete, name)
        calls.raises(ValueError, dead.db, name)
        calls.raises(ValueError, dead.db, name, create_if_missing=True)
        with pytest.raises(ValueError):
            dead.database(name)
        with pytest.raises(ValueError):
            dead.database_class(dead, name)
        if name:
            with pytest.raises(ValueError):
                dead.database_class(f"{DEAD}/{quote(name, safe='')}")
    for not_a_name in (None, 5, b"bytes"):
        calls.raises(TypeError, dead.create, not_a_name)
        calls.raises(TypeError, dead.delete, not_a_name)
        with pytest.raises(TypeError):
            dead.database(not_a_name)
    await calls.assert_no_callback()
    # the limits are exact: these are valid and make no request
    for good in ("a" * 238, "a", "a0_$()+-/b", "_users", "_replicator"):
        assert dead.database(good).name == good


async def check_doc_rejected(dead: Any, calls: Calls, exc: type[Exception], doc: dict[str, Any]) -> None:
    db = dead.database("db")
    before = repr(doc)
    calls.raises(exc, db.save, doc)
    calls.raises(exc, db.save, doc, force=True)
    calls.raises(exc, db.save, [{"fine": 1}, doc])
    calls.raises(exc, db.save, [doc], merge=lambda local, server: local)
    assert repr(doc) == before, "the failed call changed the caller's document"


async def test_not_finite_numbers(dead: Any, calls: Calls) -> None:
    for value in NOT_FINITE:
        await check_doc_rejected(dead, calls, ValueError, {"v": value})
        await check_doc_rejected(dead, calls, ValueError, {"_id": "x", "_rev": "1-a", "v": value})
    await calls.assert_no_callback()


async def test_unserialisable_values(dead: Any, calls: Calls) -> None:
    for value in UNSERIALISABLE:
        await check_doc_rejected(dead, calls, TypeError, {"v": value})
        await check_doc_rejected(dead, calls, TypeError, {"_id": "x", "nested": {"v": value}})
    await calls.assert_no_callback()


async def test_non_str_keys(dead: Any, calls: Calls) -> None:
    for doc in NON_STR_KEYS:
        await check_doc_rejected(dead, calls, TypeError, dict(doc))
    await calls.assert_no_callback()


async def test_bad_doc_ids(dead: Any, calls: Calls) -> None:
    db = dead.database("db")
    calls.raises(ValueError, db.get, None)
    calls.raises(ValueError, db.get, "")
    calls.raises(TypeError, db.get, 5)
    calls.raises(ValueError, db.get, ["a", None])
    calls.raises(TypeError, db.get, ["a", 5])
    for doc in ({"_id": None, "_rev": "1-a"}, {"_rev": "1-a"}, {"_id": "", "_rev": "1-a"}):
        before = dict(doc)
        calls.raises(ValueError, db.delete, doc)
        assert doc == before
    calls.raises(TypeError, db.delete, {"_id": 5, "_rev": "1-a"})
    calls.raises(TypeError, db.save, {"_id": 5})
    calls.raises(ValueError, db.save, {"_id": ""})
    calls.raises(TypeError, db.save, [{"_id": "ok"}, {"_id": ["not", "a", "str"]}])
    await calls.assert_no_callback()


async def test_delete_without_rev(dead: Any, calls: Calls) -> None:
    db = dead.database("db")
    for doc in ({"_id": "x"}, {"_id": "x", "_rev": None}, {"_id": "x", "_rev": ""}):
        before = dict(doc)
        calls.raises(ValueError, db.delete, doc)
        assert doc == before
    for not_a_doc in ("x", 5, None, object()):
        calls.raises(TypeError, db.delete, not_a_doc)
    await calls.assert_no_callback()


async def test_save_non_dict(dead: Any, calls: Calls) -> None:
    db = dead.database("db")
    for value in ("a string", 42, None, object(), b"{}", {"a", "b"}):
        calls.raises(TypeError, db.save, value)
        calls.raises(TypeError, db.save, [value])
    good = {"keep": "me"}
    calls.raises(TypeError, db.save, [good, "not a doc"])
    calls.raises(TypeError, db.save, (good, object()))
    assert good == {"keep": "me"}  # no _id taken for it
    await calls.assert_no_callback()


async def test_copy_bad_arguments(dead: Any, calls: Calls) -> None:
    db = dead.database("db")
    calls.raises(TypeError, db.copy, object(), "dest")
    calls.raises(TypeError, db.copy, "src", object())
    calls.raises(TypeError, db.copy, None, "dest")
    calls.raises(TypeError, db.copy, "src", None)
    calls.raises(ValueError, db.copy, {"_rev": "1-a"}, "dest")
    calls.raises(ValueError, db.copy, "src", {"_rev": "1-a"})
    calls.raises(ValueError, db.copy, "", "dest")
    await calls.assert_no_callback()


async def test_uuids_count(dead: Any, calls: Calls) -> None:
    for count in (0, -1, 1.5, "3", None):
        calls.raises(ValueError, dead.uuids, count)
    await calls.assert_no_callback()


async def test_lone_surrogates(dead: Any, calls: Calls) -> None:
    # Not encodable as UTF-8: CouchDB could never store them.
    db = dead.database("db")
    doc = {"v": "bad \ud800 text"}
    calls.raises(TypeError, db.save, doc)
    assert doc == {"v": "bad \ud800 text"}
    calls.raises(ValueError, db.get, "id-\udfff")
    await calls.assert_no_callback()
