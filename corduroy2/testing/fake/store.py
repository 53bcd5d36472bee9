"""Databases, documents and their revision trees, in memory, with CouchDB 3's MVCC rules.

A document keeps every revision it has seen (a tree: each revision names its parent); its
*leaves* are the revisions nothing extends. The winner is the leaf that is not deleted with the
highest ``(generation, hash)``, or the highest deleted leaf when all are deleted; the other live
leaves are its ``_conflicts``. Revision ids are ``N-<md5>`` of the edit, so the same edit of the
same parent always gets the same id, as in CouchDB.

Nothing here is thread-safe on its own: :class:`~corduroy2.testing.fake.FakeCouch` holds one
lock around every use.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import NO_DB, Refusal, bad_request, conflict, not_found

__all__ = ["Attachment", "Revision", "Doc", "Database", "make_seq", "parse_seq"]

DB_NAME = re.compile(r"^[a-z][a-z0-9_$()+/-]*$")
SYSTEM_DBS = ("_users", "_replicator", "_global_changes")
SPECIAL_FIELDS = {"_id", "_rev", "_deleted", "_attachments", "_revisions", "_conflicts",
                  "_deleted_conflicts", "_local_seq", "_revs_info"}


@dataclass(frozen=True)
class Attachment:
    content_type: str
    data: bytes
    revpos: int

    @property
    def digest(self) -> str:
        return "md5-" + base64.b64encode(hashlib.md5(self.data).digest()).decode()

    def stub(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "revpos": self.revpos,
                "digest": self.digest, "length": len(self.data), "stub": True}

    def inline(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "revpos": self.revpos,
                "digest": self.digest, "data": base64.b64encode(self.data).decode()}


@dataclass
class Revision:
    rev: str
    parent: str | None
    deleted: bool
    #: None for an ancestor known only by id (``new_edits=false`` histories).
    body: dict[str, Any] | None
    attachments: dict[str, Attachment] = field(default_factory=dict)

    @property
    def generation(self) -> int:
        return int(self.rev.split("-", 1)[0])

    @property
    def order(self) -> tuple[bool, int, str]:
        """Sorts revisions the way CouchDB picks a winner."""
        return (not self.deleted, self.generation, self.rev.split("-", 1)[1])


@dataclass
class Doc:
    id: str
    revs: dict[str, Revision] = field(default_factory=dict)
    leaves: set[str] = field(default_factory=set)
    seq: int = 0

    @property
    def winner(self) -> Revision:
        return max((self.revs[r] for r in self.leaves), key=lambda r: r.order)

    @property
    def deleted(self) -> bool:
        return self.winner.deleted

    def conflicts(self) -> list[str]:
        """The live leaves that lost, highest first (``_conflicts``)."""
        winner = self.winner.rev
        live = [self.revs[r] for r in self.leaves if r != winner and not self.revs[r].deleted]
        return [r.rev for r in sorted(live, key=lambda r: r.order, reverse=True)]

    def deleted_conflicts(self) -> list[str]:
        winner = self.winner.rev
        dead = [self.revs[r] for r in self.leaves if r != winner and self.revs[r].deleted]
        return [r.rev for r in sorted(dead, key=lambda r: r.order, reverse=True)]

    def history(self, rev: str) -> list[str]:
        """``rev`` and its known ancestors, newest first."""
        out: list[str] = []
        current: str | None = rev
        while current is not None and current in self.revs:
            out.append(current)
            current = self.revs[current].parent
        return out

    def render(self, rev: Revision, *, conflicts: bool = False, revs: bool = False,
               attachments: bool = False, deleted_conflicts: bool = False,
               revs_info: bool = False, atts_since: list[str] | None = None) -> dict[str, Any]:
        """The JSON CouchDB answers for revision ``rev`` of this doc."""
        out: dict[str, Any] = {"_id": self.id, "_rev": rev.rev}
        if rev.deleted:
            out["_deleted"] = True
        out.update(rev.body or {})
        if rev.attachments:
            since = {int(r.split("-", 1)[0]) for r in atts_since or [] if "-" in r}
            newest = max(since, default=0)
            out["_attachments"] = {
                name: att.inline() if attachments or (atts_since and att.revpos > newest)
                else att.stub()
                for name, att in rev.attachments.items()}
        if conflicts and rev.rev == self.winner.rev and self.conflicts():
            out["_conflicts"] = self.conflicts()
        if deleted_conflicts and rev.rev == self.winner.rev and self.deleted_conflicts():
            out["_deleted_conflicts"] = self.deleted_conflicts()
        if revs:
            history = self.history(rev.rev)
            out["_revisions"] = {"start": rev.generation,
                                 "ids": [r.split("-", 1)[1] for r in history]}
        if revs_info:
            out["_revs_info"] = [
                {"rev": r, "status": "deleted" if self.revs[r].deleted else
                 ("available" if self.revs[r].body is not None else "missing")}
                for r in self.history(rev.rev)]
        return out


def make_seq(n: int, salt: str) -> str:
    """An opaque seq, shaped like CouchDB 3's (``"5-g1AAAA..."``), that still tells its number."""
    tail = base64.urlsafe_b64encode(hashlib.md5(f"{salt}:{n}".encode()).digest()[:12])
    return f"{n}-g1AAAA{tail.decode().rstrip('=')}"


