"""The node's persistent store, in its own Mongo database through mongoengine (DESIGN §3.4).

What is stored, and why this shape:

* ``tiles``: the tree's stored hashes as C2SP tlog-tiles blobs (256 hashes a tile), so a block
  costs a few writes and a restart reads the whole tree in one scan;
* ``entry_bundles``: the entries' exact bytes, 256 a bundle (as tlog-tiles entry bundles, but
  each entry prefixed by a 4-byte big-endian length: entries may exceed 64 KiB);
* ``entry_ids``: entry id -> leaf index and ordering offset, for proofs by id and de-duplication;
* ``blocks``: each checkpoint text, its cut offset and, once sealed, the signed note. The block
  document is written last for a block: it is the commit record, and the newest one says where
  the node resumes;
* ``cosignatures``, ``rejections`` and ``alarms``.

Every ``_id`` is a string: FerretDB v1 (SQLite) finds documents by string ``_id`` through its
index but scans the whole collection for other lookups, integer ``_id`` included. So the node
looks documents up only by string ``_id`` while it runs, and scans only when it starts.
Writes are idempotent (keyed by position), so a node that crashes between two writes rewrites
the same documents when it applies the same records again. No transactions are needed.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import mongoengine as me
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from chain.errors import NotFoundError

ALIAS = "chain"
BUNDLE_SIZE = 256
_LENGTH = struct.Struct(">I")


class TileDoc(me.Document):
    """One tile of stored hashes; partial tiles are overwritten as they fill."""

    meta = {"collection": "tiles", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # "<level>/<index>"
    level = me.IntField(required=True)
    index = me.IntField(required=True)
    width = me.IntField(required=True)
    data = me.BinaryField(required=True)


class EntryBundleDoc(me.Document):
    """Up to 256 consecutive entries, each prefixed with its 4-byte big-endian length."""

    meta = {"collection": "entry_bundles", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # _bundle_id(leaf index // 256)
    index = me.IntField(required=True)
    width = me.IntField(required=True)
    data = me.BinaryField(required=True)


class EntryIdDoc(me.Document):
    """Where an entry id sits in the log."""

    meta = {"collection": "entry_ids", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # the entry id
    leaf_index = me.IntField(required=True)
    offset = me.IntField(required=True)
    kind = me.IntField(required=True)


class BlockDoc(me.Document):
    """A cut block: its checkpoint and, once a quorum signed it, the sealed note."""

    meta = {"collection": "blocks", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # _block_id(height)
    height = me.IntField(required=True)
    tree_size = me.IntField(required=True)
    checkpoint = me.StringField(required=True)
    cut_offset = me.IntField(required=True)
    sealed_note = me.StringField()
    signers = me.ListField(me.StringField())


class CosignatureDoc(me.Document):
    """A member's signature line on a checkpoint text, as read from chain.cosignatures.v1."""

    meta = {"collection": "cosignatures", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # "<member>/<tree size>/<checkpoint hash hex>"
    member = me.StringField(required=True)
    tree_size = me.IntField(required=True)
    checkpoint = me.StringField(required=True)
    signature_line = me.StringField(required=True)


class RejectionDoc(me.Document):
    """An entry left out of the log, by ordering offset."""

    meta = {"collection": "rejections", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # the entry id, or "offset:<n>" if it had none
    offset = me.IntField(required=True)
    entry_id = me.StringField()
    reason = me.StringField(required=True)


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


@dataclass(frozen=True)
class NodeState:
    """The persisted position of the node."""

    applied_offset: int
    tree_size: int
    height: int


def _bundle_id(index: int) -> str:
    return f"{index:012d}"


def _block_id(height: int) -> str:
    return f"{height:012d}"


def pack_entries(entries: Sequence[bytes]) -> bytes:
    """Length-prefixed concatenation of entries (a bundle's data)."""
    return b"".join(_LENGTH.pack(len(e)) + e for e in entries)


def unpack_entries(data: bytes) -> list[bytes]:
    """The entries of a bundle's data."""
    out: list[bytes] = []
    position = 0
    while position < len(data):
        (length,) = _LENGTH.unpack_from(data, position)
        position += 4
        out.append(data[position : position + length])
        position += length
    return out


class ChainStore:
    """All reads and writes of one node's database."""

    def load_state(self) -> NodeState:
        """Where the node resumes: after the newest block (offset -1 on a new store)."""
        newest = max(self.blocks(), key=lambda b: b.height, default=None)
        if newest is None:
            return NodeState(applied_offset=-1, tree_size=0, height=0)
        return NodeState(newest.cut_offset, newest.tree_size, newest.height)

    def write_tiles(self, tiles: Iterable[tuple[int, int, int, bytes]]) -> None:
        """Upsert tiles given as (level, index, width, data)."""
        operations = [
            UpdateOne(
                {"_id": f"{level}/{index}"},
                {"$set": {"level": level, "index": index, "width": width, "data": data}},
                upsert=True,
            )
            for level, index, width, data in tiles
        ]
        if operations:
            TileDoc._get_collection().bulk_write(operations, ordered=False)

    def read_all_tiles(self) -> dict[tuple[int, int], tuple[int, bytes]]:
        """Every stored tile: (level, index) -> (width, data). One scan, for recovery."""
        return {
            (doc["level"], doc["index"]): (doc["width"], bytes(doc["data"]))
            for doc in TileDoc._get_collection().find()
        }

    def write_entries(self, first_index: int, entries: Sequence[bytes]) -> None:
        """Store entries at leaf indexes ``first_index``..; rewrites the bundles they touch."""
        if not entries:
            return
        end = first_index + len(entries)
        first_bundle, last_bundle = first_index // BUNDLE_SIZE, (end - 1) // BUNDLE_SIZE
        existing: list[bytes] = []
        start_of_first = first_bundle * BUNDLE_SIZE
        if start_of_first < first_index:
            existing = self.read_bundle(first_bundle)[: first_index - start_of_first]
            if len(existing) != first_index - start_of_first:
                raise NotFoundError(
                    f"expected entries {start_of_first}..{first_index - 1} in the store, "
                    f"got {len(existing)} of them"
                )
        all_entries = existing + list(entries)
        operations = []
        for bundle in range(first_bundle, last_bundle + 1):
            lo = bundle * BUNDLE_SIZE - start_of_first
            chunk = all_entries[lo : lo + BUNDLE_SIZE]
            operations.append(
                UpdateOne(
                    {"_id": _bundle_id(bundle)},
                    {"$set": {"index": bundle, "width": len(chunk), "data": pack_entries(chunk)}},
                    upsert=True,
                )
            )
        EntryBundleDoc._get_collection().bulk_write(operations, ordered=False)

    def read_bundle(self, bundle: int) -> list[bytes]:
        """The entries of one bundle (empty if not stored)."""
        doc = EntryBundleDoc._get_collection().find_one({"_id": _bundle_id(bundle)})
        return [] if doc is None else unpack_entries(bytes(doc["data"]))

    def read_entries(self, start: int, end: int) -> list[bytes]:
        """Entries at leaf indexes [start, end)."""
        first, last = start // BUNDLE_SIZE, (end - 1) // BUNDLE_SIZE
        out: list[bytes] = []
        for bundle in range(first, last + 1):
            out.extend(self.read_bundle(bundle))
        skip = start - first * BUNDLE_SIZE
        return out[skip : skip + (end - start)]

    def iter_entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """The first ``size`` stored entries with their leaf indexes, in order (for recovery).

        Bundles are fetched by id, one at a time, so memory stays at one bundle.
        """
        for bundle in range((size + BUNDLE_SIZE - 1) // BUNDLE_SIZE):
            for offset, entry in enumerate(self.read_bundle(bundle)):
                index = bundle * BUNDLE_SIZE + offset
                if index >= size:
                    return
                yield index, entry

    def write_entry_ids(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """Insert (entry id, leaf index, offset, kind) rows.

        Plain inserts, not upserts: on FerretDB an upsert costs about 100 times an insert. A row
        that exists already was written by an earlier run for the same position (a node
        replaying after a crash), so its duplicate-key error is expected and skipped.
        """
        documents = [
            {"_id": entry_id, "leaf_index": leaf_index, "offset": offset, "kind": kind}
            for entry_id, leaf_index, offset, kind in rows
        ]
        if not documents:
            return
        try:
            EntryIdDoc._get_collection().insert_many(documents, ordered=False)
        except BulkWriteError as error:
            others = [e for e in error.details.get("writeErrors", []) if e.get("code") != 11000]
            if others:
                raise

    def stored_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are in persisted blocks."""
        wanted = list(ids)
        if not wanted:
            return set()
        cursor = EntryIdDoc._get_collection().find({"_id": {"$in": wanted}}, {"_id": 1})
        return {doc["_id"] for doc in cursor}

    def find_entry(self, entry_id: str) -> EntryIdDoc | None:
        """Where ``entry_id`` is in the log, if it is."""
        result: EntryIdDoc | None = EntryIdDoc.objects(id=entry_id).first()
        return result

    def write_rejections(self, rows: Iterable[tuple[int, str, str]]) -> None:
        """Upsert (offset, entry id, reason) rows."""
        operations = [
            UpdateOne(
                {"_id": entry_id or f"offset:{offset}"},
                {"$set": {"offset": offset, "entry_id": entry_id, "reason": reason}},
                upsert=True,
            )
            for offset, entry_id, reason in rows
        ]
        if operations:
            RejectionDoc._get_collection().bulk_write(operations, ordered=False)

    def find_rejection(self, entry_id: str) -> RejectionDoc | None:
        """The latest rejection of ``entry_id``, if any."""
        result: RejectionDoc | None = RejectionDoc.objects(id=entry_id).first()
        return result

    def count_rejections(self) -> int:
        """How many records were rejected."""
        return int(RejectionDoc.objects.count())

    def write_block(self, height: int, tree_size: int, checkpoint: str, cut_offset: int) -> None:
        """Store a cut block (unsealed); keeps a sealed note already stored for it."""
        BlockDoc._get_collection().update_one(
            {"_id": _block_id(height)},
            {
                "$set": {
                    "height": height,
                    "tree_size": tree_size,
                    "checkpoint": checkpoint,
                    "cut_offset": cut_offset,
                }
            },
            upsert=True,
        )

    def seal_block(self, height: int, note: str, signers: Sequence[str]) -> None:
        """Record the sealed note of block ``height``."""
        BlockDoc._get_collection().update_one(
            {"_id": _block_id(height)}, {"$set": {"sealed_note": note, "signers": list(signers)}}
        )

    def blocks(self) -> list[BlockDoc]:
        """Every block, by height (one scan, for recovery)."""
        return sorted(BlockDoc.objects, key=lambda b: b.height)

    def write_cosignature(
        self, member: str, tree_size: int, checkpoint: str, line: str, key: str
    ) -> None:
        """Store a member's signature line on a checkpoint text (idempotent)."""
        document = {
            "_id": key,
            "member": member,
            "tree_size": tree_size,
            "checkpoint": checkpoint,
            "signature_line": line,
        }
        # read again after a restart: the same line, stored already
        with contextlib.suppress(DuplicateKeyError):
            CosignatureDoc._get_collection().insert_one(document)

    def all_cosignatures(self) -> list[CosignatureDoc]:
        """Every stored cosignature (one scan, for recovery)."""
        return list(CosignatureDoc.objects)

    def raise_alarm(
        self,
        alarm_id: str,
        kind: str,
        *,
        member: str,
        tree_size: int,
        checkpoints: Sequence[str],
        lines: Sequence[str],
        detail: str,
        now: datetime | None = None,
    ) -> bool:
        """Store an alarm once; True if it is new."""
        if AlarmDoc.objects(id=alarm_id).first() is not None:
            return False
        AlarmDoc(
            id=alarm_id,
            kind=kind,
            member=member,
            tree_size=tree_size,
            checkpoints=list(checkpoints),
            signature_lines=list(lines),
            detail=detail,
            raised_at=now or datetime.now(UTC),
        ).save()
        return True

    def alarms(self) -> list[AlarmDoc]:
        """Every alarm, oldest first."""
        return list(AlarmDoc.objects.order_by("raised_at"))
