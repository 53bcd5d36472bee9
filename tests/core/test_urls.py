"""Tables for corduroy2.protocol.urls: names, paths, queries, credentials. No IO."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest

from corduroy2.protocol.urls import (
    SYSTEM_DATABASES,
    db_path,
    doc_path,
    encode_query,
    split_credentials,
    validate_db_name,
    validate_doc_id,
)

# -- database names -----------------------------------------------------------------------------

VALID_NAMES = [
    "a",
    "mydb",
    "db1",
    "a_b",
    "a$b",
    "a(b)",
    "a+b",
    "a-b",
    "a/b",
    "z0123456789_$()+-/",
    "a" * 238,
    "a" + "b" * 237,
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_db_names_are_returned(name: str) -> None:
    assert validate_db_name(name) == name


@pytest.mark.parametrize("name", sorted(SYSTEM_DATABASES))
def test_system_db_names_are_valid(name: str) -> None:
    assert validate_db_name(name) == name


def test_system_db_names_are_the_couchdb3_ones() -> None:
    assert SYSTEM_DATABASES == {"_users", "_replicator", "_global_changes"}


INVALID_NAMES = [
    "",
    "A",
    "Mydb",
    "myDB",
    "1db",
    "_db",
    "_design",
    "_user",
    "_users2",
    "-db",
    "$db",
    "(db)",
    "my db",
    "db.name",
    "db?x",
    "db#x",
    "db%2f",
    "dbø",
    "a" * 239,
    "a" * 1000,
]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_db_names_raise_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        validate_db_name(name)


@pytest.mark.parametrize("name", ["db\n", "a\n"])
def test_db_name_with_trailing_newline_is_invalid(name: str) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        validate_db_name(name)


@pytest.mark.parametrize("name", [None, 1, b"mydb", ["mydb"], 1.5])
def test_non_str_db_names_raise_type_error(name: Any) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        validate_db_name(name)


# -- document ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("doc_id", ["x", "_design/x", " ", "føø", "a/b"])
def test_valid_doc_ids(doc_id: str) -> None:
    assert validate_doc_id(doc_id) == doc_id


@pytest.mark.parametrize(
    ("doc_id", "exc"), [(None, ValueError), ("", ValueError), (1, TypeError), (b"x", TypeError)]
)
def test_invalid_doc_ids(doc_id: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        validate_doc_id(doc_id)


# -- paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("mydb", "/mydb"),
        ("a/b", "/a%2Fb"),
        ("a/b/c", "/a%2Fb%2Fc"),
        ("a$b(c)+d-e_f", "/a%24b%28c%29%2Bd-e_f"),
        ("_users", "/_users"),
    ],
)
def test_db_path(name: str, path: str) -> None:
    assert db_path(name) == path
    assert unquote(path[1:]) == name


DOC_PATHS = [
    ("plain", "/db/plain"),
    ("a/b", "/db/a%2Fb"),
    ("a?b", "/db/a%3Fb"),
    ("a#b", "/db/a%23b"),
    ("100%", "/db/100%25"),
    ("%2F", "/db/%252F"),
    ("a b", "/db/a%20b"),
    ("a+b", "/db/a%2Bb"),
    ("a&b=c", "/db/a%26b%3Dc"),
    ("føø", "/db/f%C3%B8%C3%B8"),
    ("\U0001d11e", "/db/%F0%9D%84%9E"),  # astral: 4 UTF-8 bytes, not surrogates
    ("日本", "/db/%E6%97%A5%E6%9C%AC"),
    ("_design/x", "/db/_design/x"),
    ("_design/a/b", "/db/_design/a%2Fb"),  # only the first slash is kept
    ("_design/a?b", "/db/_design/a%3Fb"),
    ("_design/føø", "/db/_design/f%C3%B8%C3%B8"),
    ("_local/x", "/db/_local/x"),
    ("_local/a/b", "/db/_local/a%2Fb"),
    ("_design", "/db/_design"),  # no tail: a plain id
    ("_local", "/db/_local"),
    ("_designx/y", "/db/_designx%2Fy"),  # not a design prefix
    ("x/_design/y", "/db/x%2F_design%2Fy"),
]


@pytest.mark.parametrize(("doc_id", "path"), DOC_PATHS)
def test_doc_path(doc_id: str, path: str) -> None:
    assert doc_path("db", doc_id) == path


def test_doc_path_quotes_the_db_name_and_the_rest() -> None:
    assert doc_path("a/b", "x") == "/a%2Fb/x"
    assert doc_path("db", "_design/d", "_view", "v w") == "/db/_design/d/_view/v%20w"
    assert doc_path("db", "doc", "att/name.txt") == "/db/doc/att%2Fname.txt"


# -- queries ------------------------------------------------------------------------------------

QUERIES: list[tuple[Any, str]] = [
    (None, ""),
    ({}, ""),
    ([], ""),
    ({"a": None}, ""),
    ({"include_docs": True}, "?include_docs=true"),
    ({"reduce": False}, "?reduce=false"),
    ({"descending": True, "skip": None, "limit": 10}, "?descending=true&limit=10"),
    ({"limit": 0}, "?limit=0"),
    ({"limit": -1}, "?limit=-1"),
    ({"timeout": 1.5}, "?timeout=1.5"),
    # JSON options: strings are JSON strings, quoted for the URL.
    ({"key": "a"}, "?key=%22a%22"),
    ({"key": "føø"}, "?key=%22f%C3%B8%C3%B8%22"),
    ({"key": "a b&c"}, "?key=%22a%20b%26c%22"),
    ({"key": 1}, "?key=1"),
    ({"key": 1.5}, "?key=1.5"),
    ({"key": True}, "?key=true"),
    ({"key": ["a", 1]}, "?key=%5B%22a%22%2C1%5D"),
    ({"key": {"k": "v"}}, "?key=%7B%22k%22%3A%22v%22%7D"),
    ({"startkey": "a", "endkey": "a\ufff0"}, "?startkey=%22a%22&endkey=%22a%EF%BF%B0%22"),
    ({"start_key": ["a"], "end_key": ["a", {}]},
     "?start_key=%5B%22a%22%5D&end_key=%5B%22a%22%2C%7B%7D%5D"),
    ({"keys": ["a", "b"]}, "?keys=%5B%22a%22%2C%22b%22%5D"),
    ({"keys": []}, "?keys=%5B%5D"),
    # Other options: lists are JSON, strings are raw.
    ({"open_revs": ["1-a", "2-b"]}, "?open_revs=%5B%221-a%22%2C%222-b%22%5D"),
    ({"doc_ids": ["a/b"]}, "?doc_ids=%5B%22a%2Fb%22%5D"),
    ({"stale": "ok"}, "?stale=ok"),
    ({"update": "lazy"}, "?update=lazy"),
    ({"rev": "1-abc"}, "?rev=1-abc"),
    ({"since": "now"}, "?since=now"),
    ({"since": "12-g1AAAA/x+y"}, "?since=12-g1AAAA%2Fx%2By"),  # opaque seq, quoted not parsed
    ({"startkey_docid": "a b"}, "?startkey_docid=a%20b"),
    ({"filter": "_design/f"}, "?filter=_design%2Ff"),
    ({"revs": False, "conflicts": True}, "?revs=false&conflicts=true"),
    # Order is kept, for mappings and for pair lists.
    ({"z": 1, "a": 2, "m": 3}, "?z=1&a=2&m=3"),
    ([("b", 1), ("a", None), ("a", 2)], "?b=1&a=2"),
]


@pytest.mark.parametrize(("params", "query"), QUERIES)
def test_encode_query(params: Any, query: str) -> None:
    assert encode_query(params) == query


def test_encode_query_open_revs_all_is_the_bare_word() -> None:
    assert encode_query({"open_revs": "all"}) == "?open_revs=all"


# -- credentials --------------------------------------------------------------------------------

CREDENTIALS: list[tuple[str, str, tuple[str, str] | None]] = [
    ("http://127.0.0.1:5984", "http://127.0.0.1:5984", None),
    ("http://127.0.0.1:5984/", "http://127.0.0.1:5984", None),
    ("https://couch.example.com", "https://couch.example.com", None),
    ("http://h:5984/couch/", "http://h:5984/couch", None),
    ("http://h:5984/a/b", "http://h:5984/a/b", None),
    ("http://admin:secret@h:5984", "http://h:5984", ("admin", "secret")),
    ("http://admin:secret@h:5984/", "http://h:5984", ("admin", "secret")),
    ("http://admin:secret@h:5984/prefix/", "http://h:5984/prefix", ("admin", "secret")),
    ("http://admin:p%40ss@h", "http://h", ("admin", "p@ss")),
    ("http://admin:p@ss@h", "http://h", ("admin", "p@ss")),
    ("http://admin:a:b@h", "http://h", ("admin", "a:b")),
    ("http://us%3Aer:p%2Fw%25@h", "http://h", ("us:er", "p/w%")),
    ("http://f%C3%B8%C3%B8:b%C3%A6r@h", "http://h", ("føø", "bær")),
    ("https://admin:x@[::1]:6984", "https://[::1]:6984", ("admin", "x")),
    ("http://h:5984?x=1#frag", "http://h:5984", None),
]


@pytest.mark.parametrize(("url", "clean", "creds"), CREDENTIALS)
def test_split_credentials(url: str, clean: str, creds: tuple[str, str] | None) -> None:
    assert split_credentials(url) == (clean, creds)
    if creds:
        assert "@" not in split_credentials(url)[0]
        assert creds[1] not in split_credentials(url)[0]


@pytest.mark.parametrize(
    "url", ["ftp://h", "h:5984", "127.0.0.1:5984", "//h:5984", "", "file:///tmp/x", "http://", "https:///db"]
)
def test_split_credentials_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        split_credentials(url)