def parse_seq(since: Any) -> int | None:
    """The number behind a seq a client sends back; None for ``"now"``. 400 when malformed."""
    if since == "now":
        return None
    if isinstance(since, int) and not isinstance(since, bool) and since >= 0:
        return since
    if isinstance(since, str):
        head = since.split("-", 1)[0]
        if head.isdigit():
            return int(head)
    raise bad_request("Malformed sequence supplied in 'since' parameter.")


def validate_db_name(name: str) -> str:
    if name in SYSTEM_DBS or (len(name) <= 238 and DB_NAME.match(name)):
        return name
    raise Refusal(400, "illegal_database_name",
                  f"Name: '{name}'. Only lowercase characters (a-z), digits (0-9), and any of "
                  "the characters _, $, (, ), +, -, and / are allowed. Must begin with a letter.")


def validate_doc_id(doc_id: Any) -> str:
    if not isinstance(doc_id, str):
        raise bad_request("Document id must be a string", "illegal_docid")
    if doc_id == "":
        raise bad_request("Document id must not be empty", "illegal_docid")
    if doc_id.startswith("_") and not doc_id.startswith(("_design/", "_local/")):
        raise bad_request("Only reserved document ids may start with underscore.",
                          "illegal_docid")
    return doc_id


def _rev_hash(deleted: bool, parent: str | None, body: dict[str, Any],
              attachments: dict[str, Attachment]) -> str:
    atts = sorted((name, att.digest) for name, att in attachments.items())
    edit = orjson.dumps([deleted, parent, body, atts],
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.md5(edit).hexdigest()


def _split_rev(rev: Any) -> tuple[int, str]:
    if isinstance(rev, str):
        head, _, tail = rev.partition("-")
        if head.isdigit() and tail:
            return int(head), tail
    raise bad_request("Invalid rev format")


class Database:
    """One database: documents, local documents, security and the update sequence."""

    def __init__(self, name: str, options: dict[str, Any], on_change: Callable[[], None]):
        self.name = name
        self.options = options
        self.docs: dict[str, Doc] = {}
        self.local: dict[str, dict[str, Any]] = {}
        self.security: dict[str, Any] = {}
        self.seq = 0
        #: doc id by the seq of its latest change; dict order is seq order
        self.by_seq: dict[int, str] = {}
        self.created = 0.0
        self.revs_limit = 1000
        self.purged_infos_limit = 1000
        self.purge_seq = 0
        #: (ddoc id, ddoc rev, view) -> (db seq when built, rows)
        self.view_cache: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self._on_change = on_change
        self._salt = hashlib.md5(name.encode()).hexdigest()[:8]

    # -- seqs -------------------------------------------------------------------------------------

    def seq_string(self, n: int) -> str:
        return make_seq(n, self._salt)

    @property
    def update_seq(self) -> str:
        return self.seq_string(self.seq)

    def changed_since(self, since: int) -> Iterator[Doc]:
        """Docs changed after seq ``since``, in seq order."""
        for seq, doc_id in list(self.by_seq.items()):
            if seq > since:
                yield self.docs[doc_id]

    def _bump(self, doc: Doc) -> None:
        if doc.seq:
            self.by_seq.pop(doc.seq, None)
        self.seq += 1
        doc.seq = self.seq
        self.by_seq[self.seq] = doc.id

    @property
    def partitioned(self) -> bool:
        return bool(self.options.get("partitioned"))

    def check_id(self, value: Any) -> str:
        """A valid doc id for this database: in a partitioned one, ``partition:id``."""
        doc_id = validate_doc_id(value)
        if self.partitioned and not doc_id.startswith(("_design/", "_local/")):
            partition, sep, rest = doc_id.partition(":")
            if not sep or not partition or not rest:
                raise bad_request("Doc id must be of form partition:id", "illegal_docid")
            if partition.startswith("_"):
                raise bad_request("Only reserved document ids may start with underscore.",
                                  "illegal_docid")
        return doc_id

    # -- reading ----------------------------------------------------------------------------------

    def doc(self, doc_id: str) -> Doc:
        """The doc, deleted or not; 404 when it never existed."""
        found = self.docs.get(doc_id)
        if found is None:
            raise not_found("missing")
        return found

    def live(self, doc_id: str) -> Doc:
        """The doc unless deleted; 404 ``missing``/``deleted``."""
        found = self.doc(doc_id)
        if found.deleted:
            raise not_found("deleted")
        return found

    def revision(self, doc_id: str, rev: str | None) -> tuple[Doc, Revision]:
        if rev is None:
            doc = self.live(doc_id)
            return doc, doc.winner
        doc = self.doc(doc_id)
        found = doc.revs.get(rev)
        if found is None or found.body is None:
            raise not_found("missing")
        return doc, found

    def doc_count(self) -> int:
        return sum(1 for d in self.docs.values() if not d.deleted)

    def info(self) -> dict[str, Any]:
        live = self.doc_count()
        size = sum(len(orjson.dumps(d.winner.body)) for d in self.docs.values())
        q = int(self.options.get("q", 2))
        n = int(self.options.get("n", 1))
        return {
            "instance_start_time": "0",
            "db_name": self.name,
            "purge_seq": self.seq_string(self.purge_seq),
            "update_seq": self.update_seq,
            "sizes": {"file": size + 8192, "external": size, "active": size},
            "props": {"partitioned": True} if self.options.get("partitioned") else {},
            "doc_del_count": len(self.docs) - live,
            "doc_count": live,
            "disk_format_version": 8,
            "compact_running": False,
            "cluster": {"q": q, "n": n, "w": 1, "r": 1},
        }

    # -- writing ----------------------------------------------------------------------------------

    def save(self, body: dict[str, Any], rev: str | None = None) -> str:
        """An interactive edit (``new_edits=true``): checks MVCC, returns the new rev."""
        if not isinstance(body, dict):
            raise bad_request("Document must be a JSON object", "bad_request")
        doc_id = self.check_id(body.get("_id"))
        rev = body.get("_rev", rev) if rev is None else rev
        if rev is not None and body.get("_rev") not in (None, rev):
            raise bad_request("Document rev from request body and query string have "
                              "different values")
        deleted = body.get("_deleted") is True
        doc = self.docs.get(doc_id)
        parent: Revision | None = None
        if rev is not None:
            _split_rev(rev)
            if doc is None or rev not in doc.leaves:
                raise conflict()
            parent = doc.revs[rev]
        elif doc is not None:
            if not doc.deleted:
                raise conflict()
            parent = doc.winner  # recreating a deleted doc extends its deleted branch
        elif deleted:
            raise conflict()
        generation = parent.generation + 1 if parent else 1
        attachments = self._attachments(body.get("_attachments"), parent, generation)
        fields = _fields(body)
        new_rev = f"{generation}-{_rev_hash(deleted, parent.rev if parent else None, fields, attachments)}"
        if doc is None:
            doc = self.docs[doc_id] = Doc(doc_id)
        revision = Revision(new_rev, parent.rev if parent else None, deleted, fields, attachments)
        if new_rev in doc.revs:  # the same edit again: nothing changes, CouchDB answers a conflict
            raise conflict()
        doc.revs[new_rev] = revision
        if parent is not None:
            doc.leaves.discard(parent.rev)
        doc.leaves.add(new_rev)
        self._bump(doc)
        self._on_change()
        return new_rev

    def replicate(self, body: dict[str, Any]) -> None:
        """A replicated edit (``new_edits=false``): stored as given, conflicts and all."""
        if not isinstance(body, dict):
            raise bad_request("Document must be a JSON object")
        doc_id = self.check_id(body.get("_id"))
        generation, rev_hash = _split_rev(body.get("_rev"))
        rev = f"{generation}-{rev_hash}"
        history = [rev]
        revisions = body.get("_revisions")
        if isinstance(revisions, dict) and isinstance(revisions.get("ids"), list):
            start = revisions.get("start", generation)
            history = [f"{start - i}-{h}" for i, h in enumerate(revisions["ids"])]
            if history[0] != rev:
                raise bad_request("_rev and _revisions do not match")
        doc = self.docs.get(doc_id)
        if doc is not None and rev in doc.revs and doc.revs[rev].body is not None:
            return  # already known
        parent = doc.revs.get(history[1]) if doc is not None and len(history) > 1 else None
        attachments = self._attachments(body.get("_attachments"), parent, generation)
        self.graft(doc_id, history, Revision(rev, None, body.get("_deleted") is True,
                                             _fields(body), attachments))

    def graft(self, doc_id: str, history: list[str], revision: Revision) -> bool:
        """Add ``revision`` (``history[0]``; its ancestors newest first follow) to ``doc_id``'s
        tree, as a replicator writes it; False when it was known already."""
        doc = self.docs.get(doc_id)
        if doc is None:
            doc = self.docs[doc_id] = Doc(doc_id)
        rev = history[0]
        if rev in doc.revs and doc.revs[rev].body is not None:
            return False
        chain = history[1:]
        for i, old in enumerate(chain):
            if old not in doc.revs:
                doc.revs[old] = Revision(old, chain[i + 1] if i + 1 < len(chain) else None,
                                         False, None)
        doc.revs[rev] = Revision(rev, chain[0] if chain else None, revision.deleted,
                                 revision.body, dict(revision.attachments))
        for old in chain:
            doc.leaves.discard(old)
        if not any(r.parent == rev for r in doc.revs.values()):
            doc.leaves.add(rev)
        self._bump(doc)
        self._on_change()
        return True

    def purge(self, doc_id: str, revs: list[str]) -> list[str]:
        """Forget the leaves ``revs`` of ``doc_id`` (and the branches only they held); the doc
        goes entirely when no leaf is left. Returns the revs purged."""
        doc = self.docs.get(doc_id)
        if doc is None:
            return []
        purged = [r for r in dict.fromkeys(revs) if r in doc.leaves]
        for rev in purged:
            doc.leaves.discard(rev)
            current: str | None = rev
            # drop the branch up to where another branch joins it
            while current in doc.revs and not any(
                    r.parent == current for r in doc.revs.values()):
                parent = doc.revs.pop(current).parent
                current = parent
        if purged:
            self.purge_seq += 1
            self.view_cache.clear()
            if not doc.leaves:
                del self.docs[doc_id]
                self.by_seq.pop(doc.seq, None)
            else:
                self._bump(doc)
            self._on_change()
        return purged

    def _attachments(self, given: Any, parent: Revision | None,
                     generation: int) -> dict[str, Attachment]:
        if given is None:
            return {}
        if not isinstance(given, dict):
            raise bad_request("Invalid attachments", "doc_validation")
        out: dict[str, Attachment] = {}
        for name, spec in given.items():
            if not isinstance(spec, dict):
                raise bad_request("Invalid attachment", "doc_validation")
            if spec.get("stub"):
                old = parent.attachments.get(name) if parent else None
                if old is None:
                    raise Refusal(412, "missing_stub",
                                  f"Invalid attachment stub in {name} for {generation - 1}")
                out[name] = old
                continue
            try:
                data = base64.b64decode(spec.get("data", ""), validate=True)
            except (ValueError, TypeError):
                raise bad_request("Invalid attachment data for " + name) from None
            out[name] = Attachment(spec.get("content_type", "application/octet-stream"),
                                   data, generation)
        return out

    def put_attachment(self, doc_id: str, rev: str | None, name: str, content_type: str,
                       data: bytes) -> str:
        doc = self.docs.get(doc_id)
        if doc is None or doc.deleted:
            if rev is not None:
                raise conflict()
            body: dict[str, Any] = {"_id": doc_id}
            if doc is not None:
                body["_rev"] = doc.winner.rev
            parent_atts: dict[str, Attachment] = {}
        else:
            current = doc.revs.get(rev) if rev else None
            if current is None or rev not in doc.leaves:
                raise conflict()
            body = {"_id": doc_id, "_rev": rev, **(current.body or {})}
            parent_atts = current.attachments
        body["_attachments"] = {n: {"stub": True} for n in parent_atts if n != name}
        body["_attachments"][name] = {"content_type": content_type,
                                      "data": base64.b64encode(data).decode()}
        return self.save(body)

    def delete_attachment(self, doc_id: str, rev: str | None, name: str) -> str:
        doc = self.live(doc_id)
        current = doc.revs.get(rev) if rev else None
        if current is None or rev not in doc.leaves:
            raise conflict()
        if name not in current.attachments:
            raise not_found("Document is missing attachment")
        body = {"_id": doc_id, "_rev": rev, **(current.body or {}),
                "_attachments": {n: {"stub": True} for n in current.attachments if n != name}}
        return self.save(body)

    # -- local docs -------------------------------------------------------------------------------

    def put_local(self, doc_id: str, body: dict[str, Any], rev: str | None) -> str:
        current = self.local.get(doc_id)
        rev = body.get("_rev", rev)
        if current is not None and rev != current["_rev"]:
            raise conflict()
        if current is None and rev not in (None, "0-0"):
            raise conflict()
        number = int(current["_rev"].split("-")[1]) + 1 if current else 1
        new_rev = f"0-{number}"
        if body.get("_deleted") is True:
            self.local.pop(doc_id, None)
        else:
            self.local[doc_id] = {**_fields(body), "_id": doc_id, "_rev": new_rev}
        return new_rev

    def get_local(self, doc_id: str) -> dict[str, Any]:
        found = self.local.get(doc_id)
        if found is None:
            raise not_found("missing")
        return {"_id": found["_id"], "_rev": found["_rev"],
                **{k: v for k, v in found.items() if k not in ("_id", "_rev")}}


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The stored body: the user's fields, with CouchDB's rule on ``_``-prefixed ones."""
    out = {}
    for key, value in body.items():
        if key.startswith("_replication_"):  # kept: the replicator's own fields (couch_doc)
            out[key] = value
        elif key.startswith("_"):
            if key not in SPECIAL_FIELDS:
                raise bad_request(f"Bad special document member: {key}", "doc_validation")
            continue
        out[key] = value
    return out


def db_missing() -> Refusal:
    return not_found(NO_DB)
