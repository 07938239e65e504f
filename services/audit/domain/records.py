"""The records the audit domain and its store exchange: trail items and the changes events make
to them, sealed leaves of the log index, directive versions, flags and their reviews, the
filters of trails and flags, and the thresholds of the checks.

A listing continues strictly after the last item a page returned, named by its position in the
listing's total order ((time, id) for trail items and for flags): :func:`cursor` makes the
position a page token carries, :func:`read_cursor` reads it back for the store's range
condition.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chain.errors import InvalidInputError
from services.platform.entry_states import entry_state
from services.platform.paging import Position
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.common.v1 import common_pb2

KIND_KEY = common_pb2.ENTRY_KIND_KEY
KIND_RECORD = common_pb2.ENTRY_KIND_RECORD
KIND_CONSENT = common_pb2.ENTRY_KIND_CONSENT
KIND_ACCESS = common_pb2.ENTRY_KIND_ACCESS
PERMIT = common_pb2.ACCESS_DECISION_PERMIT
DENY = common_pb2.ACCESS_DECISION_DENY

#: Namespace of the flag ids derived from what raised them, so that a replayed event raises
#: the same flag again rather than a second one.
_FLAG_NAMESPACE = uuid.UUID("6f1d3c52-7a43-4f0e-9a55-4b7c0f3e8d21")


def flag_id(*parts: str) -> str:
    """The id of the flag raised by ``parts`` (deterministic)."""
    return str(uuid.uuid5(_FLAG_NAMESPACE, "/".join(parts)))


@dataclass
class TrailRecord:
    """One trail item: one log entry as the read model knows it."""

    entry_id: str
    kind: int
    time: datetime
    #: The anchoring hospital (RECORD), the requester (ACCESS), the key's owner (KEY); empty for
    #: CONSENT, whose actor is the patient.
    actor_organization_id: str = ""
    #: Every organization the item concerns (the actor, and a consent's grantee).
    organizations: tuple[str, ...] = ()
    #: 32 bytes, or empty for KEY items.
    subject_tag: bytes = b""
    #: The patient's subject id when an event named it.
    patient_subject_id: str = ""
    #: The kind-specific fields, named as in the proto's RecordItem/ConsentItem/AccessItem/KeyItem.
    detail: dict[str, Any] = field(default_factory=dict)
    leaf_index: int | None = None
    sealed_tree_size: int | None = None
    rejected: bool = False
    rejection_detail: str = ""
    flag_ids: tuple[str, ...] = ()

    @property
    def state(self) -> int:
        """The entry's state as far as the read model knows."""
        return entry_state(
            rejected=self.rejected,
            leaf_index=self.leaf_index,
            sealed_tree_size=self.sealed_tree_size,
        )


@dataclass(frozen=True)
class ItemChange:
    """What one event says about one entry's trail item: fields to set (the item is created if
    it is new), and the event that said it."""

    entry_id: str
    event_id: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class LogLeaf:
    """One sealed leaf of the log, as the log index holds it."""

    entry_id: str
    leaf_index: int
    kind: int
    submitter_id: str
    subject_tag: bytes
    time: datetime
    sealed_tree_size: int


@dataclass(frozen=True)
class DirectiveVersion:
    """A consent directive version as the consent events announced it."""

    directive_id: str
    version: int
    active: bool
    grantee_organization_id: str
    patient_subject_id: str


@dataclass(frozen=True)
class FlagReviewRecord:
    """A regulator's review of a flag."""

    reviewer_id: str
    outcome: int
    note: str
    review_time: datetime


@dataclass(frozen=True)
class FlagRecord:
    """Something flagged for review."""

    flag_id: str
    kind: int
    organization_id: str
    summary: str
    create_time: datetime
    entry_ids: tuple[str, ...]
    patient_subject_id: str = ""
    status: int = apb.FLAG_STATUS_OPEN
    review: FlagReviewRecord | None = None


@dataclass(frozen=True)
class TrailQuery:
    """A trail filter after scoping to what the caller may see."""

    subject_tag: bytes | None = None
    organization_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    kinds: tuple[int, ...] = ()

    def includes(self, item: TrailRecord) -> bool:
        """Whether ``item`` is in this trail: the store's conditions (``AuditStore.items``)
        applied to an item in hand. Items of no known kind are in no trail; the time range
        includes ``start_time`` and excludes ``end_time``."""
        known_kind = item.kind in self.kinds if self.kinds else item.kind > 0
        if not known_kind:
            return False
        if self.subject_tag is not None and item.subject_tag != self.subject_tag:
            return False
        if self.organization_id and self.organization_id not in item.organizations:
            return False
        if self.start_time is not None and item.time < self.start_time:
            return False
        return self.end_time is None or item.time < self.end_time


@dataclass(frozen=True)
class FlagQuery:
    """Which flags to list."""

    status: int = apb.FLAG_STATUS_UNSPECIFIED
    kinds: tuple[int, ...] = ()
    organization_id: str = ""
    patient_subject_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class SealedView:
    """The latest sealed checkpoint the log index is complete up to."""

    tree_size: int
    note: str
    cut_time: datetime


@dataclass(frozen=True)
class AuditPolicy:
    """Thresholds of the flags and of the completeness check."""

    #: This many DENY decisions for one requester within ``denial_burst_window`` is a burst.
    denial_burst_count: int = 5
    denial_burst_window: timedelta = timedelta(seconds=60)
    #: How long a PERMIT or a record waits before its consent check: events about one patient
    #: come on different topics, so the consent that permitted an access may be read after it.
    consent_check_grace: timedelta = timedelta(seconds=10)
    #: Items younger than this at the checked checkpoint's cut time are not yet due on the log
    #: (the maximum merge delay of the services, with a margin).
    completeness_grace: timedelta = timedelta(seconds=10)


#: Where a page ends in a listing's order: the (time, id) of the last item it returned.
After = tuple[datetime, str]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def cursor(when: datetime, item_id: str) -> Position:
    """The position of an item at ``when`` with id ``item_id``, for a page token (whole
    microseconds since the epoch: exact, where a float or a formatted time may round)."""
    return ((when - _EPOCH) // _MICROSECOND, item_id)


def read_cursor(position: Position) -> After:
    """The (time, id) a page token's ``position`` from :func:`cursor` stands for;
    InvalidInputError for anything else."""
    micros, item_id = position
    if isinstance(micros, int) and isinstance(item_id, str):
        try:
            return _EPOCH + micros * _MICROSECOND, item_id
        except OverflowError:
            pass
    raise InvalidInputError(f"expected a page token from a previous response, got {position!r}")
