"""Map/reduce views and ``_all_docs``: building the rows, CouchDB's query options, reduces.

A design doc's functions are JavaScript source; the fake runs Python instead. Each source is
looked up in the :class:`FakeCouch`'s function table (``functions={source: python_callable}``),
so an application keeps its real design docs and its tests say what each function does:

* map: ``fn(doc, emit)`` calls ``emit(key, value)`` any number of times;
* reduce: ``"_count"``, ``"_sum"``, ``"_stats"``, or ``fn(keys, values, rereduce)``;
* filter (``_changes?filter=ddoc/name``): ``fn(doc, req)`` returns truthy to keep a change;
* show, list, update: see :mod:`.design`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .collation import sort_key, string_key
from .errors import Refusal, bad_request

__all__ = ["Functions", "ViewRow", "ViewOptions", "select", "reduce_rows"]

_SPACE = re.compile(r"\s+")


def normalise_source(source: str) -> str:
    """Function sources compare with runs of white space made one space."""
    return _SPACE.sub(" ", source).strip()


class Functions:
    """JavaScript source -> the Python callable that stands for it."""

    def __init__(self, table: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._table: dict[str, Callable[..., Any]] = {}
        for source, fn in (table or {}).items():
            self.register(source, fn)

    def register(self, source: str, fn: Callable[..., Any]) -> None:
        self._table[normalise_source(source)] = fn

    def lookup(self, source: Any, what: str) -> Callable[..., Any]:
        if callable(source):
            return source  # type: ignore[no-any-return]
        if isinstance(source, str):
            found = self._table.get(normalise_source(source))
            if found is not None:
                return found
        raise Refusal(400, "compilation_error",
                      f"FakeCouch has no Python function for this {what}: register one with "
                      f"FakeCouch(functions={{source: fn}}). Source: {str(source)[:200]!r}")


@dataclass(frozen=True)
class ViewRow:
    key: Any
    id: str
    value: Any
    order: tuple[Any, ...]  # collation key of (key, id)


def map_docs(docs: Iterable[tuple[str, dict[str, Any]]],
             map_fn: Callable[..., Any]) -> list[ViewRow]:
    """Every row ``map_fn`` emits for ``docs`` (``(id, rendered doc)``), in view order."""
    rows: list[ViewRow] = []
    for doc_id, doc in docs:
        emitted: list[tuple[Any, Any]] = []

        def emit(key: Any = None, value: Any = None) -> None:
            emitted.append((key, value))

        try:
            map_fn(_frozen_copy(doc), emit)
        except Exception:
            # CouchDB logs a map function's exception and skips the doc
            continue
        for key, value in emitted:
            key, value = _json_roundtrip(key), _json_roundtrip(value)
            rows.append(ViewRow(key, doc_id, value, (sort_key(key), string_key(doc_id))))
    rows.sort(key=lambda r: r.order)
    return rows


def _frozen_copy(doc: dict[str, Any]) -> Any:
    # the map function gets its own copy: a function that edits the doc must not edit the db
    return orjson.loads(orjson.dumps(doc))


def _json_roundtrip(value: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return None


# -- options ----------------------------------------------------------------------------------

_JSON_OPTIONS = {"key", "keys", "startkey", "start_key", "endkey", "end_key"}
_BOOL_OPTIONS = {"descending", "include_docs", "inclusive_end", "reduce", "group",
                 "update_seq", "conflicts", "sorted", "stable", "attachments", "att_encoding_info",
                 "local_seq", "exclude_first"}
_INT_OPTIONS = {"limit", "skip", "group_level"}
_STRING_OPTIONS = {"startkey_docid", "start_key_doc_id", "endkey_docid", "end_key_doc_id",
                   "update", "stale", "partition"}


@dataclass
class ViewOptions:
    key: Any = None
    has_key: bool = False
    keys: list[Any] | None = None
    start: Any = None
    has_start: bool = False
    end: Any = None
    has_end: bool = False
    start_docid: str | None = None
    end_docid: str | None = None
    inclusive_end: bool = True
    descending: bool = False
    limit: int | None = None
    skip: int = 0
    include_docs: bool = False
    reduce: bool | None = None
    group: bool = False
    group_level: int | None = None
    update_seq: bool = False
    conflicts: bool = False
    attachments: bool = False


def parse_options(query: Mapping[str, str], body: Mapping[str, Any] | None = None) -> ViewOptions:
    """CouchDB's view query options, from the query string (JSON values) and a POST body."""
    values: dict[str, Any] = {}
    for name, raw in query.items():
        if name in _JSON_OPTIONS:
            try:
                values[name] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise bad_request(f"Invalid value for {name}: {raw!r}",
                                  "query_parse_error") from None
        elif name in _BOOL_OPTIONS:
            if raw not in ("true", "false"):
                raise bad_request(f"Invalid boolean parameter: {raw!r}", "query_parse_error")
            values[name] = raw == "true"
        elif name in _INT_OPTIONS:
            try:
                values[name] = int(raw)
            except ValueError:
                raise bad_request(f"Invalid value for integer: {raw!r}",
                                  "query_parse_error") from None
            if values[name] < 0:
                raise bad_request(f"Invalid value for {name}: {raw}", "query_parse_error")
        elif name in _STRING_OPTIONS:
            values[name] = raw
    for name, value in (body or {}).items():
        if name != "queries":
            values[name] = value
    options = ViewOptions()
    if "key" in values:
        options.key, options.has_key = values["key"], True
    if "keys" in values:
        if not isinstance(values["keys"], list):
            raise bad_request("`keys` member must be an array.", "query_parse_error")
        options.keys = values["keys"]
    for name in ("startkey", "start_key"):
        if name in values:
            options.start, options.has_start = values[name], True
    for name in ("endkey", "end_key"):
        if name in values:
            options.end, options.has_end = values[name], True
    options.start_docid = values.get("startkey_docid", values.get("start_key_doc_id"))
    options.end_docid = values.get("endkey_docid", values.get("end_key_doc_id"))
    for name in ("inclusive_end", "descending", "include_docs", "group", "update_seq",
                 "conflicts", "attachments"):
        if name in values:
            setattr(options, name, bool(values[name]))
    if "reduce" in values:
        options.reduce = bool(values["reduce"])
    if "limit" in values:
        options.limit = _non_negative(values["limit"], "limit")
    if "skip" in values:
        options.skip = _non_negative(values["skip"], "skip")
    if "group_level" in values:
        options.group_level = _non_negative(values["group_level"], "group_level")
    if options.keys is not None and (options.has_key or options.has_start or options.has_end):
        raise bad_request("`keys` is incompatible with `key`, `start_key` and `end_key`",
                          "query_parse_error")
    return options


