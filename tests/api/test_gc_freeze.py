"""gc.freeze() only when the caller asks (freeze_gc=True), and never undoing a freeze the
application made itself. The freeze is process-wide, so these tests restore it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from corduroy2.api.views import Keep, build_view, keep_raw

from .test_calls import make_db
from corduroy2.testing import Reply


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records gc.freeze/unfreeze calls without freezing anything (the test process's heap
    stays as it is); gc.get_freeze_count() answers as if they had happened."""
    made: list[str] = []
    frozen = [0]
    monkeypatch.setattr(gc, "freeze", lambda: (made.append("freeze"), frozen.__setitem__(0, 1)))
    monkeypatch.setattr(gc, "unfreeze", lambda: (made.append("unfreeze"),
                                                 frozen.__setitem__(0, 0)))
    monkeypatch.setattr(gc, "get_freeze_count", lambda: frozen[0])
    monkeypatch.setattr(Keep, "FREEZE_AFTER", 3)
    yield made


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": str(i), "key": i, "value": None} for i in range(n)]


def test_a_buffered_view_does_not_freeze_by_default(calls: list[str]) -> None:
    db, _ = make_db(Reply(200, {"total_rows": 10, "offset": 0, "rows": rows(10)}))
    assert len(db.view("d/v").rows) == 10
    assert calls == []


def test_freeze_gc_freezes_per_batch_and_thaws_at_the_end(calls: list[str]) -> None:
    keep = Keep(keep_raw, build_view, freeze_gc=True)
    keep.rows(rows(2))
    assert calls == []  # not yet FREEZE_AFTER rows
    keep.rows(rows(2))
    keep.rows(rows(2))
    assert calls == ["freeze", "freeze"]
    assert len(keep.end({}).rows) == 6
    assert calls == ["freeze", "freeze", "unfreeze"]


def test_freeze_gc_through_the_api(calls: list[str]) -> None:
    db, _ = make_db(Reply(200, {"total_rows": 10, "offset": 0, "rows": rows(10)}))
    assert len(db.view("d/v", freeze_gc=True).rows) == 10
    assert calls[0] == "freeze" and calls[-1] == "unfreeze"


def test_the_applications_own_freeze_is_never_undone(calls: list[str]) -> None:
    gc.freeze()  # the application's (recorded, and counted by get_freeze_count)
    calls.clear()
    keep = Keep(keep_raw, build_view, freeze_gc=True)
    keep.rows(rows(5))
    keep.end({})
    assert calls == ["freeze"]  # no unfreeze: it would thaw the application's objects too
    assert gc.get_freeze_count() == 1


def test_a_view_that_fails_midway_thaws_what_it_froze(calls: list[str]) -> None:
    keep = Keep(keep_raw, build_view, freeze_gc=True)
    keep.rows(rows(5))
    del keep
    gc.collect()
    assert calls == ["freeze", "unfreeze"]
