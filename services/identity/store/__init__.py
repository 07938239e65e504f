"""The identity service's storage: the only identity modules that import mongoengine.

Every document class binds to the connection alias :data:`ALIAS`; the process (or a test)
connects that alias to its database with ``services.common.mongo.connect(uri, db, alias=ALIAS)``.
"""

from __future__ import annotations

from datetime import UTC, datetime

ALIAS = "identity"


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (drivers may hand back naive UTC datetimes)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
