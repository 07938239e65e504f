"""The node's in-memory index of entry ids: which persisted leaf holds an entry.

It keeps a 64-bit in-process hash of each id -> its leaf index (and the rare ids whose hash
collides with an earlier one, by id). A hit is confirmed against the stored entry, so answers
are exact; the common miss costs no query. It is derived data: recovery rebuilds it from the
stored entries (about 100 bytes a leaf).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from chain.entry import read_body
from chain.node.store import BUNDLE_SIZE

__all__ = ["EntryIndex"]


def _id_key(entry_id: str) -> int:
    """A 64-bit in-process hash of an entry id, the key of the index."""
    return hash(entry_id)


class EntryIndex:
    """Entry id -> leaf index of the persisted entries; ``read_entries(start, end)`` reads the
    stored entries at leaves [start, end) to confirm a hit."""

    def __init__(self, read_entries: Callable[[int, int], list[bytes]]) -> None:
        self._read_entries = read_entries
        self._leaf_by_key: dict[int, int] = {}
        self._leaf_by_colliding_id: dict[str, int] = {}

    def add(self, entry_id: str, leaf_index: int) -> None:
        """Index a persisted entry."""
        key = _id_key(entry_id)
        if key in self._leaf_by_key:
            self._leaf_by_colliding_id[entry_id] = leaf_index
        else:
            self._leaf_by_key[key] = leaf_index

    def find_leaf(self, entry_id: str) -> int | None:
        """The leaf index of ``entry_id`` if it is in a persisted block, else None."""
        leaf = self._leaf_by_colliding_id.get(entry_id)
        if leaf is not None:
            return leaf
        leaf = self._leaf_by_key.get(_id_key(entry_id))
        if leaf is None:
            return None
        stored = self._read_entries(leaf, leaf + 1)
        return leaf if stored and read_body(stored[0]).entry_id == entry_id else None

    def stored_ids(self, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that are in persisted blocks. A resubmitted batch makes every
        id a candidate, so candidates are confirmed a bundle at a time (one read per bundle,
        not one per entry)."""
        found: set[str] = set()
        by_bundle: dict[int, list[tuple[str, int]]] = {}
        for entry_id in ids:
            if entry_id in self._leaf_by_colliding_id:
                found.add(entry_id)
                continue
            leaf = self._leaf_by_key.get(_id_key(entry_id))
            if leaf is not None:
                by_bundle.setdefault(leaf // BUNDLE_SIZE, []).append((entry_id, leaf))
        for candidates in by_bundle.values():
            low = min(leaf for _, leaf in candidates)
            stored = self._read_entries(low, max(leaf for _, leaf in candidates) + 1)
            for entry_id, leaf in candidates:
                if leaf - low < len(stored) and read_body(stored[leaf - low]).entry_id == entry_id:
                    found.add(entry_id)
        return found
