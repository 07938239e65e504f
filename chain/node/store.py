"""The node's persistent store, in its own Mongo database through mongoengine (DESIGN §3.4).

What is stored, and why this shape:

* ``tiles``: the tree's stored hashes as C2SP tlog-tiles blobs (256 hashes a tile), so a block
  costs a few writes and a restart reads the whole tree in one scan;
* ``entry_bundles_<group>``: the entries' exact bytes, 256 a bundle (as tlog-tiles entry
  bundles, but each entry prefixed by a 4-byte big-endian length: entries may exceed 64 KiB),
  written once when full, 64 bundles a collection;
* ``blocks``: each checkpoint text, its cut offset, the block's entries past the last full
  bundle and the partial tiles it changed. Written once, last for a block: it is the commit
  record, and the newest one says where the node resumes;
* ``sealed``: the sealed note of each sealed block;
* ``rejections`` and ``alarms``. Cosignatures are not stored: ``chain.cosignatures.v1`` keeps
  them for ever and a node reads it from the start when it starts.

FerretDB v1 (SQLite) answers every lookup, ``_id`` included, by scanning the table (its
``explain`` says ``SCAN``), at a cost that grows with the bytes stored and is far worse for an
integer ``_id``. So every ``_id`` is a string, documents are written once wherever possible, the
running node looks up only small documents and bundles (in collections of 64), and large
documents are read only by the scan at start.
Writes are idempotent (keyed by position), so a node that crashes between two writes rewrites
the same documents when it applies the same records again. No transactions are needed.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import mongoengine as me
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from chain.alarms import Alarm
from chain.errors import NotFoundError
from chain.node.ports import NodeState, StoredBlock
from services.platform import mongo

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


#: Bundles per collection. FerretDB v1 (SQLite) scans the whole table even for an ``_id``
#: lookup, at a cost that grows with the bytes stored; 64 bundles keep a table near 5 MB.
BUNDLES_PER_COLLECTION = 64


def _bundles(bundle: int) -> Any:
    """The pymongo collection holding ``bundle``."""
    group = bundle // BUNDLES_PER_COLLECTION
    return EntryBundleDoc._get_db()[f"entry_bundles_{group:06d}"]


class EntryBundleDoc(me.Document):
    """Up to 256 consecutive entries, each prefixed with its 4-byte big-endian length."""

    meta = {"collection": "entry_bundles", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # _bundle_id(leaf index // 256)
    index = me.IntField(required=True)
    width = me.IntField(required=True)
    data = me.BinaryField(required=True)


class BlockDoc(me.Document):
    """A cut block: its checkpoint and, once a quorum signed it, the sealed note."""

    meta = {"collection": "blocks", "db_alias": ALIAS}  # noqa: RUF012
    id = me.StringField(primary_key=True)  # _block_id(height)
    height = me.IntField(required=True)
    tree_size = me.IntField(required=True)
    checkpoint = me.StringField(required=True)
    cut_offset = me.IntField(required=True)
    #: This block's entries past the last full bundle, from leaf ``tail_first`` on.
    tail_first = me.IntField()
    tail = me.BinaryField()
    #: Tiles this block left partial (level, index, width, data), newest wins.
    partial_tiles = me.ListField(me.DictField())


class SealedDoc(me.Document):
    """A sealed checkpoint's note (small, apart from the large block documents)."""

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


#: Decoded full bundles a node keeps in memory by default (~100,000 entries of ~600 bytes).
DEFAULT_BUNDLE_CACHE_BYTES = 64 * 1024 * 1024


