"""Key changes over a real gRPC server with the platform's authorization (issue #25): the
hospital that registers a patient is given a one-time code, not a key, so it cannot log in as
its patient; a stolen bearer token cannot add or revoke a patient's device, a client
certificate alone (even one the admin has just issued) cannot rotate or revoke an
organization's signing key, and the admin cannot do it for a member; requests the SDK signs
with the key the owner holds go through. The CLI's register-patient and enroll run against the
same server.

The identity servicer runs on its domain objects over the unit tests' fake stores, behind the
same interceptor every server runs (mTLS on the main port, bearer tokens on the public port),
with certificates from a platform CA made for the test.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from chain.consortium import GenesisKey
from chain.entry import EntrySigner
from cli import identity_files as files
from cli.main import app
from devstack.pki import ADMIN, Pki, ensure_pki
from devstack.process import free_port
from sdk.consent import PatientDevice
from sdk.identity import (
    OrganizationSigningKey,
    add_device_request,
    enroll_device,
    enrollment_request,
    register_patient_request,
    revoke_device_request,
)
from services.identity.domain.certificates import CertificateAuthority, CertificateRecord
from services.identity.domain.organizations import OrganizationRegistry
from services.identity.domain.patients import PatientDirectory, PractitionerDirectory
from services.identity.domain.recovery import RecoveryDesk
from services.identity.servicer import IdentityServicer
from services.platform.auth import AuthInterceptor, Authorizer
from services.platform.ca import PlatformCA
from services.platform.revocations import RevocationList
from services.platform.server import Server, ServiceRegistration, build_server
from services.platform.settings import ProcessSettings
from services.platform.tls import client_credentials, public_client_credentials
from services.platform.tokens import TokenIssuer, TokenVerifier
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from swiftchain.identity.v1 import identity_pb2, identity_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as pb
from tests.unit.chain.node.test_node import CONFIG
from tests.unit.identity.test_organizations import FakeStore as OrganizationStore
from tests.unit.identity.test_patients import FakeStore as PatientStore

Stub = identity_service_pb2_grpc.IdentityServiceStub
ROUTINE = entry_pb2.KEY_REASON_ROUTINE_ROTATION
COMPROMISE = entry_pb2.KEY_REASON_KEY_COMPROMISE
TIMEOUT = 10


@dataclass
class Identity:
    """The running identity service and what a test needs to reach it."""

    server: Server
    pki: Pki
    organizations: OrganizationRegistry
    patients: PatientStore
    #: The folder (TLS and signing key) of hospital-a, which registers the patients.
    hospital_dir: Path = Path()
    #: How far the service's clock runs ahead of the real one (to pass a recovery's wait).
    ahead: timedelta = timedelta(0)
    channels: list[grpc.Channel] = field(default_factory=list)

    def main(self, tls_dir: Path) -> Stub:
        """A stub on the mTLS port, as the holder of ``tls_dir``'s certificate."""
        return self._stub(self.server.port, client_credentials(tls_dir))

    def public(self) -> Stub:
        """A stub on the public port (TLS without a client certificate)."""
        return self._stub(self.server.public_port, public_client_credentials(self.pki.ca_pem))

    def _stub(self, port: int, credentials: grpc.ChannelCredentials) -> Stub:
        channel = grpc.secure_channel(f"localhost:{port}", credentials)
        self.channels.append(channel)
        return Stub(channel)


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Identity]:
    pki = ensure_pki(tmp_path_factory.mktemp("pki"), [("identity", "service")])
    registrar = Ed25519PrivateKey.generate()
    genesis = GenesisKey("registrar", "identity", ("KEY",), files.raw_public(registrar))
    organizations = OrganizationRegistry(
        OrganizationStore(), EntrySigner("registrar", registrar), [genesis]
    )
    token_key = Ed25519PrivateKey.generate()
    patient_store = PatientStore()
    running: Identity | None = None

    def clock() -> datetime:
        return datetime.now(UTC) + (running.ahead if running else timedelta(0))

    servicer = IdentityServicer(
        organizations=organizations,
        certificates=CertificateAuthority(
            _Certificates(), PlatformCA.load(pki.ca_dir), organizations
        ),
        patients=PatientDirectory(
            patient_store,
            TokenIssuer(token_key, issuer="swiftchain-identity", audience="swiftchain"),
        ),
        practitioners=PractitionerDirectory(patient_store),
        consortium=CONFIG,
        clock=clock,
        recovery=RecoveryDesk(patient_store),
    )
    verifier = TokenVerifier(
        token_key.public_key(), issuer="swiftchain-identity", audience="swiftchain"
    )
    server = build_server(
        ProcessSettings(
            process_name="identity",
            tls_dir=pki.tls_dir("identity"),
            public_port=free_port(),
            max_workers=4,
        ),
        [
            ServiceRegistration(
                "swiftchain.identity.v1.IdentityService",
                lambda s: identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(
                    servicer, s
                ),
            )
        ],
        interceptors=[AuthInterceptor(Authorizer(RevocationList(), verifier))],
    )
    running = Identity(server, pki, organizations, patient_store)
    try:
        running.hospital_dir = _register_hospital(
            running, "hospital-a", tmp_path_factory.mktemp("hospital-a")
        )
        yield running
    finally:
        for channel in running.channels:
            channel.close()
        server.stop(0)


