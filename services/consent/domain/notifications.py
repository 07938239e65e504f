"""What every accepted version and every decision announces: its entry and events for Kafka,
and a notification for the patient's watchers. They leave through :class:`Outgoing` items: the
store keeps them durably first, a sender hands them to Kafka afterwards, so a request never
waits for Kafka and nothing accepted is lost. Event ids and times come from the version or the
decision, so what is sent again after a restart is the same again."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from chain.tags import subject_tag
from services.consent.domain.directory import Directory
from services.consent.domain.records import (
    CONSENT,
    REVOKED,
    AcceptedVersion,
    StoredDecision,
    grantee_organization,
)
from services.platform.events import envelope
from services.platform.topics import ACCESS_EVENTS_TOPIC, CONSENT_EVENTS_TOPIC
from swiftchain.consent.v1 import consent_service_pb2 as pb
from swiftchain.events.v1 import events_pb2

PRODUCER = "consent"
CONSENT_TOPIC = CONSENT_EVENTS_TOPIC
ACCESS_TOPIC = ACCESS_EVENTS_TOPIC


@dataclass(frozen=True)
class Outgoing:
    """What one accepted change sends to Kafka: its entry and its events; and the patient's
    notification, delivered at once and kept once Kafka has the rest."""

    entry: bytes
    events: tuple[tuple[str, events_pb2.EventEnvelope], ...]
    #: The version or decision it belongs to.
    version: AcceptedVersion | None = None
    decision: StoredDecision | None = None
    notifications: tuple[pb.Notification, ...] = ()


class NotificationSink(Protocol):
    """Receives every notification for patients (services/consent/notifications.py)."""

    def publish(self, notification: pb.Notification) -> None:
        """Deliver ``notification`` to the patient's watchers."""


