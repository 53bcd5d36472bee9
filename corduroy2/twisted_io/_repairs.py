"""Where the Twisted adapter needs more than Twisted's public API
(DESIGN.md section 9).

Each repair is one small function that reaches a private name of Twisted, and falls back to
public behaviour when a Twisted release no longer has it. ``tests/backends/test_twisted_repairs.py``
checks each assumption against the installed Twisted, so an upgrade that breaks one fails a
test instead of silently taking the fallback. Nothing else in ``corduroy2.twisted_io`` may
touch a private Twisted name.
"""

from __future__ import annotations

from typing import Any

__all__ = ["not_sent_errors", "body_connection", "abort_body"]


def not_sent_errors() -> tuple[type[Exception], ...]:
    """The exception Twisted fails a request with when it wrote none of it (the pooled
    connection it picked could no longer take a request), as a tuple for ``isinstance``.

    Why: ``RequestNotSent`` lives in the private ``twisted.web._newclient``;
    ``twisted.web.client`` imports it but does not export it. Knowing it lets the adapter say
    "could not be sent" rather than "unexpected". Fallback: an empty tuple, and the failure
    is still reported as a ``TransportError``, only with the vaguer wording.
    """
    try:
        from twisted.web._newclient import RequestNotSent
    except ImportError:
        return ()
    return (RequestNotSent,)


def body_connection(transport: Any) -> Any:
    """The connection (TCP, or TLS over TCP) under the transport that ``Response.deliverBody``
    gives its protocol, or None if it cannot be found (or the body is already complete).

    Why: that transport is a ``TransportProxyProducer`` that can only ``stopProducing()``; the
    connection it wraps, its private ``_producer``, is the only handle on the connection that
    can ``abortConnection()``.
    """
    connection = getattr(transport, "_producer", None)
    return connection if hasattr(connection, "abortConnection") else None


def abort_body(transport: Any) -> None:
    """Drop, at once, the connection of a response whose body is being delivered.

    Why: the public ``stopProducing()`` only asks for a graceful close, and Twisted's TCP
    transport closes gracefully only once it has written everything still buffered for the
    server. When the server answers before it has read the request (a large upload refused
    early, say), a cancelled or timed-out exchange would go on sending its whole body, and
    holding its connection, for as long as the server reads. Fallback: ``stopProducing()``.
    """
    connection = body_connection(transport)
    if connection is not None:
        connection.abortConnection()
    else:
        transport.stopProducing()