class _Certificates:
    """Issued certificates in memory (none is revoked here)."""

    def __init__(self) -> None:
        self.records: dict[str, CertificateRecord] = {}

    def insert(self, record: CertificateRecord, events: Sequence[events_pb2.EventEnvelope]) -> None:
        self.records[record.serial_hex] = record

    def get(self, serial_hex: str) -> CertificateRecord | None:
        return self.records.get(serial_hex)

    def mark_revoked(
        self,
        serial_hex: str,
        revoke_time: datetime,
        reason: int,
        events: Sequence[events_pb2.EventEnvelope],
    ) -> bool:
        return False


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status and message a call fails with; fails the test if it succeeds."""
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value.code(), failed.value.details() or ""


# --- patients ---------------------------------------------------------------------------


def _register_patient(identity: Identity, folder: Path) -> PatientDevice:
    """A patient registered by the admin-certified hospital-a, whose phone enrolled with the
    code the hospital was given; the phone, its folder written as `enroll` writes it."""
    registered = identity.main(identity.hospital_dir).RegisterPatient(
        register_patient_request(), timeout=TIMEOUT
    )
    phone = enroll_device(identity.public(), registered.enrollment_code, "phone")
    files.write_device_folder(folder, phone, identity.pki.ca_pem)
    return PatientDevice.from_folder(folder)


def _login(stub: Stub, device: PatientDevice) -> tuple[tuple[str, str], ...]:
    challenge = stub.BeginLogin(
        pb.BeginLoginRequest(subject_id=device.subject_id, device_key_id=device.key_id),
        timeout=TIMEOUT,
    )
    signed = b"swiftchain/login/v1\n" + challenge.challenge_id.encode() + b"\n" + challenge.nonce
    token = stub.CompleteLogin(
        pb.CompleteLoginRequest(
            challenge_id=challenge.challenge_id, signature=device.key.sign(signed)
        ),
        timeout=TIMEOUT,
    ).access_token
    return (("authorization", f"Bearer {token}"),)


def test_the_registering_hospital_cannot_log_in_as_the_patient_it_registered(
    identity: Identity,
) -> None:
    # The registrar no longer sends a key of its own making for the patient: the field is gone.
    assert "device_public_key" not in pb.RegisterPatientRequest.DESCRIPTOR.fields_by_name
    hospital = identity.main(identity.hospital_dir)
    registered = hospital.RegisterPatient(register_patient_request("mrn-21"), timeout=TIMEOUT)
    subject_id = registered.patient.subject_id
    # What the hospital holds is a code and a patient with no device: nothing logs in.
    assert registered.enrollment_code and not registered.patient.devices
    code, details = refusal(
        lambda: hospital.BeginLogin(
            pb.BeginLoginRequest(subject_id=subject_id, device_key_id="dev-any"), timeout=TIMEOUT
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and "has no device key" in details
    # The patient's phone makes its key and enrolls with the code (anonymously, on the public
    # port: the code is its credential).
    phone = enroll_device(identity.public(), registered.enrollment_code, "phone")
    assert phone.subject_id == subject_id
    # The hospital, keeping the code, comes too late with a key of its own.
    own_key = Ed25519PrivateKey.generate()
    code, details = refusal(
        lambda: hospital.EnrollDevice(
            enrollment_request(registered.enrollment_code, own_key, "hospital"), timeout=TIMEOUT
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "used already" in details
    # It gets no second code for the patient, and adds no device: that takes the phone.
    code, details = refusal(
        lambda: hospital.RegisterPatient(register_patient_request("mrn-21"), timeout=TIMEOUT)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "signed by one of the patient's active devices" in details
    intruder = PatientDevice(subject_id, phone.key_id, own_key)
    code, _ = refusal(
        lambda: hospital.AddPatientDevice(
            add_device_request(intruder, own_key, "hospital"), timeout=TIMEOUT
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # Its own key answers no login challenge for the phone.
    public = identity.public()
    code, details = refusal(functools.partial(_login, public, intruder))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "does not verify" in details
    devices = identity.patients.patients[subject_id].devices
    assert [(d.key_id, d.public_key) for d in devices] == [
        (phone.key_id, files.raw_public(phone.key))
    ]
    assert _login(public, phone)


def cli(*args: str) -> Result:
    """Run the swiftchain CLI in process."""
    return CliRunner().invoke(app, list(args))


def test_register_patient_prints_a_code_and_enroll_makes_the_key_on_the_device(
    identity: Identity, tmp_path: Path
) -> None:
    registered = cli(
        "identity",
        "register-patient",
        "--reference",
        "mrn-cli",
        "--identity",
        f"localhost:{identity.server.port}",
        "--tls-dir",
        str(identity.hospital_dir),
    )
    assert registered.exit_code == 0, registered.output
    found = re.search(r"^enrollment code: (\S+)$", registered.output, re.MULTILINE)
    assert found, registered.output
    enrollment_code = found.group(1)
    assert f"--code {enrollment_code} --device-out DIR" in registered.output
    assert "▀" in registered.output or "▄" in registered.output  # the QR code
    assert "device" not in {p.name for p in tmp_path.iterdir()}  # the registrar wrote no key
    public = f"localhost:{identity.server.public_port}"
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(identity.pki.ca_pem)
    phone = tmp_path / "phone"
    short = cli(
        "identity",
        "enroll",
        "--code",
        enrollment_code[:-1],
        "--device-out",
        str(phone),
        "--public",
        public,
        "--ca",
        str(ca_file),
    )
    assert short.exit_code == 2 and "got 27" in short.output, short.output
    assert not phone.exists()
    enrolled = cli(
        "identity",
        "enroll",
        "--code",
        enrollment_code.lower(),
        "--device-out",
        str(phone),
        "--public",
        public,
        "--ca",
        str(ca_file),
    )
    assert enrolled.exit_code == 0, enrolled.output
    device = PatientDevice.from_folder(phone)
    assert f"device {device.key_id} enrolled for patient {device.subject_id}" in enrolled.output
    assert (phone / files.DEVICE_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (phone / files.CA_FILE).read_bytes() == identity.pki.ca_pem
    stored = identity.patients.patients[device.subject_id]
    assert stored.references == {"hospital-a": "mrn-cli"}
    assert [d.public_key for d in stored.devices] == [files.raw_public(device.key)]
    login = cli("identity", "login", "--device-dir", str(phone), "--public", public)
    assert login.exit_code == 0 and login.output.count(".") == 2, login.output
    again = cli(
        "identity",
        "enroll",
        "--code",
        enrollment_code,
        "--device-out",
        str(tmp_path / "other"),
        "--public",
        public,
        "--ca",
        str(ca_file),
    )
    assert again.exit_code == 1 and "UNAUTHENTICATED" in again.output, again.output
    assert "used already" in again.output


def test_a_stolen_token_neither_adds_nor_revokes_a_device(
    identity: Identity, tmp_path: Path
) -> None:
    phone = _register_patient(identity, tmp_path / "phone")
    stub = identity.public()
    stolen = _login(stub, phone)
    thief = files.NewSigningKey.for_owner(phone.subject_id)
    code, details = refusal(
        lambda: stub.AddPatientDevice(
            pb.AddPatientDeviceRequest(
                subject_id=phone.subject_id,
                public_key=thief.public_key,
                proof_of_possession=thief.proof,
                label="thief",
            ),
            metadata=stolen,
            timeout=TIMEOUT,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == (
        "expected a signature by one of the patient's active devices over the request, got none"
    )
    # The thief's own device signs in the patient's device's name: it does not verify.
    impostor = PatientDevice(phone.subject_id, phone.key_id, thief.private_key)
    code, details = refusal(
        lambda: stub.AddPatientDevice(
            add_device_request(impostor, thief.private_key, "thief"),
            metadata=stolen,
            timeout=TIMEOUT,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "does not verify" in details
    code, details = refusal(
        lambda: stub.RevokePatientDevice(
            pb.RevokePatientDeviceRequest(subject_id=phone.subject_id, key_id=phone.key_id),
            metadata=stolen,
            timeout=TIMEOUT,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "got none" in details
    # Nothing changed: the phone is the patient's only device, and it still logs in.
    assert [d.key_id for d in identity.patients.patients[phone.subject_id].devices] == [
        phone.key_id
    ]
    assert _login(stub, phone)


def test_a_device_adds_and_revokes_devices_with_requests_it_signs_once(
    identity: Identity, tmp_path: Path
) -> None:
    phone = _register_patient(identity, tmp_path / "phone")
    stub = identity.public()
    bearer = _login(stub, phone)
    tablet_key = Ed25519PrivateKey.generate()
    request = add_device_request(phone, tablet_key, "tablet")
    added = stub.AddPatientDevice(request, metadata=bearer, timeout=TIMEOUT)
    assert added.device.status == identity_pb2.DEVICE_STATUS_ACTIVE
    code, details = refusal(
        lambda: stub.AddPatientDevice(request, metadata=bearer, timeout=TIMEOUT)
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "used already" in details
    tablet = PatientDevice(phone.subject_id, added.device.key_id, tablet_key)
    revoked = stub.RevokePatientDevice(
        revoke_device_request(tablet, phone.key_id), metadata=bearer, timeout=TIMEOUT
    )
    assert revoked.device.status == identity_pb2.DEVICE_STATUS_REVOKED
    # The revoked phone signs nothing any more, whatever token comes with it.
    code, details = refusal(
        lambda: stub.RevokePatientDevice(
            revoke_device_request(phone, tablet.key_id),
            metadata=_login(stub, tablet),
            timeout=TIMEOUT,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "which was revoked" in details


# --- organizations ----------------------------------------------------------------------


def _certify(identity: Identity, organization_id: str, folder: Path) -> Path:
    """A fresh client certificate for ``organization_id``, issued by the admin, in ``folder``."""
    key, csr = files.new_csr(organization_id)
    issued = identity.main(identity.pki.tls_dir(ADMIN)).IssueCertificate(
        pb.IssueCertificateRequest(organization_id=organization_id, csr_pem=csr),
        timeout=TIMEOUT,
    )
    files.write_secret(folder / files.KEY_FILE, files.private_pem(key))
    (folder / files.CERT_FILE).write_text(issued.certificate_pem)
    (folder / files.CA_FILE).write_bytes(identity.pki.ca_pem)
    return folder


def _register_hospital(identity: Identity, organization_id: str, folder: Path) -> Path:
    """Register a hospital whose first key is ACTIVE, write its folder (as register-org does)."""
    signing = files.NewSigningKey.for_owner(organization_id)
    registered = identity.main(identity.pki.tls_dir(ADMIN)).RegisterOrganization(
        pb.RegisterOrganizationRequest(
            organization_id=organization_id,
            display_name=organization_id,
            role=common_pb2.ORGANIZATION_ROLE_HOSPITAL,
            public_key=signing.public_key,
            proof_of_possession=signing.proof,
        ),
        timeout=TIMEOUT,
    )
    identity.organizations.record_sequenced(registered.key_entry_id, 0)  # as a node reports
    files.write_secret(folder / files.SIGNING_KEY_FILE, files.private_pem(signing.private_key))
    files.write_json(
        folder / files.ORGANIZATION_FILE,
        {"organization_id": organization_id, "key_id": registered.organization.keys[0].key_id},
    )
    return _certify(identity, organization_id, folder)


def test_a_certificate_alone_cannot_rotate_or_revoke_a_signing_key(
    identity: Identity, tmp_path: Path
) -> None:
    _register_hospital(identity, "hospital-k", tmp_path / "hospital-k")
    attacker = files.NewSigningKey.for_owner("hospital-k")
    unsigned = pb.RotateOrganizationKeyRequest(
        organization_id="hospital-k",
        replaces_key_id="hospital-k#1",
        new_public_key=attacker.public_key,
        proof_of_possession=attacker.proof,
        reason=ROUTINE,
    )
    # The hospital's own certificate, and one the admin mints for it first, as in the attack.
    minted = _certify(identity, "hospital-k", tmp_path / "minted")
    for tls_dir in (tmp_path / "hospital-k", minted, identity.pki.tls_dir(ADMIN)):
        rotate = identity.main(tls_dir).RotateOrganizationKey
        code, details = refusal(functools.partial(rotate, unsigned, timeout=TIMEOUT))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details.startswith(
            "expected a signature by organization 'hospital-k''s active signing key "
            "(hospital-k#1) over the request, got none"
        )
        assert "recovery of a lost key is by a consortium vote, which does not exist yet" in details
    # A key of the attacker's own making, in hospital-k#1's name, does not verify.
    forged = OrganizationSigningKey("hospital-k", "hospital-k#1", attacker.private_key)
    code, details = refusal(
        lambda: identity.main(minted).RevokeOrganizationKey(
            forged.revoke_request("hospital-k#1", COMPROMISE), timeout=TIMEOUT
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "does not verify" in details
    keys = identity.organizations.get("hospital-k").keys
    assert [(k.key_id, k.status) for k in keys] == [
        ("hospital-k#1", identity_pb2.KEY_STATUS_ACTIVE)
    ]


def test_the_holder_of_the_active_key_rotates_it_and_the_admin_may_relay_its_request(
    identity: Identity, tmp_path: Path
) -> None:
    folder = _register_hospital(identity, "hospital-m", tmp_path / "hospital-m")
    holder = OrganizationSigningKey.from_folder(folder)
    new_key = Ed25519PrivateKey.generate()
    rotated = identity.main(folder).RotateOrganizationKey(
        holder.rotate_request(new_key, ROUTINE), timeout=TIMEOUT
    )
    assert rotated.key.key_id == "hospital-m#2"
    identity.organizations.record_sequenced(rotated.key_entry_id, 1)
    # The old key signs nothing now.
    code, details = refusal(
        lambda: identity.main(folder).RevokeOrganizationKey(
            holder.revoke_request("hospital-m#2", COMPROMISE), timeout=TIMEOUT
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "which is ended by KEY entry" in details
    # The new key signs; the admin may pass its request on, as it could not make one.
    successor = OrganizationSigningKey("hospital-m", "hospital-m#2", new_key)
    revoked = identity.main(identity.pki.tls_dir(ADMIN)).RevokeOrganizationKey(
        successor.revoke_request("hospital-m#2", COMPROMISE), timeout=TIMEOUT
    )
    assert revoked.key.key_id == "hospital-m#2" and revoked.key_entry_id


def _cli_public(identity: Identity, *args: str) -> Result:
    result = cli(*args, "--public", f"localhost:{identity.server.public_port}")
    assert "Traceback" not in result.output, result.output
    return result


def test_a_patient_recovers_by_code_after_the_wait_and_a_device_can_stop_it(
    identity: Identity, tmp_path: Path
) -> None:
    phone_dir = tmp_path / "phone"
    phone = _register_patient(identity, phone_dir)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(identity.pki.ca_pem)

    def issue() -> str:
        issued = cli(
            "identity", "recovery-code", phone.subject_id, "--no-qr",
            "--identity", f"localhost:{identity.server.port}",
            "--tls-dir", str(identity.hospital_dir),
        )  # fmt: skip
        assert issued.exit_code == 0, issued.output
        found = re.search(r"^recovery code: (\S+)$", issued.output, re.MULTILINE)
        assert found, issued.output
        return found.group(1)

    def recover(code: str, folder: Path, ahead: timedelta = timedelta(0)) -> Result:
        identity.ahead = ahead
        try:
            return _cli_public(
                identity, "identity", "recover", "--code", code, "--device-out", str(folder),
                "--ca", str(ca_file),
            )  # fmt: skip
        finally:
            identity.ahead = timedelta(0)

    # Someone holding a recovery code begins taking the patient over; the phone lists it and
    # cancels it with a request it signs (its token alone cancels nothing).
    impostor, impostor_code = tmp_path / "impostor", issue()
    begun = recover(impostor_code, impostor)
    assert begun.exit_code == 0 and "run this command again after that" in begun.output
    listed = _cli_public(identity, "identity", "recoveries", "--device-dir", str(phone_dir))
    assert listed.exit_code == 0 and "PENDING" in listed.output, listed.output
    [pending] = identity.patients.patients[phone.subject_id].recoveries
    public = identity.public()
    code, _ = refusal(
        lambda: public.CancelRecovery(
            pb.CancelRecoveryRequest(subject_id=phone.subject_id, recovery_id=pending.recovery_id),
            metadata=_login(public, phone),
            timeout=TIMEOUT,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    cancelled = _cli_public(
        identity, "identity", "cancel-recovery", "--device-dir", str(phone_dir),
        pending.recovery_id,
    )  # fmt: skip
    assert cancelled.exit_code == 0 and '"status": "cancelled"' in cancelled.output
    stopped = recover(impostor_code, impostor, timedelta(hours=25))
    assert stopped.exit_code == 1 and "was cancelled" in stopped.output, stopped.output
    assert not (impostor / files.DEVICE_FILE).exists()

    # The patient, having lost the phone, recovers on a new one, once the wait is over.
    new_phone, new_code = tmp_path / "new-phone", issue()
    assert recover(new_code, new_phone).exit_code == 0
    early = recover(new_code, new_phone)
    assert early.exit_code == 1 and "waits until" in early.output, early.output
    done = recover(new_code, new_phone, timedelta(hours=25))
    assert done.exit_code == 0 and "recovered for patient" in done.output, done.output
    recovered = PatientDevice.from_folder(new_phone)
    assert recovered.subject_id == phone.subject_id
    devices = identity.patients.patients[phone.subject_id].devices
    assert [d.key_id for d in devices if d.active] == [phone.key_id, recovered.key_id]
    assert _login(identity.public(), recovered)


def test_an_organization_makes_its_keys_and_the_admin_registers_only_public_parts(
    identity: Identity, tmp_path: Path
) -> None:
    own = tmp_path / "hospital-keygen"  # the organization's machine
    made = cli("identity", "org-keygen", "hospital-keygen", "--out", str(own))
    assert made.exit_code == 0, made.output
    request = own / "hospital-keygen.request.json"
    assert "private" not in request.read_text().lower()
    assert (own / files.SIGNING_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert cli("identity", "org-keygen", "hospital-keygen", "--out", str(own)).exit_code == 1

    handed = tmp_path / "for-hospital-keygen"  # the admin's machine
    admin = (
        "--identity", f"localhost:{identity.server.port}",
        "--tls-dir", str(identity.pki.tls_dir(ADMIN)),
    )  # fmt: skip
    wrong = cli(
        "identity", "register-org", "hospital-j", "--name", "J", "--role", "hospital",
        "--request", str(request), "--out", str(handed), *admin,
    )  # fmt: skip
    assert wrong.exit_code == 1
    assert "expected a request for 'hospital-j'" in wrong.output, wrong.output
    registered = cli(
        "identity", "register-org", "hospital-keygen", "--name", "Hospital K", "--role", "hospital",
        "--request", str(request), "--out", str(handed), *admin,
    )  # fmt: skip
    assert registered.exit_code == 0, registered.output
    assert sorted(p.name for p in handed.iterdir()) == sorted(
        [files.CA_FILE, files.CERT_FILE, files.ORGANIZATION_FILE]
    ), "expected no private key on the admin's machine"
    stored = identity.organizations.get("hospital-keygen").keys[0]
    own_key = files.load_ed25519(own / files.SIGNING_KEY_FILE)
    assert stored.public_key == files.raw_public(own_key)

    for handed_file in handed.iterdir():  # the organization puts them next to its keys
        (own / handed_file.name).write_bytes(handed_file.read_bytes())
    shown = cli(
        "identity", "show", "hospital-keygen", "--identity", f"localhost:{identity.server.port}",
        "--tls-dir", str(own),
    )  # fmt: skip
    assert shown.exit_code == 0 and "hospital-keygen#1" in shown.output, shown.output


def test_an_unreadable_organization_request_is_refused_saying_why(
    identity: Identity, tmp_path: Path
) -> None:
    request = tmp_path / "bad.request.json"
    request.write_text('{"format": "something-else/v1"}')
    refused = cli(
        "identity", "register-org", "hospital-z", "--name", "Z", "--role", "hospital",
        "--request", str(request), "--out", str(tmp_path / "out"),
        "--identity", f"localhost:{identity.server.port}",
        "--tls-dir", str(identity.pki.tls_dir(ADMIN)),
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "expected format 'swiftchain-org-request/v1', got 'something-else/v1'" in refused.output
    assert not (tmp_path / "out").exists()
