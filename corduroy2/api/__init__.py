"""The CouchDB API, written once over :mod:`corduroy2.backend`; no framework here.

Use it through a front door that binds a backend: :mod:`corduroy2.tornado_io`,
:mod:`corduroy2.twisted_io` or :mod:`corduroy2.blocking`.
"""

from .couch import Couch
from .database import Database
from .documents import ConflictResolution, Document, PendingDoc
from .front_door import EventLoopDoor
from .status import Status

Couch.database_class = Database
Couch.front_door = EventLoopDoor()

__all__ = ["Couch", "Database", "Document", "ConflictResolution", "PendingDoc", "Status"]
