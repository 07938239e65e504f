"""The audit service's domain (DESIGN §4, audit): read models built from every event topic, the
trails regulators, patients and hospitals may see, completeness against the log, and flags.

Two independent sources meet here. The *read model* is what the services said on Kafka: one
:class:`TrailRecord` per log entry, keyed by entry id, so that an event read twice (after a crash,
before its offset was committed) rewrites the same fields of the same item and never adds one.
The *log index* is what the log holds: every sealed leaf's entry id, kind and subject tag, read
from a chain node (:class:`LogReader`). Completeness compares the two.

Nothing here imports grpc or mongoengine; the store and the log reader are protocols, and time is
passed in.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from google.protobuf.message import Message

from chain.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from chain.tags import subject_tag
from services.platform.caller import Caller, Role
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2

_log = logging.getLogger(__name__)

KIND_KEY = common_pb2.ENTRY_KIND_KEY
KIND_RECORD = common_pb2.ENTRY_KIND_RECORD
KIND_CONSENT = common_pb2.ENTRY_KIND_CONSENT
KIND_ACCESS = common_pb2.ENTRY_KIND_ACCESS
PERMIT = common_pb2.ACCESS_DECISION_PERMIT
DENY = common_pb2.ACCESS_DECISION_DENY

#: Event topics the audit service reads (DESIGN §5).

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
        if self.rejected:
            return common_pb2.ENTRY_STATE_REJECTED
        if self.sealed_tree_size is not None:
            return common_pb2.ENTRY_STATE_SEALED
        if self.leaf_index is not None:
            return common_pb2.ENTRY_STATE_SEQUENCED
        return common_pb2.ENTRY_STATE_PENDING


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


class AuditStore(Protocol):
    """Where the read model, the log index and the flags live (services/audit/store.py)."""

    def apply_changes(self, changes: Sequence[ItemChange], *, only_existing: bool = False) -> None:
        """Create or update each change's item, in order (idempotent); with ``only_existing``,
        changes to items that do not exist are dropped."""

    def items(self, query: TrailQuery, offset: int, limit: int) -> list[TrailRecord]:
        """Items matching ``query``, oldest first (by time, then entry id)."""

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

    def flags(self, query: FlagQuery, offset: int, limit: int) -> list[FlagRecord]:
        """Flags matching ``query``, newest first."""

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


# --- events -> item changes ----------------------------------------------------------------


def _unpack(event: events_pb2.EventEnvelope, message_type: type[Message]) -> Any:
    payload = message_type()
    if not event.payload.Unpack(payload):
        raise InvalidInputError(
            f"expected a {message_type.DESCRIPTOR.full_name} payload, "
            f"got {event.payload.TypeName()}"
        )
    return payload


def _time(event: events_pb2.EventEnvelope) -> datetime:
    return event.time.ToDatetime(tzinfo=UTC)


@dataclass
class EventEffects:
    """What one event does: item changes, directive and patient facts, flags."""

    changes: list[ItemChange] = field(default_factory=list)
    directive: DirectiveVersion | None = None
    patient: tuple[bytes, str] | None = None
    flags: list[FlagRecord] = field(default_factory=list)
    #: (requester, time, entry id) of a DENY, for the burst window.
    denial: tuple[str, datetime, str] | None = None


class EventTranslator:
    """Turns one event envelope into its :class:`EventEffects` (pure: no store, no clock)."""

    def __init__(self, tag_key: bytes) -> None:
        self._tag_key = tag_key

    def tag(self, subject_id: str) -> bytes:
        """The subject tag of a patient."""
        return subject_tag(self._tag_key, subject_id)

    def effects(self, event: events_pb2.EventEnvelope) -> EventEffects:
        """The effects of ``event``; none for event types the audit does not keep."""
        handler = self._handlers.get(event.type)
        if handler is None:
            return EventEffects()
        return handler(self, event)

    # identity.events.v1 -------------------------------------------------------------------

    def _key_registered(self, event: events_pb2.EventEnvelope) -> EventEffects:
        payload = _unpack(event, events_pb2.KeyRegistered)
        return self._key(
            event, payload.entry_id, payload.owner_id, payload.key_id, entry_pb2.KEY_ACTION_REGISTER
        )

    def _key_rotated(self, event: events_pb2.EventEnvelope) -> EventEffects:
        payload = _unpack(event, events_pb2.KeyRotated)
        return self._key(
            event,
            payload.entry_id,
            payload.owner_id,
            payload.new_key_id,
            entry_pb2.KEY_ACTION_ROTATE,
        )

    def _key_revoked(self, event: events_pb2.EventEnvelope) -> EventEffects:
        payload = _unpack(event, events_pb2.KeyRevoked)
        return self._key(
            event, payload.entry_id, payload.owner_id, payload.key_id, entry_pb2.KEY_ACTION_REVOKE
        )

    def _key(
        self, event: events_pb2.EventEnvelope, entry_id: str, owner: str, key_id: str, action: int
    ) -> EventEffects:
        if not entry_id:
            return EventEffects()
        fields = {
            "kind": KIND_KEY,
            "time": _time(event),
            "actor_organization_id": owner,
            "organizations": [owner],
            "detail": {"key_id": key_id, "owner_id": owner, "action": action},
        }
        return EventEffects(changes=[ItemChange(entry_id, event.event_id, fields)])

    def _patient_registered(self, event: events_pb2.EventEnvelope) -> EventEffects:
        payload = _unpack(event, events_pb2.PatientRegistered)
        return EventEffects(patient=(self.tag(payload.subject_id), payload.subject_id))

    # records.events.v1 --------------------------------------------------------------------

    def _record_anchored(self, event: events_pb2.EventEnvelope) -> EventEffects:
        payload = _unpack(event, events_pb2.RecordAnchored)
        fields = {
            "kind": KIND_RECORD,
            "time": payload.anchored_time.ToDatetime(tzinfo=UTC)
            if payload.HasField("anchored_time")
            else _time(event),
            "actor_organization_id": payload.organization_id,
            "organizations": [payload.organization_id],
            "subject_tag": bytes(payload.subject_tag),
            "detail": {
                "record_id": payload.record_id,
                "version": payload.version,
                "action": payload.action,
                "author_practitioner_id": payload.author_practitioner_id,
                "reason_code": payload.reason_code,
            },
            "consent_check_due": True,
        }
        return EventEffects(changes=[ItemChange(payload.entry_id, event.event_id, fields)])

    def _record_sealed(self, event: events_pb2.EventEnvelope) -> EventEffects:
        payload = _unpack(event, events_pb2.RecordSealed)
        fields = {"leaf_index": payload.leaf_index, "sealed_tree_size": payload.tree_size}
        return EventEffects(changes=[ItemChange(payload.entry_id, event.event_id, fields)])

    def _record_rejected(self, event: events_pb2.EventEnvelope) -> EventEffects:
        payload = _unpack(event, events_pb2.RecordRejected)
        fields = {"rejected": True, "rejection_detail": payload.rejection_detail}
        return EventEffects(changes=[ItemChange(payload.entry_id, event.event_id, fields)])

    def _seal_deadline_missed(self, event: events_pb2.EventEnvelope) -> EventEffects:
        payload = _unpack(event, events_pb2.SealDeadlineMissed)
        due = payload.seal_due_time.ToDatetime(tzinfo=UTC)
        flag = FlagRecord(
            flag_id=flag_id("seal-deadline", payload.entry_id),
            kind=apb.FLAG_KIND_SEAL_DEADLINE_MISSED,
            organization_id=payload.organization_id,
            summary=(
                f"entry {payload.entry_id} (version {payload.version} of a record of "
                f"{payload.organization_id}) was not sealed by {due.isoformat()}"
            ),
            create_time=_time(event),
            entry_ids=(payload.entry_id,),
        )
        return EventEffects(flags=[flag])

    # consent.events.v1 --------------------------------------------------------------------

    def _consent_change(
        self, event: events_pb2.EventEnvelope, change: events_pb2.ConsentChange, active: bool
    ) -> EventEffects:
        grantee = change.grantee_organization_id
        fields = {
            "kind": KIND_CONSENT,
            "time": _time(event),
            "actor_organization_id": "",
            "organizations": [grantee] if grantee else [],
            "subject_tag": self.tag(change.patient_subject_id),
            "patient_subject_id": change.patient_subject_id,
            "detail": {
                "directive_id": change.directive_id,
                "version": change.version,
                "directive_type": entry_pb2.DIRECTIVE_TYPE_CONSENT,
                "status": entry_pb2.DIRECTIVE_STATUS_ACTIVE
                if active
                else entry_pb2.DIRECTIVE_STATUS_REVOKED,
                "grantee_organization_id": grantee,
                "grantee_practitioner_id": change.grantee_practitioner_id,
            },
        }
        return EventEffects(
            changes=[ItemChange(change.entry_id, event.event_id, fields)],
            directive=DirectiveVersion(
                change.directive_id, change.version, active, grantee, change.patient_subject_id
            ),
        )

    def _consent_granted(self, event: events_pb2.EventEnvelope) -> EventEffects:
        return self._consent_change(event, _unpack(event, events_pb2.ConsentGranted).change, True)

    def _consent_amended(self, event: events_pb2.EventEnvelope) -> EventEffects:
        return self._consent_change(event, _unpack(event, events_pb2.ConsentAmended).change, True)

    def _consent_revoked(self, event: events_pb2.EventEnvelope) -> EventEffects:
        return self._consent_change(event, _unpack(event, events_pb2.ConsentRevoked).change, False)

    def _delegation(
        self,
        event: events_pb2.EventEnvelope,
        patient: str,
        delegation_id: str,
        version: int,
        entry_id: str,
        active: bool,
    ) -> EventEffects:
        fields = {
            "kind": KIND_CONSENT,
            "time": _time(event),
            "actor_organization_id": "",
            "organizations": [],
            "subject_tag": self.tag(patient),
            "patient_subject_id": patient,
            "detail": {
                "directive_id": delegation_id,
                "version": version,
                "directive_type": entry_pb2.DIRECTIVE_TYPE_DELEGATION,
                "status": entry_pb2.DIRECTIVE_STATUS_ACTIVE
                if active
                else entry_pb2.DIRECTIVE_STATUS_REVOKED,
            },
        }
        return EventEffects(changes=[ItemChange(entry_id, event.event_id, fields)])

    def _delegate_added(self, event: events_pb2.EventEnvelope) -> EventEffects:
        p = _unpack(event, events_pb2.DelegateAdded)
        return self._delegation(
            event, p.patient_subject_id, p.delegation_id, p.version, p.entry_id, True
        )

    def _delegate_removed(self, event: events_pb2.EventEnvelope) -> EventEffects:
        p = _unpack(event, events_pb2.DelegateRemoved)
        return self._delegation(
            event, p.patient_subject_id, p.delegation_id, p.version, p.entry_id, False
        )

    # access.events.v1 ---------------------------------------------------------------------

    def _access_decided(self, event: events_pb2.EventEnvelope) -> EventEffects:
        p = _unpack(event, events_pb2.AccessDecided)
        when = _time(event)
        fields = {
            "kind": KIND_ACCESS,
            "time": when,
            "actor_organization_id": p.requester_organization_id,
            "organizations": [p.requester_organization_id],
            "subject_tag": self.tag(p.patient_subject_id),
            "patient_subject_id": p.patient_subject_id,
            "detail": {
                "decision": p.decision,
                "reason": p.reason,
                "break_glass": p.break_glass,
                "practitioner_id": p.practitioner_id,
                "data_category": p.data_category,
                "purpose": p.purpose,
                "deciding_directive_id": p.deciding_directive_id,
                "deciding_directive_version": p.deciding_directive_version,
            },
            "consent_check_due": p.decision == PERMIT and not p.break_glass,
        }
        effects = EventEffects(changes=[ItemChange(p.access_entry_id, event.event_id, fields)])
        if p.break_glass:
            effects.flags.append(
                FlagRecord(
                    flag_id=flag_id("break-glass", p.access_entry_id),
                    kind=apb.FLAG_KIND_BREAK_GLASS,
                    organization_id=p.requester_organization_id,
                    patient_subject_id=p.patient_subject_id,
                    summary=(
                        f"{p.requester_organization_id} used break-glass access to "
                        f"{p.data_category or 'all'} data"
                        + (f" (practitioner {p.practitioner_id})" if p.practitioner_id else "")
                    ),
                    create_time=when,
                    entry_ids=(p.access_entry_id,),
                )
            )
        elif p.decision == DENY:
            effects.denial = (p.requester_organization_id, when, p.access_entry_id)
        return effects

    _handlers: Mapping[str, Callable[[EventTranslator, events_pb2.EventEnvelope], EventEffects]] = {
        "swiftchain.events.v1.KeyRegistered": _key_registered,
        "swiftchain.events.v1.KeyRotated": _key_rotated,
        "swiftchain.events.v1.KeyRevoked": _key_revoked,
        "swiftchain.events.v1.PatientRegistered": _patient_registered,
        "swiftchain.events.v1.RecordAnchored": _record_anchored,
        "swiftchain.events.v1.RecordSealed": _record_sealed,
        "swiftchain.events.v1.RecordRejected": _record_rejected,
        "swiftchain.events.v1.SealDeadlineMissed": _seal_deadline_missed,
        "swiftchain.events.v1.ConsentGranted": _consent_granted,
        "swiftchain.events.v1.ConsentAmended": _consent_amended,
        "swiftchain.events.v1.ConsentRevoked": _consent_revoked,
        "swiftchain.events.v1.DelegateAdded": _delegate_added,
        "swiftchain.events.v1.DelegateRemoved": _delegate_removed,
        "swiftchain.events.v1.AccessDecided": _access_decided,
    }


# --- the book ------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class TrailFilterSpec:
    """A trail filter as the caller asked for it."""

    patient_subject_id: str = ""
    organization_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    kinds: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrailPage:
    """A page of trail items and whether more follow."""

    items: list[TrailRecord]
    more: bool


@dataclass(frozen=True)
class EvidenceExport:
    """An evidence bundle for a selection of entries, and what it could not prove yet."""

    bundle_json: str
    entry_count: int
    unsealed_entry_ids: list[str]
    rejected_entry_ids: list[str]


@dataclass(frozen=True)
class Completeness:
    """The read model of one patient compared with the log."""

    missing_in_read_model: list[str]
    missing_in_log: list[str]
    checked_tree_size: int

    @property
    def complete(self) -> bool:
        """True when neither side lacks anything."""
        return not self.missing_in_read_model and not self.missing_in_log


#: Most entries one evidence export may select.
MAX_EXPORT_ENTRIES = 10_000
#: Longest review note.
MAX_NOTE_CHARS = 4000
#: Decisions remembered per (requester, patient) for the consent check of records; a record
#: older than all of them is judged as if no decision preceded it.
DECISIONS_KEPT = 32


class _DenialWindows:
    """Recent DENY decisions per requester, and the burst each requester is in, if any."""

    def __init__(self, policy: AuditPolicy) -> None:
        self._policy = policy
        self._recent: dict[str, collections.deque[tuple[datetime, str]]] = {}
        self._seen: set[str] = set()
        self._open: dict[str, tuple[str, datetime]] = {}

    def add(self, requester: str, when: datetime, entry_id: str) -> FlagRecord | None:
        """Count a denial; the flag to raise or extend when it makes or continues a burst."""
        if entry_id in self._seen:
            return None
        self._seen.add(entry_id)
        window = self._policy.denial_burst_window
        recent = self._recent.setdefault(requester, collections.deque())
        recent.append((when, entry_id))
        while recent and recent[0][0] < when - window:
            self._seen.discard(recent.popleft()[1])
        burst = self._open.get(requester)
        if burst is not None and when - burst[1] <= window:
            self._open[requester] = (burst[0], when)
            return self._flag(burst[0], requester, when, (entry_id,), len(recent))
        if len(recent) < self._policy.denial_burst_count:
            return None
        new_id = flag_id("denial-burst", requester, recent[0][1])
        self._open[requester] = (new_id, when)
        return self._flag(new_id, requester, when, tuple(e for _, e in recent), len(recent))

    def _flag(
        self, id_: str, requester: str, when: datetime, entries: tuple[str, ...], count: int
    ) -> FlagRecord:
        seconds = self._policy.denial_burst_window.total_seconds()
        return FlagRecord(
            flag_id=id_,
            kind=apb.FLAG_KIND_DENIAL_BURST,
            organization_id=requester,
            summary=f"{requester} was denied access {count} times within {seconds:.0f} s",
            create_time=when,
            entry_ids=entries,
        )


class AuditBook:
    """The audit service: applies events, follows the log, answers trails, flags, evidence."""

    def __init__(
        self,
        store: AuditStore,
        tag_key: bytes,
        policy: AuditPolicy | None = None,
    ) -> None:
        self._store = store
        self._translator = EventTranslator(tag_key)
        self._policy = policy or AuditPolicy()
        self._log: LogReader | None = None
        self._lock = threading.Lock()
        self._denials = _DenialWindows(self._policy)
        #: Items whose consent check is due, by entry id.
        self._unchecked: dict[str, TrailRecord] = {}
        #: The latest decisions per (requester, subject tag), oldest first: (time, entry id,
        #: decision), break-glass excluded. A record is judged by the latest decision at or
        #: before its time, and a later decision may be read before the record is checked.
        self._decisions: dict[tuple[str, bytes], list[tuple[datetime, str, int]]] = {}

    def attach_log(self, log: LogReader) -> None:
        """The chain node the book reads the log from (set once at start)."""
        self._log = log

    def load(self, now: datetime) -> None:
        """Rebuild the in-memory windows from the store after a restart."""
        for item in self._store.recent_access(datetime.min.replace(tzinfo=UTC)):
            self._remember_decision(item)
            denied = item.detail.get("decision") == DENY and not item.detail.get("break_glass")
            if denied and item.time >= now - self._policy.denial_burst_window:
                self._denials.add(item.actor_organization_id, item.time, item.entry_id)
        for item in self._store.unchecked_items():
            self._unchecked[item.entry_id] = item

    # --- events ---------------------------------------------------------------------------

    def apply_events(self, events: Sequence[events_pb2.EventEnvelope]) -> None:
        """Apply a batch of events in order (idempotent: a replayed event changes nothing)."""
        with self._lock:
            effects = [self._translator.effects(event) for event in events]
            changes = [change for effect in effects for change in effect.changes]
            if changes:
                self._store.apply_changes(changes)
                # After the items exist: a leaf the log follower indexed before them is found
                # now, and one it indexes later finds the items (see services/audit/store.py).
                created = [c.entry_id for c in changes if "kind" in c.fields]
                self._seal_from_index(created)
            for effect in effects:
                if effect.directive is not None:
                    self._store.put_directive(effect.directive)
                if effect.patient is not None:
                    self._store.put_patient(*effect.patient)
                for flag in effect.flags:
                    self._raise(flag)
                if effect.denial is not None:
                    burst = self._denials.add(*effect.denial)
                    if burst is not None:
                        self._raise(burst)
            self._track(changes)

    def _seal_from_index(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        leaves = self._store.leaves_by_id(entry_ids)
        if leaves:
            self._store.apply_changes(
                [
                    ItemChange(
                        leaf.entry_id,
                        "",
                        {"leaf_index": leaf.leaf_index, "sealed_tree_size": leaf.sealed_tree_size},
                    )
                    for leaf in leaves.values()
                ]
            )

    def _track(self, changes: Sequence[ItemChange]) -> None:
        due = [c.entry_id for c in changes if c.fields.get("consent_check_due")]
        accesses = [c.entry_id for c in changes if c.fields.get("kind") == KIND_ACCESS]
        if not due and not accesses:
            return
        items = self._store.items_by_id(sorted({*due, *accesses}))
        for entry_id in accesses:
            if entry_id in items:
                self._remember_decision(items[entry_id])
        for entry_id in due:
            if entry_id in items:
                self._unchecked[entry_id] = items[entry_id]

    def _remember_decision(self, item: TrailRecord) -> None:
        if item.detail.get("break_glass"):
            return
        known = self._decisions.setdefault((item.actor_organization_id, item.subject_tag), [])
        if any(entry_id == item.entry_id for _, entry_id, _ in known):
            return
        bisect.insort(known, (item.time, item.entry_id, int(item.detail.get("decision", 0))))
        if len(known) > DECISIONS_KEPT:
            del known[0]

    def _decision_before(self, organization: str, tag: bytes, when: datetime) -> int | None:
        """The latest decision for ``organization`` about ``tag`` at or before ``when``."""
        known = self._decisions.get((organization, tag), [])
        at = bisect.bisect_right(known, when, key=lambda decision: decision[0])
        return known[at - 1][2] if at else None

    def _raise(self, flag: FlagRecord) -> None:
        self._store.raise_flag(flag)
        self._store.add_flag_to_items(flag.entry_ids, flag.flag_id)
        _log.info(
            "flag %s (%s): %s",
            flag.flag_id,
            apb.FlagKind.Name(apb.FlagKind.ValueType(flag.kind)),
            flag.summary,
        )

    def check_consents(self, now: datetime) -> int:
        """Run the consent check of every item older than the grace period; the number of
        flags raised."""
        with self._lock:
            due = [
                item
                for item in self._unchecked.values()
                if item.time <= now - self._policy.consent_check_grace
            ]
            raised = 0
            for item in due:
                flag = self._consent_violation(item)
                if flag is not None:
                    self._raise(flag)
                    raised += 1
            if due:
                self._store.mark_checked([item.entry_id for item in due])
                for item in due:
                    del self._unchecked[item.entry_id]
            return raised

    def _consent_violation(self, item: TrailRecord) -> FlagRecord | None:
        organization = item.actor_organization_id
        if item.kind == KIND_ACCESS:
            directive_id = str(item.detail.get("deciding_directive_id", ""))
            version = int(item.detail.get("deciding_directive_version", 0))
            known = self._store.directive(directive_id, version) if directive_id else None
            if known is not None and known.active and known.grantee_organization_id == organization:
                return None
            why = (
                "names no deciding consent"
                if not directive_id
                else f"names consent {directive_id} version {version}, which "
                + (
                    "no consent event announced"
                    if known is None
                    else "is not active"
                    if not known.active
                    else f"grants to {known.grantee_organization_id}, not {organization}"
                )
            )
            summary = f"a PERMIT for {organization} {why}"
        else:
            if self._decision_before(organization, item.subject_tag, item.time) != DENY:
                return None
            summary = (
                f"{organization} anchored record {item.detail.get('record_id', '')!r} version "
                f"{item.detail.get('version', 0)} about a patient after being denied access"
            )
        return FlagRecord(
            flag_id=flag_id("without-consent", item.entry_id),
            kind=apb.FLAG_KIND_ACCESS_WITHOUT_CONSENT,
            organization_id=organization,
            patient_subject_id=item.patient_subject_id,
            summary=summary,
            create_time=item.time,
            entry_ids=(item.entry_id,),
        )

    # --- the log --------------------------------------------------------------------------

    def index_leaves(self, leaves: Sequence[LogLeaf], tree_size: int) -> None:
        """Add sealed leaves to the log index and their seal to the items that exist."""
        with self._lock:
            if leaves:
                self._store.put_leaves(leaves)
                self._store.apply_changes(
                    [
                        ItemChange(
                            leaf.entry_id,
                            "",
                            {
                                "leaf_index": leaf.leaf_index,
                                "sealed_tree_size": leaf.sealed_tree_size,
                            },
                        )
                        for leaf in leaves
                    ],
                    only_existing=True,
                )
            self._store.store_log_position(tree_size)

    def on_alarm(
        self,
        reporting_node: str,
        alarm_id: str,
        member: str,
        tree_size: int,
        detail: str,
        raised: datetime,
    ) -> None:
        """A chain node's cosignature alarm becomes a flag (once per alarm)."""
        with self._lock:
            self._raise(
                FlagRecord(
                    flag_id=flag_id("alarm", reporting_node, alarm_id),
                    kind=apb.FLAG_KIND_COSIGNATURE_CONFLICT,
                    organization_id=member,
                    summary=f"node {reporting_node} reports member {member} at tree size "
                    f"{tree_size}: {detail}",
                    create_time=raised,
                    entry_ids=(),
                )
            )

    def _reader(self) -> LogReader:
        if self._log is None:
            raise RuntimeError("the audit book has no log reader attached")
        return self._log

    # --- trails ---------------------------------------------------------------------------

    def scope(self, caller: Caller, spec: TrailFilterSpec) -> TrailQuery:
        """The query ``caller`` may run for ``spec``: a patient sees only its own trail, a
        hospital only its own accesses and records; PermissionDeniedError when ``spec`` asks
        for someone else's."""
        patient = spec.patient_subject_id
        organization = spec.organization_id
        if spec.start_time and spec.end_time and spec.start_time >= spec.end_time:
            raise InvalidInputError(
                f"expected start_time before end_time, got {spec.start_time.isoformat()} and "
                f"{spec.end_time.isoformat()}"
            )
        if caller.role is Role.PATIENT:
            if patient and patient != caller.id:
                raise PermissionDeniedError(f"{caller.describe()} may see only its own trail")
            patient = caller.id
        elif caller.role is Role.HOSPITAL:
            if organization and organization != caller.id:
                raise PermissionDeniedError(
                    f"{caller.describe()} may see only its own accesses and records, "
                    f"not those of {organization!r}"
                )
            organization = caller.id
        elif caller.role is not Role.REGULATOR:
            raise PermissionDeniedError(f"{caller.describe()} may not read audit trails")
        return TrailQuery(
            subject_tag=self._translator.tag(patient) if patient else None,
            organization_id=organization,
            start_time=spec.start_time,
            end_time=spec.end_time,
            kinds=spec.kinds,
        )

    def trail(self, caller: Caller, spec: TrailFilterSpec, offset: int, limit: int) -> TrailPage:
        """A page of the trail ``caller`` may see, oldest first."""
        query = self.scope(caller, spec)
        found = self._store.items(query, offset, limit + 1)
        items = self._with_patients(caller, spec, found[:limit])
        return TrailPage(items, more=len(found) > limit)

    def _with_patients(
        self, caller: Caller, spec: TrailFilterSpec, items: list[TrailRecord]
    ) -> list[TrailRecord]:
        sees_patients = caller.role in (Role.REGULATOR, Role.PATIENT) or bool(
            spec.patient_subject_id
        )
        if not sees_patients:
            return [replace(item, patient_subject_id="") for item in items]
        unknown = {
            item.subject_tag for item in items if item.subject_tag and not item.patient_subject_id
        }
        names = self._store.patients(unknown) if unknown else {}
        return [
            replace(item, patient_subject_id=names.get(item.subject_tag, ""))
            if not item.patient_subject_id and item.subject_tag in names
            else item
            for item in items
        ]

    def _visible(self, caller: Caller, item: TrailRecord) -> bool:
        if caller.role is Role.REGULATOR:
            return True
        if caller.role is Role.PATIENT:
            return item.subject_tag == self._translator.tag(caller.id)
        if caller.role is Role.HOSPITAL:
            return caller.id in item.organizations
        return False

    def select(
        self, caller: Caller, spec: TrailFilterSpec | None, entry_ids: Sequence[str]
    ) -> list[TrailRecord]:
        """The items of a filter, or the named entries (each must be visible to ``caller``)."""
        if spec is not None:
            query = self.scope(caller, spec)
            items = self._store.items(query, 0, MAX_EXPORT_ENTRIES + 1)
            if len(items) > MAX_EXPORT_ENTRIES:
                raise InvalidInputError(
                    f"expected a trail of at most {MAX_EXPORT_ENTRIES:,} entries to export, got "
                    "more: narrow the filter (a time range, kinds)"
                )
            return items
        if not entry_ids:
            raise InvalidInputError("expected a filter or entry ids to export, got neither")
        if len(entry_ids) > MAX_EXPORT_ENTRIES:
            raise InvalidInputError(
                f"expected at most {MAX_EXPORT_ENTRIES:,} entry ids, got {len(entry_ids):,}"
            )
        found = self._store.items_by_id(list(dict.fromkeys(entry_ids)))
        visible = {i: item for i, item in found.items() if self._visible(caller, item)}
        missing = [i for i in entry_ids if i not in visible]
        if missing:
            raise NotFoundError(
                f"no trail item {caller.describe()} may see for entry id "
                + ", ".join(repr(i) for i in missing[:5])
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )
        return [visible[i] for i in dict.fromkeys(entry_ids)]

    def export(
        self,
        caller: Caller,
        spec: TrailFilterSpec | None,
        entry_ids: Sequence[str],
        since_checkpoint: str,
    ) -> EvidenceExport:
        """One evidence bundle for the sealed entries of a trail (or of named entries)."""
        items = self.select(caller, spec, entry_ids)
        view = self._reader().sync()
        leaves = self._store.leaves_by_id([item.entry_id for item in items])
        sealed: list[tuple[str, int]] = []
        unsealed: list[str] = []
        rejected: list[str] = []
        for item in items:
            leaf = leaves.get(item.entry_id)
            if leaf is not None and leaf.leaf_index < view.tree_size:
                sealed.append((item.entry_id, leaf.leaf_index))
            elif item.rejected:
                rejected.append(item.entry_id)
            else:
                unsealed.append(item.entry_id)
        bundle = self._reader().evidence(sealed, since_checkpoint) if sealed else ""
        return EvidenceExport(bundle, len(sealed), unsealed, rejected)

    # --- completeness ---------------------------------------------------------------------

    def completeness(self, subject_id: str, now: datetime) -> Completeness:
        """Every entry on the log with the patient's subject tag against the read model."""
        if not subject_id:
            raise InvalidInputError("expected a patient subject id, got none")
        tag = self._translator.tag(subject_id)
        view = self._reader().sync()
        on_log = {
            leaf.entry_id
            for leaf in self._store.leaves_with_tag(tag)
            if leaf.leaf_index < view.tree_size
        }
        known = self._store.items(TrailQuery(subject_tag=tag), 0, 10**9)
        in_model = {item.entry_id for item in known}
        due_before = view.cut_time - self._policy.completeness_grace
        result = Completeness(
            missing_in_read_model=sorted(on_log - in_model),
            missing_in_log=sorted(
                item.entry_id
                for item in known
                if item.entry_id not in on_log and (item.rejected or item.time < due_before)
            ),
            checked_tree_size=view.tree_size,
        )
        if not result.complete:
            gaps = [*result.missing_in_read_model, *result.missing_in_log]
            digest = hashlib.sha256("\n".join(gaps).encode()).hexdigest()[:16]
            with self._lock:
                self._raise(
                    FlagRecord(
                        flag_id=flag_id("incomplete", subject_id, digest),
                        kind=apb.FLAG_KIND_INCOMPLETE_TRAIL,
                        organization_id="",
                        patient_subject_id=subject_id,
                        summary=(
                            f"the trail of a patient at tree size {view.tree_size}: "
                            f"{len(result.missing_in_read_model)} entries on the log missing "
                            f"from the read model, {len(result.missing_in_log)} items missing "
                            "from the log"
                        ),
                        create_time=now,
                        entry_ids=tuple(gaps),
                    )
                )
        return result

    # --- flags ----------------------------------------------------------------------------

    def flags(self, query: FlagQuery, offset: int, limit: int) -> tuple[list[FlagRecord], bool]:
        """A page of flags, newest first, and whether more follow."""
        found = self._store.flags(query, offset, limit + 1)
        return found[:limit], len(found) > limit

    def review(
        self, caller: Caller, flag_id_: str, outcome: int, note: str, now: datetime
    ) -> FlagRecord:
        """Record a regulator's review of a flag."""
        if caller.role is not Role.REGULATOR:
            raise PermissionDeniedError(f"{caller.describe()} may not review flags")
        if not flag_id_:
            raise InvalidInputError("expected a flag id, got none")
        if outcome == apb.REVIEW_OUTCOME_UNSPECIFIED or outcome not in apb.ReviewOutcome.values():
            raise InvalidInputError(
                "expected an outcome (JUSTIFIED, UNJUSTIFIED, FALSE_POSITIVE or ESCALATED), got "
                + ("none" if outcome == 0 else str(outcome))
            )
        if not note.strip():
            raise InvalidInputError("expected a note saying why, got none")
        if len(note) > MAX_NOTE_CHARS:
            raise InvalidInputError(
                f"expected a note of at most {MAX_NOTE_CHARS:,} characters, got {len(note):,}"
            )
        reviewed = self._store.review_flag(
            flag_id_, FlagReviewRecord(caller.id, outcome, note, now)
        )
        if reviewed is None:
            raise NotFoundError(f"no flag {flag_id_!r}")
        return reviewed
