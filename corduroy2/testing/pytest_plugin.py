"""The ``fake_couch`` pytest fixture: a :class:`~corduroy2.testing.FakeServer` per test.

Installed with corduroy2 as a pytest plugin (entry point ``pytest11``), so a test just names it::

    def test_saves(fake_couch):
        couch = Couch(fake_couch.url, fake_couch.admin)       # any front door
        ...
        assert fake_couch.couch.get("db", "doc")["n"] == 1  # look inside, no HTTP

It starts in about a millisecond and is stopped (every connection closed) after the test. For
a fake with design-doc functions, or one shared by a module, make your own fixture the same
way: ``with FakeCouch(functions={...}).serve() as server: yield server``. A project that does
not want the plugin loaded can import the fixture instead (``from corduroy2.testing.pytest_plugin
import fake_couch`` in a ``conftest.py``) and run pytest with ``-p no:corduroy2``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake import FakeCouch, FakeServer

__all__ = ["fake_couch"]


@pytest.fixture
def fake_couch() -> Iterator[FakeServer]:
    """A fresh in-memory CouchDB 3 on a loopback port (admin ``admin``/``secret``)."""
    with FakeCouch().serve() as server:
        yield server
