"""Mango (``_find``): selectors, index choice, sort, fields, as CouchDB 3 does them.

Matching follows ``mango_selector.erl``: a condition on a field the doc lacks is false (only
``{"$exists": false}`` matches it), ``$not``/``$or``/``$nor`` written under a field are lifted
above it (so a doc without the field matches ``{"f": {"$not": ...}}``), comparisons use view
collation (``_id`` compares raw), and an array field equals only an equal array (no MongoDB-style
"any element" matching; that is ``$elemMatch``/``$all``).

Index choice: a JSON index is usable when every one of its fields is constrained by the selector
with an indexable operator (``$eq $gt $gte $lt $lte``, ``$exists: true``) at the top level; a sort
needs a usable index whose fields begin with the sort fields (or sorts on ``_id`` alone), else 400
``no_usable_index``. Without a usable index the query scans ``_all_docs`` and the answer carries a
``warning``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .collation import sort_key
from .errors import Refusal, bad_request

__all__ = ["Selector", "Index", "parse_sort", "project", "get_field", "MISSING"]

MISSING = object()
_COMBINATORS = ("$and", "$or", "$nor", "$not")
_INDEXABLE = ("$eq", "$gt", "$gte", "$lt", "$lte")
_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string",
          list: "array", dict: "object"}


def split_path(path: str) -> list[str]:
    """``"a.b\\.c"`` -> ``["a", "b.c"]``."""
    parts, current, escaped = [], "", False
    for ch in path:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ".":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def get_field(doc: Any, path: str) -> Any:
    value = doc
    for part in split_path(path):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return MISSING
    return value


def _cmp(a: Any, b: Any, raw: bool) -> int:
    if raw and isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    ka, kb = sort_key(a), sort_key(b)
    return (ka > kb) - (ka < kb)


class Selector:
    """A normalised selector: ``match(doc)`` and the fields an index can serve."""

    def __init__(self, selector: Any) -> None:
        if not isinstance(selector, dict):
            raise bad_request("Selector must be a JSON object", "invalid_selector")
        self.raw = selector
        self.tree = _normalise(selector, None)

    def match(self, doc: dict[str, Any]) -> bool:
        return _match(self.tree, doc)

    def indexable_fields(self) -> set[str]:
        return _indexable(self.tree)


# Normalised form: ("and"|"or"|"nor", [nodes]) | ("not", node) | ("field", path, op, arg)

def _normalise(selector: Any, path: str | None) -> Any:
    if not isinstance(selector, dict):
        if path is None:
            raise bad_request("Selector must be a JSON object", "invalid_selector")
        return ("field", path, "$eq", selector)
    nodes: list[Any] = []
    for key, value in selector.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list):
                raise bad_request(f"{key} requires an array", "invalid_operator")
            nodes.append((key[1:], [_normalise(v, path) for v in value]))
        elif key == "$not":
            nodes.append(("not", _normalise(value, path)))
        elif key.startswith("$"):
            if path is None:
                raise bad_request(f"Invalid operator at the top level: {key}",
                                  "invalid_operator")
            nodes.append(_operator(path, key, value))
        else:
            sub = key if path is None else f"{path}.{key}"
            if isinstance(value, dict) and (not value or not all(
                    k.startswith("$") for k in value)):
                nodes.append(_normalise(value, sub) if value else ("field", sub, "$eq", value))
            else:
                nodes.append(_normalise(value, sub))
    return nodes[0] if len(nodes) == 1 else ("and", nodes)


def _operator(path: str, op: str, arg: Any) -> Any:
    if op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$beginsWith"):
        if op == "$beginsWith" and not isinstance(arg, str):
            raise bad_request("$beginsWith requires a string argument", "invalid_operator")
        return ("field", path, op, arg)
    if op in ("$in", "$nin", "$all"):
        if not isinstance(arg, list):
            raise bad_request(f"Argument for {op} must be an array", "invalid_operator")
        return ("field", path, op, arg)
    if op == "$exists":
        if not isinstance(arg, bool):
            raise bad_request("Argument for $exists must be a boolean", "invalid_operator")
        return ("field", path, op, arg)
    if op == "$type":
        if arg not in ("null", "boolean", "number", "string", "array", "object"):
            raise bad_request(f"Invalid type for $type: {arg!r}", "invalid_operator")
        return ("field", path, op, arg)
    if op == "$size":
        if not isinstance(arg, int) or isinstance(arg, bool):
            raise bad_request("Argument for $size must be an integer", "invalid_operator")
        return ("field", path, op, arg)
    if op == "$mod":
        if (not isinstance(arg, list) or len(arg) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in arg)
                or arg[0] == 0):
            raise bad_request("$mod requires [Divisor, Remainder] with a non-zero divisor",
                              "invalid_operator")
        return ("field", path, op, arg)
    if op == "$regex":
        if not isinstance(arg, str):
            raise bad_request("$regex requires a string", "invalid_operator")
        try:
            return ("field", path, op, re.compile(arg))
        except re.error:
            raise bad_request(f"Invalid regular expression: {arg!r}",
                              "invalid_operator") from None
    if op in ("$elemMatch", "$allMatch"):
        if not isinstance(arg, dict):
            raise bad_request(f"{op} requires an object", "invalid_operator")
        return ("field", path, op, _normalise_element(arg))
    if op == "$keyMapMatch":
        if not isinstance(arg, dict):
            raise bad_request(f"{op} requires an object", "invalid_operator")
        return ("field", path, op, _normalise_element(arg))
    raise bad_request(f"Invalid operator: {op}", "invalid_operator")


def _normalise_element(arg: dict[str, Any]) -> Any:
    """An ``$elemMatch`` argument applies to each element: operators at its top level test the
    element itself (path ``""``), field names test the element's fields."""
    return _normalise(arg, "") if all(k.startswith("$") for k in arg) else _normalise(arg, None)


