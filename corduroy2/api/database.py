"""``Database``: documents in one database. Written once for every backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

from ..errors import Conflict, DecodeError, NotFound
from ..protocol import requests
from ..protocol.requests import encode_json
from ..protocol.urls import validate_db_name, validate_doc_id
from . import attachments
from .calls import Op, Stream
from .changes import ChangesSink, feed_limit, feed_result, longpoll_timeout, with_heartbeat
from . import replies
from .documents import ConflictResolution, Document
from .partition import Partition
from .views import (
    FindResult,
    Keep,
    OnRow,
    OnRows,
    ViewResult,
    build_find,
    build_view,
    keep_raw,
    run_rows,
    wrap_row,
)

if TYPE_CHECKING:
    from .couch import Callback, Couch

__all__ = ["Database", "Merge"]

Merge = Callable[[dict[str, Any], dict[str, Any]], "dict[str, Any] | None"]

# Fetched at once when a doc without _id is saved (corduroy's default).
UUID_BATCH = 50


def _writable(doc: Any) -> dict[str, Any]:
    """Check a document about to be saved; raise now, in every calling style."""
    if not isinstance(doc, dict):
        raise TypeError(f"a document to save must be a dict, not {type(doc).__name__}")
    encode_json(doc)
    if doc.get("_id") is not None:
        validate_doc_id(doc["_id"])
    return doc


def _as_doc(value: Any, what: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"{what} must be a dict (or have .items()), not {type(value).__name__}")


class Database:
    """One database of a :class:`~corduroy2.api.couch.Couch`. Creating it sends nothing.

    Usually made by ``couch.database(name)``; ``Database("http://host:5984/name", auth=...)``
    also works and makes its own ``Couch``.
    """

    couch_class: ClassVar[type[Couch]]

    def __init__(
        self, couch: Couch | str, name: str | None = None, *, auth: tuple[str, str] | None = None
    ) -> None:
        if isinstance(couch, str):
            base, _, last = couch.rstrip("/").rpartition("/")
            if name is None:
                name = unquote(last)
            else:
                base = couch
            couch = self.couch_class(base, auth=auth)
        if name is None:
            raise TypeError("Database(couch, name) needs a name")
        self.couch = couch
        self.name = validate_db_name(name)
        # What every call needs, from the couch's public plumbing: what requests are built
        # from, and what runs them.
        self._origin = couch.origin
        self._runner = couch.runner
        self._uuids: list[str] = []

    def __repr__(self) -> str:
        return f"<Database {self.name!r} on {self.couch.url}>"

    # -- helpers -----------------------------------------------------------------------------

    def with_options(self, **options: Any) -> Database:
        """This database through ``couch.with_options(**options)`` (other ``auth``, ``retry``,
        ``timeout``...), sharing the same transport: the per-call override."""
        return type(self)(self.couch.with_options(**options), self.name)

    def _new_id(self) -> Op[str]:
        """Take an id from the per-database uuid cache, refilling it from ``_uuids``."""
        if not self._uuids:
            reply = yield requests.uuids(self._origin, UUID_BATCH)
            self._uuids.extend(reversed(reply["uuids"]))
        return self._uuids.pop()

    # -- database ----------------------------------------------------------------------------

    def info(self, ddoc: str | None = None, *, callback: Callback = None) -> Any:
        """The database's info object (``doc_count``, ``update_seq``, ``sizes``...), or with
        ``ddoc`` that design document's ``_info`` (its view index state)."""
        if ddoc is None:
            return self._runner.call(requests.db_info(self._origin, self.name), callback)
        return self._runner.call(requests.design_info(self._origin, self.name, ddoc), callback)

    def exists(self, *, callback: Callback = None) -> Any:
        """True if the database exists (``HEAD``)."""
        request = requests.db_head(self._origin, self.name)

        def op() -> Op[bool]:
            try:
                yield request
            except NotFound:
                return False
            return True

        return self._runner.run(op(), callback)

    # -- documents ---------------------------------------------------------------------------

    def get(self, id_or_ids: str | list[str], *, callback: Callback = None, **opts: Any) -> Any:
        """One document by id (``NotFound`` if missing), or a list for a list of ids (``None``
        at the place of each missing or deleted one).

        ``opts`` go to the query: ``rev``, ``revs``, ``revs_info``, ``conflicts``,
        ``open_revs`` (``"all"`` or a list; the result is then CouchDB's list of
        ``{"ok": doc}`` / ``{"missing": rev}``), ``attachments``, ``local_seq``...
        """
        if isinstance(id_or_ids, (list, tuple)):
            request = requests.get_docs(self._origin, self.name, list(id_or_ids), opts)
            return self._runner.call(request, callback, _docs_from_rows)
        request = requests.get_doc(self._origin, self.name, id_or_ids, opts)
        post = _open_revs if "open_revs" in opts else Document
        return self._runner.call(request, callback, post)

    # -- attachments (api/attachments.py) ----------------------------------------------------

    def put_attachment(self, doc: dict[str, Any], name: str, data: Any,
                       content_type: str | None = None, *, callback: Callback = None) -> Any:
        """Store ``data`` as attachment ``name`` of ``doc`` (a dict with ``_id``, and ``_rev``
        unless the document is new); returns the server's ``{"ok", "id", "rev"}`` and writes
        the new ``_rev`` and the attachment's stub into ``doc``.

        ``data``: bytes, a str (sent as UTF-8), a file object opened for reading (read from
        where it stands, a piece at a time), or an iterator or async iterator of bytes
        (streamed: sent as it is produced, never held whole; blocking mode takes no async
        iterator). A body of known length (bytes, a seekable binary file) is sent with its
        Content-Length, any other chunked. ``content_type`` defaults to a guess from
        ``name``. A streamed body is sent once: no retry once a piece of it has gone.
        """
        return attachments.put(self._runner, self._origin, self.name, doc, name, data,
                               content_type, self.couch.backend.async_bodies, callback)

    def get_attachment(self, doc_or_id: Any, name: str, rev: str | None = None,
                       range: tuple[int, int | None] | None = None,
                       if_none_match: str | None = None, on_data: Any = None, *,
                       callback: Callback = None) -> Any:
        """Attachment ``name`` of a document (an id or a doc) as an
        :class:`~corduroy2.api.attachments.Attachment` (``.data``, ``.content_type``,
        ``.length``, ``.digest``, ``.etag``); ``NotFound`` if missing.

        ``range=(start, end)`` (both inclusive, ``end`` None for the rest) asks for those
        bytes: status 206 (``RangeNotSatisfiable`` if the server finds it outside the
        attachment; ``ValueError`` at once if ``doc_or_id`` is a doc whose stub shows it).
        ``if_none_match=etag``: None when the attachment still has that ETag (304).
        ``on_data=fn``: each chunk goes to ``fn`` as it arrives and ``.data`` is None.
        """
        request = attachments.download_request(self._origin, self.name, doc_or_id, name, rev,
                                               range, if_none_match, on_data is not None)
        return attachments.get(self._runner, request, on_data, callback)

    def iter_attachment(self, doc_or_id: Any, name: str, *, rev: str | None = None,
                        range: tuple[int, int | None] | None = None,
                        if_none_match: str | None = None, high_water: int = 16) -> Any:
        """Iterate an attachment's chunks as they arrive (``async for``; a plain ``for`` in
        blocking mode): at most about ``high_water`` chunks wait in memory, the transfer
        paused meanwhile. ``fields`` holds the metadata (``content_type``, ``length``,
        ``etag``, ``status``...) once the first chunk is in (or the iteration has ended);
        ``close()`` aborts the download. Options as :meth:`get_attachment`'s."""
        request = attachments.download_request(self._origin, self.name, doc_or_id, name, rev,
                                               range, if_none_match, True)
        return self.couch.front_door.iterate(self.couch.sender, request, keep_raw,
                                              high_water, attachments.AttachmentSink)

    def attachment_info(self, doc_or_id: Any, name: str, *, rev: str | None = None,
                        if_none_match: str | None = None, callback: Callback = None) -> Any:
        """An attachment's metadata without its data (``HEAD``): an
        :class:`~corduroy2.api.attachments.Attachment` whose ``data`` is None; None when
        ``if_none_match`` is still its ETag; ``NotFound`` if missing."""
        request = attachments.download_request(self._origin, self.name, doc_or_id, name, rev,
                                               None, if_none_match, False, method="HEAD")
        return attachments.info(self._runner, request, callback)

    def delete_attachment(self, doc: dict[str, Any], name: str, *,
                          callback: Callback = None) -> Any:
        """Delete attachment ``name`` of ``doc`` (a dict with ``_id`` and ``_rev``); returns
        the server's reply, and writes the new ``_rev`` into ``doc`` (the stub goes)."""
        return attachments.delete(self._runner, self._origin, self.name, doc, name, callback)

    def save(
        self,
        doc_or_docs: Any,
        *,
        merge: Merge | None = None,
        force: bool = False,
        callback: Callback = None,
        **opts: Any,
    ) -> Any:
        """Create or update one document or a list of them.

        One document: ``PUT``; ``_id`` (from the uuid cache when missing) and ``_rev`` are
        written back into the caller's dict, which is returned. A stale ``_rev`` raises
        ``Conflict`` unless ``force=True`` (overwrite the server's revision) or
        ``merge=fn(local, server)`` (write what ``fn`` returns; None gives up).

        A list: ``_bulk_docs``; returns a :class:`ConflictResolution` listing what was written
        and what is pending; conflicts are reported there, not raised.
        """
        if isinstance(doc_or_docs, (list, tuple)):
            docs = [_writable(d) for d in doc_or_docs]
            return self._runner.run(self._save_many(docs, merge, force, opts), callback)
        doc = _writable(doc_or_docs)
        return self._runner.run(self._save_one(doc, merge, force, opts), callback)

    def _save_one(self, doc: dict[str, Any], merge: Merge | None, force: bool, opts: dict[str, Any]) -> Op[Any]:
        if doc.get("_id") is None:
            doc["_id"] = yield from self._new_id()
        while True:
            try:
                reply = yield requests.put_doc(self._origin, self.name, doc, opts)
            except Conflict as conflict:
                if not (force or merge):
                    raise
                try:
                    server = yield requests.get_doc(self._origin, self.name, doc["_id"])
                except NotFound:
                    # Deleted meanwhile: the local doc is written anew, as the bulk path does.
                    doc.pop("_rev", None)
                    continue
                if force:
                    doc["_rev"] = server["_rev"]
                    continue
                assert merge is not None
                merged = merge(doc, Document(server))
                if merged is None:
                    raise conflict
                _merge_into(doc, merged, server)
                continue
            if "rev" in reply:  # absent for batch=ok on CouchDB 3
                doc["_rev"] = reply["rev"]
            return doc

    def _save_many(
        self,
        originals: list[dict[str, Any]],
        merge: Merge | None,
        force: bool,
        opts: dict[str, Any],
    ) -> Op[ConflictResolution]:
        for doc in originals:
            if doc.get("_id") is None and not doc.get("_deleted"):
                doc["_id"] = yield from self._new_id()
        results = yield requests.bulk_docs(self._origin, self.name, originals, opts)
        outcome = ConflictResolution(originals, results)
        if (force or merge) and outcome.pending:
            outcome = yield from self._resolve(outcome, merge, force, opts)
        return outcome

    def _resolve(
        self, outcome: ConflictResolution, merge: Merge | None, force: bool, opts: dict[str, Any]
    ) -> Op[ConflictResolution]:
        """Fetch the server's versions of the conflicted docs and write them again."""
        conflicted = {i: p for i, p in outcome.pending.items() if p.error == "conflict"}
        if not conflicted:
            return outcome
        reply = yield requests.get_docs(self._origin, self.name, list(conflicted))
        retry = []
        for row in reply["rows"]:
            server = row.get("doc")
            pending = conflicted[row["key"]]
            local = pending.doc
            if server is None:
                local.pop("_rev", None)
            elif force:
                local["_rev"] = server["_rev"]
            else:
                assert merge is not None
                merged = merge(local, Document(server))
                if merged is None:
                    continue
                _merge_into(local, merged, server)
            retry.append(local)
        if retry:
            results = yield requests.bulk_docs(self._origin, self.name, retry, opts)
            second = ConflictResolution(retry, results)
            for doc_id in second.resolved:
                outcome.pending.pop(doc_id, None)
            outcome.resolved.update(second.resolved)
            outcome.pending.update(second.pending)
        return outcome

    # -- views, _all_docs, _find -----------------------------------------------------------

    def view(self, name: str, *, on_row: OnRow = None, on_rows: OnRows = None,
             freeze_gc: bool = False, callback: Callback = None, **opts: Any) -> Any:
        """Query view ``"ddoc/view"`` (or ``"_all_docs"``). Returns a
        :class:`~corduroy2.api.views.ViewResult`.

        Options are CouchDB's (``key``, ``keys``, ``startkey``/``start_key``, ``endkey``,
        ``startkey_docid``, ``limit``, ``skip``, ``descending``, ``include_docs``,
        ``inclusive_end``, ``reduce``, ``group``, ``group_level``, ``stable``, ``update``,
        ``update_seq``, ``sorted``, ``conflicts``, ``attachments``...); keys are JSON-encoded
        and ``keys`` is sent by POST. Rows are parsed as they arrive: with ``on_row=fn`` each
        row is handed to ``fn`` at once (``on_rows=fn``: a list per received chunk) and none is
        kept, so memory stays flat whatever the number of rows. ``freeze_gc=True`` spares a
        large buffered result most of the cyclic collector's work (see
        :class:`~corduroy2.api.views.Keep` for what that costs).
        """
        request = requests.view(self._origin, self.name, name, opts)
        return run_rows(self._runner, request, wrap_row, build_view, on_row, on_rows, freeze_gc, callback)

    def all_docs(self, *, on_row: OnRow = None, on_rows: OnRows = None,
                 freeze_gc: bool = False, callback: Callback = None, **opts: Any) -> Any:
        """``_all_docs``, with the options and streaming of :meth:`view`."""
        return self.view("_all_docs", on_row=on_row, on_rows=on_rows, freeze_gc=freeze_gc,
                         callback=callback, **opts)

    def find(self, selector: dict[str, Any], *, on_row: OnRow = None, on_rows: OnRows = None,
             callback: Callback = None, **opts: Any) -> Any:
        """Mango query. ``opts``: ``fields``, ``sort``, ``limit``, ``skip``, ``use_index``,
        ``bookmark``, ``execution_stats``, ``r``, ``conflicts``, ``update``, ``stable``.
        Returns a :class:`~corduroy2.api.views.FindResult` (docs, ``bookmark``, ``warning``);
        ``on_row``/``on_rows`` stream the docs as in :meth:`view`."""
        request = requests.find(self._origin, self.name, selector, opts)
        return run_rows(self._runner, request, Document, build_find, on_row, on_rows, False, callback)

    def iter_view(self, name: str, *, high_water: int = 1000, **opts: Any) -> Any:
        """Iterate a view's rows as they arrive (``async for``; a plain ``for`` in blocking
        mode). At most about ``high_water`` rows wait in memory: the transport is paused while
        the reader is behind."""
        request = requests.view(self._origin, self.name, name, opts)
        return self.couch.front_door.iterate(self.couch.sender, request, wrap_row, high_water)

    def iter_all_docs(self, *, high_water: int = 1000, **opts: Any) -> Any:
        """:meth:`iter_view` over ``_all_docs``."""
        return self.iter_view("_all_docs", high_water=high_water, **opts)

    def iter_find(self, selector: dict[str, Any], *, high_water: int = 1000,
                  **opts: Any) -> Any:
        """Iterate the docs of a Mango query as they arrive (see :meth:`iter_view`)."""
        request = requests.find(self._origin, self.name, selector, opts)
        return self.couch.front_door.iterate(self.couch.sender, request, Document, high_water)

    def pages(self, name: str, page_size: int = 100, **opts: Any) -> Any:
        """Page through a view (or ``"_all_docs"``) by key, never with ``skip``: each page asks
        for ``page_size + 1`` rows and the extra row's key and id start the next page. An
        iterator of :class:`~corduroy2.api.views.ViewResult` pages (``async for``; ``for`` in
        blocking mode) that fetches a page only when it is asked for. Not for grouped reduce
        queries (their rows have no id to break ties)."""
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be a positive int, got {page_size!r}")
        if "keys" in opts or "skip" in opts:
            raise ValueError("pages() pages by key: 'keys' and 'skip' cannot be used")
        requests.view_path(self.name, name)  # check the name now
        limit = opts.pop("limit", None)
        by_docid = name != "_all_docs"

        def fetch(state: dict[str, Any]) -> Op[ViewResult]:
            if state.get("done"):
                raise StopAsyncIteration
            want = page_size if limit is None else min(page_size, limit - state.get("seen", 0))
            query = {**opts, **state.get("next", {}), "limit": want + 1}
            request = requests.view(self._origin, self.name, name, query)
            result: ViewResult = yield Stream(request, Keep(wrap_row, build_view))
            rows = result.rows
            assert isinstance(rows, list)
            if len(rows) > want:
                last = rows.pop()  # the extra row is dropped from the page itself
                following = {"startkey": last.key}
                if by_docid:
                    following["startkey_docid"] = last.id
                if following == state.get("next"):
                    # The server ignored startkey_docid (keys repeat across the page): going on
                    # would return this page forever.
                    raise DecodeError(f"paging {name!r} made no progress at key {last.key!r}: "
                                      "does the server honour startkey_docid?")
                state["next"] = following
            else:
                state["done"] = True
            state["seen"] = state.get("seen", 0) + len(rows)
            if limit is not None and state["seen"] >= limit:
                state["done"] = True
            if not rows:
                raise StopAsyncIteration
            return result

        return self.couch.front_door.pages(self._runner, fetch)

    def find_pages(self, selector: dict[str, Any], page_size: int = 100, **opts: Any) -> Any:
        """Page through a Mango query by ``bookmark``; an iterator of
        :class:`~corduroy2.api.views.FindResult` pages, fetched when asked for. Ends at the
        first page shorter than ``page_size`` (or without a bookmark)."""
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be a positive int, got {page_size!r}")
        requests.find(self._origin, self.name, selector, opts)  # check the arguments now

        limit = opts.pop("limit", None)

        def fetch(state: dict[str, Any]) -> Op[FindResult]:
            if state.get("done"):
                raise StopAsyncIteration
            seen = state.get("seen", 0)
            want = page_size if limit is None else min(page_size, limit - seen)
            query = {**opts, "limit": want, "bookmark": state.get("bookmark")}
            request = requests.find(self._origin, self.name, selector, query)
            result: FindResult = yield Stream(request, Keep(Document, build_find))
            state["seen"] = seen + len(result.docs)
            if len(result.docs) < want or not result.bookmark or (
                    limit is not None and state["seen"] >= limit):
                state["done"] = True
            state["bookmark"] = result.bookmark
            if not result.docs:
                raise StopAsyncIteration
            return result

        return self.couch.front_door.pages(self._runner, fetch)

    # -- changes ------------------------------------------------------------------------------

    def changes(self, *, callback: Any = None, latency: float = 0.0, max_batch: int = 200,
                on_error: Callable[[BaseException], Any] | None = None, **opts: Any) -> Any:
        """The ``_changes`` feed.

        ``feed="normal"`` (default) or ``"longpoll"``: returns ``{"results": [...],
        "last_seq": ..., "pending": ...}`` in the usual calling styles. Options are CouchDB's:
        ``since`` (a seq exactly as the server sent it, or ``"now"``), ``limit``, ``timeout``
        and ``heartbeat`` (ms), ``include_docs``, ``conflicts``, ``style="all_docs"``,
        ``descending``, ``filter`` (``"ddoc/name"`` plus its query parameters, ``"_view"``
        with ``view=``, ``"_design"``), ``doc_ids=[...]`` and ``selector={...}`` (sent by POST,
        filters implied), ``seq_interval``.

        ``feed="continuous"`` or ``"eventsource"`` with ``callback=fn``: corduroy's feed. It
        starts at once and returns a :class:`~corduroy2.api.changes.ChangesFeed` (the one
        callback-style call that returns something); ``fn(seq, changes)`` receives the changes
        that arrived within ``latency`` seconds, at most ``max_batch`` at a time (a burst is
        handed over as soon as that many are in: memory stays bounded). Without a callback use
        :meth:`iter_changes` or :meth:`follow`.
        """
        request = requests.changes(self._origin, self.name, with_heartbeat(opts))
        feed = opts.get("feed", "normal")
        if feed in ("continuous", "eventsource"):
            if callback is None:
                raise TypeError(
                    f"feed={feed!r} needs callback=fn(seq, changes); or use iter_changes() "
                    "to iterate, or follow() for a feed that reconnects"
                )
            return self.couch.front_door.feed(self, request, feed, callback, latency,
                                              max_batch, opts.get("since"), on_error,
                                              feed_limit(opts))
        if feed == "longpoll" and request.timeout is None:
            request = replace(request, timeout=longpoll_timeout(opts))
        return self._runner.stream(Stream(request, Keep(keep_raw, feed_result)), callback)

    def iter_changes(self, *, high_water: int = 1000, **opts: Any) -> Any:
        """Iterate a continuous (or eventsource) feed's changes as they arrive: ``async for``
        (a plain ``for`` in blocking mode), in bounded memory. The iteration ends when the
        server ends the feed (``limit``/``timeout``); ``fields`` then holds ``last_seq``."""
        opts.setdefault("feed", "continuous")
        feed = opts["feed"]
        if feed not in ("continuous", "eventsource"):
            raise ValueError("iter_changes() reads a continuous or eventsource feed")
        request = requests.changes(self._origin, self.name, with_heartbeat(opts))
        cluster = self.couch.sender.nodes is not None  # a feed that may resume elsewhere
        return self.couch.front_door.iterate(
            self.couch.sender, request, keep_raw, high_water,
            lambda req, consumer, done: ChangesSink(req, consumer, done, feed,
                                                    limit=feed_limit(opts), remember=cluster),
        )

    def follow(self, handler: Callable[[dict[str, Any]], Any], **kwargs: Any) -> Any:
        """Follow the changes feed for as long as the service runs: reconnects with backoff,
        resumes from the last delivered seq, detects stalls, optionally checkpoints in a
        ``_local`` doc. See :class:`~corduroy2.api.follower.ChangesFollower` for the options
        (``since``, ``checkpoint``, ``heartbeat``, ``on_error``, feed filters...).

        Async front doors return the running follower (``await follower.stop()``); in blocking
        mode call its ``run()``, which returns after ``stop()``."""
        return self.couch.front_door.follower(self, handler, **kwargs)

    # -- Mango indexes ------------------------------------------------------------------------

    def create_index(self, fields: list[Any], *, ddoc: str | None = None, name: str | None = None,
                     type: str = "json", partial_filter_selector: dict[str, Any] | None = None,
                     callback: Callback = None, **opts: Any) -> Any:
        """Create a Mango index on ``fields`` (``["a", {"b": "desc"}]``); returns CouchDB's
        ``{"result": "created"|"exists", "id", "name"}``."""
        request = requests.create_index(self._origin, self.name, fields, ddoc, name, type,
                                        partial_filter_selector, opts)
        return self._runner.call(request, callback)

    def indexes(self, *, callback: Callback = None) -> Any:
        """The database's Mango indexes (a list, ``_all_docs``'s special index included)."""
        request = requests.indexes(self._origin, self.name)
        return self._runner.call(request, callback, lambda reply: reply["indexes"])

    def delete_index(self, ddoc: str, name: str, *, type: str = "json",
                     callback: Callback = None) -> Any:
        """Delete index ``name`` of design doc ``ddoc`` (with or without ``_design/``)."""
        request = requests.delete_index(self._origin, self.name, ddoc, name, type)
        return self._runner.call(request, callback)

    def explain(self, selector: dict[str, Any], *, callback: Callback = None, **opts: Any) -> Any:
        """How CouchDB would run a Mango query (which index, which range)."""
        request = requests.explain(self._origin, self.name, selector, opts)
        return self._runner.call(request, callback)

    # -- more documents -----------------------------------------------------------------------

    def delete(self, doc: Any, *, callback: Callback = None) -> Any:
        """Delete a document given as a dict with ``_id`` and ``_rev``; returns the server's
        reply ``{"ok", "id", "rev"}``. ``ValueError`` when the id or rev is missing (CouchDB
        would answer 409; some servers would delete whatever revision is current)."""
        doc = _as_doc(doc, "document")
        request = requests.delete_doc(self._origin, self.name, doc.get("_id"), doc.get("_rev"))
        return self._runner.call(request, callback)

    def copy(self, source: Any, dest: Any, *, callback: Callback = None) -> Any:
        """Copy document ``source`` (an id or a doc) to ``dest`` (an id, or a doc whose
        ``_rev`` allows overwriting an existing one). Returns the new revision, or None when
        the server does not report it. ``Conflict`` if ``dest`` exists and no rev is given."""
        src_id: Any
        dest_id: Any
        if isinstance(source, str):
            src_id, src_rev = source, None
        else:
            src = _as_doc(source, "copy source")
            src_id, src_rev = src.get("_id"), src.get("_rev")
        if isinstance(dest, str):
            dest_id, dest_rev = dest, None
        else:
            dst = _as_doc(dest, "copy destination")
            dest_id, dest_rev = dst.get("_id"), dst.get("_rev")
        request = requests.copy_doc(self._origin, self.name, src_id, src_rev, dest_id, dest_rev)
        return self._runner.call(request, callback, lambda reply: reply.get("rev"))

    # -- replication --------------------------------------------------------------------------

    def push(self, target: Any, *, callback: Callback = None, **opts: Any) -> Any:
        """Replicate this database to ``target`` (a Database, a database name on the same
        server, a URL or CouchDB's endpoint dict): :meth:`Couch.replicate` with this database
        as the source; ``opts`` as there (``continuous``, ``create_target``, ``doc_ids``...)."""
        return self.couch.replicate(self, target, callback=callback, **opts)

    def pull(self, source: Any, *, callback: Callback = None, **opts: Any) -> Any:
        """Replicate ``source`` into this database: :meth:`Couch.replicate` with this database
        as the target."""
        return self.couch.replicate(source, self, callback=callback, **opts)

    # -- revisions, maintenance, design functions, partitions --------------------------------
    # (The reply handling of these endpoints is in api/replies.py, partitions in
    # api/partition.py.)

    def head(self, doc_id: str, *, callback: Callback = None) -> Any:
        """The current rev of document ``doc_id`` (from ``HEAD``'s ETag, no body), or None when
        it does not exist or is deleted."""
        request = requests.doc_head(self._origin, self.name, doc_id)
        return self._runner.run(replies.current_rev(request), callback)

    def revisions(self, doc_id: str, *, rev: str | None = None, callback: Callback = None
                  ) -> Any:
        """The revs of document ``doc_id``'s history, newest first (of revision ``rev``, or of
        the current one). As long as the database's ``revs_limit`` keeps them."""
        request = requests.revisions(self._origin, self.name, doc_id, rev)
        return self._runner.call(request, callback, replies.rev_list)

    def bulk_get(self, docs: list[Any], *, revs: bool = False, attachments: bool = False,
                 callback: Callback = None, **opts: Any) -> Any:
        """Several documents (or revisions) in one request, ``_bulk_get``: ``docs`` are ids or
        ``{"id": ..., "rev": ...}``. Returns one ``{"id", "docs": [...]}`` per item, each
        entry ``{"ok": Document}`` or ``{"error": {...}}``; nothing is raised per document."""
        query = {"revs": revs or None, "attachments": attachments or None, **opts}
        request = requests.bulk_get(self._origin, self.name, docs, query)
        return self._runner.call(request, callback, replies.bulk_get_results)

    def revs_diff(self, revs: Mapping[str, list[str]], *, callback: Callback = None) -> Any:
        """Which of ``{id: [rev, ...]}`` the database lacks: ``{id: {"missing": [...],
        "possible_ancestors": [...]}}`` for the ids with something missing."""
        return self._runner.call(requests.revs_diff(self._origin, self.name, revs), callback)

    def missing_revs(self, revs: Mapping[str, list[str]], *, callback: Callback = None) -> Any:
        """Which of ``{id: [rev, ...]}`` the database lacks: ``{id: [rev, ...]}``."""
        return self._runner.call(requests.missing_revs(self._origin, self.name, revs), callback,
                                 lambda reply: reply["missing_revs"])

    def purge(self, revs: Mapping[str, list[str]], *, callback: Callback = None) -> Any:
        """Remove ``{id: [rev, ...]}`` for good (no tombstone is left, nothing replicates it);
        returns the server's ``{"purge_seq", "purged": {id: [rev, ...]}}``."""
        return self._runner.call(requests.purge(self._origin, self.name, revs), callback)

    def security(self, security: Mapping[str, Any] | None = None, *,
                 callback: Callback = None) -> Any:
        """The database's security object (``{"admins": {"names", "roles"}, "members":
        ...}``), or with ``security`` replace it (returns ``{"ok": true}``)."""
        if security is None:
            return self._runner.call(requests.get_security(self._origin, self.name), callback)
        request = requests.put_security(self._origin, self.name, security)
        return self._runner.call(request, callback)

    def compact(self, ddoc: str | None = None, *, callback: Callback = None) -> Any:
        """Start compacting the database, or with ``ddoc`` that design document's view
        indexes. CouchDB answers at once (202) and compacts in the background."""
        return self._runner.call(requests.compact(self._origin, self.name, ddoc), callback)

    def cleanup(self, *, callback: Callback = None) -> Any:
        """Remove view index files no design document uses any more (``_view_cleanup``)."""
        return self._runner.call(requests.view_cleanup(self._origin, self.name), callback)

    def revs_limit(self, n: int | None = None, *, callback: Callback = None) -> Any:
        """How many revisions of a document's history the database keeps (an int), or with
        ``n`` set it (returns ``{"ok": true}``)."""
        request = requests.db_setting(self._origin, self.name, "_revs_limit", n)
        return self._runner.call(request, callback)

    def purged_infos_limit(self, n: int | None = None, *, callback: Callback = None) -> Any:
        """How many purges the database remembers (an int), or with ``n`` set it (returns
        ``{"ok": true}``)."""
        request = requests.db_setting(self._origin, self.name, "_purged_infos_limit", n)
        return self._runner.call(request, callback)

    def shards(self, doc_id: str | None = None, *, callback: Callback = None) -> Any:
        """The shard map ``{range: [node, ...]}``, or with ``doc_id`` the shard holding that
        document (``{"range", "nodes"}``)."""
        request = requests.shards(self._origin, self.name, doc_id)
        return self._runner.call(request, callback,
                                 (lambda reply: reply["shards"]) if doc_id is None else None)

    def sync_shards(self, *, callback: Callback = None) -> Any:
        """Ask the cluster to bring every replica of every shard in line (``_sync_shards``)."""
        return self._runner.call(requests.sync_shards(self._origin, self.name), callback)

    def local_docs(self, *, on_row: OnRow = None, on_rows: OnRows = None,
                   callback: Callback = None, **opts: Any) -> Any:
        """The ``_local`` documents (``_local_docs``), with the options and streaming of
        :meth:`all_docs`. They are not replicated, and have no ``_changes`` entries."""
        request = requests.local_docs(self._origin, self.name, opts)
        return run_rows(self._runner, request, wrap_row, build_view, on_row, on_rows, False, callback)

    def design_docs(self, *, on_row: OnRow = None, on_rows: OnRows = None,
                    callback: Callback = None, **opts: Any) -> Any:
        """The design documents (``_design_docs``), with the options and streaming of
        :meth:`all_docs`."""
        request = requests.design_docs(self._origin, self.name, opts)
        return run_rows(self._runner, request, wrap_row, build_view, on_row, on_rows, False, callback)

    def iter_local_docs(self, *, high_water: int = 1000, **opts: Any) -> Any:
        """:meth:`iter_view` over ``_local_docs``."""
        request = requests.local_docs(self._origin, self.name, opts)
        return self.couch.front_door.iterate(self.couch.sender, request, wrap_row, high_water)

    def iter_design_docs(self, *, high_water: int = 1000, **opts: Any) -> Any:
        """:meth:`iter_view` over ``_design_docs``."""
        request = requests.design_docs(self._origin, self.name, opts)
        return self.couch.front_door.iterate(self.couch.sender, request, wrap_row, high_water)

    def view_queries(self, name: str, queries: list[dict[str, Any]], *,
                     callback: Callback = None) -> Any:
        """Several queries of view ``"ddoc/view"`` (or ``"_all_docs"``) in one request; one
        :class:`~corduroy2.api.views.ViewResult` per query, in order."""
        request = requests.view_queries(self._origin, self.name, name, queries)
        return self._runner.call(request, callback, replies.view_results)

    def show(self, name: str, id: str | None = None, *, callback: Callback = None,
             **opts: Any) -> Any:
        """Call show function ``"ddoc/show"`` on document ``id`` (or on none); ``opts`` go to
        the query (``req.query``). Returns the
        :class:`~corduroy2.protocol.responses.Response` (``.body`` bytes, ``.headers``,
        ``.json()``): a show function answers whatever it likes."""
        request = requests.show(self._origin, self.name, name, id, opts)
        return self._runner.run(replies.checked_response(request), callback)

    def update(self, name: str, id: str | None = None, body: Any = None, *,
               content_type: str | None = None, callback: Callback = None, **opts: Any) -> Any:
        """Call update handler ``"ddoc/handler"``: on document ``id`` (``PUT``), or without
        one (``POST``). ``body``: bytes or str as they are, anything else as JSON
        (``content_type`` overrides the type). Returns the
        :class:`~corduroy2.protocol.responses.Response`; CouchDB's ``X-Couch-Id`` and
        ``X-Couch-Update-NewRev`` headers say what was written. Never retried."""
        request = requests.update(self._origin, self.name, name, id, body, content_type, opts)
        return self._runner.run(replies.checked_response(request), callback)

    def partition(self, name: str) -> Partition:
        """Partition ``name`` of this (partitioned) database; no request is made."""
        return Partition(self, name)

    # Keep `list` the last method of the class: below it, `list[...]` in an annotation would
    # name this method, not the builtin (mypy: "Function ... is not valid as a type").
    def list(self, name: str, view: str, *, callback: Callback = None, **opts: Any) -> Any:
        """Call list function ``"ddoc/list"`` over ``view`` (a view of the same design
        document, or ``"other/view"``); ``opts`` are the view's options (``keys`` by POST).
        Returns the :class:`~corduroy2.protocol.responses.Response`."""
        request = requests.list_view(self._origin, self.name, name, view, opts)
        return self._runner.run(replies.checked_response(request), callback)


def _merge_into(doc: dict[str, Any], merged: dict[str, Any], server: dict[str, Any]) -> None:
    """Make the caller's ``doc`` the merge result, on top of the server's revision. The id is
    kept even when ``merge`` built a new dict without it."""
    if merged is not doc:
        doc_id = doc["_id"]
        doc.clear()
        doc.update(merged)
        doc["_id"] = doc_id
    doc["_rev"] = server["_rev"]


def _docs_from_rows(reply: dict[str, Any]) -> list[Document | None]:
    docs: list[Document | None] = []
    for row in reply["rows"]:
        doc = row.get("doc")
        docs.append(Document(doc) if doc is not None and "error" not in row else None)
    return docs


def _open_revs(reply: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"ok": Document(r["ok"])} if "ok" in r else r for r in reply]
