"""gRPC face of the identity service: translates protobuf <-> the domain, nothing more.

Who may call what is decided before a handler runs (services/platform/auth.py and the table in
services/platform/authz.py); domain errors become gRPC statuses in services/platform/errors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import grpc

from chain.consortium import ConsortiumConfig, consortium_message
from chain.errors import InvalidInputError, PreconditionError
from services.identity.domain.certificates import CertificateAuthority
from services.identity.domain.organizations import (
    Organization,
    OrganizationKey,
    OrganizationRegistry,
)
from services.identity.domain.patients import (
    Device,
    Patient,
    PatientDirectory,
    PractitionerDirectory,
    Recovery,
)
from services.identity.domain.recovery import RecoveryDesk
from services.identity.domain.request_signatures import RequestSignature
from services.platform.caller import current_caller
from services.platform.convert import aware, timestamp
from services.platform.fields import checked
from services.platform.revocations import RevocationList
from swiftchain.identity.v1 import identity_pb2, identity_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as pb


def key_message(key: OrganizationKey) -> identity_pb2.OrganizationKey:
    """The protobuf form of an organization's key."""
    message = identity_pb2.OrganizationKey(
        key_id=key.key_id,
        public_key=key.public_key,
        status=key.status,
        allowed_kinds=list(key.allowed_kinds),
        register_entry_id=key.register_entry_id,
        end_entry_id=key.end_entry_id,
        create_time=timestamp(key.create_time),
    )
    if key.registered_at_log_index is not None:
        message.registered_at_log_index = key.registered_at_log_index
    if key.ended_at_log_index is not None:
        message.ended_at_log_index = key.ended_at_log_index
    if key.end_time is not None:
        message.end_time.CopyFrom(timestamp(key.end_time))
    return message


SignedRequest = (
    pb.AddPatientDeviceRequest
    | pb.RevokePatientDeviceRequest
    | pb.RotateOrganizationKeyRequest
    | pb.RevokeOrganizationKeyRequest
    | pb.CancelRecoveryRequest
)


def request_signature(request: SignedRequest) -> RequestSignature | None:
    """The domain's form of a request's ``request_signature``; None when it is unset."""
    if not request.HasField("request_signature"):
        return None
    signed = request.request_signature
    return RequestSignature(
        key_id=signed.key_id,
        request_time=aware(signed.request_time) if signed.HasField("request_time") else None,
        nonce=signed.nonce,
        signature=signed.signature,
    )


def organization_message(organization: Organization) -> identity_pb2.Organization:
    """The protobuf form of an organization."""
    return identity_pb2.Organization(
        organization_id=organization.organization_id,
        display_name=organization.display_name,
        role=organization.role,
        status=organization.status,
        keys=[key_message(k) for k in organization.keys],
        create_time=timestamp(organization.create_time),
        update_time=timestamp(organization.update_time),
    )


_RECOVERY_STATUS = {
    "PENDING": pb.RECOVERY_STATUS_PENDING,
    "CANCELLED": pb.RECOVERY_STATUS_CANCELLED,
    "COMPLETED": pb.RECOVERY_STATUS_COMPLETED,
}


def recovery_message(recovery: Recovery) -> pb.PatientRecovery:
    """The protobuf form of a patient's recovery."""
    message = pb.PatientRecovery(
        recovery_id=recovery.recovery_id,
        key_id=recovery.key_id,
        public_key=recovery.public_key,
        label=recovery.label,
        status=_RECOVERY_STATUS[recovery.status],
        request_time=timestamp(recovery.request_time),
        earliest_complete_time=timestamp(recovery.complete_after),
        cancelled_by=recovery.cancelled_by,
    )
    if recovery.cancel_time is not None:
        message.cancel_time.CopyFrom(timestamp(recovery.cancel_time))
    if recovery.complete_time is not None:
        message.complete_time.CopyFrom(timestamp(recovery.complete_time))
    return message


