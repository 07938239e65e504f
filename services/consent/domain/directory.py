"""What the consent service knows of identity, from ``identity.events.v1``: hospitals,
practitioners and their hospital, patients, and patients' device keys (with which directive
signatures are checked). Fed by a :class:`services.platform.revocations.IdentityEventFeed`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2


@dataclass(frozen=True)
class DeviceKey:
    """A patient's device key."""

    key_id: str
    subject_id: str
    public_key: bytes
    active: bool


class Directory:
    """The identity facts the consent service checks against (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._hospitals: set[str] = set()
        self._practitioners: dict[str, str] = {}
        self._patients: set[str] = set()
        self._device_keys: dict[str, DeviceKey] = {}

    def apply(self, event: events_pb2.EventEnvelope) -> None:
        """Take in one identity event (others are ignored)."""
        payload = event.payload
        with self._lock:
            if payload.Is(events_pb2.OrganizationRegistered.DESCRIPTOR):
                organization = events_pb2.OrganizationRegistered()
                payload.Unpack(organization)
                if organization.role == common_pb2.ORGANIZATION_ROLE_HOSPITAL:
                    self._hospitals.add(organization.organization_id)
            elif payload.Is(events_pb2.PractitionerRegistered.DESCRIPTOR):
                practitioner = events_pb2.PractitionerRegistered()
                payload.Unpack(practitioner)
                self._practitioners[practitioner.practitioner_id] = practitioner.organization_id
            elif payload.Is(events_pb2.PatientRegistered.DESCRIPTOR):
                patient = events_pb2.PatientRegistered()
                payload.Unpack(patient)
                self._patients.add(patient.subject_id)
            elif payload.Is(events_pb2.PatientDeviceAdded.DESCRIPTOR):
                added = events_pb2.PatientDeviceAdded()
                payload.Unpack(added)
                self._patients.add(added.subject_id)
                self._device_keys[added.key_id] = DeviceKey(
                    added.key_id, added.subject_id, added.public_key, active=True
                )
            elif payload.Is(events_pb2.PatientDeviceRevoked.DESCRIPTOR):
                revoked = events_pb2.PatientDeviceRevoked()
                payload.Unpack(revoked)
                known = self._device_keys.get(revoked.key_id)
                if known is not None:
                    self._device_keys[revoked.key_id] = DeviceKey(
                        known.key_id, known.subject_id, known.public_key, active=False
                    )
            self._lock.notify_all()

    # Each lookup may wait up to ``wait_seconds`` for an identity event that is on its way:
    # identity's events reach this process a moment after identity answered its caller.

    def is_hospital(self, organization_id: str, wait_seconds: float = 0.0) -> bool:
        """True for a registered hospital."""
        with self._lock:
            return self._lock.wait_for(
                lambda: organization_id in self._hospitals, timeout=wait_seconds
            )

    def practitioner_organization(
        self, practitioner_id: str, wait_seconds: float = 0.0
    ) -> str | None:
        """The hospital a practitioner belongs to; None for an unknown practitioner."""
        with self._lock:
            self._lock.wait_for(lambda: practitioner_id in self._practitioners, wait_seconds)
            return self._practitioners.get(practitioner_id)

    def is_patient(self, subject_id: str, wait_seconds: float = 0.0) -> bool:
        """True for a registered patient."""
        with self._lock:
            return self._lock.wait_for(lambda: subject_id in self._patients, timeout=wait_seconds)

    def device_key(self, key_id: str, wait_seconds: float = 0.0) -> DeviceKey | None:
        """A device key by id; None when unknown."""
        with self._lock:
            self._lock.wait_for(lambda: key_id in self._device_keys, timeout=wait_seconds)
            return self._device_keys.get(key_id)
