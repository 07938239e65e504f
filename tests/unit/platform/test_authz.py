"""The authorization table and the interceptor's grpc-free core (services/platform/authz.py,
services/platform/auth.py)."""

from __future__ import annotations

import datetime
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor

from chain.errors import PermissionDeniedError, UnauthenticatedError
from services.platform.auth import Authorizer, certificate_caller
from services.platform.authz import ANY, EVERYONE, RULES, markdown_table, rule_for
from services.platform.caller import ANONYMOUS, Caller, Role
from services.platform.revocations import RevocationList
from swiftchain.audit.v1 import audit_service_pb2
from swiftchain.identity.v1 import identity_service_pb2

ROOT = Path(__file__).resolve().parents[3]
SERVICE_MODULES = [
    "swiftchain.identity.v1.identity_service_pb2",
    "swiftchain.anchoring.v1.anchoring_service_pb2",
    "swiftchain.consent.v1.consent_service_pb2",
    "swiftchain.audit.v1.audit_service_pb2",
    "swiftchain.chain.v1.chain_service_pb2",
]


def all_methods() -> list[MethodDescriptor]:
    methods = []
    for name in SERVICE_MODULES:
        for service in importlib.import_module(name).DESCRIPTOR.services_by_name.values():
            methods.extend(service.methods)
    return methods


def full_name(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@pytest.mark.parametrize("method", all_methods(), ids=full_name)
def test_every_rpc_of_the_protos_has_a_row(method: MethodDescriptor) -> None:
    assert rule_for(full_name(method)) is not None, f"{full_name(method)} has no row"


def test_every_row_names_an_rpc_that_exists() -> None:
    known = {full_name(m) for m in all_methods()}
    infrastructure = {m for m in RULES if m.startswith(("/grpc.health.", "/grpc.reflection."))}
    assert set(RULES) - known == infrastructure


@pytest.mark.parametrize(
    "method",
    [m for m in all_methods() if rule_for(full_name(m)) and rule_for(full_name(m)).owner_fields],  # type: ignore[union-attr]
    ids=full_name,
)
def test_owner_fields_are_string_fields_of_unary_requests(method: MethodDescriptor) -> None:
    rule = rule_for(full_name(method))
    assert rule is not None
    assert not method.client_streaming, "a streamed request cannot be checked field by field"
    for path in rule.owner_fields.values():
        descriptor = method.input_type
        parts = path.split(".")
        for part in parts[:-1]:
            nested = descriptor.fields_by_name[part].message_type
            assert nested is not None, path
            descriptor = nested
        assert descriptor.fields_by_name[parts[-1]].type == FieldDescriptor.TYPE_STRING, path


def test_login_and_enrollment_are_open_to_anonymous_callers_and_else_only_infrastructure() -> None:
    # A device with no key on record yet (enrolling, or recovering a patient that lost every
    # device) has no credential but its one-time code; completing a recovery needs none, as
    # it only ends a wait that the patient's devices could have cut short.
    open_rpcs = {m for m, rule in RULES.items() if Role.ANONYMOUS in rule.roles}
    assert open_rpcs == {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/swiftchain.identity.v1.IdentityService/BeginLogin",
        "/swiftchain.identity.v1.IdentityService/CompleteLogin",
        "/swiftchain.identity.v1.IdentityService/EnrollDevice",
        "/swiftchain.identity.v1.IdentityService/BeginRecovery",
        "/swiftchain.identity.v1.IdentityService/CompleteRecovery",
    }
    assert {Role.ANONYMOUS} == EVERYONE - ANY


def test_docs_carry_the_table_as_the_code_has_it() -> None:
    security = (ROOT / "docs" / "security.md").read_text()
    assert markdown_table() in security, (
        "docs/security.md is out of date: paste `python -m services.platform.authz` into it"
    )


# --- the Authorizer ------------------------------------------------------------------------


def certificate(common_name: str, unit: str | None, serial: int = 0x1F2E) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Claims:
    subject_id: str
    device_key_id: str


class FakeTokens:
    def verify(self, token: str, now: datetime.datetime) -> Claims:
        if token != "good":
            raise UnauthenticatedError("token signature does not verify")
        return Claims("pt-1", "dev-1")


def test_a_certificate_names_the_caller_and_its_role() -> None:
    caller = certificate_caller(certificate("hospital-a", "hospital", serial=0xABC))
    assert caller == Caller(Role.HOSPITAL, "hospital-a", certificate_serial="abc")


@pytest.mark.parametrize(
    ("unit", "message"),
    [(None, "role unit among"), ("janitor", "role unit among")],
)
def test_a_certificate_without_a_known_role_unit_is_refused(unit: str | None, message: str) -> None:
    with pytest.raises(UnauthenticatedError, match=message):
        certificate_caller(certificate("someone", unit))


def test_a_revoked_certificate_is_refused() -> None:
    revocations = RevocationList()
    revocations.revoke_certificate("abd")
    authorizer = Authorizer(revocations, None)
    with pytest.raises(UnauthenticatedError, match="certificate abd of 'hospital-a' was revoked"):
        authorizer.resolve(certificate("hospital-a", "hospital", serial=0xABD), None)


def test_a_bearer_token_makes_a_patient_and_a_revoked_device_is_refused() -> None:
    revocations = RevocationList()
    authorizer = Authorizer(revocations, FakeTokens())
    assert authorizer.resolve(None, "Bearer good") == Caller(
        Role.PATIENT, "pt-1", device_key_id="dev-1"
    )
    revocations.revoke_device("dev-1")
    with pytest.raises(UnauthenticatedError, match=r"device key 'dev-1' .* was revoked"):
        authorizer.resolve(None, "Bearer good")


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer forged", "does not verify"),
        ("Basic dXNlcjpwYXNz", "expected an authorization header 'Bearer <token>'"),
    ],
)
def test_bad_authorization_headers_are_refused(authorization: str, message: str) -> None:
    with pytest.raises(UnauthenticatedError, match=message):
        Authorizer(RevocationList(), FakeTokens()).resolve(None, authorization)


