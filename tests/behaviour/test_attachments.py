"""Attachments on every backend and in every calling style, against the real server: uploads
from bytes, str, files and (async) iterators; whole, ranged, conditional and streamed
downloads; deletes; the doc's ``_rev`` and stub following; bad input refused before sending.

pouchdb-server ignores ``Range`` (200 and the whole body, where CouchDB 3 answers 206 or 416):
marked ``attachment_range_ignored``.
"""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import pytest

from corduroy2 import Conflict, NotFound, RangeNotSatisfiable

from ..conftest import Server
from .conftest import Client

DATA = bytes(range(256)) * 40  # 10,240 bytes, every byte value


def md5_digest(data: bytes) -> str:
    return "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()


async def test_put_get_delete(c: Client, db: Any, admin: Any) -> None:
    doc: dict[str, Any] = {"_id": "a/doc", "kind": "photo"}
    reply = await c.call(db.put_attachment, doc, "dir/p.bin", DATA, "application/octet-stream")
    assert reply["ok"] and doc["_rev"] == reply["rev"] and doc["_rev"].startswith("1-")
    assert doc["_attachments"]["dir/p.bin"] == {
        "content_type": "application/octet-stream", "stub": True, "revpos": 1,
        "length": len(DATA), "digest": md5_digest(DATA)}
    assert doc["kind"] == "photo"  # the doc's other fields are not sent, nor touched

    att = await c.call(db.get_attachment, "a/doc", "dir/p.bin")
    assert att.data == DATA and att.status == 200
    assert (att.content_type, att.length, att.digest) == (
        "application/octet-stream", len(DATA), md5_digest(DATA))
    assert att.etag
    assert await c.call(db.get_attachment, doc, "dir/p.bin", if_none_match=att.etag) is None
    info = await c.call(db.attachment_info, doc, "dir/p.bin")
    assert (info.data, info.length, info.etag) == (None, len(DATA), att.etag)

    # The stub kept in doc lets a later save keep the attachment.
    doc["kind"] = "picture"
    await c.call(db.save, doc)
    stored = admin.database(db.name).get("a/doc")
    assert stored["_attachments"]["dir/p.bin"]["length"] == len(DATA)

    old_rev = doc["_rev"]
    await c.call(db.delete_attachment, doc, "dir/p.bin")
    assert doc["_rev"] != old_rev and "_attachments" not in doc
    with pytest.raises(NotFound):
        await c.call(db.get_attachment, "a/doc", "dir/p.bin")
    with pytest.raises(Conflict):  # a stale rev
        await c.call(db.put_attachment, {"_id": "a/doc", "_rev": old_rev}, "x", b"x")


async def test_upload_sources(c: Client, db: Any, admin: Any, tmp_path: Any) -> None:
    """A str, a file (its Content-Length known), a generator (sent chunked) and, on an event
    loop, an async generator; each arrives whole and in order."""
    path = tmp_path / "file.bin"
    path.write_bytes(DATA * 30)  # 300 KiB: more than one piece of a file upload
    doc: dict[str, Any] = {"_id": "d"}
    await c.call(db.put_attachment, doc, "t.txt", "h\u00e9llo")
    with open(path, "rb") as f:
        f.seek(1000)  # read from where the file stands
        await c.call(db.put_attachment, doc, "f.bin", f)
    await c.call(db.put_attachment, doc, "g.bin", (DATA[i:i + 999] for i in range(0, 10240, 999)))
    if not c.blocking:
        await c.call(db.put_attachment, doc, "a.bin", agen(c, [b"ab", b"", b"cd"]))
    assert doc["_attachments"]["f.bin"]["length"] == len(DATA) * 30 - 1000
    assert "length" not in doc["_attachments"]["g.bin"]  # not known before it was sent

    stored = admin.database(db.name)
    assert stored.get_attachment("d", "t.txt").data == "h\u00e9llo".encode()
    assert stored.get_attachment("d", "t.txt").content_type.startswith("text/plain")
    assert stored.get_attachment("d", "f.bin").data == (DATA * 30)[1000:]
    assert stored.get_attachment("d", "g.bin").data == DATA
    if not c.blocking:
        assert stored.get_attachment("d", "a.bin").data == b"abcd"


