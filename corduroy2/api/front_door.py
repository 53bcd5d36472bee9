"""What a front door does its own way beyond the backend: reading streams.

On an event loop (Tornado, Twisted) an iterator's ``__anext__`` returns a promise, a feed's
callbacks run on the loop, and a follower is driven by events. In blocking mode
(:mod:`corduroy2.blocking`) they read on threads instead. A ``Couch`` class names its front
door (``Couch.front_door``); :class:`~corduroy2.api.database.Database` asks it for these
objects, giving each what it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..pipeline.exchange import Sender
from ..protocol.requests import Request
from .calls import Op, Runner
from .changes import ChangesFeed
from .follower import ChangesFollower
from .sinks import RowSink
from .views import MakeSink, Pages, RowIterator, Wrap

if TYPE_CHECKING:
    from .database import Database

__all__ = ["FrontDoor", "EventLoopDoor", "FeedCallback"]

FeedCallback = Callable[[Any, list[dict[str, Any]]], Any]


class FrontDoor(Protocol):
    def iterate(self, sender: Sender, request: Request, wrap: Wrap, high_water: int,
                make_sink: MakeSink = RowSink) -> Any:
        """An iterator over a streamed body's rows (``async for``, or ``for`` when blocking)."""

    def feed(self, db: Database, request: Request, feed: str, callback: FeedCallback,
             latency: float, max_batch: int, since: Any,
             on_error: Callable[[BaseException], Any] | None,
             limit: int | None = None) -> ChangesFeed:
        """corduroy's callback feed, started."""

    def follower(self, db: Database, handler: Callable[[dict[str, Any]], Any],
                 **kwargs: Any) -> ChangesFollower:
        """A follower (started, except in blocking mode, where ``run()`` starts it)."""

    def pages(self, runner: Runner, fetch: Callable[[dict[str, Any]], Op[Any]]) -> Any:
        """An iterator of result pages, each fetched when asked for."""


class EventLoopDoor:
    """The front door of Tornado and Twisted: everything runs on the event loop."""

    def iterate(self, sender: Sender, request: Request, wrap: Wrap, high_water: int,
                make_sink: MakeSink = RowSink) -> RowIterator:
        return RowIterator(sender, request, wrap, high_water, make_sink)

    def feed(self, db: Database, request: Request, feed: str, callback: FeedCallback,
             latency: float, max_batch: int, since: Any,
             on_error: Callable[[BaseException], Any] | None,
             limit: int | None = None) -> ChangesFeed:
        return ChangesFeed(db.name, db.couch.sender, request, feed, callback, latency,
                           max_batch, since, on_error, limit).start()

    def follower(self, db: Database, handler: Callable[[dict[str, Any]], Any],
                 **kwargs: Any) -> ChangesFollower:
        return ChangesFollower(db, handler, **kwargs).start()

    def pages(self, runner: Runner, fetch: Callable[[dict[str, Any]], Op[Any]]) -> Pages:
        return Pages(runner, fetch)
