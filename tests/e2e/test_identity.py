"""The identity service and platform security, end to end over real TLS, Kafka and FerretDB:
tokens, certificate and device revocation, keys valid between two log positions, bad input,
and the ``swiftchain identity`` commands."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaProducer
from typer.testing import CliRunner, Result

from chain.entry import EntrySigner, new_entry_id
from chain.sequencer import entry_record
from cli import identity_files as files
from cli.main import app
from sdk.consent import PatientDevice
from sdk.identity import OrganizationSigningKey, add_device_request, revoke_device_request
from services.platform.caller import Role
from services.platform.tls import TOKEN_SIGNING_FILE
from services.platform.tokens import TokenIssuer, load_token_issuer
from services.platform.topics import ORDERING_TOPIC
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc, entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.identity.v1 import identity_pb2, identity_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as pb
from tests.e2e.platform import Platform, Principal, wait_for

pytestmark = pytest.mark.e2e


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def as_patient(platform: Platform, token: str, process: str = "identity") -> grpc.StatusCode:
    """The status of a read any authenticated caller may make, with ``token``."""
    channel = platform.channel(platform.parties["anonymous"], process)
    metadata = (("authorization", f"Bearer {token}"),)
    if process == "identity":
        stub = pb_stub(channel)
        code, _ = code_of(
            lambda: stub.GetConsortium(pb.GetConsortiumRequest(), metadata=metadata, timeout=10)
        )
    else:
        chain = chain_service_pb2_grpc.ChainServiceStub(channel)
        code, _ = code_of(
            lambda: chain.GetConsortium(
                chain_service_pb2.GetConsortiumRequest(), metadata=metadata, timeout=10
            )
        )
    channel.close()
    return code


def token_refused(platform: Platform, token: str, process: str) -> bool:
    return as_patient(platform, token, process) == grpc.StatusCode.UNAUTHENTICATED


def pb_stub(channel: grpc.Channel) -> identity_service_pb2_grpc.IdentityServiceStub:
    return identity_service_pb2_grpc.IdentityServiceStub(channel)


def platform_token_issuer(platform: Platform, *, audience: str = "swiftchain") -> TokenIssuer:
    return load_token_issuer(
        platform.stack.pki.tls_dir("identity") / TOKEN_SIGNING_FILE,
        issuer="swiftchain-identity",
        audience=audience,
    )


def test_a_valid_token_is_accepted_by_identity_and_by_a_chain_node(platform: Platform) -> None:
    token = platform.patient.token
    assert as_patient(platform, token) == grpc.StatusCode.OK
    assert as_patient(platform, token, "hospital-a") == grpc.StatusCode.OK


def test_expired_forged_and_wrong_audience_tokens_are_refused(platform: Platform) -> None:
    subject = platform.patient.id
    assert platform.patient.device_dir is not None
    device = files.read_json(platform.patient.device_dir / files.DEVICE_FILE)["key_id"]
    expired = platform_token_issuer(platform).issue(
        subject, device, datetime.now(UTC) - timedelta(hours=1)
    )
    wrong_audience = platform_token_issuer(platform, audience="other-consortium").issue(
        subject, device, datetime.now(UTC)
    )
    forged = TokenIssuer(
        Ed25519PrivateKey.generate(), issuer="swiftchain-identity", audience="swiftchain"
    ).issue(subject, device, datetime.now(UTC))
    anonymous = platform.parties["anonymous"]
    stub = platform.identity(anonymous)
    for token, message in (
        (expired.token, "token expired at"),
        (wrong_audience.token, "expected audience 'swiftchain', got 'other-consortium'"),
        (forged.token, "token signature does not verify"),
        ("garbage", "expected a JWT"),
    ):
        metadata = (("authorization", f"Bearer {token}"),)
        code, details = code_of(
            functools.partial(
                stub.GetConsortium, pb.GetConsortiumRequest(), metadata=metadata, timeout=10
            )
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED, (message, code, details)
        assert message in details


def test_a_replayed_login_answer_is_refused(platform: Platform) -> None:
    device_dir = platform.patient.device_dir
    assert device_dir is not None
    document = files.read_json(device_dir / files.DEVICE_FILE)
    key = files.load_ed25519(device_dir / files.DEVICE_KEY_FILE)
    stub = platform.identity(platform.parties["anonymous"])
    challenge = stub.BeginLogin(
        pb.BeginLoginRequest(subject_id=document["subject_id"], device_key_id=document["key_id"]),
        timeout=10,
    )
    signed = b"swiftchain/login/v1\n" + challenge.challenge_id.encode() + b"\n" + challenge.nonce
    answer = pb.CompleteLoginRequest(
        challenge_id=challenge.challenge_id, signature=key.sign(signed)
    )
    assert stub.CompleteLogin(answer, timeout=10).access_token
    code, details = code_of(lambda: stub.CompleteLogin(answer, timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "used already" in details


def test_revoking_a_device_ends_its_tokens_everywhere(platform: Platform, tmp_path: Path) -> None:
    patient = platform.register_patient("revocation patient", platform.hospital)
    assert patient.device_dir is not None
    phone = PatientDevice.from_folder(patient.device_dir)
    first_device = phone.key_id
    second = files.NewSigningKey.for_owner(patient.id)
    stub = platform.identity(platform.parties["anonymous"])
    # The bearer token alone adds nothing (issue #25): the request must be device-signed.
    code, details = code_of(
        lambda: stub.AddPatientDevice(
            pb.AddPatientDeviceRequest(
                subject_id=patient.id,
                public_key=second.public_key,
                proof_of_possession=second.proof,
                label="tablet",
            ),
            metadata=platform.bearer(patient),
            timeout=10,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "got none" in details, details
    added = stub.AddPatientDevice(
        add_device_request(phone, second.private_key, "tablet"),
        metadata=platform.bearer(patient),
        timeout=10,
    )
    revoked = stub.RevokePatientDevice(
        revoke_device_request(phone, first_device),
        metadata=platform.bearer(patient),
        timeout=10,
    )
    assert revoked.device.status == identity_pb2.DEVICE_STATUS_REVOKED
    for process in ("identity", "hospital-c"):
        wait_for(
            f"{process} to refuse the revoked device's token",
            functools.partial(token_refused, platform, patient.token, process),
            timeout=20,
        )
    code, details = code_of(
        lambda: stub.BeginLogin(
            pb.BeginLoginRequest(subject_id=patient.id, device_key_id=first_device), timeout=10
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details
    # The other device still logs in.
    second_dir = tmp_path / "second"
    files.write_secret(second_dir / files.DEVICE_KEY_FILE, files.private_pem(second.private_key))
    files.write_json(
        second_dir / files.DEVICE_FILE, {"subject_id": patient.id, "key_id": added.device.key_id}
    )
    other = Principal("second device", patient.role, patient.id, device_dir=second_dir)
    assert as_patient(platform, platform.login(other)) == grpc.StatusCode.OK


def test_a_revoked_certificate_is_refused_everywhere(platform: Platform) -> None:
    hospital = platform.register_organization(
        "revoked hospital", platform.hospital.role, "hospital-z"
    )
    stub = platform.identity(hospital)
    assert stub.GetConsortium(pb.GetConsortiumRequest(), timeout=10).consortium.origin
    platform.identity(platform.admin).RevokeCertificate(
        pb.RevokeCertificateRequest(
            serial_number=hospital.extra["serial"],
            reason=identity_pb2.CERTIFICATE_REVOCATION_REASON_KEY_COMPROMISE,
        ),
        timeout=10,
    )

    def refused(process: str) -> bool:
        with platform.channel(hospital, process) as channel:
            chain = chain_service_pb2_grpc.ChainServiceStub(channel)
            call = (
                (lambda: pb_stub(channel).GetConsortium(pb.GetConsortiumRequest(), timeout=10))
                if process == "identity"
                else (
                    lambda: chain.GetConsortium(
                        chain_service_pb2.GetConsortiumRequest(), timeout=10
                    )
                )
            )
            code, details = code_of(call)
        return code == grpc.StatusCode.UNAUTHENTICATED and "was revoked" in details

    # identity applies what it revokes to its own list at once; every other process learns it
    # from identity.events.v1 (generous timeout: the machine running CI may be loaded).
    assert refused("identity"), "identity still accepts the certificate it just revoked"
    wait_for(
        "hospital-b to refuse the revoked certificate", functools.partial(refused, "hospital-b"), 90
    )


def _record_entry(signer: EntrySigner, organization_id: str) -> tuple[str, bytes]:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    entry_id = new_entry_id()
    body = entry_pb2.EntryBody(
        entry_id=entry_id,
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id=organization_id,
        time=stamp,
        commitment=uuid.uuid4().bytes * 2,
        subject_tag=uuid.uuid4().bytes * 2,
        record=entry_pb2.RecordDetail(
            record_tag=uuid.uuid4().bytes * 2,
            version=1,
            action=common_pb2.RECORD_ACTION_CREATE,
            reason_code="clinical-update",
        ),
    )
    return entry_id, signer.sign_entry(body.SerializeToString())


def cli(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def test_a_revoked_key_signs_nothing_after_its_revocation_and_what_it_signed_before_verifies(
    platform: Platform, tmp_path: Path
) -> None:
    # A hospital of its own: revoking the shared hospital-a's key would fail every later test
    # that anchors as hospital-a.
    organization_id = f"hospital-revoking-{uuid.uuid4().hex[:6]}"
    hospital = platform.register_organization("revoking hospital", Role.HOSPITAL, organization_id)
    key_id = hospital.key_id
    platform.wait_key_active(hospital, hospital.id, key_id)
    assert hospital.signing_key is not None
    signer = EntrySigner(key_id, hospital.signing_key)
    producer = KafkaProducer(
        **platform.stack.kafka.admin.client_options(),
        bootstrap_servers=platform.stack.kafka.bootstrap,
        acks="all",
        enable_idempotence=True,
    )
    node_channel = platform.channel(hospital, "hospital-a")
    node = chain_service_pb2_grpc.ChainServiceStub(node_channel)

    def submit(entry: bytes) -> None:
        producer.send(ORDERING_TOPIC, entry_record(entry)).get(timeout=10)

    def status(entry_id: str) -> chain_service_pb2.GetEntryStatusResponse | None:
        try:
            return node.GetEntryStatus(
                chain_service_pb2.GetEntryStatusRequest(entry_id=entry_id), timeout=10
            )
        except grpc.RpcError:
            return None

    before_id, before = _record_entry(signer, hospital.id)
    submit(before)
    wait_for(
        "the entry signed before the revocation to be sealed",
        lambda: (s := status(before_id)) is not None and s.state == common_pb2.ENTRY_STATE_SEALED,
    )
    before_index = status(before_id).leaf_index  # type: ignore[union-attr]

    identity = platform.identity(hospital)
    # Its certificate alone revokes nothing (issue #25); its signing key signs the request.
    code, details = code_of(
        lambda: identity.RevokeOrganizationKey(
            pb.RevokeOrganizationKeyRequest(
                organization_id=hospital.id,
                key_id=key_id,
                reason=entry_pb2.KEY_REASON_KEY_COMPROMISE,
            ),
            timeout=10,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "consortium vote" in details, details
    holder = OrganizationSigningKey(hospital.id, key_id, hospital.signing_key)
    revoked = identity.RevokeOrganizationKey(
        holder.revoke_request(key_id, entry_pb2.KEY_REASON_KEY_COMPROMISE), timeout=10
    )

    def revoked_at() -> int | None:
        resolution = identity.ResolveKey(pb.ResolveKeyRequest(key_id=key_id), timeout=10)
        return resolution.ended_at_log_index if resolution.HasField("ended_at_log_index") else None

    wait_for("the REVOKE entry to be on the log", lambda: revoked_at() is not None)
    position = revoked_at()
    assert position is not None and position > before_index
    assert status(revoked.key_entry_id) is not None

    after_id, after = _record_entry(signer, hospital.id)
    submit(after)
    wait_for(
        "the entry signed after the revocation to be rejected",
        lambda: (s := status(after_id)) is not None and s.state == common_pb2.ENTRY_STATE_REJECTED,
    )
    producer.close()

    at_before = identity.ResolveKey(
        pb.ResolveKeyRequest(key_id=key_id, log_index=before_index), timeout=10
    )
    at_after = identity.ResolveKey(
        pb.ResolveKeyRequest(key_id=key_id, log_index=position + 1), timeout=10
    )
    assert at_before.valid and at_before.status == identity_pb2.KEY_STATUS_ACTIVE
    assert not at_after.valid and at_after.status == identity_pb2.KEY_STATUS_REVOKED
    node_channel.close()

    bundle = tmp_path / "before.json"
    node_target = platform.target("hospital-a")
    tls = str(hospital.tls_dir)
    proved = cli(
        "chain",
        "prove",
        "--node",
        node_target,
        "--entry-id",
        before_id,
        "--out",
        str(bundle),
        "--tls-dir",
        tls,
        "--consortium",
        str(platform.consortium.config_path),
    )
    assert proved.exit_code == 0, proved.output
    verified = cli("verify", str(bundle), "--consortium", str(platform.consortium.config_path))
    assert verified.exit_code == 0, verified.output


def test_a_regulator_key_reaches_the_log_with_no_kind_to_sign(platform: Platform) -> None:
    regulator = platform.parties["regulator"]
    platform.wait_key_active(regulator, regulator.id, f"{regulator.id}#1")
    resolved = platform.identity(regulator).ResolveKey(
        pb.ResolveKeyRequest(key_id=f"{regulator.id}#1"), timeout=10
    )
    assert resolved.valid and list(resolved.key.allowed_kinds) == []


def test_bad_input_gets_a_clear_status_and_writes_nothing(platform: Platform) -> None:
    admin = platform.identity(platform.admin)
    cases = [
        (
            lambda: admin.RegisterOrganization(
                pb.RegisterOrganizationRequest(
                    organization_id="hospital-short-key",
                    display_name="Short",
                    role=common_pb2.ORGANIZATION_ROLE_HOSPITAL,
                    public_key=b"\x01" * 31,
                    proof_of_possession=b"\x00" * 64,
                ),
                timeout=10,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expected a 32-byte Ed25519 public key, got 31 bytes",
        ),
        (
            lambda: admin.IssueCertificate(
                pb.IssueCertificateRequest(organization_id="hospital-a", csr_pem="not a csr"),
                timeout=10,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expected a PEM certificate signing request",
        ),
        (
            lambda: admin.IssueCertificate(
                pb.IssueCertificateRequest(organization_id="nobody", csr_pem="x"), timeout=10
            ),
            grpc.StatusCode.NOT_FOUND,
            "no organization 'nobody'",
        ),
        (
            lambda: platform.identity(platform.parties["anonymous"]).BeginLogin(
                pb.BeginLoginRequest(subject_id="pt-" + "A" * 22, device_key_id="dev-x"),
                timeout=10,
            ),
            grpc.StatusCode.NOT_FOUND,
            "no patient",
        ),
        (
            lambda: admin.RevokeCertificate(
                pb.RevokeCertificateRequest(
                    serial_number="abc123",
                    reason=identity_pb2.CERTIFICATE_REVOCATION_REASON_SUPERSEDED,
                ),
                timeout=10,
            ),
            grpc.StatusCode.NOT_FOUND,
            "no certificate with serial number abc123",
        ),
    ]
    for call, want, message in cases:
        code, details = code_of(call)
        assert (code, message in details) == (want, True), (code, details)
    code, _ = code_of(
        lambda: admin.GetOrganization(
            pb.GetOrganizationRequest(organization_id="hospital-short-key"), timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


def test_the_identity_commands_register_an_organization_and_a_patient_device(
    platform: Platform, tmp_path: Path
) -> None:
    identity = platform.target("identity")
    admin = str(platform.admin.tls_dir)
    folder = tmp_path / "hospital-q"
    registered = cli(
        "identity",
        "register-org",
        "hospital-q",
        "--name",
        "Hospital Q",
        "--role",
        "hospital",
        "--out",
        str(folder),
        "--identity",
        identity,
        "--tls-dir",
        admin,
    )
    assert registered.exit_code == 0, registered.output
    assert "signing key hospital-q#1" in registered.output
    for name in (files.KEY_FILE, files.CERT_FILE, files.CA_FILE, files.SIGNING_KEY_FILE):
        assert (folder / name).exists(), name
    assert (folder / files.SIGNING_KEY_FILE).stat().st_mode & 0o777 == 0o600
    # The folder is the organization's own identity.
    shown = cli("identity", "show", "hospital-q", "--identity", identity, "--tls-dir", str(folder))
    assert shown.exit_code == 0 and "hospital-q#1" in shown.output, shown.output

    # The hospital is given a one-time code; the patient's device makes its key and enrolls.
    patient = cli(
        "identity",
        "register-patient",
        "--reference",
        "q-77",
        "--identity",
        identity,
        "--tls-dir",
        str(folder),
    )
    assert patient.exit_code == 0, patient.output
    code = re.search(r"^enrollment code: (\S+)$", patient.output, re.MULTILINE)
    assert code, patient.output
    public = platform.target("identity", public=True)
    device = tmp_path / "device"
    enrolled = cli(
        "identity",
        "enroll",
        "--code",
        code.group(1),
        "--device-out",
        str(device),
        "--public",
        public,
        "--ca",
        str(folder / files.CA_FILE),
    )
    assert enrolled.exit_code == 0, enrolled.output
    new_device = tmp_path / "device-2"
    added = cli(
        "identity",
        "add-device",
        "--device-dir",
        str(device),
        "--new-device-out",
        str(new_device),
        "--public",
        public,
    )
    assert added.exit_code == 0, added.output
    old_key = files.read_json(device / files.DEVICE_FILE)["key_id"]
    revoked = cli(
        "identity", "revoke-device", old_key, "--device-dir", str(new_device), "--public", public
    )
    assert revoked.exit_code == 0 and "revoked" in revoked.output, revoked.output
    login = cli("identity", "login", "--device-dir", str(new_device), "--public", public)
    assert login.exit_code == 0 and login.output.count(".") == 2, login.output

    # The hospital rotates its key with the CLI, which signs with the folder's active key.
    platform.wait_key_active(platform.admin, "hospital-q", "hospital-q#1")
    rotated = cli(
        "identity",
        "rotate-key",
        "hospital-q",
        "--out",
        str(folder),
        "--identity",
        identity,
        "--tls-dir",
        str(folder),
    )
    assert rotated.exit_code == 0 and "hospital-q#1 -> hospital-q#2" in rotated.output, (
        rotated.output
    )
    assert files.read_json(folder / files.ORGANIZATION_FILE)["key_id"] == "hospital-q#2"
    assert (folder / "signing-key.hospital-q-1.pem").exists()
    # The old key signs nothing any more: revoking the new key with it is refused.
    (folder / "old").mkdir()
    (folder / "old" / files.SIGNING_KEY_FILE).write_bytes(
        (folder / "signing-key.hospital-q-1.pem").read_bytes()
    )
    files.write_json(
        folder / "old" / files.ORGANIZATION_FILE,
        {"organization_id": "hospital-q", "key_id": "hospital-q#1"},
    )
    refused = cli(
        "identity",
        "revoke-key",
        "hospital-q",
        "hospital-q#2",
        "--org-dir",
        str(folder / "old"),
        "--identity",
        identity,
        "--tls-dir",
        str(folder),
    )
    assert refused.exit_code != 0 and "which is ended by KEY entry" in refused.output, (
        refused.output
    )