def device_message(device: Device) -> identity_pb2.PatientDevice:
    """The protobuf form of a patient's device."""
    message = identity_pb2.PatientDevice(
        key_id=device.key_id,
        public_key=device.public_key,
        label=device.label,
        status=identity_pb2.DEVICE_STATUS_ACTIVE
        if device.active
        else identity_pb2.DEVICE_STATUS_REVOKED,
        create_time=timestamp(device.create_time),
    )
    if device.revoke_time is not None:
        message.revoke_time.CopyFrom(timestamp(device.revoke_time))
    return message


def patient_message(patient: Patient) -> identity_pb2.Patient:
    """The protobuf form of a patient (with the references the caller may see)."""
    return identity_pb2.Patient(
        subject_id=patient.subject_id,
        registered_by=patient.registered_by,
        hospital_references=[
            identity_pb2.HospitalReference(organization_id=org, reference=ref)
            for org, ref in sorted(patient.references.items())
        ],
        devices=[device_message(d) for d in patient.devices],
        create_time=timestamp(patient.create_time),
    )


@checked
class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    """The identity service's RPCs."""

    def __init__(
        self,
        *,
        organizations: OrganizationRegistry,
        certificates: CertificateAuthority,
        patients: PatientDirectory,
        practitioners: PractitionerDirectory,
        consortium: ConsortiumConfig,
        clock: Callable[[], datetime],
        on_write: Callable[[], None] = lambda: None,
        revocations: RevocationList | None = None,
        recovery: RecoveryDesk | None = None,
    ) -> None:
        self.organizations = organizations
        self._recovery = recovery
        self.certificates = certificates
        self.patients = patients
        self.practitioners = practitioners
        self.consortium = consortium
        self.clock = clock
        self._on_write = on_write
        # This process's own revocation list: what identity revokes it refuses at once, without
        # waiting for the event to come back through Kafka.
        self._revocations = revocations or RevocationList()

    def outbox_written(self) -> None:
        """Wake the relays after a write that queued events or entries."""
        self._on_write()

    # --- patients and practitioners -------------------------------------------------------

    def RegisterPatient(
        self, request: pb.RegisterPatientRequest, context: grpc.ServicerContext
    ) -> pb.RegisterPatientResponse:
        registered = self.patients.register(
            current_caller().id, request.hospital_reference, request.request_id, self.clock()
        )
        self.outbox_written()
        return pb.RegisterPatientResponse(
            patient=patient_message(registered.patient),
            created=registered.created,
            enrollment_code=str(registered.code),
            enrollment_code_expire_time=timestamp(registered.code_expire_time),
        )

    def EnrollDevice(
        self, request: pb.EnrollDeviceRequest, context: grpc.ServicerContext
    ) -> pb.EnrollDeviceResponse:
        subject_id, device = self.patients.enroll(
            request.enrollment_code,
            request.public_key,
            request.proof_of_possession,
            request.label,
            self.clock(),
        )
        self.outbox_written()
        return pb.EnrollDeviceResponse(subject_id=subject_id, device=device_message(device))

    def IssueRecoveryCode(
        self, request: pb.IssueRecoveryCodeRequest, context: grpc.ServicerContext
    ) -> pb.IssueRecoveryCodeResponse:
        code, expire_time = self._recovery_desk().issue_code(
            request.subject_id, current_caller().id, self.clock()
        )
        return pb.IssueRecoveryCodeResponse(
            recovery_code=str(code), recovery_code_expire_time=timestamp(expire_time)
        )

    def BeginRecovery(
        self, request: pb.BeginRecoveryRequest, context: grpc.ServicerContext
    ) -> pb.BeginRecoveryResponse:
        if not request.HasField("request_time"):
            raise InvalidInputError("expected the request time the signature covers, got none")
        subject_id, recovery = self._recovery_desk().begin(
            request.recovery_code,
            request.public_key,
            request.signature,
            request.label,
            aware(request.request_time),
            self.clock(),
        )
        return pb.BeginRecoveryResponse(subject_id=subject_id, recovery=recovery_message(recovery))

    def ListRecoveries(
        self, request: pb.ListRecoveriesRequest, context: grpc.ServicerContext
    ) -> pb.ListRecoveriesResponse:
        found = self._recovery_desk().recoveries(request.subject_id)
        return pb.ListRecoveriesResponse(recoveries=[recovery_message(r) for r in found])

    def CancelRecovery(
        self, request: pb.CancelRecoveryRequest, context: grpc.ServicerContext
    ) -> pb.CancelRecoveryResponse:
        recovery = self._recovery_desk().cancel(
            request.subject_id, request.recovery_id, request_signature(request), self.clock()
        )
        return pb.CancelRecoveryResponse(recovery=recovery_message(recovery))

    def CompleteRecovery(
        self, request: pb.CompleteRecoveryRequest, context: grpc.ServicerContext
    ) -> pb.CompleteRecoveryResponse:
        device = self._recovery_desk().complete(
            request.subject_id, request.recovery_id, self.clock()
        )
        self.outbox_written()
        return pb.CompleteRecoveryResponse(device=device_message(device))

    def _recovery_desk(self) -> RecoveryDesk:
        if self._recovery is None:
            raise PreconditionError("this identity service recovers no patients")
        return self._recovery

    def AddPatientDevice(
        self, request: pb.AddPatientDeviceRequest, context: grpc.ServicerContext
    ) -> pb.AddPatientDeviceResponse:
        device = self.patients.add_device(
            request.subject_id,
            request.public_key,
            request.proof_of_possession,
            request.label,
            request_signature(request),
            self.clock(),
        )
        self.outbox_written()
        return pb.AddPatientDeviceResponse(device=device_message(device))

    def RevokePatientDevice(
        self, request: pb.RevokePatientDeviceRequest, context: grpc.ServicerContext
    ) -> pb.RevokePatientDeviceResponse:
        device = self.patients.revoke_device(
            request.subject_id, request.key_id, request_signature(request), self.clock()
        )
        self.outbox_written()
        self._revocations.revoke_device(device.key_id)
        return pb.RevokePatientDeviceResponse(device=device_message(device))

    def BeginLogin(
        self, request: pb.BeginLoginRequest, context: grpc.ServicerContext
    ) -> pb.BeginLoginResponse:
        challenge = self.patients.begin_login(
            request.subject_id, request.device_key_id, self.clock()
        )
        return pb.BeginLoginResponse(
            challenge_id=challenge.challenge_id,
            nonce=challenge.nonce,
            expire_time=timestamp(challenge.expire_time),
        )

    def CompleteLogin(
        self, request: pb.CompleteLoginRequest, context: grpc.ServicerContext
    ) -> pb.CompleteLoginResponse:
        issued = self.patients.complete_login(request.challenge_id, request.signature, self.clock())
        return pb.CompleteLoginResponse(
            access_token=issued.token, expire_time=timestamp(issued.expire_time)
        )

    def RegisterPractitioner(
        self, request: pb.RegisterPractitionerRequest, context: grpc.ServicerContext
    ) -> pb.RegisterPractitionerResponse:
        practitioner = self.practitioners.register(
            request.organization_id, request.display_ref, request.role_code, self.clock()
        )
        self.outbox_written()
        return pb.RegisterPractitionerResponse(
            practitioner=identity_pb2.Practitioner(
                practitioner_id=practitioner.practitioner_id,
                organization_id=practitioner.organization_id,
                display_ref=practitioner.display_ref,
                role_code=practitioner.role_code,
                active=practitioner.active,
                create_time=timestamp(practitioner.create_time),
            )
        )

    # --- organizations and keys -----------------------------------------------------------

    def RegisterOrganization(
        self, request: pb.RegisterOrganizationRequest, context: grpc.ServicerContext
    ) -> pb.RegisterOrganizationResponse:
        organization, entry_id = self.organizations.register(
            request.organization_id,
            request.display_name,
            request.role,
            request.public_key,
            request.proof_of_possession,
            self.clock(),
        )
        self.outbox_written()
        return pb.RegisterOrganizationResponse(
            organization=organization_message(organization), key_entry_id=entry_id
        )

    def RotateOrganizationKey(
        self, request: pb.RotateOrganizationKeyRequest, context: grpc.ServicerContext
    ) -> pb.RotateOrganizationKeyResponse:
        key, entry_id = self.organizations.rotate_key(
            request.organization_id,
            request.replaces_key_id,
            request.new_public_key,
            request.proof_of_possession,
            request.reason,
            request_signature(request),
            self.clock(),
        )
        self.outbox_written()
        return pb.RotateOrganizationKeyResponse(key=key_message(key), key_entry_id=entry_id)

    def RevokeOrganizationKey(
        self, request: pb.RevokeOrganizationKeyRequest, context: grpc.ServicerContext
    ) -> pb.RevokeOrganizationKeyResponse:
        key, entry_id = self.organizations.revoke_key(
            request.organization_id,
            request.key_id,
            request.reason,
            request_signature(request),
            self.clock(),
        )
        self.outbox_written()
        return pb.RevokeOrganizationKeyResponse(key=key_message(key), key_entry_id=entry_id)

    def GetOrganization(
        self, request: pb.GetOrganizationRequest, context: grpc.ServicerContext
    ) -> pb.GetOrganizationResponse:
        organization = self.organizations.get(request.organization_id)
        return pb.GetOrganizationResponse(organization=organization_message(organization))

    def ListOrganizations(
        self, request: pb.ListOrganizationsRequest, context: grpc.ServicerContext
    ) -> pb.ListOrganizationsResponse:
        page, token = self.organizations.list(request.role, request.page_size, request.page_token)
        return pb.ListOrganizationsResponse(
            organizations=[organization_message(o) for o in page], next_page_token=token
        )

    def ResolveKey(
        self, request: pb.ResolveKeyRequest, context: grpc.ServicerContext
    ) -> pb.ResolveKeyResponse:
        resolution = self.organizations.resolve_key(
            request.key_id, request.log_index if request.HasField("log_index") else None
        )
        response = pb.ResolveKeyResponse(
            key=resolution.detail,
            valid=resolution.valid,
            status=resolution.status,
            register_entry_id=resolution.register_entry_id,
            end_entry_id=resolution.end_entry_id,
            as_of_log_index=resolution.as_of_log_index,
        )
        if resolution.registered_at_log_index is not None:
            response.registered_at_log_index = resolution.registered_at_log_index
        if resolution.ended_at_log_index is not None:
            response.ended_at_log_index = resolution.ended_at_log_index
        return response

    def GetConsortium(
        self, request: pb.GetConsortiumRequest, context: grpc.ServicerContext
    ) -> pb.GetConsortiumResponse:
        return pb.GetConsortiumResponse(consortium=consortium_message(self.consortium))

    # --- certificates ---------------------------------------------------------------------

    def IssueCertificate(
        self, request: pb.IssueCertificateRequest, context: grpc.ServicerContext
    ) -> pb.IssueCertificateResponse:
        issued = self.certificates.issue(request.organization_id, request.csr_pem, self.clock())
        self.outbox_written()
        return pb.IssueCertificateResponse(
            certificate_pem=issued.certificate_pem,
            certificate_chain_pem=issued.chain_pem,
            serial_number=issued.serial_hex,
            not_before_time=timestamp(issued.not_before),
            not_after_time=timestamp(issued.not_after),
        )

    def RevokeCertificate(
        self, request: pb.RevokeCertificateRequest, context: grpc.ServicerContext
    ) -> pb.RevokeCertificateResponse:
        revoked = self.certificates.revoke(request.serial_number, request.reason, self.clock())
        self.outbox_written()
        self._revocations.revoke_certificate(revoked.serial_hex)
        assert revoked.revoke_time is not None  # revoke() returns a revoked record
        return pb.RevokeCertificateResponse(
            serial_number=revoked.serial_hex,
            organization_id=revoked.organization_id,
            revoke_time=timestamp(revoked.revoke_time),
        )
