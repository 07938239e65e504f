"""services/platform/mongo.py on the real FerretDB: a bulk write of many updates completes.

FerretDB v1 (SQLite) deadlocks on one ``update`` command of about 100 statements (each holds a
pooled SQLite connection until the command ends); ``mongo.bulk_write`` splits the statements
into commands small enough. Without it this test's update command never returns and the socket
timeout fails it (and every later request to that database would wait behind it).
"""

from __future__ import annotations

import uuid
from typing import Any

import pymongo
import pytest
from pymongo.operations import UpdateOne

from services.platform import mongo

pytestmark = pytest.mark.integration


def test_a_bulk_write_of_many_updates_completes_and_applies_in_order(mongo_uri: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_uri, socketTimeoutMS=60_000, serverSelectionTimeoutMS=10_000
    )
    try:
        collection = client[f"bulk_{uuid.uuid4().hex[:8]}"]["items"]
        count = 4 * mongo.MAX_WRITES_PER_COMMAND + 7
        collection.insert_many([{"_id": f"doc-{n}", "n": n, "seen": []} for n in range(count)])
        updates = [
            UpdateOne({"_id": f"doc-{n}"}, {"$set": {"done": True}, "$push": {"seen": step}})
            for step in (1, 2)
            for n in range(count)
        ]

        mongo.bulk_write(collection, updates, ordered=True)

        docs = list(collection.find({}))
        assert len(docs) == count
        assert all(doc["done"] is True and doc["seen"] == [1, 2] for doc in docs)
        # The database still answers other requests afterwards.
        assert collection.find_one({"_id": "doc-0"}) is not None
    finally:
        client.close()
