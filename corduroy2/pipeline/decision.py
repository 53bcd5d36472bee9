"""What to do once an attempt has ended: one pure function, :func:`decide`.

An attempt ends with a reply (a status and headers) or with a transport error. The exchange
(:mod:`corduroy2.pipeline.exchange`) asks :func:`decide` and does what it answers:

* :data:`DELIVER`: the reply is final; the caller gets it, whatever its status (the API maps
  an error status to its exception).
* :data:`FAIL`: the transport error is final; the caller gets it.
* :data:`RENEW`: a 401 that fresh credentials may cure: renew them (single-flight), then send
  again. Done at most once per request.
* :data:`FAILOVER`: send again at once, to another node of the cluster (``Couch([url1,
  url2...])``): the attempt's node is down or unreachable, and another node has not been tried
  yet. A request goes to each node at most once this way; after that the retry policy's
  backoff applies.
* :class:`RetryAfter`: send again after ``delay`` seconds.

A request whose streamed body has been read in part (``Request.replayable`` False: an
attachment upload) is never sent again: its reply or error is final.

Nothing here does IO or keeps state: the table in ``tests/core/test_decision.py`` is the spec.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import ConnectError, CouchError, Timeout, TransportError
from ..protocol.requests import Request
from .retry import Retry, retry_after

__all__ = ["Decision", "Final", "RetryAfter", "DELIVER", "FAIL", "RENEW", "FAILOVER", "decide"]


class Final:
    """A decision without a parameter: :data:`DELIVER`, :data:`FAIL`, :data:`RENEW` or
    :data:`FAILOVER`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DELIVER = Final("DELIVER")
FAIL = Final("FAIL")
RENEW = Final("RENEW")
FAILOVER = Final("FAILOVER")


@dataclass(frozen=True)
class RetryAfter:
    """Send the request again after ``delay`` seconds."""

    delay: float


Decision = Final | RetryAfter


def decide(
    request: Request,
    status: int | None,
    headers: Mapping[str, str] | None,
    error: CouchError | None,
    *,
    policy: Retry | None,
    retries: int,
    elapsed: float,
    renewable: bool,
    other_node: bool = False,
    jitter: Callable[[], float] = random.random,
) -> Decision:
    """What to do after an attempt of ``request`` that ended with ``error`` (a transport
    failure) or else with ``status``/``headers``.

    ``policy``: the retry policy (None: never retry). ``retries``: retries made so far.
    ``elapsed``: seconds since the first attempt. ``renewable``: a 401 may be cured by renewing
    the credentials (the handle's auth can renew and has not yet done so for this request).
    ``other_node``: the cluster has a node this request has not been sent to yet.
    """
    if error is None:
        assert status is not None
        if status < 400:
            return DELIVER
        if status == 401 and renewable and request.replayable:
            return RENEW
    elif other_node and _may_fail_over(request, status, error, policy, elapsed):
        return FAILOVER
    delay = _retry_delay(request, status, headers, error, policy, retries, jitter)
    if delay is None or (policy is not None and elapsed + delay > policy.deadline):
        return FAIL if error is not None else DELIVER
    return RetryAfter(delay)


def _may_fail_over(request: Request, status: int | None, error: CouchError,
                   policy: Retry | None, elapsed: float) -> bool:
    """Whether a transport failure may be retried on another node right away."""
    if policy is None or elapsed > policy.deadline or not isinstance(error, TransportError):
        return False
    if isinstance(error, ConnectError):
        return True  # it never reached a server, whatever its method
    if not policy.allows(request):
        return False
    # A node that sent nothing within the time allowed is taken for dead; a reply that began
    # and then went silent spent the time allowed for the call.
    return not isinstance(error, Timeout) or status is None


def _retry_delay(request: Request, status: int | None, headers: Mapping[str, str] | None,
                 error: CouchError | None, policy: Retry | None, retries: int,
                 jitter: Callable[[], float]) -> float | None:
    """The delay the policy asks for before another attempt, or None for no retry."""
    if policy is None or retries + 1 >= policy.attempts or not request.replayable:
        return None  # (a streamed body already read in part cannot be sent again)
    if error is not None:
        if isinstance(error, Timeout) or not isinstance(error, TransportError):
            return None
        # No connection was made, so the request never reached the server: it may be sent
        # again whatever its method. Other failures may come after the server applied it.
        if not isinstance(error, ConnectError) and not policy.allows(request):
            return None
        return policy.backoff(retries + 1, jitter)
    if status in policy.statuses and policy.allows(request):
        asked = retry_after(headers)
        return min(asked, policy.cap) if asked is not None else policy.backoff(retries + 1, jitter)
    return None