def _non_negative(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad_request(f"Invalid value for {name}: {value!r}", "query_parse_error")
    return value


# -- selecting rows -----------------------------------------------------------------------------

Key = Callable[[Any], Any]


def select(rows: list[Any], options: ViewOptions, order_of_key: Key,
           order_of_id: Key) -> tuple[int, list[Any]]:
    """``(offset, rows)``: the rows the options pick from ``rows`` (each with ``.order`` =
    ``(key order, id order)``), before skip/limit for keys, after them otherwise."""
    if options.descending:
        rows = rows[::-1]
    if options.keys is not None:
        out: list[Any] = []
        for key in options.keys:
            wanted = order_of_key(key)
            out.extend(r for r in rows if r.order[0] == wanted)
        return 0, out
    if options.has_key:
        wanted = order_of_key(options.key)
        lo = hi = (wanted,)
        include_hi = True
        start_id, end_id = options.start_docid, options.end_docid
        start: tuple[Any, ...] | None = lo
        end: tuple[Any, ...] | None = hi
    else:
        start = (order_of_key(options.start),) if options.has_start else None
        end = (order_of_key(options.end),) if options.has_end else None
        include_hi = options.inclusive_end
        start_id, end_id = options.start_docid, options.end_docid
    if start is not None and start_id is not None:
        start = start + (order_of_id(start_id),)
    if end is not None and end_id is not None:
        end = end + (order_of_id(end_id),)

    def after_start(row: Any) -> bool:
        if start is None:
            return True
        here = row.order[:len(start)]
        return bool(here <= start if options.descending else here >= start)

    def before_end(row: Any) -> bool:
        if end is None:
            return True
        here = row.order[:len(end)]
        if options.descending:
            return bool(here >= end if include_hi else here > end)
        return bool(here <= end if include_hi else here < end)

    offset = 0
    for row in rows:
        if after_start(row):
            break
        offset += 1
    picked = []
    for row in rows[offset:]:
        if not before_end(row):
            break
        picked.append(row)
    return offset, picked


# -- reduce -------------------------------------------------------------------------------------


def builtin_reduce(name: str) -> Callable[[list[Any], list[Any], bool], Any]:
    if name == "_count":
        return lambda keys, values, rereduce: sum(values) if rereduce else len(values)
    if name == "_sum":
        return lambda keys, values, rereduce: _sum(values)
    if name == "_stats":
        return _stats
    raise Refusal(400, "invalid_design_doc", f"Builtin reduce function {name} is invalid")


def _sum(values: list[Any]) -> Any:
    total: Any = 0
    for value in values:
        total = _add(total, value)
    return total


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, list) or isinstance(b, list):
        a = a if isinstance(a, list) else [a]
        b = b if isinstance(b, list) else [b]
        longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
        return [_add(x, shorter[i]) if i < len(shorter) else x for i, x in enumerate(longer)]
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _add(out[k], v) if k in out else v
        return out
    if _is_number(a) and _is_number(b):
        return a + b
    raise Refusal(500, "builtin_reduce_error",
                  f"The _sum function requires that map values be numbers, arrays of numbers, "
                  f"or objects. Objects cannot be mixed with other data structures.")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _stats(keys: list[Any], values: list[Any], rereduce: bool) -> dict[str, Any]:
    if rereduce:
        return {"sum": sum(v["sum"] for v in values), "count": sum(v["count"] for v in values),
                "min": min(v["min"] for v in values), "max": max(v["max"] for v in values),
                "sumsqr": sum(v["sumsqr"] for v in values)}
    numbers = []
    for value in values:
        if isinstance(value, list):
            numbers.extend(value)
        else:
            numbers.append(value)
    if not all(_is_number(n) for n in numbers):
        raise Refusal(500, "builtin_reduce_error",
                      "The _stats function requires that map values be numbers or arrays of "
                      "numbers")
    return {"sum": sum(numbers), "count": len(numbers), "min": min(numbers, default=0),
            "max": max(numbers, default=0), "sumsqr": sum(n * n for n in numbers)}


def reduce_rows(rows: list[ViewRow], reducer: Callable[..., Any],
                options: ViewOptions) -> list[dict[str, Any]]:
    """The reduce rows: one overall, or one per group (``group``/``group_level``)."""
    if options.group_level is None and not options.group:
        if not rows:
            return []
        value = reducer([[r.key, r.id] for r in rows], [r.value for r in rows], False)
        return [{"key": None, "value": _finite(value)}]
    level = options.group_level

    def group_key(key: Any) -> Any:
        if level is None or not isinstance(key, list):
            return key
        return key[:level]

    out: list[dict[str, Any]] = []
    current: list[ViewRow] = []
    current_key: Any = None
    current_order: Any = object()
    for row in rows:
        key = group_key(row.key)
        order = sort_key(key)
        if current and order != current_order:
            out.append(_group_row(current_key, current, reducer))
            current = []
        current_key, current_order = key, order
        current.append(row)
    if current:
        out.append(_group_row(current_key, current, reducer))
    return out


def _group_row(key: Any, rows: list[ViewRow], reducer: Callable[..., Any]) -> dict[str, Any]:
    value = reducer([[r.key, r.id] for r in rows], [r.value for r in rows], False)
    return {"key": key, "value": _finite(value)}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
