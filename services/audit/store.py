"""The audit service's storage on MongoDB/FerretDB (connection alias ``audit``).

* ``items``: the read model, one document per log entry (``_id`` = entry id). Every event about
  an entry is an upsert of the fields it knows, so an event read twice writes the same values
  again and a trail never holds an entry twice.
* ``leaves``: the log index, one document per sealed leaf (``_id`` = entry id), read from a
  chain node; ``position`` holds the tree size it is complete up to and the signed note of the
  last checkpoint the log follower accepted.
* ``directives``: consent directive versions as the consent events announced them
  (``_id`` = ``<directive id>/<version>``), for the consent check of PERMIT decisions.
* ``patients``: subject tag (hex) -> subject id, from identity events.
* ``flags``: flags for review (``_id`` = flag id, derived from what raised it).

The seal of an item comes from whichever of the two writers is second: an event inserts its item
and then reads the log index, the log follower writes the index and then updates the items that
exist; whatever the interleaving, one of them sees the other's write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.collection import Collection

from services.audit.domain import (
    After,
    DirectiveVersion,
    FlagQuery,
    FlagRecord,
    FlagReviewRecord,
    ItemChange,
    LogLeaf,
    TrailQuery,
    TrailRecord,
)
from services.platform import mongo
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.common.v1 import common_pb2

ALIAS = "audit"
#: The ``_id`` of the ``position`` document: the tree size the log index is complete up to
#: (``tree_size``) and the last checkpoint the log follower accepted (``checkpoint``).
POSITION_ID = "log"


def _collection(name: str) -> Collection[dict[str, Any]]:
    collection: Collection[dict[str, Any]] = mongo.database(ALIAS)[name]
    return collection


def _item(doc: dict[str, Any]) -> TrailRecord:
    return TrailRecord(
        entry_id=doc["_id"],
        kind=int(doc.get("kind", 0)),
        time=mongo.as_utc(doc["time"]) if doc.get("time") else datetime.min,
        actor_organization_id=doc.get("actor_organization_id", ""),
        organizations=tuple(doc.get("organizations", ())),
        subject_tag=bytes(doc.get("subject_tag", b"")),
        patient_subject_id=doc.get("patient_subject_id", ""),
        detail=dict(doc.get("detail", {})),
        leaf_index=doc.get("leaf_index"),
        sealed_tree_size=doc.get("sealed_tree_size"),
        rejected=bool(doc.get("rejected", False)),
        rejection_detail=doc.get("rejection_detail", ""),
        flag_ids=tuple(doc.get("flag_ids", ())),
    )


def _leaf(doc: dict[str, Any]) -> LogLeaf:
    return LogLeaf(
        entry_id=doc["_id"],
        leaf_index=int(doc["leaf_index"]),
        kind=int(doc["kind"]),
        submitter_id=doc["submitter_id"],
        subject_tag=bytes(doc.get("subject_tag", b"")),
        time=mongo.as_utc(doc["time"]),
        sealed_tree_size=int(doc["sealed_tree_size"]),
    )


def _flag(doc: dict[str, Any]) -> FlagRecord:
    review = doc.get("review")
    return FlagRecord(
        flag_id=doc["_id"],
        kind=int(doc["kind"]),
        organization_id=doc.get("organization_id", ""),
        summary=doc.get("summary", ""),
        create_time=mongo.as_utc(doc["create_time"]),
        entry_ids=tuple(doc.get("entry_ids", ())),
        patient_subject_id=doc.get("patient_subject_id", ""),
        status=int(doc.get("status", apb.FLAG_STATUS_OPEN)),
        review=FlagReviewRecord(
            review["reviewer_id"],
            int(review["outcome"]),
            review["note"],
            mongo.as_utc(review["review_time"]),
        )
        if review
        else None,
    )


def _time_range(start: datetime | None, end: datetime | None, name: str) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if start is not None:
        bounds["$gte"] = start
    if end is not None:
        bounds["$lt"] = end
    return {name: bounds} if bounds else {}


def _after(position: After | None, name: str, *, newest_first: bool = False) -> dict[str, Any]:
    """The documents strictly after ``position`` (time, id) in an order by the time field
    ``name`` (descending with ``newest_first``), then ``_id``: a range condition, so that a page
    starts where the last one ended whatever was inserted meanwhile."""
    if position is None:
        return {}
    when, item_id = position
    later = "$lt" if newest_first else "$gt"
    return {"$or": [{name: {later: when}}, {name: when, "_id": {"$gt": item_id}}]}


#: A total order that never changes once an item exists (a leaf index would: it comes later).
_TRAIL_ORDER = [("time", ASCENDING), ("_id", ASCENDING)]

#: Secondary indexes for the queries below. MongoDB uses them; FerretDB v1 keeps them but
#: still filters after a full read (it pushes down only ``_id`` equality).
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "items": [
        [("subject_tag", ASCENDING), *_TRAIL_ORDER],
        [("organizations", ASCENDING), *_TRAIL_ORDER],
        [("kind", ASCENDING), *_TRAIL_ORDER],
        [("consent_check_due", ASCENDING)],
    ],
    "leaves": [[("subject_tag", ASCENDING), ("leaf_index", ASCENDING)]],
    "flags": [[("status", ASCENDING), ("create_time", DESCENDING)]],
}


class AuditMongoStore:
    """The domain's AuditStore on pymongo (connection alias ``audit``)."""

    def ensure_indexes(self) -> None:
        """Create the secondary indexes of :data:`INDEXES` (idempotent)."""
        for name, keys in INDEXES.items():
            for key in keys:
                _collection(name).create_index(key)

    # --- items ----------------------------------------------------------------------------

    def apply_changes(self, changes: Sequence[ItemChange], *, only_existing: bool = False) -> None:
        """Upsert each change's fields (or update existing items only), in order."""
        operations = []
        for change in changes:
            update: dict[str, Any] = {"$set": dict(change.fields)}
            if change.event_id:
                update["$addToSet"] = {"event_ids": change.event_id}
            operations.append(UpdateOne({"_id": change.entry_id}, update, upsert=not only_existing))
        if operations:
            mongo.bulk_write(_collection("items"), operations, ordered=True)

    def _item_filter(self, query: TrailQuery) -> dict[str, Any]:
        conditions: dict[str, Any] = {
            "kind": {"$in": list(query.kinds)} if query.kinds else {"$gt": 0}
        }
        if query.subject_tag is not None:
            conditions["subject_tag"] = query.subject_tag
        if query.organization_id:
            conditions["organizations"] = query.organization_id
        conditions.update(_time_range(query.start_time, query.end_time, "time"))
        return conditions

    def items(self, query: TrailQuery, after: After | None, limit: int) -> list[TrailRecord]:
        """Items matching ``query``, oldest first, strictly after ``after``."""
        conditions = self._item_filter(query) | _after(after, "time")
        cursor = _collection("items").find(conditions).sort(_TRAIL_ORDER).limit(limit)
        return [_item(doc) for doc in cursor]

    def items_by_id(self, entry_ids: Sequence[str]) -> dict[str, TrailRecord]:
        """The items with these ids (lookups by ``_id``: indexed on FerretDB)."""
        docs = mongo.find_by_ids(_collection("items"), entry_ids)
        return {key: _item(doc) for key, doc in docs.items() if doc.get("kind")}

    def add_flag_to_items(self, entry_ids: Sequence[str], flag_id: str) -> None:
        """Record the flag on each existing item."""
        operations = [
            UpdateOne({"_id": entry_id}, {"$addToSet": {"flag_ids": flag_id}})
            for entry_id in entry_ids
        ]
        if operations:
            mongo.bulk_write(_collection("items"), operations, ordered=False)

    def recent_access(self, since: datetime) -> list[TrailRecord]:
        """ACCESS items at or after ``since``, oldest first."""
        cursor = (
            _collection("items")
            .find({"kind": common_pb2.ENTRY_KIND_ACCESS, "time": {"$gte": since}})
            .sort([("time", ASCENDING)])
        )
        return [_item(doc) for doc in cursor]

    def unchecked_items(self) -> list[TrailRecord]:
        """Items whose consent check is due."""
        return [_item(doc) for doc in _collection("items").find({"consent_check_due": True})]

    def mark_checked(self, entry_ids: Sequence[str]) -> None:
        """Clear the due consent check of these items."""
        operations = [
            UpdateOne({"_id": entry_id}, {"$set": {"consent_check_due": False}})
            for entry_id in entry_ids
        ]
        if operations:
            mongo.bulk_write(_collection("items"), operations, ordered=False)

    # --- the log index --------------------------------------------------------------------

    def put_leaves(self, leaves: Sequence[LogLeaf]) -> None:
        """Upsert the leaves (a leaf read twice is written once)."""
        operations = [
            UpdateOne(
                {"_id": leaf.entry_id},
                {
                    "$set": {
                        "leaf_index": leaf.leaf_index,
                        "kind": leaf.kind,
                        "submitter_id": leaf.submitter_id,
                        "subject_tag": leaf.subject_tag,
                        "time": leaf.time,
                        "sealed_tree_size": leaf.sealed_tree_size,
                    }
                },
                upsert=True,
            )
            for leaf in leaves
        ]
        if operations:
            mongo.bulk_write(_collection("leaves"), operations, ordered=False)

    def leaves_with_tag(self, tag: bytes) -> list[LogLeaf]:
        """Every indexed leaf with this subject tag, in leaf order."""
        cursor = _collection("leaves").find({"subject_tag": tag}).sort([("leaf_index", ASCENDING)])
        return [_leaf(doc) for doc in cursor]

    def leaves_by_id(self, entry_ids: Sequence[str]) -> dict[str, LogLeaf]:
        """The indexed leaves with these entry ids."""
        docs = mongo.find_by_ids(_collection("leaves"), entry_ids)
        return {key: _leaf(doc) for key, doc in docs.items()}

    def log_position(self) -> int:
        """The tree size the log index is complete up to."""
        doc = _collection("position").find_one({"_id": POSITION_ID})
        return int(doc["tree_size"]) if doc else 0

    def store_log_position(self, tree_size: int) -> None:
        """Remember the tree size the log index is complete up to."""
        _collection("position").update_one(
            {"_id": POSITION_ID}, {"$set": {"tree_size": tree_size}}, upsert=True
        )

    def log_checkpoint(self) -> str:
        """The signed note of the last checkpoint the log follower accepted ('' for none)."""
        doc = _collection("position").find_one({"_id": POSITION_ID})
        return str(doc.get("checkpoint", "")) if doc else ""

    def store_log_checkpoint(self, note: str) -> None:
        """Remember the last checkpoint the log follower accepted."""
        _collection("position").update_one(
            {"_id": POSITION_ID}, {"$set": {"checkpoint": note}}, upsert=True
        )

    # --- directives and patients ----------------------------------------------------------

    def put_directive(self, version: DirectiveVersion) -> None:
        """Remember a directive version."""
        _collection("directives").update_one(
            {"_id": f"{version.directive_id}/{version.version}"},
            {
                "$set": {
                    "active": version.active,
                    "grantee_organization_id": version.grantee_organization_id,
                    "patient_subject_id": version.patient_subject_id,
                }
            },
            upsert=True,
        )

    def directive(self, directive_id: str, version: int) -> DirectiveVersion | None:
        """A directive version, if announced."""
        doc = _collection("directives").find_one({"_id": f"{directive_id}/{version}"})
        if doc is None:
            return None
        return DirectiveVersion(
            directive_id,
            version,
            bool(doc["active"]),
            doc["grantee_organization_id"],
            doc["patient_subject_id"],
        )

    def put_patient(self, tag: bytes, subject_id: str) -> None:
        """Remember whose tag ``tag`` is."""
        _collection("patients").update_one(
            {"_id": tag.hex()}, {"$set": {"subject_id": subject_id}}, upsert=True
        )

    def patients(self, tags: Iterable[bytes]) -> dict[bytes, str]:
        """The subject ids of the known tags."""
        docs = mongo.find_by_ids(_collection("patients"), (tag.hex() for tag in tags))
        return {bytes.fromhex(key): doc["subject_id"] for key, doc in docs.items()}

    # --- flags ----------------------------------------------------------------------------

    def raise_flag(self, flag: FlagRecord) -> None:
        """Create the flag, or add its entries to the one raised before."""
        _collection("flags").update_one(
            {"_id": flag.flag_id},
            {
                "$setOnInsert": {
                    "kind": flag.kind,
                    "organization_id": flag.organization_id,
                    "patient_subject_id": flag.patient_subject_id,
                    "create_time": flag.create_time,
                    "status": apb.FLAG_STATUS_OPEN,
                },
                "$set": {"summary": flag.summary},
                "$addToSet": {"entry_ids": {"$each": list(flag.entry_ids)}},
            },
            upsert=True,
        )

    def flag(self, flag_id: str) -> FlagRecord | None:
        """One flag."""
        doc = _collection("flags").find_one({"_id": flag_id})
        return _flag(doc) if doc else None

    def flags(self, query: FlagQuery, after: After | None, limit: int) -> list[FlagRecord]:
        """Flags matching ``query``, newest first, strictly after ``after``."""
        conditions: dict[str, Any] = {}
        if query.status:
            conditions["status"] = query.status
        if query.kinds:
            conditions["kind"] = {"$in": list(query.kinds)}
        if query.organization_id:
            conditions["organization_id"] = query.organization_id
        if query.patient_subject_id:
            conditions["patient_subject_id"] = query.patient_subject_id
        conditions.update(_time_range(query.start_time, query.end_time, "create_time"))
        conditions.update(_after(after, "create_time", newest_first=True))
        cursor = (
            _collection("flags")
            .find(conditions)
            .sort([("create_time", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [_flag(doc) for doc in cursor]

    def review_flag(self, flag_id: str, review: FlagReviewRecord) -> FlagRecord | None:
        """Set the review, keeping the earlier ones in ``history``."""
        record = {
            "reviewer_id": review.reviewer_id,
            "outcome": review.outcome,
            "note": review.note,
            "review_time": review.review_time,
        }
        result = _collection("flags").update_one(
            {"_id": flag_id},
            {
                "$set": {"status": apb.FLAG_STATUS_REVIEWED, "review": record},
                "$push": {"history": record},
            },
        )
        if result.matched_count == 0:
            return None
        return self.flag(flag_id)
