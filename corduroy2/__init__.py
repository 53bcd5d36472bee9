"""corduroy2: an asynchronous CouchDB client for Tornado and Twisted (and blocking scripts).

Importing this package imports no framework. Pick a front door::

    from corduroy2.tornado_io import Couch, Database, relax   # Tornado / asyncio
    from corduroy2.twisted_io import Couch, Database, relax   # Twisted
    from corduroy2.blocking import Couch, Database             # scripts, REPL
"""

from .api import ConflictResolution, Document, PendingDoc, Status
from .api.changes import ChangesFeed
from .api.follower import ChangesFollower
from .api.replication import Replication, ReplicationState
from .api.views import FindResult, Row, ViewResult
from .pipeline.auth import Auth, BasicAuth, CookieAuth, JWTAuth, ProxyAuth
from .pipeline.retry import Retry
from .errors import (
    BadRequest,
    Conflict,
    ConnectError,
    CouchError,
    DecodeError,
    Forbidden,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    ReplicationFailed,
    RequestEntityTooLarge,
    ResponseCut,
    ServerError,
    Timeout,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
)

__version__ = "0.1.0"

__all__ = [
    "ChangesFeed",
    "ChangesFollower",
    "FindResult",
    "Row",
    "ViewResult",
    "Auth",
    "BadRequest",
    "BasicAuth",
    "ConflictResolution",
    "Conflict",
    "ConnectError",
    "CookieAuth",
    "CouchError",
    "DecodeError",
    "Document",
    "Forbidden",
    "HTTPError",
    "JWTAuth",
    "MethodNotAllowed",
    "NotFound",
    "PendingDoc",
    "PreconditionFailed",
    "ProxyAuth",
    "Replication",
    "ReplicationFailed",
    "ReplicationState",
    "RequestEntityTooLarge",
    "ResponseCut",
    "Retry",
    "ServerError",
    "Status",
    "Timeout",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
]
