"""Anchored record versions in Mongo (FerretDB locally): the only anchoring module that
imports mongoengine.

One document per version, ``_id`` = hospital NUL record id NUL version (zero-padded), so that
idempotency survives concurrent requests without transactions (a duplicate insert fails on the
key) and a record's versions sort by ``_id``. FerretDB v1 answers every query — an update by
``_id`` included — with a table scan, so nothing is written per version after its insert: the
versions of one anchoring call form a *chunk*, whose one document gets the ordering offsets
and the RecordAnchored events (the outbox) in one update once Kafka has acknowledged them.
Batches are read with one ``_id $in`` query.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import mongoengine as me
from pymongo.errors import BulkWriteError

from services.anchoring.domain import RecordVersion
from services.common.mongo import as_utc
from services.common.outbox import OutboxDocument
from swiftchain.events.v1 import events_pb2

ALIAS = "anchoring"
_DUPLICATE_KEY = 11000


def version_id(organization_id: str, record_id: str, version: int) -> str:
    """The ``_id`` of a record version."""
    return f"{organization_id}\x00{record_id}\x00{version:010d}"


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


class RecordVersionDoc(OutboxDocument):
    """One anchored record version."""

    meta: ClassVar[dict[str, Any]] = {"collection": "record_versions", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    organization_id = me.StringField(required=True)
    record_id = me.StringField(required=True)
    version = me.IntField(required=True)
    action = me.IntField(required=True)
    commitment = me.BinaryField(required=True)
    subject_tag = me.BinaryField(required=True)
    previous_version_commitment = me.BinaryField()
    author_practitioner_id = me.StringField(default="")
    reason_code = me.StringField(default="")
    reason_text = me.StringField(default="")
    entry_id = me.StringField(required=True)
    entry = me.BinaryField(required=True)
    key_id = me.StringField(required=True)
    leaf_hash = me.BinaryField(required=True)
    anchored_time = me.DateTimeField(required=True)
    seal_due_time = me.DateTimeField(required=True)
    chunk_id = me.StringField(required=True)
    leaf_index = me.IntField(null=True)
    sealed_tree_size = me.IntField(null=True)
    sealed_time = me.DateTimeField(null=True)
    rejection_reason = me.StringField(default="")
    rejection_detail = me.StringField(default="")


class ChunkDoc(OutboxDocument):
    """The versions of one anchoring call and, once ordered, their offsets and events."""

    meta: ClassVar[dict[str, Any]] = {"collection": "chunks", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    version_ids = me.ListField(me.StringField())
    anchored_time = me.DateTimeField(required=True)
    ordered = me.BooleanField(default=False)
    #: entry id -> [ordering offset, Kafka timestamp in ms]
    offsets = me.DictField()


class EntryIndexDoc(me.Document):
    """entry id -> version ``_id`` (a small document, so lookups by entry id stay cheap)."""

    meta: ClassVar[dict[str, Any]] = {"collection": "entry_index", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    version_id = me.StringField(required=True)


def _to_raw(version: RecordVersion) -> dict[str, Any]:
    return {
        "_id": version_id(version.organization_id, version.record_id, version.version),
        "organization_id": version.organization_id,
        "record_id": version.record_id,
        "version": version.version,
        "action": version.action,
        "commitment": version.commitment,
        "subject_tag": version.subject_tag,
        "previous_version_commitment": version.previous_version_commitment,
        "author_practitioner_id": version.author_practitioner_id,
        "reason_code": version.reason_code,
        "reason_text": version.reason_text,
        "entry_id": version.entry_id,
        "entry": version.entry,
        "key_id": version.key_id,
        "leaf_hash": version.leaf_hash,
        "anchored_time": version.anchored_time,
        "seal_due_time": version.seal_due_time,
        "chunk_id": version.chunk_id,
        "outbox": [],
        "outbox_pending": False,
    }


def _from_raw(raw: dict[str, Any]) -> RecordVersion:
    anchored, due = _utc(raw["anchored_time"]), _utc(raw["seal_due_time"])
    assert anchored is not None and due is not None
    return RecordVersion(
        organization_id=raw["organization_id"],
        record_id=raw["record_id"],
        version=raw["version"],
        action=raw["action"],
        commitment=bytes(raw["commitment"]),
        subject_tag=bytes(raw["subject_tag"]),
        previous_version_commitment=bytes(raw.get("previous_version_commitment") or b""),
        author_practitioner_id=raw.get("author_practitioner_id", ""),
        reason_code=raw.get("reason_code", ""),
        reason_text=raw.get("reason_text", ""),
        entry_id=raw["entry_id"],
        entry=bytes(raw["entry"]),
        key_id=raw["key_id"],
        leaf_hash=bytes(raw["leaf_hash"]),
        anchored_time=anchored,
        seal_due_time=due,
        leaf_index=raw.get("leaf_index"),
        sealed_tree_size=raw.get("sealed_tree_size"),
        sealed_time=_utc(raw.get("sealed_time")),
        rejection_reason=raw.get("rejection_reason", ""),
        rejection_detail=raw.get("rejection_detail", ""),
        chunk_id=raw.get("chunk_id", ""),
    )


class VersionStore:
    """The domain's VersionStore on mongoengine/pymongo (connection alias ``anchoring``)."""

    @staticmethod
    def _versions() -> Any:
        return RecordVersionDoc._get_collection()

    @staticmethod
    def _load(raws: Any) -> list[RecordVersion]:
        """Versions with the ordering offsets of their chunks (one more query)."""
        versions = [_from_raw(raw) for raw in raws]
        chunk_ids = list({v.chunk_id for v in versions})
        if not chunk_ids:
            return versions
        offsets: dict[str, list[int]] = {}
        for chunk in ChunkDoc._get_collection().find({"_id": {"$in": chunk_ids}}, {"offsets": 1}):
            offsets.update(chunk.get("offsets") or {})
        for version in versions:
            placed = offsets.get(version.entry_id)
            if placed is not None:
                version.ordering_offset = int(placed[0])
                version.ordered_time = datetime.fromtimestamp(placed[1] / 1000, UTC)
        return versions

    def get_many(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], RecordVersion]:
        """The stored versions among ``keys``."""
        if not keys:
            return {}
        ids = [version_id(*key) for key in keys]
        return {v.key: v for v in self._load(self._versions().find({"_id": {"$in": ids}}))}

    def insert_new(self, versions: Sequence[RecordVersion]) -> list[RecordVersion]:
        """Insert each version; return those a concurrent request stored first, as stored."""
        duplicates: list[str] = []
        chunks: dict[str, list[str]] = {}
        for version in versions:
            chunks.setdefault(version.chunk_id, []).append(version_id(*version.key))
        ChunkDoc._get_collection().insert_many(
            [
                {
                    "_id": chunk_id,
                    "version_ids": ids,
                    "anchored_time": versions[0].anchored_time,
                    "ordered": False,
                    "offsets": {},
                    "outbox": [],
                    "outbox_pending": False,
                }
                for chunk_id, ids in chunks.items()
            ]
        )
        try:
            self._versions().insert_many([_to_raw(v) for v in versions], ordered=False)
        except BulkWriteError as error:
            for failure in error.details.get("writeErrors", []):
                if failure.get("code") != _DUPLICATE_KEY:
                    raise
                duplicates.append(failure["op"]["_id"])
        index = EntryIndexDoc._get_collection()
        entries = [
            {"_id": v.entry_id, "version_id": version_id(*v.key)}
            for v in versions
            if version_id(*v.key) not in duplicates
        ]
        if entries:
            try:
                index.insert_many(entries, ordered=False)
            except BulkWriteError as error:
                if any(f.get("code") != _DUPLICATE_KEY for f in error.details["writeErrors"]):
                    raise
        if not duplicates:
            return []
        return self._load(self._versions().find({"_id": {"$in": duplicates}}))

    def set_ordered(
        self, ordered: Sequence[RecordVersion], events: Sequence[events_pb2.EventEnvelope]
    ) -> None:
        """Store the versions' offsets and events: one update per chunk."""
        by_chunk: dict[str, list[tuple[RecordVersion, events_pb2.EventEnvelope]]] = {}
        for version, event in zip(ordered, events, strict=True):
            by_chunk.setdefault(version.chunk_id, []).append((version, event))
        chunks = ChunkDoc._get_collection()
        for chunk_id, items in by_chunk.items():
            placed = {
                f"offsets.{v.entry_id}": [
                    v.ordering_offset,
                    int((v.ordered_time or v.anchored_time).timestamp() * 1000),
                ]
                for v, _ in items
            }
            chunk = chunks.find_one({"_id": chunk_id}, {"version_ids": 1})
            complete = chunk is not None and len(chunk["version_ids"]) <= len(items)
            chunks.update_one(
                {"_id": chunk_id},
                {
                    "$set": {
                        **placed,
                        "outbox_pending": True,
                        **({"ordered": True} if complete else {}),
                    },
                    "$push": {"outbox": {"$each": [e.SerializeToString() for _, e in items]}},
                },
            )

    def unordered(self, older_than: datetime) -> list[RecordVersion]:
        """Versions of chunks stored before ``older_than`` that Kafka never acknowledged."""
        ids: list[str] = []
        for chunk in ChunkDoc._get_collection().find(
            {"ordered": False, "anchored_time": {"$lt": older_than}}, {"version_ids": 1}
        ):
            ids.extend(chunk["version_ids"])
        if not ids:
            return []
        return [
            v
            for v in self._load(self._versions().find({"_id": {"$in": ids}}))
            if v.ordering_offset is None
        ]

    def by_entry(self, entry_id: str) -> RecordVersion | None:
        """The version anchored by ``entry_id``."""
        index = EntryIndexDoc.objects(id=entry_id).first()
        if index is None:
            return None
        found = self._load(self._versions().find({"_id": index.version_id}))
        return found[0] if found else None

    def of_record(self, organization_id: str, record_id: str) -> list[RecordVersion]:
        """Every version of a record, oldest first."""
        cursor = (
            self._versions()
            .find({"organization_id": organization_id, "record_id": record_id})
            .sort("_id", 1)
        )
        return [_from_raw(raw) for raw in cursor]

    def set_sealed(
        self,
        version: RecordVersion,
        events: Sequence[events_pb2.EventEnvelope],
    ) -> None:
        """Store where the version's entry landed and the sealed tree covering it."""
        self._versions().update_one(
            {"_id": version_id(*version.key), "sealed_tree_size": None},
            {
                "$set": {
                    "leaf_index": version.leaf_index,
                    "sealed_tree_size": version.sealed_tree_size,
                    "sealed_time": version.sealed_time,
                    "outbox_pending": True,
                },
                "$push": {"outbox": {"$each": [e.SerializeToString() for e in events]}},
            },
        )
