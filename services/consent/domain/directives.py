"""Consent directives: a patient (or a delegate allowed to manage its consents) grants one,
amends it with the next version, or revokes it; each version is signed by a device key of the
signer and becomes a CONSENT entry carrying that signature."""

from __future__ import annotations

from datetime import datetime

from chain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
)
from chain.signed_messages import DIRECTIVE_PREFIX
from services.consent.domain.delegations import check_delegation
from services.consent.domain.parts import BookPart
from services.consent.domain.policy import check_provision
from services.consent.domain.records import (
    ACTIVE,
    CONSENT,
    DELEGATION,
    MANAGE,
    REVOKED,
    AcceptedVersion,
    check_uuid,
    parse,
)
from services.consent.domain.signatures import verify_signature
from services.consent.domain.versions import check_next_version, new_version, resent
from services.platform.caller import Caller, Role
from services.platform.fields import check_fields
from swiftchain.chain.v1 import entry_pb2
from swiftchain.consent.v1 import directive_pb2


class Directives(BookPart):
    """Accepts directive versions: grant, amend, revoke."""

    def accept(
        self,
        caller: Caller,
        raw_signed: directive_pb2.SignedDirective,
        *,
        revoke: bool,
        first: bool,
        now: datetime,
    ) -> AcceptedVersion:
        """Check and accept one signed directive version (grant when ``first``, else amend or,
        with ``revoke``, revoke)."""
        directive = parse(directive_pb2.ConsentDirective, raw_signed.directive)
        check_fields(directive, "directive.")
        check_uuid(directive.directive_id, "a directive id")
        patient = directive.patient_subject_id
        if not self._directory.is_patient(patient, self._key_grace):
            raise NotFoundError(f"no patient {patient!r} is registered")
        signer_subject, delegation = self._signer_of(caller, directive, now)
        key = verify_signature(
            self._directory,
            raw_signed.signer_key_id,
            signer_subject,
            raw_signed.signature,
            DIRECTIVE_PREFIX + raw_signed.directive,
            wait_seconds=self._key_grace,
        )
        self._check_directive(directive, revoke=revoke)
        with self._versions.lock:
            history = self._versions.held_history(directive.directive_id)
            same = resent(history, raw_signed.SerializeToString(), directive.version)
            if same is not None:
                return same
            check_next_version(history, directive.version, first, "directive")
            if history:
                previous = history[-1]
                if previous.patient_subject_id != patient:
                    raise ConflictError(
                        f"directive {directive.directive_id} belongs to another patient"
                    )
                if previous.directive.grantee != directive.grantee:
                    raise ConflictError(
                        "expected the same grantee as the previous version (grant a new "
                        "directive to change the grantee)"
                    )
                if previous.status == REVOKED:
                    raise PreconditionError(
                        f"directive {directive.directive_id} is revoked; grant a new directive"
                    )
            version = new_version(
                self._entries,
                CONSENT,
                directive.directive_id,
                directive.version,
                patient,
                raw_signed.SerializeToString(),
                raw_signed.directive,
                signer_subject,
                key,
                raw_signed.signature,
                history[-1] if history else None,
                delegation,
                now,
            )
            self._store.add_version(version)
            self._versions.remember(version)
        self._announcer.deliver(self._announcer.outgoing_for(version))
        return version

    def _signer_of(
        self, caller: Caller, directive: directive_pb2.ConsentDirective, now: datetime
    ) -> tuple[str, AcceptedVersion | None]:
        """(the subject who must have signed, the delegation allowing it or None)."""
        patient = directive.patient_subject_id
        if caller.role is not Role.PATIENT:
            raise PermissionDeniedError(f"{caller.describe()} may not sign consent directives")
        if not directive.delegation_id:
            if caller.id != patient:
                raise PermissionDeniedError(
                    f"{caller.describe()} may not sign for patient {patient!r} without naming "
                    "a delegation"
                )
            return patient, None
        versions = self._versions.history(directive.delegation_id)
        delegation = versions[-1] if versions else None
        if delegation is None or delegation.directive_type != DELEGATION:
            raise PermissionDeniedError(f"no delegation {directive.delegation_id} exists")
        check_delegation(delegation, caller.id, patient, MANAGE, now)
        return caller.id, delegation

    def _check_directive(self, directive: directive_pb2.ConsentDirective, *, revoke: bool) -> None:
        expected_status = REVOKED if revoke else ACTIVE
        if directive.status != expected_status:
            raise InvalidInputError(
                f"expected status {entry_pb2.DirectiveStatus.Name(expected_status)}, "
                f"got {entry_pb2.DirectiveStatus.Name(directive.status)}"
            )
        which = directive.grantee.WhichOneof("grantee")
        if which is None:
            raise InvalidInputError("expected a grantee (an organization or a practitioner)")
        if which == "organization_id" and not self._directory.is_hospital(
            directive.grantee.organization_id, self._key_grace
        ):
            raise NotFoundError(f"no hospital {directive.grantee.organization_id!r} is registered")
        if which == "practitioner_id" and (
            self._directory.practitioner_organization(
                directive.grantee.practitioner_id, self._key_grace
            )
            is None
        ):
            raise NotFoundError(
                f"no practitioner {directive.grantee.practitioner_id!r} is registered"
            )
        if not directive.HasField("provision"):
            raise InvalidInputError("expected a provision")
        if not directive.HasField("issue_time"):
            raise InvalidInputError("expected an issue time")
        problems = check_provision(directive.provision)
        if problems:
            raise InvalidInputError("; ".join(problems))
