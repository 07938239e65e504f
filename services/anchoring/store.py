"""Anchored record versions in Mongo (FerretDB locally): the only anchoring module that
imports mongoengine.

One document per version, ``_id`` = hospital NUL record id NUL version (zero-padded), so that
idempotency survives concurrent requests without transactions (a duplicate insert fails on the
key) and a record's versions sort by ``_id``. FerretDB v1 answers every query — an update by
``_id`` included — with a table scan, so nothing is written per version after its insert: the
versions of one anchoring call form a *chunk*, whose one document gets, one update each time,
the ordering offsets once Kafka has acknowledged them, then the seals (or rejections, or
missed deadlines) the log reports, each update with its events (the outbox). Batches are read
with one ``_id $in`` query.

A chunk's document is updated from several threads: the request that ordered it, the checkpoint
follower, the deadline loop, receipts, and the outbox relay removing what it published. FerretDB
v1 does not isolate two updates of one document (see :mod:`services.platform.outbox`), so each
update of a chunk, with the read it is computed from, holds that chunk's
:func:`~services.platform.outbox.document_lock`; without it the relay's removal overwrote seals
recorded meanwhile, and their RecordSealed events were never sent.

A chunk document is a few hundred KB that FerretDB v1 decodes whole on every read, a projection
and an ``_id`` lookup included (~60-90 ms of its CPU at 1,000 versions). So the store does not
read one to learn what it wrote itself: it remembers, of the chunks it stored, those not yet
recorded as ordered (their version ids, for :meth:`VersionStore.set_ordered` and
:meth:`VersionStore.unordered`) and those not yet recorded as settled (which versions are, for
:meth:`VersionStore.set_log_state`); a chunk it does not know (a previous process's) is read as
before. Finding the chunks Kafka never acknowledged, every few seconds, is a filter FerretDB v1
answers by decoding every chunk document, kept for ever: :meth:`VersionStore.unordered` reads
the collection only at its first look (what a previous process left) and every
:data:`UNORDERED_SWEEP_SECONDS` after. What the store remembers is right as long as it is the
only writer of its chunks, which the chunk locks already assume (each service runs as one
replica).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import mongoengine as me
from pymongo.errors import BulkWriteError

from services.anchoring.domain import RecordVersion
from services.platform.mongo import as_utc
from services.platform.outbox import OutboxDocument, document_lock, mark_pending
from swiftchain.events.v1 import events_pb2

ALIAS = "anchoring"
_DUPLICATE_KEY = 11000


def version_id(organization_id: str, record_id: str, version: int) -> str:
    """The ``_id`` of a record version."""
    return f"{organization_id}\x00{record_id}\x00{version:010d}"


class RecordVersionDoc(me.Document):
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


class ChunkDoc(OutboxDocument):
    """The versions of one anchoring call and, as it comes, what the log did with them (with
    the events that reports)."""

    meta: ClassVar[dict[str, Any]] = {"collection": "chunks", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    version_ids = me.ListField(me.StringField())
    anchored_time = me.DateTimeField(required=True)
    ordered = me.BooleanField(default=False)
    #: entry id -> [ordering offset, Kafka timestamp in ms]
    offsets = me.DictField()
    #: entry id -> [leaf index, sealed tree size, time recorded in ms]
    sealed = me.DictField()
    #: entry id -> [RejectionReason name, detail]
    rejected = me.DictField()
    #: entry id -> true: a SealDeadlineMissed was reported
    missed = me.DictField()
    #: Every version is sealed or rejected.
    settled = me.BooleanField(default=False)


@contextmanager
def _chunk_lock(chunk_id: str) -> Iterator[None]:
    """Held around each update of a chunk's document (see the module docstring)."""
    with document_lock(ChunkDoc._get_collection_name(), chunk_id):
        yield


class LogPositionDoc(me.Document):
    """How far the sealed leaves were looked at (one document)."""

    meta: ClassVar[dict[str, Any]] = {"collection": "log_position", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    tree_size = me.IntField(required=True)


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
    }