class _BundleCache:
    """Decoded full bundles, least recently used evicted first, up to ``max_bytes`` of entry
    bytes. A full bundle is written once and never changes, so a cached one is always right;
    this keeps FerretDB, which decodes a whole 150 KB bundle per read, off the proof path for
    every bundle written or read recently."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"expected a bundle cache size >= 0 bytes, got {max_bytes}")
        self._max_bytes = max_bytes
        self._bytes = 0
        self._bundles: OrderedDict[int, tuple[tuple[bytes, ...], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bundle: int) -> tuple[bytes, ...] | None:
        with self._lock:
            found = self._bundles.get(bundle)
            if found is None:
                return None
            self._bundles.move_to_end(bundle)
            return found[0]

    def put(self, bundle: int, entries: tuple[bytes, ...]) -> None:
        size = sum(len(e) for e in entries)
        if size > self._max_bytes:
            return
        with self._lock:
            old = self._bundles.pop(bundle, None)
            if old is not None:
                self._bytes -= old[1]
            self._bundles[bundle] = (entries, size)
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, (_, evicted) = self._bundles.popitem(last=False)
                self._bytes -= evicted

    def __len__(self) -> int:
        with self._lock:
            return len(self._bundles)


class ChainStore:
    """All reads and writes of one node's database."""

    def __init__(self, bundle_cache_bytes: int = DEFAULT_BUNDLE_CACHE_BYTES) -> None:
        self._cache = _BundleCache(bundle_cache_bytes)
        # Entries past the last full bundle: [tail_start, tail_start + len(tail)).
        self._tail_lock = threading.Lock()
        self._tail_start = 0
        self._tail: list[bytes] = []

    def load_state(self) -> NodeState:
        """Where the node resumes: after the newest block (offset -1 on a new store)."""
        newest = max(self.blocks(), key=lambda b: b.height, default=None)
        if newest is None:
            return NodeState(applied_offset=-1, tree_size=0, height=0)
        return NodeState(newest.cut_offset, newest.tree_size, newest.height)

    def write_full_tiles(self, tiles: Iterable[tuple[int, int, int, bytes]]) -> None:
        """Insert full tiles given as (level, index, width, data); a full tile never changes,
        so it is written once. Partial tiles go into the block document instead."""
        documents = [
            {
                "_id": f"{level}/{index}",
                "level": level,
                "index": index,
                "width": width,
                "data": data,
            }
            for level, index, width, data in tiles
        ]
        if documents:
            _insert_ignoring_duplicates(TileDoc, documents)

    def read_all_tiles(self) -> dict[tuple[int, int], tuple[int, bytes]]:
        """Every stored tile: (level, index) -> (width, data). One scan, for recovery."""
        return {
            (doc["level"], doc["index"]): (doc["width"], bytes(doc["data"]))
            for doc in TileDoc._get_collection().find()
        }

    def _tail_entries(self) -> tuple[int, list[bytes]]:
        with self._tail_lock:
            return self._tail_start, list(self._tail)

    def write_entries(self, first_index: int, entries: Sequence[bytes]) -> tuple[int, list[bytes]]:
        """Store the bundles that ``entries`` (at leaf ``first_index``..) complete.

        Full bundles are written once and never rewritten (FerretDB rewrites a large document
        slowly). The entries past the last full bundle stay in memory and go into the block
        document; the returned ``(first index, entries)`` is that part of this block, for
        :meth:`write_block`.
        """
        with self._tail_lock:
            tail_start, tail = self._tail_start, list(self._tail)
        if first_index != tail_start + len(tail):
            raise NotFoundError(
                f"expected the next entry at leaf {tail_start + len(tail)}, got {first_index}"
            )
        pending = tail + list(entries)
        end = first_index + len(entries)
        boundary = end - end % BUNDLE_SIZE
        for start in range(tail_start, boundary, BUNDLE_SIZE):
            chunk = tuple(pending[start - tail_start : start - tail_start + BUNDLE_SIZE])
            bundle = start // BUNDLE_SIZE
            document = {
                "_id": _bundle_id(bundle),
                "index": bundle,
                "width": len(chunk),
                "data": pack_entries(chunk),
            }
            _insert_ignoring_duplicates(_bundles(bundle), [document])
            self._cache.put(bundle, chunk)
        new_tail = pending[boundary - tail_start :]
        with self._tail_lock:
            self._tail_start, self._tail = boundary, new_tail
        block_first = max(first_index, boundary)
        return block_first, list(entries[block_first - first_index :])

    def restore_tail(self, size: int, blocks: Sequence[StoredBlock]) -> None:
        """Rebuild the in-memory tail (entries past the last full bundle) from block documents."""
        boundary = size - size % BUNDLE_SIZE
        tail: dict[int, bytes] = {}
        for block in blocks:
            if block.tree_size <= boundary or block.tree_size > size:
                continue
            if block.tail is None or block.tail_first is None:
                continue
            for offset, entry in enumerate(unpack_entries(bytes(block.tail))):
                index = block.tail_first + offset
                if boundary <= index < size:
                    tail[index] = entry
        with self._tail_lock:
            self._tail_start = boundary
            self._tail = [tail[i] for i in range(boundary, boundary + len(tail)) if i in tail]

    def read_bundle(self, bundle: int) -> tuple[bytes, ...]:
        """The entries of one full bundle (empty if not stored), from memory when it was
        written or read recently."""
        cached = self._cache.get(bundle)
        if cached is not None:
            return cached
        doc = _bundles(bundle).find_one({"_id": _bundle_id(bundle)})
        if doc is None:
            return ()
        entries = tuple(unpack_entries(bytes(doc["data"])))
        self._cache.put(bundle, entries)
        return entries

    def cached_bundles(self) -> int:
        """How many decoded bundles are held in memory."""
        return len(self._cache)

    def read_entries(self, start: int, end: int) -> list[bytes]:
        """Entries at leaf indexes [start, end)."""
        tail_start, tail = self._tail_entries()
        out: list[bytes] = []
        if start < tail_start:
            last = min(end, tail_start)
            for bundle in range(start // BUNDLE_SIZE, (last - 1) // BUNDLE_SIZE + 1):
                entries = self.read_bundle(bundle)
                lo = max(start, bundle * BUNDLE_SIZE) - bundle * BUNDLE_SIZE
                hi = min(last, (bundle + 1) * BUNDLE_SIZE) - bundle * BUNDLE_SIZE
                out.extend(entries[lo:hi])
        if end > tail_start:
            out.extend(tail[max(start, tail_start) - tail_start : end - tail_start])
        return out

    def iter_entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """The first ``size`` stored entries with their leaf indexes, in order (for recovery,
        after :meth:`restore_tail`). Bundles are fetched one at a time."""
        tail_start, tail = self._tail_entries()
        for bundle in range(min(size, tail_start) // BUNDLE_SIZE):
            for offset, entry in enumerate(self.read_bundle(bundle)):
                yield bundle * BUNDLE_SIZE + offset, entry
        for offset, entry in enumerate(tail):
            if tail_start + offset >= size:
                return
            yield tail_start + offset, entry

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

    def write_block(
        self,
        height: int,
        tree_size: int,
        checkpoint: str,
        cut_offset: int,
        tail: tuple[int, list[bytes]],
        partial_tiles: Sequence[tuple[int, int, int, bytes]] = (),
    ) -> None:
        """Store a cut block (unsealed) with its entries past the last full bundle and the
        partial tiles it changed. Written last for a block: the commit record. Written once:
        after a crash the same block comes again with the same content."""
        tail_first, tail_entries = tail
        document = {
            "_id": _block_id(height),
            "height": height,
            "tree_size": tree_size,
            "checkpoint": checkpoint,
            "cut_offset": cut_offset,
            "tail_first": tail_first,
            "tail": pack_entries(tail_entries),
            "partial_tiles": [
                {"level": level, "index": index, "width": width, "data": data}
                for level, index, width, data in partial_tiles
            ],
        }
        _insert_ignoring_duplicates(BlockDoc, [document])

    def seal_block(self, height: int, note: str, signers: Sequence[str]) -> None:
        """Record the sealed note of block ``height`` (once)."""
        document = {"_id": _block_id(height), "height": height, "note": note, "signers": signers}
        _insert_ignoring_duplicates(SealedDoc, [document])

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
