"""``Document`` and ``ConflictResolution`` (the outcome of a bulk save)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Document", "ConflictResolution", "PendingDoc"]


class Document(dict[str, Any]):
    """A dict with attribute access: ``doc.title`` is ``doc["title"]``.

    Only the top level is wrapped; nested objects stay plain dicts, because wrapping every nested
    object of every row would cost more than decoding it.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def id(self) -> str | None:
        return self.get("_id")

    @property
    def rev(self) -> str | None:
        return self.get("_rev")

    def __repr__(self) -> str:
        body = {k: v for k, v in self.items() if k not in ("_id", "_rev")}
        preview = repr(body)
        if len(preview) > 60:
            preview = preview[:57] + "..."
        return f"<Document {self.get('_id')!r}@{self.get('_rev')} {preview}>"


@dataclass
class PendingDoc:
    """A document a bulk save did not write, with CouchDB's reason."""

    doc: dict[str, Any]
    error: str
    reason: str | None = None


class ConflictResolution:
    """Per-document outcome of ``db.save([docs])``; returned, never raised.

    ``resolved`` maps id -> the saved doc (its ``_rev`` updated in place); ``pending`` maps id ->
    :class:`PendingDoc` for every doc that was not written (``error`` is ``"conflict"``,
    ``"forbidden"``, ...). ``results`` is the server's per-doc list, in input order (with
    ``new_edits=False``, CouchDB's list of the refused docs only).

    Unlike corduroy 0.9 this is not an exception subclass: it is a result, so nothing can
    mistake it for a failure to raise.
    """

    def __init__(self, docs: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        self.results = results
        self.resolved: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, PendingDoc] = {}
        if len(results) == len(docs):
            pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]] = zip(docs, results)
        else:  # new_edits=false: CouchDB answers only for the docs it refused
            refused = {result.get("id"): result for result in results}
            pairs = ((doc, refused.get(doc.get("_id"), {})) for doc in docs)
        for doc, result in pairs:
            doc_id: str = result.get("id") or doc.get("_id") or ""
            if "error" in result:
                self.pending[doc_id] = PendingDoc(doc, result["error"], result.get("reason"))
            else:
                if "rev" in result:
                    doc["_rev"] = result["rev"]
                self.resolved[doc_id] = doc

    @property
    def ok(self) -> bool:
        return not self.pending

    def __repr__(self) -> str:
        if self.ok:
            return f"<Success: {len(self.resolved)} docs updated>"
        return f"<Conflicts: {', '.join(map(str, self.pending))}>"
