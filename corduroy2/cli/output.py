"""Data goes to stdout: one JSON value per line (NDJSON), indented when a person reads it."""

from __future__ import annotations

import sys
from typing import Any, BinaryIO

import orjson

__all__ = ["Output", "parse_json_arg", "parse_options"]


class Output:
    """Writes JSON values to a binary stream, one per line, indented for a terminal."""

    def __init__(self, stream: BinaryIO | None = None, pretty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        if pretty is None:
            pretty = self.stream.isatty()
        self._option = orjson.OPT_INDENT_2 if pretty else 0

    def json(self, value: Any) -> None:
        self.stream.write(orjson.dumps(value, option=self._option) + b"\n")

    def text(self, line: str) -> None:
        self.stream.write(line.encode() + b"\n")

    def flush(self) -> None:
        self.stream.flush()


def parse_json_arg(text: str, what: str) -> Any:
    """A JSON value given on the command line; ``ValueError`` (a usage error) if it is not."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--opt key=value`` pairs: the value as JSON when it parses (``limit=10``,
    ``key=["a",1]``, ``descending=true``), else as the string it is (``startkey_docid=abc``)."""
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt wants key=value, got {pair!r}")
        try:
            options[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            options[key] = raw
    return options
