"""The fake server's state: databases, users, sessions, the function table."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import Refusal, bad_request
from .node import Node
from .replicator import Replicator
from .store import Database, db_missing, validate_db_name
from .views import Functions

if TYPE_CHECKING:
    from .http import FakeServer

__all__ = ["FakeCouch", "User"]

VERSION = "3.4.3"
#: Where ``_db_updates`` reads from, as on a CouchDB set up with ``finish_cluster``.
GLOBAL_CHANGES = "_global_changes"
USER_PREFIX = "org.couchdb.user:"
# CouchDB 3.4 hashes with 600000 PBKDF2 rounds; a test double needs none of that cost.
_ITERATIONS = 10


@dataclass(frozen=True)
class User:
    """Who a request is from: a name (None when anonymous) and roles."""

    name: str | None = None
    roles: tuple[str, ...] = ()
    via: str | None = None  # "default" (basic), "cookie", None

    @property
    def is_admin(self) -> bool:
        return "_admin" in self.roles


ANONYMOUS = User()


@dataclass
class _Session:
    secret: bytes = field(default_factory=lambda: os.urandom(16))


class FakeCouch:
    """An in-memory CouchDB 3 (see the package docstring); :meth:`serve` puts it on loopback.

    ``admin`` is the server admin's ``(name, password)`` (``None``: every request is an admin,
    CouchDB 1's "admin party"). ``functions`` maps design-doc function sources to the Python
    callables that stand for them (:mod:`.views`). Everything here is thread-safe.
    """

    def __init__(self, admin: tuple[str, str] | None = ("admin", "secret"), *,
                 functions: Mapping[str, Callable[..., Any]] | None = None,
                 session_timeout: int = 600) -> None:
        self.admin = admin
        self.functions = Functions(functions)
        self.session_timeout = session_timeout
        self.uuid = uuid.uuid4().hex
        self.lock = threading.RLock()
        self.dbs: dict[str, Database] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._session = _Session()
        self._uuid_prefix = os.urandom(13).hex()
        self._uuid_counter = 0
        self.node = Node(self.uuid, session_timeout)
        #: the (host, port) pairs it is served on: replication URLs naming them are this fake
        self.addresses: set[tuple[str, int]] = set()
        for name in (GLOBAL_CHANGES, "_users", "_replicator"):
            self.create_db(name)
        self.replicator = Replicator(self)

    def __repr__(self) -> str:
        return f"<FakeCouch {len(self.dbs)} databases>"

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> FakeServer:
        """Start serving on ``host:port`` (a free port by default) in a background thread;
        returns the running :class:`FakeServer` (a context manager that stops it)."""
        from .http import FakeServer

        server = FakeServer(self, host, port)
        server.start()
        return server

    # -- change notification ----------------------------------------------------------------------

    def add_listener(self, fn: Callable[[str], None]) -> None:
        """``fn(db_name)`` after each change to a database (and its deletion)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[str], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify(self, name: str) -> None:
        for fn in list(self._listeners):
            fn(name)

    def _changed(self, name: str) -> None:
        self._record(name, "updated")
        self._notify(name)

    def _record(self, name: str, kind: str) -> None:
        """One event of ``_db_updates``: CouchDB keeps a doc ``<kind>:<db>`` in
        ``_global_changes``, so each kind of event of a database shows once, at its latest."""
        log = self.dbs.get(GLOBAL_CHANGES)
        if log is None or name == GLOBAL_CHANGES:
            return
        with self.lock:
            doc_id = f"{kind}:{name}"
            current = log.docs.get(doc_id)
            log.save({"_id": doc_id, "_rev": current.winner.rev} if current else
                     {"_id": doc_id})

    # -- databases --------------------------------------------------------------------------------

    def create_db(self, name: str, **options: Any) -> Database:
        """Create database ``name`` (412 ``file_exists`` if it exists)."""
        with self.lock:
            validate_db_name(name)
            if name in self.dbs:
                raise Refusal(412, "file_exists",
                              "The database could not be created, the file already exists.")
            db = Database(name, options, lambda: self._changed(name))
            db.created = time.time()
            db.security = {"members": {"roles": ["_admin"]}, "admins": {"roles": ["_admin"]}}
            self.dbs[name] = db
            self._record(name, "created")
            return db

    def delete_db(self, name: str) -> None:
        with self.lock:
            validate_db_name(name)
            if self.dbs.pop(name, None) is None:
                raise db_missing()
            self._record(name, "deleted")
        self._notify(name)

    def db(self, name: str) -> Database:
        """Database ``name``; 404 ``not_found`` when it does not exist."""
        found = self.dbs.get(name)
        if found is None:
            raise db_missing()
        return found

    # -- direct use, for arranging a test --------------------------------------------------------

    def save(self, db_name: str, doc: dict[str, Any]) -> str:
        """Save ``doc`` in ``db_name`` (created if missing) as a client would; returns the rev
        and sets ``doc["_rev"]``."""
        with self.lock:
            db = self.dbs.get(db_name) or self.create_db(db_name)
            rev = db.save(self.prepare(db_name, dict(doc)))
            doc["_rev"] = rev
            return rev

    def get(self, db_name: str, doc_id: str) -> dict[str, Any]:
        """The current body of ``doc_id``, as ``GET /db/doc`` answers it."""
        with self.lock:
            doc = self.db(db_name).live(doc_id)
            return doc.render(doc.winner)

    # -- uuids ------------------------------------------------------------------------------------

    def uuids(self, count: int) -> list[str]:
        """CouchDB's default ``sequential`` algorithm: a random prefix and a rising suffix."""
        out = []
        with self.lock:
            for _ in range(count):
                self._uuid_counter += 1 + int.from_bytes(os.urandom(1), "big")
                if self._uuid_counter >= 16 ** 6:
                    self._uuid_prefix, self._uuid_counter = os.urandom(13).hex(), 0
                out.append(self._uuid_prefix + f"{self._uuid_counter:06x}")
        return out

    # -- users and sessions -----------------------------------------------------------------------

    def prepare(self, db_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """What a save stores: a ``_users`` doc's ``password`` becomes a salted hash."""
        if db_name != "_users" or not isinstance(body, dict):
            return body
        doc_id = body.get("_id", "")
        if isinstance(doc_id, str) and doc_id.startswith(USER_PREFIX) and not body.get("_deleted"):
            if body.get("type") != "user" or body.get("name") != doc_id[len(USER_PREFIX):]:
                raise Refusal(403, "forbidden",
                              "doc.type must be user and doc.name must match the doc id")
            password = body.pop("password", None)
            if password is not None:
                salt = os.urandom(16).hex()
                body.update(password_scheme="pbkdf2", pbkdf2_prf="sha256",
                            iterations=_ITERATIONS, salt=salt,
                            derived_key=_derive(password, salt))
        return body

    def authenticate(self, name: str, password: str) -> User | None:
        """The user these credentials name, or None when they are wrong."""
        if self.admin is not None and name == self.admin[0]:
            ok = hmac.compare_digest(password.encode(), self.admin[1].encode())
            return User(name, ("_admin",)) if ok else None
        with self.lock:
            record = self._user_record(name)
        if record is None or "derived_key" not in record:
            return None
        if not hmac.compare_digest(_derive(password, record["salt"]), record["derived_key"]):
            return None
        return User(name, tuple(record.get("roles", [])))

    def _user_record(self, name: str) -> dict[str, Any] | None:
        users = self.dbs.get("_users")
        doc = users.docs.get(USER_PREFIX + name) if users else None
        if doc is None or doc.deleted:
            return None
        return doc.winner.body

    def _user_salt(self, name: str) -> str:
        if self.admin is not None and name == self.admin[0]:
            return "admin"
        with self.lock:
            record = self._user_record(name)
        return str(record.get("salt", "")) if record else ""

    def make_cookie(self, name: str, now: float | None = None) -> str:
        stamp = f"{int(now if now is not None else time.time()):X}"
        return _b64(f"{name}:{stamp}:".encode() + self._mac(name, stamp))

    def _mac(self, name: str, stamp: str) -> bytes:
        key = self._session.secret + self._user_salt(name).encode()
        return hmac.new(key, f"{name}:{stamp}".encode(), hashlib.sha256).digest()

    def check_cookie(self, cookie: str) -> User | None:
        """The user of a valid, unexpired ``AuthSession`` cookie."""
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            name_b, stamp_b, mac = raw.split(b":", 2)
            name, stamp = name_b.decode(), stamp_b.decode()
            issued = int(stamp, 16)
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(name, stamp)):
            return None
        if time.time() > issued + self.session_timeout:
            return None
        if self.admin is not None and name == self.admin[0]:
            return User(name, ("_admin",), "cookie")
        with self.lock:
            record = self._user_record(name)
        if record is None:
            return None
        return User(name, tuple(record.get("roles", [])), "cookie")

    def check_name(self, name: Any) -> str:
        if not isinstance(name, str) or not name:
            raise bad_request("Name must be a non-empty string")
        return name


def _derive(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), _ITERATIONS).hex()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
