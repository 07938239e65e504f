"""What the anchoring service keeps about a record version, and what it needs from storage.

A record version is one hospital's RECORD entry with the same facts in clear; its promise,
seal, rejection or missed deadline are fields it gains as the log settles it. Nothing here does
I/O; time is passed in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from chain.entry import ParsedEntry
from chain.errors import (
    SwiftchainError,
)
from services.platform.entry_states import entry_state
from swiftchain.events.v1 import events_pb2

PRODUCER = "anchoring"
MAX_RECORD_ID = 256
MAX_REASON_TEXT = 1000
#: Items per AnchorRecords message, and per stream.
MAX_CHUNK_ITEMS = 1000
MAX_STREAM_ITEMS = 100_000
DEFAULT_MAX_SEAL_DELAY = timedelta(seconds=5)
_EVENT_NAMESPACE = uuid.UUID("6f1c2b1e-4d0a-5d6e-9a53-1c0e5f1b8a11")


def event_id(entry_id: str, what: str) -> str:
    """The id of the ``what`` event of an entry (anchored, sealed, ...): the same each time it
    is produced, so that consumers absorb a second copy."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{entry_id}/{what}"))


@dataclass(frozen=True)
class AnchorRequest:
    """One record version as the hospital sends it."""

    signed_entry: bytes
    record_id: str
    version: int
    action: int
    commitment: bytes
    subject_tag: bytes
    previous_version_commitment: bytes = b""
    author_practitioner_id: str = ""
    reason_code: str = ""
    reason_text: str = ""


@dataclass
class RecordVersion:
    """An anchored record version and where its entry stands."""

    organization_id: str
    record_id: str
    version: int
    action: int
    commitment: bytes
    subject_tag: bytes
    previous_version_commitment: bytes
    author_practitioner_id: str
    reason_code: str
    reason_text: str
    entry_id: str
    entry: bytes
    key_id: str
    leaf_hash: bytes
    anchored_time: datetime
    seal_due_time: datetime
    ordering_offset: int | None = None
    ordered_time: datetime | None = None
    leaf_index: int | None = None
    sealed_tree_size: int | None = None
    sealed_time: datetime | None = None
    rejection_reason: str = ""
    rejection_detail: str = ""
    #: The anchoring call that stored it: its versions are ordered (and recorded) together.
    chunk_id: str = ""
    #: A SealDeadlineMissed was reported for it.
    deadline_missed: bool = False

    @property
    def key(self) -> tuple[str, str, int]:
        """(hospital, record id, version): what anchoring is idempotent on."""
        return (self.organization_id, self.record_id, self.version)

    @property
    def state(self) -> int:
        """The entry's ``EntryState`` as far as this service knows."""
        return entry_state(
            rejected=bool(self.rejection_reason),
            leaf_index=self.leaf_index,
            sealed_tree_size=self.sealed_tree_size,
        )


@dataclass(frozen=True)
class Outcome:
    """One item's result: its version (new or anchored before), or why it was refused."""

    index: int
    record_id: str
    version: int
    anchored: RecordVersion | None = None
    error: SwiftchainError | None = None
    created: bool = False


class KeyCheck(Protocol):
    """Checks an entry's signature against the keys the log knows (KnownKeys)."""

    def check(self, parsed: ParsedEntry) -> None:
        """Raise EntryRejectedError if the entry is not validly signed by its submitter."""


class AuthorCheck(Protocol):
    """Checks that a practitioner id names a practitioner of the hospital (Practitioners)."""

    def check_author(self, organization_id: str, practitioner_id: str) -> None:
        """Raise InvalidInputError unless ``organization_id`` registered ``practitioner_id``."""


class VersionStore(Protocol):
    """What anchoring needs from storage (services/anchoring/store.py)."""

    def get_many(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], RecordVersion]:
        """The stored versions among ``keys``."""

    def insert_new(self, versions: Sequence[RecordVersion]) -> list[RecordVersion]:
        """Insert versions of one chunk (not yet ordered); return the versions that were there
        already (a concurrent request anchored them first) as stored."""

    def set_ordered(
        self,
        ordered: Sequence[RecordVersion],
        events: Sequence[events_pb2.EventEnvelope],
    ) -> None:
        """Store the ordering offset and time of each version, with its RecordAnchored event
        (one write per chunk)."""

    def unordered(self, older_than: datetime) -> list[RecordVersion]:
        """Versions of chunks stored before ``older_than`` that Kafka never acknowledged."""

    def by_entry(self, entry_id: str) -> RecordVersion | None:
        """The version whose entry is ``entry_id``."""

    def of_record(self, organization_id: str, record_id: str) -> list[RecordVersion]:
        """Every version of a record, by version."""
