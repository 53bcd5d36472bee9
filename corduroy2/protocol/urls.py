"""Path quoting and query encoding for CouchDB URLs."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit, urlunsplit, unquote

import orjson

__all__ = [
    "SYSTEM_DATABASES",
    "validate_db_name",
    "validate_doc_id",
    "db_path",
    "doc_path",
    "encode_query",
    "split_credentials",
    "Address",
    "address_and_target",
]

SYSTEM_DATABASES = frozenset({"_users", "_replicator", "_global_changes"})
_DB_NAME = re.compile(r"[a-z][a-z0-9_$()+/-]*")
_MAX_DB_NAME = 238


def validate_db_name(name: Any) -> str:
    """Return ``name`` if CouchDB 3 accepts it as a database name, else raise ``ValueError``.

    Checked on the client because some servers (pouchdb-server) accept invalid names silently.
    """
    if not isinstance(name, str):
        raise TypeError(f"database name must be a str, not {type(name).__name__}")
    if name in SYSTEM_DATABASES:
        return name
    if len(name) > _MAX_DB_NAME or not _DB_NAME.fullmatch(name):
        raise ValueError(
            f"invalid database name {name!r}: it must match ^[a-z][a-z0-9_$()+/-]*$ "
            f"(at most {_MAX_DB_NAME} characters) or be a system database"
        )
    return name


def validate_doc_id(doc_id: Any) -> str:
    """Return ``doc_id`` if it can name a document, else raise ``TypeError``/``ValueError``."""
    if doc_id is None:
        raise ValueError("document id is None")
    if not isinstance(doc_id, str):
        raise TypeError(f"document id must be a str, not {type(doc_id).__name__}")
    if not doc_id:
        raise ValueError("document id is empty")
    return doc_id


# The characters quote() never escapes: a name made only of these is its own quoted form.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _segment(text: str) -> str:
    # Most names need no quoting, and the check is several times cheaper than quote().
    if _UNRESERVED.fullmatch(text):
        return text
    # safe="" so that "/" becomes %2F: CouchDB splits paths on a literal slash.
    return quote(text, safe="")


@functools.lru_cache(maxsize=256)  # a handful of names, on every request
def db_path(name: str) -> str:
    """``/<db>`` with the name quoted (a ``/`` inside a db name must travel as ``%2F``)."""
    return "/" + _segment(name)


def doc_path(db: str, doc_id: str, *rest: str) -> str:
    """``/<db>/<id>[/<rest>...]``; ``_design/x`` and ``_local/x`` keep their slash."""
    if _UNRESERVED.fullmatch(doc_id):  # most ids: their own quoted form, and no slash in them
        quoted_id = doc_id
    else:
        prefix, sep, tail = doc_id.partition("/")
        if sep and prefix in ("_design", "_local") and tail:
            quoted_id = prefix + "/" + _segment(tail)
        else:
            quoted_id = quote(doc_id, safe="")
    path = db_path(db) + "/" + quoted_id
    for part in rest:
        path += "/" + _segment(part)
    return path


def _query_value(value: Any, json_keys: bool) -> str:
    if json_keys:
        return orjson.dumps(value).decode()
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return orjson.dumps(value).decode()
    # Lists, dicts and None mean JSON to CouchDB (e.g. open_revs=["1-a"]).
    return orjson.dumps(value).decode()


# Options whose value CouchDB parses as JSON even when it is a string. (Others are JSON only
# when they are lists/dicts: open_revs takes the bare word ``all`` or a JSON list.)
JSON_OPTIONS = frozenset(
    {
        "key",
        "keys",
        "startkey",
        "start_key",
        "endkey",
        "end_key",
    }
)


def encode_query(params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> str:
    """Encode query options: booleans as ``true``/``false``, ``None`` dropped (except for the
    JSON keys, where it is ``null``: ``key=None`` asks for the rows whose key is null), JSON
    where CouchDB expects JSON (``key``, ``startkey``...). Returns ``""`` or ``"?..."``.
    """
    if not params:
        return ""
    items = params.items() if isinstance(params, Mapping) else params
    pairs = []
    for name, value in items:
        json_value = name in JSON_OPTIONS
        if value is None and not json_value:
            continue  # an unset option; but key=None means the JSON key null
        pairs.append((name, _query_value(value, json_value)))
    if not pairs:
        return ""
    return "?" + urlencode(pairs, quote_via=quote)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """Return ``url`` without userinfo, and the ``(user, password)`` it carried, if any.

    Credentials are removed so that no URL kept by corduroy2 (and so no error message or repr)
    can contain them.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"server URL must start with http:// or https://, got {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("server URL has no host")
    creds = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        creds = (unquote(user), unquote(password))
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, netloc, path, "", "")), creds


class Address(NamedTuple):
    """The server a request URL names, for a transport that keeps its own connections (its
    pools' key)."""

    scheme: str
    host: str
    port: int
    netloc: str  # as the URL spells it: the Host header, and for messages


def address_and_target(url: str) -> tuple[Address, str]:
    """A request URL's server and its target (path and query). Our URLs are built from a base
    URL that urlsplit accepted and quoted paths and queries (no fragment, no whitespace), so
    the target is all that follows the server. ValueError for an invalid port."""
    slash = url.find("/", url.find("//") + 2)
    if slash < 0:
        return _address(url), "/"
    return _address(url[:slash]), url[slash:]


@functools.lru_cache(maxsize=32)
def _address(prefix: str) -> Address:
    """The server named by ``prefix``, a URL up to its path. Cached: a Couch talks to one
    server or a few (parsing it on every request: +18,600 instructions per blocking GET)."""
    parts = urlsplit(prefix)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Address(parts.scheme, parts.hostname or "", port, parts.netloc)