def _match(node: Any, doc: Any) -> bool:
    kind = node[0]
    if kind == "and":
        return all(_match(n, doc) for n in node[1])
    if kind == "or":
        return any(_match(n, doc) for n in node[1])
    if kind == "nor":
        return not any(_match(n, doc) for n in node[1])
    if kind == "not":
        return not _match(node[1], doc)
    _, path, op, arg = node
    value = doc if path == "" else get_field(doc, path)
    if value is MISSING:
        return op == "$exists" and arg is False
    return _test(op, arg, value, raw=path == "_id")


def _test(op: str, arg: Any, value: Any, raw: bool) -> bool:
    if op == "$eq":
        return _cmp(value, arg, raw) == 0
    if op == "$ne":
        return _cmp(value, arg, raw) != 0
    if op == "$gt":
        return _cmp(value, arg, raw) > 0
    if op == "$gte":
        return _cmp(value, arg, raw) >= 0
    if op == "$lt":
        return _cmp(value, arg, raw) < 0
    if op == "$lte":
        return _cmp(value, arg, raw) <= 0
    if op == "$in":
        return any(_cmp(value, a, raw) == 0 for a in arg)
    if op == "$nin":
        return all(_cmp(value, a, raw) != 0 for a in arg)
    if op == "$exists":
        return arg is True
    if op == "$type":
        return bool(_TYPES.get(type(value)) == arg)
    if op == "$size":
        return isinstance(value, list) and len(value) == int(arg)
    if op == "$all":
        return isinstance(value, list) and all(
            any(_cmp(v, a, False) == 0 for v in value) for a in arg)
    if op == "$mod":
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        divisor, remainder = arg
        # Erlang's rem: the result has the dividend's sign
        return bool(abs(value) % abs(divisor) * (1 if value >= 0 else -1) == remainder)
    if op == "$regex":
        return isinstance(value, str) and arg.search(value) is not None
    if op == "$beginsWith":
        return isinstance(value, str) and value.startswith(arg)
    if op == "$elemMatch":
        return isinstance(value, list) and any(_match(arg, v) for v in value)
    if op == "$allMatch":
        return isinstance(value, list) and bool(value) and all(_match(arg, v) for v in value)
    if op == "$keyMapMatch":
        return isinstance(value, dict) and any(_match(arg, k) for k in value)
    raise bad_request(f"Invalid operator: {op}", "invalid_operator")


def _indexable(node: Any) -> set[str]:
    if node[0] == "and":
        out: set[str] = set()
        for n in node[1]:
            out |= _indexable(n)
        return out
    if node[0] == "field":
        _, path, op, arg = node
        if op in _INDEXABLE or (op == "$exists" and arg is True):
            return {path}
    return set()


