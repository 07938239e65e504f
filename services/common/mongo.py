"""The Mongo connection of a process, through mongoengine (FerretDB locally, MongoDB in k8s).

Only store modules import mongoengine; this is where they get their connection. Nothing here
needs what FerretDB v1 lacks (transactions, change streams, TTL indexes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import mongoengine


def connect(uri: str, database: str, *, alias: str = "default") -> None:
    """Register the connection ``alias`` to ``database`` at ``uri`` (idempotent per alias)."""
    mongoengine.disconnect(alias=alias)
    mongoengine.connect(
        db=database,
        host=uri,
        alias=alias,
        uuidRepresentation="standard",
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
    )


def disconnect(alias: str = "default") -> None:
    """Close the connection ``alias``."""
    mongoengine.disconnect(alias=alias)


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (drivers may hand back naive UTC datetimes)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def database(alias: str = "default") -> Any:
    """The pymongo database behind ``alias``, for stores that write raw documents (one round
    trip per write, no per-document object mapping on hot paths)."""
    return mongoengine.get_db(alias)
