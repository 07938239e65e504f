"""The Mongo connection of a process, through mongoengine (FerretDB locally, MongoDB in k8s).

Only store modules import mongoengine; this is where they get their connection. Nothing here
needs what FerretDB v1 lacks (transactions, change streams, TTL indexes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final

import mongoengine
from pymongo.collection import Collection
from pymongo.operations import DeleteOne, InsertOne, UpdateOne

MAX_WRITES_PER_COMMAND: Final = 50
"""FerretDB v1 (SQLite) keeps the query of each statement of an ``update`` command open until the
command ends, each on one of the database's 100 pooled SQLite connections: an update command of
about 100 statements waits for a connection that it holds itself, and every later request to that
database waits behind it (found by a goroutine dump; FerretDB v1.24.2
``internal/handler/msg_update.go``, ``defer closer.Close()`` inside the statement loop). So
bulk writes go in commands of at most this many statements."""


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


def bulk_write(
    collection: Collection[Any],
    operations: Sequence[UpdateOne | DeleteOne | InsertOne[Any]],
    *,
    ordered: bool,
) -> None:
    """``collection.bulk_write`` in commands of at most :data:`MAX_WRITES_PER_COMMAND`
    statements, in order; with ``ordered`` the first failing command stops the rest (as one
    ordered bulk write would)."""
    for start in range(0, len(operations), MAX_WRITES_PER_COMMAND):
        collection.bulk_write(
            list(operations[start : start + MAX_WRITES_PER_COMMAND]), ordered=ordered
        )


LOOKUP_THREADS: Final = 8
"""Concurrent ``_id`` lookups of :func:`find_by_ids`."""

_lookups = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="mongo-lookup")


def find_by_ids(collection: Collection[Any], ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The documents with these ``_id`` values (missing ones left out), by ``_id``.

    FerretDB v1 (SQLite) uses its ``_id`` index only for a filter that is exactly one ``_id``
    equality; ``{"_id": {"$in": ...}}`` reads the whole collection. So the lookups go one by one,
    :data:`LOOKUP_THREADS` at a time: a batch costs a few round trips' time, not one per id.
    """
    wanted = list(dict.fromkeys(ids))
    if len(wanted) <= 1:
        found = [collection.find_one({"_id": key}) for key in wanted]
    else:
        found = list(_lookups.map(lambda key: collection.find_one({"_id": key}), wanted))
    return {doc["_id"]: doc for doc in found if doc is not None}