def event_id(entry_id: str, what: str) -> str:
    """Deterministic, so that a resend publishes the same event id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"swiftchain:consent:{entry_id}:{what}"))


class Announcer:
    """Builds the :class:`Outgoing` of versions and decisions and hands them on."""

    def __init__(
        self,
        directory: Directory,
        tag_key: bytes,
        send: Callable[[Outgoing], None],
        notify: NotificationSink | None,
    ) -> None:
        self._directory = directory
        self._tag_key = tag_key
        self._send = send
        self._notify = notify

    def set_sender(self, send: Callable[[Outgoing], None]) -> None:
        """Where accepted changes go to reach Kafka (the sender is made after the book)."""
        self._send = send

    def deliver(self, item: Outgoing) -> None:
        """Hand ``item`` to the sender and its notifications to the patients' watchers (at
        start too, for what Kafka never acknowledged before a crash)."""
        self._send(item)
        if self._notify is not None:
            for notification in item.notifications:
                self._notify.publish(notification)

    def outgoing_for(self, version: AcceptedVersion) -> Outgoing:
        """The entry, events and notification of a stored version (the same again to resend
        after a restart)."""
        return Outgoing(
            version.entry,
            tuple(self._version_events(version)),
            version=version,
            notifications=(_version_notification(version),),
        )

    def decision_outgoing(self, decision: StoredDecision) -> Outgoing:
        """The entry and events of a stored decision (the same again after a restart: event
        ids and times come from the decision)."""
        return Outgoing(
            decision.entry,
            tuple(self._decision_events(decision)),
            decision=decision,
            notifications=(_decision_notification(decision),),
        )

    def _subject(self, patient: str) -> str:
        return subject_tag(self._tag_key, patient).hex()

    def _version_events(
        self, version: AcceptedVersion
    ) -> list[tuple[str, events_pb2.EventEnvelope]]:
        payload: Message
        if version.directive_type == CONSENT:
            directive = version.directive
            change = events_pb2.ConsentChange(
                patient_subject_id=version.patient_subject_id,
                directive_id=version.document_id,
                version=version.version,
                grantee_organization_id=grantee_organization(self._directory, directive.grantee),
                grantee_practitioner_id=directive.grantee.practitioner_id,
                signer_subject_id=version.signer_subject_id,
                entry_id=version.entry_id,
            )
            if directive.status == REVOKED:
                payload = events_pb2.ConsentRevoked(change=change)
            elif version.version == 1:
                payload = events_pb2.ConsentGranted(change=change)
            else:
                payload = events_pb2.ConsentAmended(change=change)
        else:
            delegation = version.delegation
            if delegation.status == REVOKED:
                payload = events_pb2.DelegateRemoved(
                    patient_subject_id=version.patient_subject_id,
                    delegate_subject_id=delegation.delegate_subject_id,
                    delegation_id=version.document_id,
                    version=version.version,
                    entry_id=version.entry_id,
                )
            else:
                added = events_pb2.DelegateAdded(
                    patient_subject_id=version.patient_subject_id,
                    delegate_subject_id=delegation.delegate_subject_id,
                    delegation_id=version.document_id,
                    version=version.version,
                    entry_id=version.entry_id,
                )
                added.expire_time.CopyFrom(delegation.expire_time)
                payload = added
        event = envelope(
            payload,
            producer=PRODUCER,
            subject=self._subject(version.patient_subject_id),
            now=version.accept_time,
            event_id=event_id(version.entry_id, "change"),
        )
        return [(CONSENT_TOPIC, event)]

    def _decision_events(
        self, decision: StoredDecision
    ) -> list[tuple[str, events_pb2.EventEnvelope]]:
        subject = self._subject(decision.patient_subject_id)
        decided = events_pb2.AccessDecided(
            patient_subject_id=decision.patient_subject_id,
            requester_organization_id=decision.organization_id,
            practitioner_id=decision.practitioner_id,
            data_category=decision.data_category,
            purpose=decision.purpose,
            decision=decision.decision,
            reason=decision.reason,
            break_glass=decision.break_glass,
            deciding_directive_id=decision.deciding_directive_id,
            deciding_directive_version=decision.deciding_directive_version,
            access_entry_id=decision.entry_id,
            request_id=decision.key.split("/", 1)[1],
        )
        events = [
            (
                ACCESS_TOPIC,
                envelope(
                    decided,
                    producer=PRODUCER,
                    subject=subject,
                    now=decision.decide_time,
                    event_id=event_id(decision.entry_id, "decided"),
                ),
            )
        ]
        if decision.break_glass:
            used = events_pb2.BreakGlassUsed(
                patient_subject_id=decision.patient_subject_id,
                requester_organization_id=decision.organization_id,
                practitioner_id=decision.practitioner_id,
                data_category=decision.data_category,
                reason_code=decision.reason_code,
                access_entry_id=decision.entry_id,
            )
            events.append(
                (
                    ACCESS_TOPIC,
                    envelope(
                        used,
                        producer=PRODUCER,
                        subject=subject,
                        now=decision.decide_time,
                        event_id=event_id(decision.entry_id, "break-glass"),
                    ),
                )
            )
        return events


def _version_notification(version: AcceptedVersion) -> pb.Notification:
    kind = (
        pb.NOTIFICATION_KIND_CONSENT_CHANGED
        if version.directive_type == CONSENT
        else pb.NOTIFICATION_KIND_DELEGATION_CHANGED
    )
    notification = pb.Notification(
        notification_id=event_id(version.entry_id, "change"),
        kind=kind,
        patient_subject_id=version.patient_subject_id,
        directive_id=version.document_id,
        directive_version=version.version,
        entry_id=version.entry_id,
    )
    notification.time.FromDatetime(version.accept_time)
    return notification


def _decision_notification(decision: StoredDecision) -> pb.Notification:
    notification = pb.Notification(
        notification_id=event_id(decision.entry_id, "decided"),
        kind=(
            pb.NOTIFICATION_KIND_BREAK_GLASS
            if decision.break_glass
            else pb.NOTIFICATION_KIND_ACCESS_DECIDED
        ),
        patient_subject_id=decision.patient_subject_id,
        organization_id=decision.organization_id,
        practitioner_id=decision.practitioner_id,
        decision=decision.decision,
        reason=decision.reason,
        data_category=decision.data_category,
        purpose=decision.purpose,
        directive_id=decision.deciding_directive_id,
        directive_version=decision.deciding_directive_version,
        entry_id=decision.entry_id,
    )
    notification.time.FromDatetime(decision.decide_time)
    return notification
