"""What the audit domain needs from outside, as protocols: the store of its read model, log index
and flags (services/audit/store.py), and the log as a chain node serves it
(services/audit/log_follower.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from services.audit.domain.records import (
    After,
    DirectiveVersion,
    FlagQuery,
    FlagRecord,
    FlagReviewRecord,
    ItemChange,
    LogLeaf,
    SealedView,
    TrailQuery,
    TrailRecord,
)


class AuditStore(Protocol):
    """Where the read model, the log index and the flags live (services/audit/store.py)."""

    def apply_changes(self, changes: Sequence[ItemChange], *, only_existing: bool = False) -> None:
        """Create or update each change's item, in order (idempotent); with ``only_existing``,
        changes to items that do not exist are dropped."""

    def items(self, query: TrailQuery, after: After | None, limit: int) -> list[TrailRecord]:
        """Items matching ``query``, oldest first (by time, then entry id), from the first one
        strictly after ``after`` (a range condition, so that items added meanwhile before it
        shift nothing)."""

    def items_by_id(self, entry_ids: Sequence[str]) -> dict[str, TrailRecord]:
        """The items with these entry ids that exist."""

    def add_flag_to_items(self, entry_ids: Sequence[str], flag_id: str) -> None:
        """Record on each item that ``flag_id`` includes it."""

    def put_leaves(self, leaves: Sequence[LogLeaf]) -> None:
        """Add leaves to the log index (idempotent)."""

    def leaves_with_tag(self, tag: bytes) -> list[LogLeaf]:
        """Every indexed leaf with this subject tag."""

    def leaves_by_id(self, entry_ids: Sequence[str]) -> dict[str, LogLeaf]:
        """The indexed leaves with these entry ids."""

    def log_position(self) -> int:
        """The tree size the log index is complete up to (0 for none)."""

    def store_log_position(self, tree_size: int) -> None:
        """Remember that the log index is complete up to ``tree_size``."""

    def log_checkpoint(self) -> str:
        """The signed note of the last checkpoint the log follower accepted ('' for none)."""

    def store_log_checkpoint(self, note: str) -> None:
        """Remember the last checkpoint the log follower accepted (its whole signed note), so
        that the next one is checked for consistency with it after a restart too."""

    def put_directive(self, version: DirectiveVersion) -> None:
        """Remember a directive version (idempotent)."""

    def directive(self, directive_id: str, version: int) -> DirectiveVersion | None:
        """A directive version, if the consent events announced it."""

    def put_patient(self, tag: bytes, subject_id: str) -> None:
        """Remember whose subject tag ``tag`` is."""

    def patients(self, tags: Iterable[bytes]) -> dict[bytes, str]:
        """The subject ids of the tags that are known."""

    def raise_flag(self, flag: FlagRecord) -> None:
        """Create the flag if new, else add its entry ids to the existing one."""

    def flag(self, flag_id: str) -> FlagRecord | None:
        """One flag."""

    def flags(self, query: FlagQuery, after: After | None, limit: int) -> list[FlagRecord]:
        """Flags matching ``query``, newest first (by create time descending, then flag id),
        from the first one strictly after ``after`` in that order."""

    def review_flag(self, flag_id: str, review: FlagReviewRecord) -> FlagRecord | None:
        """Set the flag's review (keeping earlier ones in its history); None if unknown."""

    def recent_access(self, since: datetime) -> list[TrailRecord]:
        """ACCESS items at or after ``since`` (to rebuild the windows after a restart)."""

    def unchecked_items(self) -> list[TrailRecord]:
        """Items whose consent check is still due (PERMIT decisions and records)."""

    def mark_checked(self, entry_ids: Sequence[str]) -> None:
        """The consent check of these items was done."""


class LogReader(Protocol):
    """The log as a chain node serves it (services/audit/log_follower.py)."""

    def sync(self) -> SealedView:
        """Index every leaf up to the node's latest sealed checkpoint, and return it."""

    def evidence(self, leaves: Sequence[tuple[str, int]], since_checkpoint: str) -> str:
        """A ``swiftchain-evidence/v1`` bundle (JSON) proving ``(entry id, leaf index)`` pairs
        to one sealed checkpoint, with a consistency proof from ``since_checkpoint`` if given."""
