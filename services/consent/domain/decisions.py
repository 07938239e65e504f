"""Access decisions: CheckAccess decides a hospital's request from the patient's directives
(services/consent/domain/policy.py); BreakGlass permits an emergency access with a justification
and flags it. Every decision is stored durably, becomes an ACCESS entry naming the deciding
directive version, and is told to the patient; a retry with the same request id gets the first
decision back."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from chain.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from services.consent.domain.parts import BookPart
from services.consent.domain.policy import (
    DATA_CATEGORIES,
    PURPOSES,
    AccessQuery,
    DirectiveView,
    decide,
)
from services.consent.domain.records import (
    CONSENT,
    AcceptedVersion,
    StoredDecision,
    check_uuid,
    grantee_organization,
)
from services.platform.caller import Caller
from swiftchain.common.v1 import common_pb2

_REASON_CODE = re.compile(r"[a-z0-9-]{1,32}")


class Decisions(BookPart):
    """Decides, records and announces access requests."""

    def check_access(
        self,
        caller: Caller,
        patient: str,
        data_category: str,
        purpose: str,
        practitioner_id: str,
        request_id: str,
        now: datetime,
    ) -> StoredDecision:
        """Decide, record durably, and hand the ACCESS entry to the sender; a retry with the
        same request id returns the first decision."""
        key = _decision_key(caller, request_id)
        self._check_request(caller, patient, data_category, purpose, practitioner_id)
        query = AccessQuery(caller.id, practitioner_id, data_category, purpose, now)
        views = [
            self._view(current)
            for first, current in self._versions.ends_of(patient)
            if first.directive_type == CONSENT
        ]
        decision = decide(views, query)
        deciding = None
        if decision.directive is not None:
            deciding = self._versions.version(
                decision.directive.directive_id, decision.directive.version
            )
        return self._record(
            key or f"{caller.id}/{uuid.uuid4()}",
            caller,
            patient,
            data_category,
            purpose,
            practitioner_id,
            decision.decision,
            decision.reason,
            deciding,
            "",
            "",
            now,
        )

    def break_glass(
        self,
        caller: Caller,
        patient: str,
        data_category: str,
        reason_code: str,
        justification: str,
        practitioner_id: str,
        purpose: str,
        request_id: str,
        now: datetime,
    ) -> StoredDecision:
        """Emergency access: always permitted, recorded, flagged and told to the patient."""
        purpose = purpose or "ETREAT"
        key = _decision_key(caller, request_id)
        if not _REASON_CODE.fullmatch(reason_code):
            raise InvalidInputError(
                f"expected a reason code of 1-32 characters [a-z0-9-], got {reason_code!r}"
            )
        if not 10 <= len(justification) <= 2000:
            raise InvalidInputError(
                f"expected a justification of 10 to 2,000 characters, got {len(justification)}"
            )
        if not practitioner_id:
            raise InvalidInputError("expected the practitioner who breaks the glass")
        self._check_request(caller, patient, data_category, purpose, practitioner_id)
        return self._record(
            key or f"{caller.id}/{uuid.uuid4()}",
            caller,
            patient,
            data_category,
            purpose,
            practitioner_id,
            common_pb2.ACCESS_DECISION_PERMIT,
            common_pb2.ACCESS_REASON_BREAK_GLASS,
            None,
            reason_code,
            justification,
            now,
        )

    def _check_request(
        self, caller: Caller, patient: str, category: str, purpose: str, practitioner: str
    ) -> None:
        if category not in DATA_CATEGORIES:
            raise InvalidInputError(
                f"expected a data category ({', '.join(sorted(DATA_CATEGORIES))}), got {category!r}"
            )
        if purpose not in PURPOSES:
            raise InvalidInputError(
                f"expected an HL7 PurposeOfUse code ({', '.join(sorted(PURPOSES))}), "
                f"got {purpose!r}"
            )
        if not self._directory.is_patient(patient):
            raise NotFoundError(f"no patient {patient!r} is registered")
        if practitioner:
            organization = self._directory.practitioner_organization(practitioner)
            if organization is None:
                raise NotFoundError(f"no practitioner {practitioner!r} is registered")
            if organization != caller.id:
                raise PermissionDeniedError(
                    f"practitioner {practitioner!r} does not belong to {caller.describe()}"
                )

    def _view(self, version: AcceptedVersion) -> DirectiveView:
        directive = version.directive
        return DirectiveView(
            directive_id=version.document_id,
            version=version.version,
            status=directive.status,
            grantee=directive.grantee,
            provision=directive.provision,
            grantee_organization_id=grantee_organization(self._directory, directive.grantee),
            accept_time=version.accept_time,
        )

    def _record(
        self,
        key: str,
        caller: Caller,
        patient: str,
        category: str,
        purpose: str,
        practitioner: str,
        decision: common_pb2.AccessDecision.ValueType,
        reason: common_pb2.AccessReason.ValueType,
        deciding: AcceptedVersion | None,
        reason_code: str,
        justification: str,
        now: datetime,
    ) -> StoredDecision:
        entry = self._entries.access_entry(
            key,
            caller.id,
            patient,
            category,
            purpose,
            practitioner,
            decision,
            reason,
            deciding,
            reason_code,
            justification,
            now,
        )
        stored = StoredDecision(
            key=key,
            patient_subject_id=patient,
            organization_id=caller.id,
            practitioner_id=practitioner,
            data_category=category,
            purpose=purpose,
            decision=decision,
            reason=reason,
            deciding_directive_id=deciding.document_id if deciding else "",
            deciding_directive_version=deciding.version if deciding else 0,
            deciding_log_index=deciding.leaf_index if deciding else None,
            break_glass=reason == common_pb2.ACCESS_REASON_BREAK_GLASS,
            reason_code=reason_code,
            justification=justification,
            entry_id=entry.entry_id,
            entry=entry.entry,
            salt=entry.salt,
            decide_time=now,
        )
        first = self._store.add_decision(stored)
        if first.entry_id != stored.entry_id:  # a retry: the first answer stands
            return _same_request(first, patient, category, purpose, practitioner)
        self._announcer.deliver(self._announcer.decision_outgoing(stored))
        return stored


def _decision_key(caller: Caller, request_id: str) -> str | None:
    if not request_id:
        return None
    check_uuid(request_id, "a request id")
    return f"{caller.id}/{request_id}"


def _same_request(
    known: StoredDecision, patient: str, category: str, purpose: str, practitioner: str
) -> StoredDecision:
    if (
        known.patient_subject_id,
        known.data_category,
        known.purpose,
        known.practitioner_id,
    ) != (
        patient,
        category,
        purpose,
        practitioner,
    ):
        raise ConflictError("request id was used already for another request; use a new request id")
    return known
