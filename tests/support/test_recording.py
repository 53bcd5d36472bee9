"""The request recorder that the behaviour and leak tests rely on: one entry per request sent."""

from __future__ import annotations

from corduroy2.api import Couch
from corduroy2.pipeline.retry import Retry

from corduroy2.testing import RecordingBackend, Reply, record_requests

URL = "http://127.0.0.1:5984"


def test_a_request_is_recorded_once() -> None:
    backend = RecordingBackend([Reply(200, {"ok": True})])
    sent = record_requests(backend)
    assert Couch(URL, backend=backend, retry=False).info() == {"ok": True}
    assert [r.url for r in sent] == [URL + "/"]


def test_each_attempt_of_a_retried_request_is_recorded() -> None:
    backend = RecordingBackend([Reply(503, {"error": "unavailable"}), Reply(200, {"ok": True})])
    sent = record_requests(backend)
    couch = Couch(URL, backend=backend, retry=Retry(attempts=2, base=0, cap=0))
    call = couch.info(callback=lambda data, status: None)
    assert call is None
    (_, wake, _), = backend.later  # the retry's wait (the recording backend runs it when told)
    wake()
    assert [r.url for r in sent] == [URL + "/", URL + "/"]
    assert sent[0] is sent[1]  # the same Request object, sent twice
