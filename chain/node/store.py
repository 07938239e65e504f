"""The node's small state, in its own Mongo database through mongoengine (DESIGN §3.4); the log
itself (hash tiles, entry bundles, the latest checkpoint) is files (``chain/node/tile_store.py``).

What Mongo keeps, all small documents:

* ``blocks``: each checkpoint text and its cut offset. Written once, after the block's files:
  it is the commit record, and the newest one says where the node resumes;
* ``sealed``: the sealed note of each sealed block;
* ``rejections`` and ``alarms``. Cosignatures are not stored: ``chain.cosignatures.v1`` keeps
  them for ever and a node reads it from the start when it starts.

Every ``_id`` is a string (FerretDB v1 looks an integer ``_id`` up far more slowly). Writes are
idempotent (keyed by position), so a node that crashes between two writes rewrites the same
documents when it applies the same records again. No transactions are needed.

Stores of earlier versions kept the tiles and the entry bundles in Mongo too (the ``tiles`` and
``entry_bundles_*`` collections, and entries and partial tiles inside block documents): a node
started on such a store with an empty data directory rebuilds its files from ordering offset 0
(:meth:`ChainStore.drop_legacy_log`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import mongoengine as me
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from chain.alarms import Alarm
from chain.node.ports import NodeState
from chain.node.tile_store import TileStore
from chain.tiles import TILE_WIDTH
from services.platform import mongo

ALIAS = "chain"
#: Entries per entry bundle (C2SP tlog-tiles).
BUNDLE_SIZE = TILE_WIDTH
#: Collections of earlier stores that held the log itself.
LEGACY_TILES = "tiles"
LEGACY_BUNDLES_PREFIX = "entry_bundles"


class BlockDoc(me.Document):
    """A cut block: its checkpoint and where in the ordering topic it was cut."""

    # strict False: block documents of earlier stores also carry the entries and partial tiles
    meta = {"collection": "blocks", "db_alias": ALIAS, "strict": False}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # _block_id(height)
    height = me.IntField(required=True)
    tree_size = me.IntField(required=True)
    checkpoint = me.StringField(required=True)
    cut_offset = me.IntField(required=True)


class SealedDoc(me.Document):
    """A sealed checkpoint's note and the members whose lines it carries."""

    meta = {"collection": "sealed", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # _block_id(height)
    height = me.IntField(required=True)
    note = me.StringField(required=True)
    signers = me.ListField(me.StringField())


class RejectionDoc(me.Document):
    """An entry left out of the log, by ordering offset."""

    meta = {"collection": "rejections", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # the entry id, or "offset:<n>" if it had none
    offset = me.IntField(required=True)
    entry_id = me.StringField()
    reason = me.StringField(required=True)
    code = me.StringField()  # RejectionReason name without its prefix


class AlarmDoc(me.Document):
    """Something a member signed that it should not have, or a store that disagrees."""

    meta = {"collection": "alarms", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)
    kind = me.StringField(required=True)
    member = me.StringField()
    tree_size = me.IntField()
    checkpoints = me.ListField(me.StringField())
    signature_lines = me.ListField(me.StringField())
    detail = me.StringField()
    raised_at = me.DateTimeField(required=True)


def _block_id(height: int) -> str:
    return f"{height:012d}"


def _insert_ignoring_duplicates(target: Any, documents: list[dict[str, Any]]) -> None:
    """Insert documents into a Document class's collection (or a pymongo collection); one that
    exists already (written before a crash, for the same position, so with the same content) is
    skipped."""
    collection = target._get_collection() if hasattr(target, "_get_collection") else target
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        others = [e for e in error.details.get("writeErrors", []) if e.get("code") != 11000]
        if others:
            raise


class ChainStore:
    """All reads and writes of one node's store: small state in Mongo, the log in ``tiles``."""

    def __init__(self, tiles: TileStore) -> None:
        self.tiles = tiles

    def load_state(self) -> NodeState:
        """Where the node resumes: after the newest block (offset -1 on a new store)."""
        newest = max(self.blocks(), key=lambda b: b.height, default=None)
        if newest is None:
            return NodeState(applied_offset=-1, tree_size=0, height=0)
        return NodeState(newest.cut_offset, newest.tree_size, newest.height)

    # the log (files)

    def stored_entries(self) -> int:
        """Entries the data directory holds, as found on disk."""
        return self.tiles.stored_entries()

    def truncate(self, size: int) -> None:
        """Make the data directory hold exactly the log of ``size`` entries."""
        self.tiles.truncate(size)

    def iter_entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """The first ``size`` stored entries with their leaf indexes (for recovery)."""
        return self.tiles.iter_entries(size)

    def read_tile(self, level: int, index: int, width: int) -> bytes | None:
        """The first ``width`` hashes of tile ``(level, index)``, or None."""
        return self.tiles.read_tile(level, index, width)

    def write_log(
        self,
        first_index: int,
        entries: Sequence[bytes],
        tiles: Sequence[tuple[int, int, int, bytes]],
    ) -> None:
        """Store a block's entries and the hash tiles they changed (before :meth:`write_block`)."""
        self.tiles.write_log(first_index, entries, tiles)

    def read_entries(self, start: int, end: int) -> list[bytes]:
        """Entries at leaf indexes [start, end)."""
        return self.tiles.read_entries(start, end)

    # legacy

    def legacy_log_collections(self) -> list[str]:
        """The collections in which earlier stores kept the log itself."""
        names = BlockDoc._get_db().list_collection_names()
        return sorted(n for n in names if n == LEGACY_TILES or n.startswith(LEGACY_BUNDLES_PREFIX))

    def drop_legacy_log(self) -> list[str]:
        """Drop the tiles and bundles an earlier store kept in Mongo (and the entries and tiles
        inside its block documents); their names. The node rebuilds its files from ordering
        offset 0 instead of copying them: the ordering topic is kept for ever, the rebuild is
        the path every node with an empty data directory takes and checks every checkpoint
        again, and the old documents are never read."""
        dropped = self.legacy_log_collections()
        database = BlockDoc._get_db()
        for name in dropped:
            database.drop_collection(name)
        BlockDoc._get_collection().update_many(
            {"$or": [{"tail": {"$exists": True}}, {"partial_tiles": {"$exists": True}}]},
            {"$unset": {"tail": "", "tail_first": "", "partial_tiles": ""}},
        )
        return dropped

    def write_rejections(self, rows: Iterable[tuple[int, str, str, str]]) -> None:
        """Upsert (offset, entry id, reason, code) rows."""
        operations = [
            UpdateOne(
                {"_id": entry_id or f"offset:{offset}"},
                {"$set": {"offset": offset, "entry_id": entry_id, "reason": reason, "code": code}},
                upsert=True,
            )
            for offset, entry_id, reason, code in rows
        ]
        if operations:
            mongo.bulk_write(RejectionDoc._get_collection(), operations, ordered=False)

    def find_rejection(self, entry_id: str) -> RejectionDoc | None:
        """The latest rejection of ``entry_id``, if any."""
        result: RejectionDoc | None = RejectionDoc.objects(id=entry_id).first()
        return result

    def count_rejections(self) -> int:
        """How many records were rejected."""
        return int(RejectionDoc.objects.count())

    def write_block(self, height: int, tree_size: int, checkpoint: str, cut_offset: int) -> None:
        """Store a cut block (unsealed). Written last for a block, after its files: the commit
        record. Written once: after a crash the same block comes again with the same content."""
        document = {
            "_id": _block_id(height),
            "height": height,
            "tree_size": tree_size,
            "checkpoint": checkpoint,
            "cut_offset": cut_offset,
        }
        _insert_ignoring_duplicates(BlockDoc, [document])

    def seal_block(self, height: int, note: str, signers: Sequence[str]) -> None:
        """Record the sealed note of block ``height`` (once), then publish it as the data
        directory's ``checkpoint`` if it is the newest."""
        document = {"_id": _block_id(height), "height": height, "note": note, "signers": signers}
        _insert_ignoring_duplicates(SealedDoc, [document])
        self.tiles.write_checkpoint(note)

    def sealed_notes(self) -> dict[int, tuple[str, tuple[str, ...]]]:
        """Every sealed note by height (one scan, for recovery)."""
        return {doc.height: (doc.note, tuple(doc.signers)) for doc in SealedDoc.objects}

    def blocks(self) -> list[BlockDoc]:
        """Every block, by height (one scan, for recovery)."""
        return sorted(BlockDoc.objects, key=lambda b: b.height)

    def raise_alarm(self, alarm: Alarm, now: datetime | None = None) -> bool:
        """Store an alarm once (by its id); True if it is new."""
        if AlarmDoc.objects(id=alarm.alarm_id).first() is not None:
            return False
        AlarmDoc(
            id=alarm.alarm_id,
            kind=alarm.kind,
            member=alarm.member,
            tree_size=alarm.tree_size,
            checkpoints=list(alarm.checkpoints),
            signature_lines=list(alarm.lines),
            detail=alarm.detail,
            raised_at=now or datetime.now(UTC),
        ).save()
        return True

    def alarms(self) -> list[AlarmDoc]:
        """Every alarm, oldest first."""
        return list(AlarmDoc.objects.order_by("raised_at"))
