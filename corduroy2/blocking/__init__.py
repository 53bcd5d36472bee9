"""Blocking front door: the same API, returning values and raising. For scripts and the REPL.

    from corduroy2.blocking import Couch, Database

No event loop and no framework: :mod:`~corduroy2.blocking.backend` is stdlib ``http.client``;
an iterator reads in the thread that iterates it, a callback feed on a thread of its own
(:mod:`~corduroy2.blocking.streams`). Under gevent's monkey-patching
(``gevent.monkey.patch_all()`` first, before corduroy2 is imported, as gevent asks) the
sockets, threads, locks and sleeps are gevent's, so calls from several greenlets interleave,
and a feed's reader is a greenlet (tests/backends/test_gevent.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from .. import api
from ..backend import Backend, TransportOptions
from .backend import BlockingBackend
from .streams import BlockingDoor

__all__ = ["Couch", "Database", "relax", "BlockingBackend"]

T = TypeVar("T")


class Couch(api.Couch):
    """A CouchDB server whose methods block and return values (or raise)."""

    backend_name = "blocking"
    front_door = BlockingDoor()

    def _make_backend(self, options: TransportOptions) -> Backend:
        return BlockingBackend(options)


class Database(api.Database):
    couch_class = Couch


Couch.database_class = Database


def relax(func: Callable[..., Generator[Any, Any, T]]) -> Callable[..., T]:
    """Run a ``@relax`` generator synchronously, so code written for the async front doors
    (``doc = yield db.get(x)``) also runs in a script. Errors raise at the ``yield``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        gen: Any = func(*args, **kwargs)
        if not isinstance(gen, Generator):
            return gen  # type: ignore[no-any-return]  # a plain function: its value as is
        try:
            value = next(gen)
            while True:
                value = gen.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    return wrapper