def agen(c: Client, pieces: list[bytes]) -> Any:
    """An async generator of ``pieces`` that awaits between them the way the front door's
    framework awaits (Twisted: a Deferred; Tornado: asyncio)."""
    if c.backend.startswith("twisted"):
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        async def pieces_twisted() -> Any:
            for piece in pieces:
                await deferLater(reactor, 0, lambda: None)
                yield piece

        return pieces_twisted()

    import asyncio

    async def pieces_asyncio() -> Any:
        for piece in pieces:
            await asyncio.sleep(0)
            yield piece

    return pieces_asyncio()


async def test_range_and_on_data(c: Client, db: Any, server: Server) -> None:
    doc: dict[str, Any] = {"_id": "r"}
    await c.call(db.put_attachment, doc, "r.bin", DATA, "application/octet-stream")
    part = await c.call(db.get_attachment, "r", "r.bin", range=(10, 19))
    if server.deviates("attachment_range_ignored"):
        assert (part.status, part.data) == (200, DATA)
    else:
        assert (part.status, part.data, part.length) == (206, DATA[10:20], 10)
        assert part.content_range == f"bytes 10-19/{len(DATA)}"
        tail = await c.call(db.get_attachment, "r", "r.bin", range=(10000, None))
        assert tail.data == DATA[10000:]
        with pytest.raises(RangeNotSatisfiable):
            await c.call(db.get_attachment, "r", "r.bin", range=(len(DATA), None))

    chunks: list[bytes] = []
    att = await c.call(db.get_attachment, doc, "r.bin", on_data=chunks.append)
    assert att.data is None and b"".join(chunks) == DATA and att.length == len(DATA)


async def test_bad_input_is_refused_before_sending(c: Client, db: Any) -> None:
    doc = {"_id": "b", "_rev": "1-x", "_attachments": {"s.bin": {"length": 10, "stub": True}}}
    bad: list[tuple[type[Exception], Any, tuple[Any, ...], dict[str, Any]]] = [
        (ValueError, db.put_attachment, (doc, "", b"x"), {}),
        (ValueError, db.put_attachment, (doc, "_x", b"x"), {}),
        (ValueError, db.put_attachment, ({"a": 1}, "n", b"x"), {}),
        (TypeError, db.put_attachment, ("b", "n", b"x"), {}),
        (TypeError, db.put_attachment, (doc, "n", 42), {}),
        (ValueError, db.delete_attachment, ({"_id": "b"}, "n"), {}),
        (ValueError, db.get_attachment, ("b", "_n"), {}),
        (ValueError, db.get_attachment, ("b", "n"), {"range": (5, 2)}),
        (TypeError, db.get_attachment, ("b", "n"), {"range": "0-4"}),
        (ValueError, db.get_attachment, (doc, "s.bin"), {"range": (10, None)}),  # past its end
    ]
    for error, method, args, kwargs in bad:
        with pytest.raises(error):
            await c.call(method, *args, **kwargs)
    assert doc == {"_id": "b", "_rev": "1-x", "_attachments": {"s.bin": {"length": 10,
                                                                         "stub": True}}}
    if c.blocking:
        with pytest.raises(TypeError, match="async iterator"):
            await c.call(db.put_attachment, {"_id": "b"}, "n", agen(c, [b"x"]))


async def test_iter_attachment(couch: Any, dbname: str, admin: Any) -> None:
    """Chunks as they arrive, in bounded memory (``high_water`` chunks), to the end or closed
    early; ``fields`` has the metadata."""
    from .test_iterate import drain

    data = DATA * 100  # 1 MB
    admin.database(dbname).put_attachment({"_id": "i"}, "big.bin", data)
    db = couch.database(dbname)
    chunks, fields = await drain(couch, lambda: db.iter_attachment("i", "big.bin",
                                                                   high_water=2))
    assert b"".join(chunks) == data
    assert (fields["content_type"], fields["length"], fields["status"]) == (
        "application/octet-stream", len(data), 200)
    chunks, _ = await drain(couch, lambda: db.iter_attachment("i", "big.bin"), stop=1)
    assert len(chunks) == 1
    with pytest.raises(NotFound):
        await drain(couch, lambda: db.iter_attachment("i", "missing.bin"))
