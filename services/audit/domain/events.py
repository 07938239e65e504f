"""Events -> item changes: what one event envelope of the event topics (DESIGN §5) does to the
read model, as :class:`EventEffects` the book applies.

An event names the entry it is about, and its effects are fields to set on that entry's item, so
that an event read twice (after a crash, before its offset was committed) rewrites the same
fields of the same item and never adds one.

An event is believed only from where it may come: :func:`accept_event` lets through an event
type only from the topic its service publishes it on and with that service as its producer
(:data:`EVENT_SOURCES`); the brokers let only that service write that topic
(services/platform/kafka_acls.py). Anything else raises, and the consumer sets the record aside
with the reason, and counts it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message

from chain.errors import InvalidInputError
from chain.tags import subject_tag
from services.audit.domain.records import (
    DENY,
    KIND_ACCESS,
    KIND_CONSENT,
    KIND_KEY,
    KIND_RECORD,
    PERMIT,
    DirectiveVersion,
    FlagRecord,
    ItemChange,
    flag_id,
)
from services.platform.topics import (
    ACCESS_EVENTS_TOPIC,
    CONSENT_EVENTS_TOPIC,
    IDENTITY_EVENTS_TOPIC,
    RECORDS_EVENTS_TOPIC,
)
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.chain.v1 import entry_pb2
from swiftchain.events.v1 import events_pb2


@dataclass(frozen=True)
class EventSource:
    """Where an event type may come from: the topic, and the producer that writes it."""

    topic: str
    producer: str


def _sources(topic: str, producer: str, *names: str) -> dict[str, EventSource]:
    return {f"swiftchain.events.v1.{name}": EventSource(topic, producer) for name in names}


#: Every event type a service publishes, and where: nothing else is believed.
EVENT_SOURCES: Mapping[str, EventSource] = {
    **_sources(
        IDENTITY_EVENTS_TOPIC,
        "identity",
        "OrganizationRegistered",
        "KeyRegistered",
        "KeyRotated",
        "KeyRevoked",
        "CertificateIssued",
        "CertificateRevoked",
        "PatientRegistered",
        "PatientDeviceAdded",
        "PatientDeviceRevoked",
        "PractitionerRegistered",
    ),
    **_sources(
        RECORDS_EVENTS_TOPIC,
        "anchoring",
        "RecordAnchored",
        "RecordSealed",
        "RecordRejected",
        "SealDeadlineMissed",
    ),
    **_sources(
        CONSENT_EVENTS_TOPIC,
        "consent",
        "ConsentGranted",
        "ConsentAmended",
        "ConsentRevoked",
        "DelegateAdded",
        "DelegateRemoved",
    ),
    **_sources(ACCESS_EVENTS_TOPIC, "consent", "AccessDecided", "BreakGlassUsed"),
}


def accept_event(topic: str, event: events_pb2.EventEnvelope) -> events_pb2.EventEnvelope:
    """``event``, read from ``topic``, if its type may come from there and names the producer
    that publishes it; else :class:`InvalidInputError` saying where it may come from."""
    source = EVENT_SOURCES.get(event.type)
    if source is None:
        raise InvalidInputError(
            f"expected an event type a service publishes, got {event.type!r} on {topic} "
            f"(producer {event.producer!r}); not believed"
        )
    if (topic, event.producer) != (source.topic, source.producer):
        raise InvalidInputError(
            f"expected {event.type} only from {source.producer} on {source.topic}, got it from "
            f"{event.producer!r} on {topic}; not believed"
        )
    return event


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
