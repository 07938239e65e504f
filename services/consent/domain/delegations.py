"""Delegations: a patient lets another person act for it, to view its consents or also to
manage them, until an expiry time. Each delegation version is signed by the patient and becomes
a CONSENT entry like a directive version."""

from __future__ import annotations

from datetime import datetime

from chain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
)
from chain.signed_messages import DELEGATION_PREFIX
from services.consent.domain.parts import BookPart
from services.consent.domain.records import (
    ACTIVE,
    DELEGATION,
    MANAGE,
    REVOKED,
    VIEW,
    AcceptedVersion,
    check_uuid,
    parse,
)
from services.consent.domain.signatures import verify_signature
from services.consent.domain.versions import check_next_version, new_version, resent
from services.platform.caller import Caller, Role
from services.platform.fields import check_fields, describe_time, nanos_of, timestamp_nanos
from swiftchain.chain.v1 import entry_pb2
from swiftchain.consent.v1 import directive_pb2


def check_delegation(
    delegation: AcceptedVersion,
    delegate: str,
    patient: str,
    scope: directive_pb2.DelegationScope.ValueType,
    now: datetime,
) -> None:
    """PermissionDeniedError unless ``delegation`` lets ``delegate`` act for ``patient`` with
    ``scope`` at ``now`` (active and unexpired)."""
    document = delegation.delegation
    if document.patient_subject_id != patient or document.delegate_subject_id != delegate:
        raise PermissionDeniedError(
            f"delegation {document.delegation_id} does not let {delegate!r} act for {patient!r}"
        )
    if document.status != ACTIVE:
        raise PermissionDeniedError(f"delegation {document.delegation_id} was removed")
    if scope not in document.scopes:
        raise PermissionDeniedError(
            f"delegation {document.delegation_id} does not grant "
            f"{directive_pb2.DelegationScope.Name(scope)}"
        )
    # In nanoseconds: a delegation stored before times were checked may end beyond year 9999.
    if timestamp_nanos(document.expire_time) <= nanos_of(now):
        raise PermissionDeniedError(
            f"delegation {document.delegation_id} expired at {describe_time(document.expire_time)}"
        )


class Delegations(BookPart):
    """Accepts delegation versions and answers who may act for a patient."""

    def accept(
        self,
        caller: Caller,
        raw_signed: directive_pb2.SignedDelegation,
        *,
        remove: bool,
        now: datetime,
    ) -> AcceptedVersion:
        """Check and accept one signed delegation version (add or change; ``remove``)."""
        delegation = parse(directive_pb2.Delegation, raw_signed.delegation)
        check_fields(delegation, "delegation.")
        check_uuid(delegation.delegation_id, "a delegation id")
        patient = delegation.patient_subject_id
        if caller.role is not Role.PATIENT or caller.id != patient:
            raise PermissionDeniedError(
                f"only patient {patient!r} may change its delegations, not {caller.describe()}"
            )
        if not self._directory.is_patient(delegation.delegate_subject_id, self._key_grace):
            raise NotFoundError(
                f"no person {delegation.delegate_subject_id!r} is registered to act as a delegate"
            )
        if delegation.delegate_subject_id == patient:
            raise InvalidInputError("expected a delegate other than the patient")
        key = verify_signature(
            self._directory,
            raw_signed.signer_key_id,
            patient,
            raw_signed.signature,
            DELEGATION_PREFIX + raw_signed.delegation,
            wait_seconds=self._key_grace,
        )
        expected_status = REVOKED if remove else ACTIVE
        if delegation.status != expected_status:
            raise InvalidInputError(
                f"expected status {entry_pb2.DirectiveStatus.Name(expected_status)}, "
                f"got {entry_pb2.DirectiveStatus.Name(delegation.status)}"
            )
        scopes = set(delegation.scopes)
        if not scopes or not scopes <= {MANAGE, VIEW}:
            raise InvalidInputError(
                "expected scopes among MANAGE_CONSENT and VIEW, got "
                + (", ".join(str(s) for s in sorted(scopes)) or "none")
            )
        if not delegation.HasField("expire_time") or not delegation.HasField("issue_time"):
            raise InvalidInputError("expected a delegation with an issue time and an expiry time")
        if not remove and timestamp_nanos(delegation.expire_time) <= nanos_of(now):
            raise InvalidInputError("expected an expiry time in the future")
        with self._versions.lock:
            history = self._versions.held_history(delegation.delegation_id)
            same = resent(history, raw_signed.SerializeToString(), delegation.version)
            if same is not None:
                return same
            check_next_version(history, delegation.version, not history, "delegation")
            if history:
                previous = history[-1].delegation
                if previous.delegate_subject_id != delegation.delegate_subject_id or (
                    history[-1].patient_subject_id != patient
                ):
                    raise ConflictError("expected the same patient and delegate as before")
                if previous.status == REVOKED:
                    raise PreconditionError(
                        f"delegation {delegation.delegation_id} was removed; create a new one"
                    )
            elif remove:
                raise NotFoundError(f"no delegation {delegation.delegation_id}")
            version = new_version(
                self._entries,
                DELEGATION,
                delegation.delegation_id,
                delegation.version,
                patient,
                raw_signed.SerializeToString(),
                raw_signed.delegation,
                patient,
                key,
                raw_signed.signature,
                history[-1] if history else None,
                None,
                now,
            )
            self._store.add_version(version)
            self._versions.remember(version)
        self._announcer.deliver(self._announcer.outgoing_for(version))
        return version

    def may_act_for(
        self,
        caller: Caller,
        patient: str,
        scope: directive_pb2.DelegationScope.ValueType,
        now: datetime,
    ) -> bool:
        """True when ``caller`` is the patient, or a delegate of it with ``scope`` (MANAGE
        implies VIEW) whose delegation is active and unexpired at ``now``."""
        if caller.role is not Role.PATIENT:
            return False
        if caller.id == patient:
            return True
        delegations = [
            current
            for _, current in self._versions.ends_of(patient)
            if current.directive_type == DELEGATION
        ]
        for delegation in delegations:
            for wanted in (scope, MANAGE) if scope == VIEW else (scope,):
                try:
                    check_delegation(delegation, caller.id, patient, wanted, now)
                except PermissionDeniedError:
                    continue
                return True
        return False
