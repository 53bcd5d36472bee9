"""``Partition``: one partition of a partitioned database (``db.partition("p1")``).

Its queries are the database's own, scoped to ``/db/_partition/<name>/...`` by the server:
``all_docs``, ``view``, ``find``, ``explain``, their ``iter_*`` forms, and ``info``. Rows arrive
exactly as they do database-wide (buffered, ``on_row``/``on_rows``, or iterated with
back-pressure), through the same consumers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import requests
from .documents import Document
from .views import OnRow, OnRows, build_find, build_view, run_rows, wrap_row

if TYPE_CHECKING:
    from .couch import Callback
    from .database import Database

__all__ = ["Partition"]


class Partition:
    """Partition ``name`` of ``db``. Creating it sends nothing; a bad name (empty, with ``:``,
    starting with ``_``) raises ``ValueError`` at once."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = requests.validate_partition(name)
        couch = db.couch
        # What every call needs, from the database's couch: what requests are built from, what
        # runs them, and how this front door iterates.
        self._origin = couch.origin
        self._runner = couch.runner
        self._sender = couch.sender
        self._front_door = couch.front_door

    def __repr__(self) -> str:
        return f"<Partition {self.name!r} of {self.db.name!r}>"

    def info(self, *, callback: Callback = None) -> Any:
        """The partition's info: ``doc_count``, ``doc_del_count``, ``sizes``."""
        request = requests.partition_info(self._origin, self.db.name, self.name)
        return self._runner.call(request, callback)

    def view(self, name: str, *, on_row: OnRow = None, on_rows: OnRows = None,
             freeze_gc: bool = False, callback: Callback = None, **opts: Any) -> Any:
        """The partition's rows of view ``"ddoc/view"`` (a partitioned design document), with
        the options and streaming of :meth:`Database.view <corduroy2.api.database.Database.view>`."""
        request = requests.partition_view(self._origin, self.db.name, self.name, name, opts)
        return run_rows(self._runner, request, wrap_row, build_view, on_row, on_rows, freeze_gc,
                        callback)

    def all_docs(self, *, on_row: OnRow = None, on_rows: OnRows = None,
                 freeze_gc: bool = False, callback: Callback = None, **opts: Any) -> Any:
        """The partition's ``_all_docs``, as :meth:`view`."""
        return self.view("_all_docs", on_row=on_row, on_rows=on_rows, freeze_gc=freeze_gc,
                         callback=callback, **opts)

    def find(self, selector: dict[str, Any], *, on_row: OnRow = None, on_rows: OnRows = None,
             callback: Callback = None, **opts: Any) -> Any:
        """A Mango query within the partition (a :class:`~corduroy2.api.views.FindResult`)."""
        request = requests.partition_find(self._origin, self.db.name, self.name, selector, opts)
        return run_rows(self._runner, request, Document, build_find, on_row, on_rows, False,
                        callback)

    def explain(self, selector: dict[str, Any], *, callback: Callback = None,
                **opts: Any) -> Any:
        """How CouchDB would run a Mango query within the partition."""
        request = requests.partition_explain(self._origin, self.db.name, self.name, selector,
                                             opts)
        return self._runner.call(request, callback)

    def iter_view(self, name: str, *, high_water: int = 1000, **opts: Any) -> Any:
        """Iterate the partition's rows of a view as they arrive, in bounded memory (see
        :meth:`Database.iter_view <corduroy2.api.database.Database.iter_view>`)."""
        request = requests.partition_view(self._origin, self.db.name, self.name, name, opts)
        return self._front_door.iterate(self._sender, request, wrap_row, high_water)

    def iter_all_docs(self, *, high_water: int = 1000, **opts: Any) -> Any:
        """:meth:`iter_view` over the partition's ``_all_docs``."""
        return self.iter_view("_all_docs", high_water=high_water, **opts)

    def iter_find(self, selector: dict[str, Any], *, high_water: int = 1000,
                  **opts: Any) -> Any:
        """Iterate the docs of a Mango query within the partition as they arrive."""
        request = requests.partition_find(self._origin, self.db.name, self.name, selector, opts)
        return self._front_door.iterate(self._sender, request, Document, high_water)