# -- indexes, sort, fields ----------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    ddoc: str | None
    name: str
    type: str
    fields: tuple[str, ...]
    partial: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        definition: dict[str, Any] = {"fields": [{f: "asc"} for f in self.fields]}
        if self.partial:
            definition["partial_filter_selector"] = self.partial
        return {"ddoc": self.ddoc, "name": self.name, "type": self.type, "partitioned": False,
                "def": definition}


ALL_DOCS = Index(None, "_all_docs", "special", ("_id",))


def parse_sort(sort: Any) -> tuple[list[str], bool]:
    """``(fields, descending)`` of a ``sort`` member; one direction for all fields."""
    if sort is None:
        return [], False
    if not isinstance(sort, list):
        raise bad_request("Sort must be an array", "invalid_sort_json")
    fields, directions = [], set()
    for item in sort:
        if isinstance(item, str):
            fields.append(item)
            directions.add("asc")
        elif isinstance(item, dict) and len(item) == 1:
            (name, direction), = item.items()
            if direction not in ("asc", "desc"):
                raise bad_request(f"Invalid sort direction: {direction!r}", "invalid_sort_dir")
            fields.append(name)
            directions.add(direction)
        else:
            raise bad_request("Invalid sort field", "invalid_sort_field")
    if len(directions) > 1:
        raise bad_request("Sorts currently only support a single direction for all fields.",
                          "unsupported_mixed_sort")
    return fields, directions == {"desc"}


def choose_index(indexes: list[Index], selector: Selector, sort_fields: list[str],
                 use_index: Any) -> tuple[Index, str | None]:
    """The index a query runs on, and the warning to send (None when an index fits)."""
    indexable = selector.indexable_fields()
    usable = [ix for ix in indexes if set(ix.fields) <= indexable]
    if sort_fields:
        usable = [ix for ix in usable if list(ix.fields[:len(sort_fields)]) == sort_fields]
    wanted = _wanted(use_index)
    if wanted is not None:
        chosen = [ix for ix in usable if ix.ddoc == wanted[0]
                  and (wanted[1] is None or ix.name == wanted[1])]
        if chosen:
            return chosen[0], None
        if sort_fields and sort_fields != ["_id"] and not usable:
            raise _no_index_for_sort()
        pick = usable[0] if usable else ALL_DOCS
        label = wanted[0] if wanted[1] is None else f"{wanted[0]}, {wanted[1]}"
        return pick, (f"{label} was not used because it does not contain a valid index for "
                      "this query.")
    if usable:
        # the index with most fields narrows most (CouchDB also prefers fewer extra fields)
        return max(usable, key=lambda ix: (len(ix.fields), ix.name)), None
    if sort_fields and sort_fields != ["_id"]:
        raise _no_index_for_sort()
    return ALL_DOCS, ("No matching index found, create an index to optimize query time.")


def _no_index_for_sort() -> Refusal:
    return bad_request("No index exists for this sort, try indexing by the sort fields.",
                       "no_usable_index")


def _wanted(use_index: Any) -> tuple[str, str | None] | None:
    if use_index in (None, [], ""):
        return None
    parts = [use_index] if isinstance(use_index, str) else list(use_index)
    if not parts or not all(isinstance(p, str) for p in parts) or len(parts) > 2:
        raise bad_request("Invalid use_index", "invalid_use_index")
    ddoc = parts[0] if parts[0].startswith("_design/") else "_design/" + parts[0]
    return ddoc, parts[1] if len(parts) == 2 else None


def order_docs(docs: list[dict[str, Any]], index: Index, sort_fields: list[str],
               descending: bool) -> list[dict[str, Any]]:
    """The docs in the index's order (by its fields, then ``_id``)."""
    fields = sort_fields or list(index.fields)
    if fields == ["_id"]:
        keyed = sorted(docs, key=lambda d: d["_id"])
    else:
        keyed = sorted(docs, key=lambda d: (
            tuple(sort_key(_present(get_field(d, f))) for f in fields), d["_id"]))
    return keyed[::-1] if descending else keyed


def _present(value: Any) -> Any:
    return None if value is MISSING else value


def has_fields(doc: dict[str, Any], index: Index) -> bool:
    return all(get_field(doc, f) is not MISSING for f in index.fields)


def project(doc: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """Only ``fields`` (dotted paths build nested objects); all of ``doc`` when None."""
    if fields is None:
        return doc
    out: dict[str, Any] = {}
    for path in fields:
        value = get_field(doc, path)
        if value is MISSING:
            continue
        parts = split_path(path)
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


Matcher = Callable[[dict[str, Any]], bool]
