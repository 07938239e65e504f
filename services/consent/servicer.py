"""gRPC face of the consent service: translates protobuf <-> the domain (services/consent/
domain/). Authorization by role is done by the shared interceptor before a handler runs;
rules on stored data (whose directive this is) are the domain's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
from opentelemetry import metrics

from chain.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from services.consent.domain import AcceptedVersion, ConsentBook, StoredDecision
from services.consent.fhir import consent_resource
from services.consent.notifications import Notifications
from services.platform.aio import run_blocking
from services.platform.caller import current_caller
from services.platform.convert import timestamp
from services.platform.fields import checked
from services.platform.paging import page_size
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import consent_service_pb2 as pb
from swiftchain.consent.v1 import consent_service_pb2_grpc, directive_pb2

_meter = metrics.get_meter("swiftchain.consent")
_decisions = _meter.create_counter(
    "swiftchain.consent.decisions",
    unit="{decision}",
    description="Access decisions answered (CheckAccess and BreakGlass), by decision and reason",
)
_break_glass = _meter.create_counter(
    "swiftchain.consent.break_glass",
    unit="{decision}",
    description="Break-glass accesses answered, by reason code (each one is reviewed)",
)


def _count(decision: StoredDecision) -> None:
    _decisions.add(
        1,
        {
            "decision": common_pb2.AccessDecision.Name(decision.decision).removeprefix(
                "ACCESS_DECISION_"
            ),
            "reason": common_pb2.AccessReason.Name(decision.reason).removeprefix("ACCESS_REASON_"),
            "break_glass": decision.break_glass,
        },
    )
    if decision.break_glass:
        _break_glass.add(1, {"reason_code": decision.reason_code})


DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _proof(version: AcceptedVersion) -> common_pb2.ProofRef:
    ref = common_pb2.ProofRef(entry_id=version.entry_id, state=version.state)
    if version.leaf_index is not None:
        ref.leaf_index = version.leaf_index
    return ref


def consent_version_message(version: AcceptedVersion) -> pb.ConsentVersion:
    """The protobuf form of an accepted directive version."""
    signed = directive_pb2.SignedDirective.FromString(version.signed)
    return pb.ConsentVersion(
        signed_directive=signed,
        directive=version.directive,
        signer_public_key=version.signer_public_key,
        signer_subject_id=version.signer_subject_id,
        proof=_proof(version),
        accept_time=timestamp(version.accept_time),
    )


def delegation_version_message(version: AcceptedVersion) -> pb.DelegationVersion:
    """The protobuf form of an accepted delegation version."""
    return pb.DelegationVersion(
        signed_delegation=directive_pb2.SignedDelegation.FromString(version.signed),
        delegation=version.delegation,
        signer_public_key=version.signer_public_key,
        proof=_proof(version),
        accept_time=timestamp(version.accept_time),
    )


def consent_message(versions: list[AcceptedVersion], with_history: bool) -> pb.Consent:
    """A directive: its current version and, if asked, every version."""
    current = versions[-1]
    directive = current.directive
    message = pb.Consent(
        directive_id=current.document_id,
        patient_subject_id=current.patient_subject_id,
        grantee=directive.grantee,
        status=directive.status,
        current=consent_version_message(current),
    )
    if with_history:
        message.history.extend(consent_version_message(v) for v in versions)
    return message


@checked
class ConsentServicer(consent_service_pb2_grpc.ConsentServiceServicer):
    """The consent service's RPCs."""

    def __init__(
        self,
        book: ConsentBook,
        notifications: Notifications,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._book = book
        self._notifications = notifications
        self._clock = clock

    # --- directives and delegations -----------------------------------------------------

    def _accept(
        self, signed: directive_pb2.SignedDirective, *, revoke: bool, first: bool
    ) -> pb.ConsentVersion:
        if not signed.directive:
            raise InvalidInputError("expected a signed directive, got none")
        version = self._book.accept_directive(
            current_caller(), signed, revoke=revoke, first=first, now=self._clock()
        )
        return consent_version_message(version)

    def GrantConsent(
        self, request: pb.GrantConsentRequest, context: grpc.ServicerContext
    ) -> pb.GrantConsentResponse:
        version = self._accept(request.signed_directive, revoke=False, first=True)
        return pb.GrantConsentResponse(consent_version=version)

    def AmendConsent(
        self, request: pb.AmendConsentRequest, context: grpc.ServicerContext
    ) -> pb.AmendConsentResponse:
        version = self._accept(request.signed_directive, revoke=False, first=False)
        return pb.AmendConsentResponse(consent_version=version)

    def RevokeConsent(
        self, request: pb.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> pb.RevokeConsentResponse:
        version = self._accept(request.signed_directive, revoke=True, first=False)
        return pb.RevokeConsentResponse(consent_version=version)

    def _delegate(
        self, signed: directive_pb2.SignedDelegation, *, remove: bool
    ) -> pb.DelegationVersion:
        if not signed.delegation:
            raise InvalidInputError("expected a signed delegation, got none")
        version = self._book.accept_delegation(
            current_caller(), signed, remove=remove, now=self._clock()
        )
        return delegation_version_message(version)

    def AddDelegate(
        self, request: pb.AddDelegateRequest, context: grpc.ServicerContext
    ) -> pb.AddDelegateResponse:
        version = self._delegate(request.signed_delegation, remove=False)
        return pb.AddDelegateResponse(delegation_version=version)

    def RemoveDelegate(
        self, request: pb.RemoveDelegateRequest, context: grpc.ServicerContext
    ) -> pb.RemoveDelegateResponse:
        version = self._delegate(request.signed_delegation, remove=True)
        return pb.RemoveDelegateResponse(delegation_version=version)

    # --- reading -------------------------------------------------------------------------

    def GetConsent(
        self, request: pb.GetConsentRequest, context: grpc.ServicerContext
    ) -> pb.GetConsentResponse:
        versions = self._book.history(current_caller(), request.directive_id, self._clock())
        return pb.GetConsentResponse(consent=consent_message(versions, request.include_history))

    def ListConsents(
        self, request: pb.ListConsentsRequest, context: grpc.ServicerContext
    ) -> pb.ListConsentsResponse:
        if not request.patient_subject_id:
            raise InvalidInputError("expected a patient subject id")
        page = self._book.list_page(
            current_caller(),
            request.patient_subject_id,
            grantee=request.grantee if request.HasField("grantee") else None,
            status=request.status,
            size=page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            token=request.page_token,
            now=self._clock(),
        )
        response = pb.ListConsentsResponse(
            consents=[consent_message(d, False) for d in page.directives],
            next_page_token=page.next_page_token,
        )
        if request.include_delegations:
            response.delegations.extend(delegation_version_message(d) for d in page.delegations)
        return response

    def ExportConsent(
        self, request: pb.ExportConsentRequest, context: grpc.ServicerContext
    ) -> pb.ExportConsentResponse:
        versions = self._book.history(current_caller(), request.directive_id, self._clock())
        if request.HasField("version"):
            chosen = [v for v in versions if v.version == request.version]
            if not chosen:
                raise NotFoundError(
                    f"directive {request.directive_id} has versions 1 to {versions[-1].version}, "
                    f"not {request.version}"
                )
            version = chosen[0]
        else:
            version = versions[-1]
        return pb.ExportConsentResponse(fhir_json=json.dumps(consent_resource(version), indent=2))

    # --- access decisions -----------------------------------------------------------------

    @staticmethod
    def _decided(decision: StoredDecision) -> dict[str, object]:
        return {
            "decision": decision.decision,
            "reason": decision.reason,
            "decide_time": timestamp(decision.decide_time),
        }

    def CheckAccess(
        self, request: pb.CheckAccessRequest, context: grpc.ServicerContext
    ) -> pb.CheckAccessResponse:
        decision = self._book.check_access(
            current_caller(),
            request.patient_subject_id,
            request.data_category,
            request.purpose,
            request.practitioner_id,
            request.request_id,
            self._clock(),
        )
        _count(decision)
        response = pb.CheckAccessResponse(
            deciding_directive_id=decision.deciding_directive_id,
            deciding_directive_version=decision.deciding_directive_version,
            access_entry_id=decision.entry_id,
            **self._decided(decision),  # type: ignore[arg-type]
        )
        if decision.deciding_log_index is not None:
            response.deciding_log_index = decision.deciding_log_index
        return response

    def BreakGlass(
        self, request: pb.BreakGlassRequest, context: grpc.ServicerContext
    ) -> pb.BreakGlassResponse:
        decision = self._book.break_glass(
            current_caller(),
            request.patient_subject_id,
            request.data_category,
            request.reason_code,
            request.justification,
            request.practitioner_id,
            request.purpose,
            request.request_id,
            self._clock(),
        )
        _count(decision)
        return pb.BreakGlassResponse(
            access_entry_id=decision.entry_id,
            **self._decided(decision),  # type: ignore[arg-type]
        )

    # --- notifications --------------------------------------------------------------------

    async def WatchNotifications(
        self, request: pb.WatchNotificationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchNotificationsResponse]:
        """The patient's notifications (after a cursor, if given), then new ones as they come;
        an idle watch holds no thread."""
        caller = current_caller()
        patient = request.patient_subject_id or caller.id
        allowed = await run_blocking(
            self._book.may_act_for,
            caller,
            patient,
            directive_pb2.DELEGATION_SCOPE_VIEW,
            self._clock(),
        )
        if not allowed:
            raise PermissionDeniedError(
                f"{caller.describe()} may not watch the notifications of {patient!r}"
            )
        start = (
            request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
        )
        async for notification in self._notifications.watch(
            patient, after_id=request.after_notification_id, start_time=start
        ):
            yield pb.WatchNotificationsResponse(notification=notification)
