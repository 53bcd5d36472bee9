"""CouchDB's view collation, as sort keys.

Views order keys ``null < false < true < numbers < strings < arrays < objects``; strings compare
with ICU's root collation (``"a" < "A" < "aa" < "b"``: letters first ignoring case and accents,
then accents, then case with lower case first; spaces and punctuation before digits before
letters). ``_all_docs`` is different: ids compare by raw code point, which is Python's own string
order. This module approximates ICU without ICU (stdlib only): it is exact for ASCII and for the
common accented Latin letters, and orders other scripts by code point.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

__all__ = ["sort_key", "compare", "string_key"]

# Latin letters that Unicode does not decompose but ICU sorts as (variants of) base letters.
_FOLDED = {"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "đ": "d", "ł": "l", "þ": "th", "ð": "d",
           "ı": "i"}


@functools.lru_cache(maxsize=65536)
def _char_keys(ch: str) -> tuple[tuple[tuple[int, int], ...], int, int]:
    """(primary weights, secondary weight, tertiary weight) of one character."""
    lower = ch.lower()
    decomposed = unicodedata.normalize("NFD", lower)
    base = "".join(c for c in decomposed if not unicodedata.combining(c)) or decomposed
    accents = sum(ord(c) for c in decomposed if unicodedata.combining(c))
    base = "".join(_FOLDED.get(c, c) for c in base)
    if ch in _FOLDED or lower in _FOLDED:
        accents += 1  # a variant letter sorts after its base letter, like an accent
    primary = tuple((_group(c), ord(c)) for c in base)
    return primary, accents, 0 if ch == lower else 1


def _group(c: str) -> int:
    category = unicodedata.category(c)
    if c.isspace() or category.startswith("Z") or category.startswith("C"):
        return 0
    if category.startswith("P"):
        return 1
    if category.startswith("S"):
        return 2
    if category.startswith("N"):
        return 3
    return 4


@functools.lru_cache(maxsize=65536)
def string_key(text: str) -> tuple[Any, ...]:
    """The ICU-like sort key of a string: all primary weights, then accents, then case."""
    keys = [_char_keys(ch) for ch in text]
    primary = tuple(weight for k in keys for weight in k[0])
    return primary, tuple(k[1] for k in keys), tuple(k[2] for k in keys)


def sort_key(value: Any) -> tuple[Any, ...]:
    """A key that orders JSON values as CouchDB's view collation does."""
    if value is None:
        return (0,)
    if value is False:
        return (1,)
    if value is True:
        return (2,)
    if isinstance(value, (int, float)):
        return (3, value)
    if isinstance(value, str):
        return (4, string_key(value))
    if isinstance(value, (list, tuple)):
        return (5, tuple(sort_key(item) for item in value))
    if isinstance(value, dict):
        return (6, tuple((string_key(k), sort_key(v)) for k, v in value.items()))
    raise TypeError(f"not a JSON value: {value!r}")


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1, as CouchDB's collation orders ``a`` and ``b``."""
    ka, kb = sort_key(a), sort_key(b)
    return (ka > kb) - (ka < kb)