def _from_raw(raw: dict[str, Any]) -> RecordVersion:
    anchored, due = as_utc(raw["anchored_time"]), as_utc(raw["seal_due_time"])
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
        chunk_id=raw.get("chunk_id", ""),
    )


_CHUNK_FACTS = ("offsets", "sealed", "rejected", "missed")


def _from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


#: Up to this many ids are read one ``find_one`` each rather than with one ``$in``.
_POINT_READS = 64


def _find_by_ids(
    collection: Any, ids: Sequence[str], projection: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """The documents of ``ids``. FerretDB v1 does not push ``$in`` down to SQLite, so an
    ``$in`` reads the whole collection (measured: 1.3 s for 1,000 ids among 30,000 documents,
    against 0.6 ms per ``find_one``); few ids are therefore read one by one."""
    if len(ids) > _POINT_READS:
        return list(collection.find({"_id": {"$in": list(ids)}}, projection))
    found = (collection.find_one({"_id": i}, projection) for i in ids)
    return [doc for doc in found if doc is not None]


#: Settled versions a store keeps in memory by default (about 1 KB each).
SETTLED_CACHE_SIZE = 100_000
#: How often :meth:`VersionStore.unordered` reads every chunk document (in between, only the
#: chunks this store stored and has not seen ordered).
UNORDERED_SWEEP_SECONDS = 30.0


@dataclass(frozen=True)
class _UnorderedChunk:
    anchored_time: datetime
    version_ids: tuple[str, ...]


class _UnorderedChunks:
    """The chunks known to be stored with ``ordered`` false, by id: what the store inserted or
    a sweep found, until the store records one as ordered or deletes it."""

    def __init__(self) -> None:
        self._chunks: dict[str, _UnorderedChunk] = {}
        self._lock = threading.Lock()
        self._sweeps = 0
        # Chunks forgotten while a sweep reads the collection: what it read of them is stale.
        self._forgotten: set[str] = set()

    def put(self, chunk_id: str, anchored_time: datetime, version_ids: Sequence[str]) -> None:
        with self._lock:
            self._chunks[chunk_id] = _UnorderedChunk(anchored_time, tuple(version_ids))

    def get(self, chunk_id: str) -> _UnorderedChunk | None:
        with self._lock:
            return self._chunks.get(chunk_id)

    def forget(self, chunk_id: str) -> None:
        with self._lock:
            self._chunks.pop(chunk_id, None)
            if self._sweeps:
                self._forgotten.add(chunk_id)

    @contextmanager
    def sweep(self) -> Iterator[dict[str, _UnorderedChunk]]:
        """Around a read of every unordered chunk: fill the dict yielded with what was read;
        the chunks in it are then known, except those forgotten meanwhile."""
        found: dict[str, _UnorderedChunk] = {}
        with self._lock:
            self._sweeps += 1
        try:
            yield found
        finally:
            with self._lock:
                for chunk_id, chunk in found.items():
                    if chunk_id not in self._forgotten:
                        self._chunks.setdefault(chunk_id, chunk)
                self._sweeps -= 1
                if not self._sweeps:
                    self._forgotten.clear()

    def older_than(self, moment: datetime) -> dict[str, _UnorderedChunk]:
        with self._lock:
            return {i: c for i, c in self._chunks.items() if c.anchored_time < moment}


@dataclass
class _Progress:
    versions: int
    settled: set[str]


class _ChunkProgress:
    """Of each chunk the store knows and has not recorded as settled: how many versions it
    holds and the entry ids among them that are sealed or rejected, as stored."""

    def __init__(self) -> None:
        self._chunks: dict[str, _Progress] = {}
        self._lock = threading.Lock()

    def put(self, chunk_id: str, versions: int, settled: set[str]) -> None:
        with self._lock:
            self._chunks[chunk_id] = _Progress(versions, settled)

    def get(self, chunk_id: str) -> _Progress | None:
        with self._lock:
            known = self._chunks.get(chunk_id)
            return None if known is None else _Progress(known.versions, set(known.settled))

    def forget(self, chunk_id: str) -> None:
        with self._lock:
            self._chunks.pop(chunk_id, None)


class _SettledVersions:
    """Sealed or rejected versions by entry id, least recently used evicted first. Nothing
    about a settled version changes any more, so a cached one is right whichever replica
    recorded it; a receipt of one then costs no read of its chunk's document (up to 1,000
    versions' facts, which FerretDB v1 decodes whole, ~100 ms)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"expected a settled-version cache size >= 0, got {size}")
        self._size = size
        self._versions: OrderedDict[str, RecordVersion] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry_id: str) -> RecordVersion | None:
        with self._lock:
            found = self._versions.get(entry_id)
            if found is None:
                return None
            self._versions.move_to_end(entry_id)
        return copy.copy(found)

    def put(self, versions: Sequence[RecordVersion]) -> None:
        settled = [v for v in versions if v.sealed_tree_size is not None or v.rejection_reason]
        if not settled or self._size == 0:
            return
        with self._lock:
            for version in settled:
                self._versions[version.entry_id] = copy.copy(version)
                self._versions.move_to_end(version.entry_id)
            while len(self._versions) > self._size:
                self._versions.popitem(last=False)


class VersionStore:
    """The domain's VersionStore on mongoengine/pymongo (connection alias ``anchoring``)."""

    def __init__(
        self,
        settled_cache_size: int = SETTLED_CACHE_SIZE,
        unordered_sweep_seconds: float = UNORDERED_SWEEP_SECONDS,
    ) -> None:
        self._settled = _SettledVersions(settled_cache_size)
        self._unordered = _UnorderedChunks()
        self._progress = _ChunkProgress()
        self._sweep_seconds = unordered_sweep_seconds
        self._next_sweep: float | None = None  # None: the next look reads every chunk

    @staticmethod
    def _versions() -> Any:
        return RecordVersionDoc._get_collection()

    @staticmethod
    def _load(raws: Any) -> list[RecordVersion]:
        """Versions with what their chunks say of them (one more query)."""
        versions = [_from_raw(raw) for raw in raws]
        chunk_ids = list({v.chunk_id for v in versions})
        if not chunk_ids:
            return versions
        facts: dict[str, dict[str, Any]] = {name: {} for name in _CHUNK_FACTS}
        projection = dict.fromkeys(_CHUNK_FACTS, 1)
        for chunk in _find_by_ids(ChunkDoc._get_collection(), chunk_ids, projection):
            for name in _CHUNK_FACTS:
                facts[name].update(chunk.get(name) or {})
        for version in versions:
            entry_id = version.entry_id
            if (placed := facts["offsets"].get(entry_id)) is not None:
                version.ordering_offset = int(placed[0])
                version.ordered_time = _from_ms(placed[1])
            if (sealed := facts["sealed"].get(entry_id)) is not None:
                version.leaf_index, version.sealed_tree_size = int(sealed[0]), int(sealed[1])
                version.sealed_time = _from_ms(sealed[2])
            if (rejected := facts["rejected"].get(entry_id)) is not None:
                version.rejection_reason, version.rejection_detail = rejected
            version.deadline_missed = entry_id in facts["missed"]
        return versions

    def get_many(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], RecordVersion]:
        """The stored versions among ``keys``."""
        if not keys:
            return {}
        ids = [version_id(*key) for key in keys]
        return {v.key: v for v in self._load(_find_by_ids(self._versions(), ids))}

    def insert_new(self, versions: Sequence[RecordVersion]) -> list[RecordVersion]:
        """Insert each version; return those a concurrent request stored first, as stored."""
        duplicates: list[str] = []
        chunks: dict[str, list[str]] = {}
        for version in versions:
            chunks.setdefault(version.chunk_id, []).append(version_id(*version.key))
        anchored_time = versions[0].anchored_time
        ChunkDoc._get_collection().insert_many(
            [
                {
                    "_id": chunk_id,
                    "version_ids": ids,
                    "anchored_time": anchored_time,
                    "ordered": False,
                    "offsets": {},
                    "sealed": {},
                    "rejected": {},
                    "missed": {},
                    "settled": False,
                    "outbox": [],
                    "outbox_pending": False,
                }
                for chunk_id, ids in chunks.items()
            ]
        )
        for chunk_id, ids in chunks.items():
            self._unordered.put(chunk_id, anchored_time, ids)
            self._progress.put(chunk_id, len(ids), set())
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
        # The duplicates belong to the chunks that stored them first: this chunk must not wait
        # for their ordering (nor be resent for them).
        for chunk_id, ids in chunks.items():
            mine = [i for i in ids if i not in duplicates]
            with _chunk_lock(chunk_id):
                if mine:
                    ChunkDoc._get_collection().update_one(
                        {"_id": chunk_id}, {"$set": {"version_ids": mine}}
                    )
                    self._unordered.put(chunk_id, anchored_time, mine)
                    self._progress.put(chunk_id, len(mine), set())
                else:
                    ChunkDoc._get_collection().delete_one({"_id": chunk_id})
                    self._unordered.forget(chunk_id)
                    self._progress.forget(chunk_id)
        return self._load(_find_by_ids(self._versions(), duplicates))

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
                    _ms(v.ordered_time or v.anchored_time),
                ]
                for v, _ in items
            }
            with _chunk_lock(chunk_id):
                complete = len(self._version_ids(chunk_id)) <= len(items)
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
                if complete:
                    self._unordered.forget(chunk_id)
            mark_pending(ChunkDoc, chunk_id)

    def _version_ids(self, chunk_id: str) -> Sequence[str]:
        """The version ids of a chunk: from memory while it is known unordered (a chunk
        document is a few hundred KB that FerretDB v1 decodes on every read), else stored
        (none if it is gone)."""
        known = self._unordered.get(chunk_id)
        if known is not None:
            return known.version_ids
        chunk = ChunkDoc._get_collection().find_one({"_id": chunk_id}, {"version_ids": 1})
        return [] if chunk is None else list(chunk["version_ids"])

    def unordered(
        self, older_than: datetime, leave_out: Collection[str] = ()
    ) -> list[RecordVersion]:
        """Versions of chunks stored before ``older_than`` that Kafka never acknowledged,
        except those of the chunks in ``leave_out`` (being ordered now: their versions are not
        read). Every chunk document is read at the first call and every
        :data:`UNORDERED_SWEEP_SECONDS`; in between, only the chunks this store knows unordered
        are looked at."""
        ids: list[str] = []
        for chunk_id, chunk in self._unordered_chunks(older_than).items():
            if chunk_id not in leave_out:
                ids.extend(chunk.version_ids)
        if not ids:
            return []
        return [
            v for v in self._load(_find_by_ids(self._versions(), ids)) if v.ordering_offset is None
        ]

    def _unordered_chunks(self, older_than: datetime) -> dict[str, _UnorderedChunk]:
        """The unordered chunks stored before ``older_than``: after reading every chunk
        document if a sweep is due (see :meth:`unordered`), else as this store knows them."""
        now = time.monotonic()
        if self._next_sweep is None or now >= self._next_sweep:
            with self._unordered.sweep() as found:
                for chunk in ChunkDoc._get_collection().find(
                    {"ordered": False}, {"version_ids": 1, "anchored_time": 1}
                ):
                    found[chunk["_id"]] = _UnorderedChunk(
                        as_utc(chunk["anchored_time"]), tuple(chunk["version_ids"])
                    )
            self._next_sweep = now + self._sweep_seconds
        return self._unordered.older_than(older_than)

    def by_entry(self, entry_id: str) -> RecordVersion | None:
        """The version anchored by ``entry_id`` (from memory once it is settled)."""
        cached = self._settled.get(entry_id)
        if cached is not None:
            return cached
        index = EntryIndexDoc.objects(id=entry_id).first()
        if index is None:
            return None
        found = self._load(self._versions().find({"_id": index.version_id}))
        self._settled.put(found)
        return found[0] if found else None

    def of_record(self, organization_id: str, record_id: str) -> list[RecordVersion]:
        """Every version of a record, oldest first. The domain numbers a record's versions
        from 1 without gaps, so they are read by ``_id``, a batch at a time, up to the first
        missing one: a filter on the record's fields is one FerretDB v1 answers by decoding
        every version of every record (seconds, once a hospital has anchored thousands)."""
        found: list[RecordVersion] = []
        batch = 8
        while True:
            first = len(found) + 1
            keys = [(organization_id, record_id, n) for n in range(first, first + batch)]
            stored = self.get_many(keys)
            for key in keys:
                version = stored.get(key)
                if version is None:
                    return found
                found.append(version)
            batch = min(2 * batch, _POINT_READS)

    def set_log_state(
        self, versions: Sequence[RecordVersion], events: Sequence[events_pb2.EventEnvelope]
    ) -> None:
        """Store each version's seal, rejection or missed deadline with ``events`` (which
        belong to ``versions``, in order): one update per chunk."""
        by_chunk: dict[str, list[RecordVersion]] = {}
        for version in versions:
            by_chunk.setdefault(version.chunk_id, []).append(version)
        events_by_chunk: dict[str, list[bytes]] = {}
        for version, event in zip(versions, events, strict=True):
            events_by_chunk.setdefault(version.chunk_id, []).append(event.SerializeToString())
        chunks = ChunkDoc._get_collection()
        for chunk_id, members in by_chunk.items():
            facts: dict[str, Any] = {}
            for v in members:
                if v.sealed_tree_size is not None:
                    assert v.leaf_index is not None
                    facts[f"sealed.{v.entry_id}"] = [
                        v.leaf_index,
                        v.sealed_tree_size,
                        _ms(v.sealed_time or v.anchored_time),
                    ]
                elif v.rejection_reason:
                    facts[f"rejected.{v.entry_id}"] = [v.rejection_reason, v.rejection_detail]
                if v.deadline_missed:
                    facts[f"missed.{v.entry_id}"] = True
            with _chunk_lock(chunk_id):
                progress = self._progress.get(chunk_id) or self._stored_progress(chunk_id)
                if progress is not None:
                    progress.settled |= {
                        k.split(".", 1)[1] for k in facts if not k.startswith("missed.")
                    }
                    if len(progress.settled) >= progress.versions:
                        facts["settled"] = True
                chunks.update_one(
                    {"_id": chunk_id},
                    {
                        "$set": {**facts, "outbox_pending": True},
                        "$push": {"outbox": {"$each": events_by_chunk.get(chunk_id, [])}},
                    },
                )
                if progress is None or facts.get("settled"):
                    self._progress.forget(chunk_id)
                else:
                    self._progress.put(chunk_id, progress.versions, progress.settled)
            mark_pending(ChunkDoc, chunk_id)
            self._settled.put(members)

    @staticmethod
    def _stored_progress(chunk_id: str) -> _Progress | None:
        """A chunk's progress as stored (for a chunk this store did not insert), or None if it
        is gone."""
        chunk = ChunkDoc._get_collection().find_one(
            {"_id": chunk_id}, {"version_ids": 1, "sealed": 1, "rejected": 1}
        )
        if chunk is None:
            return None
        settled = {*(chunk.get("sealed") or {}), *(chunk.get("rejected") or {})}
        return _Progress(len(chunk["version_ids"]), settled)

    def unsettled(self) -> list[RecordVersion]:
        """Versions neither sealed nor rejected."""
        ids: list[str] = []
        for chunk in ChunkDoc._get_collection().find({"settled": False}, {"version_ids": 1}):
            ids.extend(chunk["version_ids"])
        if not ids:
            return []
        return [
            v
            for v in self._load(_find_by_ids(self._versions(), ids))
            if v.sealed_tree_size is None and not v.rejection_reason
        ]

    def log_position(self) -> int:
        """The tree size up to which sealed leaves were looked at (0 at first)."""
        found = LogPositionDoc.objects(id="sealed").first()
        return 0 if found is None else int(found.tree_size)

    def set_log_position(self, tree_size: int) -> None:
        """Remember that the leaves below ``tree_size`` were looked at."""
        LogPositionDoc.objects(id="sealed").update_one(set__tree_size=tree_size, upsert=True)
