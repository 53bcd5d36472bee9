"""The httptools core's reliance on httptools beyond its documented API
(``corduroy2/http1/_repairs.py``): a failure here after upgrading httptools means the repair
must be looked at again."""

from __future__ import annotations

import pytest

httptools = pytest.importorskip("httptools")

from corduroy2.http1 import _repairs  # noqa: E402


def test_callback_error_is_what_the_callback_raised() -> None:
    class Stop(Exception):
        pass

    class Callbacks:
        def on_headers_complete(self) -> None:
            raise Stop()

    parser = httptools.HttpResponseParser(Callbacks())
    with pytest.raises(httptools.HttpParserCallbackError) as info:
        parser.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert isinstance(_repairs.callback_error(info.value), Stop)