def test_a_certificate_and_a_token_together_are_refused() -> None:
    with pytest.raises(UnauthenticatedError, match="got both"):
        Authorizer(RevocationList(), FakeTokens()).resolve(
            certificate("hospital-a", "hospital"), "Bearer good"
        )


def test_no_credential_is_anonymous_and_tokens_need_a_verifier() -> None:
    assert Authorizer(RevocationList(), None).resolve(None, None) == ANONYMOUS
    with pytest.raises(UnauthenticatedError, match="does not accept bearer tokens"):
        Authorizer(RevocationList(), None).resolve(None, "Bearer good")


REGISTER = "/swiftchain.identity.v1.IdentityService/RegisterOrganization"
ROTATE = "/swiftchain.identity.v1.IdentityService/RotateOrganizationKey"
TRAIL = "/swiftchain.audit.v1.AuditService/QueryTrail"
HOSPITAL_A = Caller(Role.HOSPITAL, "hospital-a")


def test_anonymous_callers_are_unauthenticated_and_wrong_roles_denied() -> None:
    with pytest.raises(UnauthenticatedError, match="needs a client certificate"):
        Authorizer.check_role(REGISTER, rule_for(REGISTER), ANONYMOUS)
    with pytest.raises(PermissionDeniedError, match="hospital 'hospital-a' may not call"):
        Authorizer.check_role(REGISTER, rule_for(REGISTER), HOSPITAL_A)
    with pytest.raises(PermissionDeniedError, match="has no authorization rule"):
        Authorizer.check_role("/x.Y/Z", rule_for("/x.Y/Z"), Caller(Role.ADMIN, "admin"))


def test_owner_fields_must_name_the_caller_unless_the_role_is_unrestricted() -> None:
    rule = Authorizer.check_role(ROTATE, rule_for(ROTATE), HOSPITAL_A)
    own = identity_service_pb2.RotateOrganizationKeyRequest(organization_id="hospital-a")
    other = identity_service_pb2.RotateOrganizationKeyRequest(organization_id="hospital-b")
    Authorizer.check_owner(ROTATE, rule, HOSPITAL_A, own)
    with pytest.raises(PermissionDeniedError, match="expected organization_id = 'hospital-a'"):
        Authorizer.check_owner(ROTATE, rule, HOSPITAL_A, other)
    Authorizer.check_owner(ROTATE, rule, Caller(Role.ADMIN, "consortium-admin"), other)


def test_nested_owner_fields_are_followed() -> None:
    rule = rule_for(TRAIL)
    assert rule is not None
    patient = Caller(Role.PATIENT, "pt-1")
    mine = audit_service_pb2.QueryTrailRequest(
        filter=audit_service_pb2.TrailFilter(patient_subject_id="pt-1")
    )
    Authorizer.check_owner(TRAIL, rule, patient, mine)
    with pytest.raises(PermissionDeniedError, match=r"filter\.patient_subject_id"):
        Authorizer.check_owner(TRAIL, rule, patient, audit_service_pb2.QueryTrailRequest())
    Authorizer.check_owner(TRAIL, rule, Caller(Role.REGULATOR, "regulator"), mine)


def test_consent_rows_leave_delegates_to_the_consent_service() -> None:
    # A delegate reads another patient's consents and notifications, so the owner check lives
    # in the consent domain (tests/unit/consent), not in the interceptor.
    for name in ("WatchNotifications", "ListConsents"):
        rule = rule_for(f"/swiftchain.consent.v1.ConsentService/{name}")
        assert rule is not None
        assert Role.PATIENT in rule.roles and Role.PATIENT not in rule.owner_fields
        assert "delegate" in rule.service_rule
