"""Which server, as whom: ``--url`` or ``COUCHDB_URL``, credentials from the URL, the
environment (``COUCHDB_USER``/``COUCHDB_PASSWORD``) or ``~/.netrc``, in that order.

Credentials are taken out of the URL at once (``split_credentials``) and travel only inside the
``Couch``'s auth provider: nothing the command prints is built from a URL that holds them.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from ..blocking import Couch, Database

__all__ = ["DEFAULT_URL", "Server", "credentials", "connect"]

DEFAULT_URL = "http://127.0.0.1:5984"

Credentials = tuple[str, str] | None


class Server:
    """The server the command talks to, and how to reach one of its databases (or another
    server's, named by a full URL)."""

    def __init__(self, couch: Couch, auth: Credentials) -> None:
        self.couch = couch
        #: The passwords in use, which must never be printed (the error path scrubs them, as a
        #: last line of defence).
        self.secrets: list[str] = [auth[1]] if auth else []

    def database(self, name_or_url: str) -> Database:
        """``name`` on this server, or the database a full ``http(s)://`` URL names (its
        credentials from that URL, the environment or ``~/.netrc``)."""
        if "://" not in name_or_url:
            return Database(self.couch, name_or_url)
        url, auth = split_credentials(name_or_url)
        base, _, name = url.rstrip("/").rpartition("/")
        auth = auth or credentials(base, os.environ)
        if auth:
            self.secrets.append(auth[1])
        return Database(Couch(base, auth=auth), unquote(name))


def split_credentials(url: str) -> tuple[str, Credentials]:
    """``url`` without its ``user:password@``, and those (percent-decoded) if it had them."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the server URL must look like http(s)://host[:port]")
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, (unquote(user), unquote(password))


def credentials(url: str, env: Mapping[str, str]) -> Credentials:
    """``(user, password)`` for ``url`` (which carries none) from the environment, else from
    ``~/.netrc`` (the entry of the URL's host, or its ``default``), else None."""
    user, password = env.get("COUCHDB_USER"), env.get("COUCHDB_PASSWORD")
    if user and password is not None:
        return user, password
    host = urlsplit(url).hostname or ""
    try:
        entry = netrc.netrc().authenticators(host)
    except FileNotFoundError:
        return None
    except netrc.NetrcParseError as exc:
        # Its message names the file and line, never the secrets in it.
        raise ValueError(f"~/.netrc: {exc.msg} (line {exc.lineno})") from None
    if entry is None:
        return None
    login, _, secret = entry
    return (login, secret or "") if login else None


def connect(url: str | None, env: Mapping[str, str]) -> Server:
    """The server named by ``--url`` (else ``COUCHDB_URL``, else the local default)."""
    base, auth = split_credentials(url or env.get("COUCHDB_URL") or DEFAULT_URL)
    if auth is None:
        auth = credentials(base, env)
    return Server(Couch(base, auth=auth), auth)
