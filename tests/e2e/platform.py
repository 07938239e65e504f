"""A running platform with its parties, for end-to-end tests.

:class:`Platform` starts the whole local stack (Kafka, FerretDB, three chain nodes, the four
services, all over TLS) and then, through the identity service itself, registers the parties
the tests act as: two hospitals, a regulator and an app operator (each with a client
certificate issued from a CSR), and two patients (each with a device key, logged in on the
public port). Each party is a :class:`Principal`; :meth:`Platform.channel` opens the channel it
would use.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli import identity_files as files
from cli.identity_commands import login_token
from devstack.pki import ADMIN
from devstack.process import ManagedProcess, wait_grpc_serving
from devstack.stack import LocalStack, StackPorts
from services.common.caller import Role
from services.common.tls import open_channel, open_public_channel
from swiftchain.common.v1 import common_pb2
from swiftchain.identity.v1 import identity_pb2, identity_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as pb

_ROLE_VALUES = {
    Role.HOSPITAL: common_pb2.ORGANIZATION_ROLE_HOSPITAL,
    Role.REGULATOR: common_pb2.ORGANIZATION_ROLE_REGULATOR,
    Role.APP: common_pb2.ORGANIZATION_ROLE_APP_OPERATOR,
}


@dataclass
class Principal:
    """One party: how it authenticates and what it holds."""

    label: str
    role: Role
    id: str = ""
    #: Its TLS folder (mTLS on the main ports); None for patients and anonymous callers.
    tls_dir: Path | None = None
    #: A patient's bearer token.
    token: str = ""
    #: An organization's Ed25519 signing key (a hospital's signs RECORD entries).
    signing_key: Ed25519PrivateKey | None = None
    #: A patient's device folder (device key, subject id, device key id, ca.pem).
    device_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``check`` until true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


class Platform:
    """The running stack and its registered parties."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stack = LocalStack(root / "stack", StackPorts.free(), say=lambda line: None)
        self.admin = Principal("admin", Role.ADMIN, ADMIN)
        self.parties: dict[str, Principal] = {}

    # --- channels -------------------------------------------------------------------------

    def target(self, process: str, *, public: bool = False) -> str:
        """``127.0.0.1:<port>`` of a process's main (or public) port."""
        ports = self.stack.ports
        return f"127.0.0.1:{ports.public_port(process) if public else ports.port(process)}"

    def channel(self, caller: Principal, process: str) -> grpc.Channel:
        """The channel ``caller`` uses for ``process``: mTLS with its certificate, or TLS on
        the public port without one."""
        if caller.tls_dir is not None:
            return open_channel(self.target(process), caller.tls_dir)
        return open_public_channel(self.target(process, public=True), self.stack.pki.ca_pem)

    def identity(self, caller: Principal) -> identity_service_pb2_grpc.IdentityServiceStub:
        """An identity stub for ``caller`` (its channel lives as long as the stub)."""
        return identity_service_pb2_grpc.IdentityServiceStub(self.channel(caller, "identity"))

    @staticmethod
    def bearer(caller: Principal) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying ``caller``'s token."""
        return (("authorization", f"Bearer {caller.token}"),)

    # --- parties --------------------------------------------------------------------------

    @property
    def hospital(self) -> Principal:
        """hospital-a."""
        return self.parties["hospital"]

    @property
    def patient(self) -> Principal:
        """patient-1, registered by hospital-a."""
        return self.parties["patient"]

    def callers(self) -> list[Principal]:
        """Every kind of caller, for the authorization matrix."""
        return [
            self.parties[label]
            for label in (
                "hospital",
                "other hospital",
                "patient",
                "other patient",
                "regulator",
                "app",
                "admin",
                "service",
                "chain node",
                "anonymous",
            )
        ]

    def start(self) -> None:
        """Start the stack and register every party through the identity service."""
        self.stack.start()
        self.admin.tls_dir = self.stack.pki.tls_dir(ADMIN)
        self.parties["admin"] = self.admin
        self.parties["service"] = Principal(
            "service", Role.SERVICE, "anchoring", self.stack.pki.tls_dir("anchoring")
        )
        self.parties["chain node"] = Principal(
            "chain node", Role.CHAIN_NODE, "hospital-b", self.stack.pki.tls_dir("hospital-b")
        )
        self.parties["anonymous"] = Principal("anonymous", Role.ANONYMOUS)
        for label, role, organization_id in (
            ("hospital", Role.HOSPITAL, "hospital-a"),
            ("other hospital", Role.HOSPITAL, "hospital-b"),
            ("regulator", Role.REGULATOR, "regulator-1"),
            ("app", Role.APP, "app-1"),
        ):
            self.parties[label] = self.register_organization(label, role, organization_id)
        self.parties["patient"] = self.register_patient("patient", self.parties["hospital"])
        self.parties["other patient"] = self.register_patient("other patient", self.parties["app"])

    def stop(self) -> None:
        """Stop everything."""
        self.stack.stop()

    def restart(self, process: str) -> None:
        """Stop a gRPC process of the stack (reap it, if it was killed) and start it again with
        the same command, environment and ports; return once it answers SERVING."""
        running = next(p for p in self.stack.grpc_processes if p.name == process)
        old = running.process
        old.stop(grace=15)
        running.process = ManagedProcess(
            old.name,
            old.argv,
            log_path=old.log_path,
            env=old.env,
            cwd=old.cwd,
            pid_path=old.pid_path,
            inherit_env=False,
        ).start()
        wait_grpc_serving(running.process, running.port, 60, tls_dir=self.stack.pki.tls_dir(ADMIN))

    def register_organization(self, label: str, role: Role, organization_id: str) -> Principal:
        """Register an organization with a signing key as the admin, and give it a
        certificate from a CSR."""
        signing = files.NewSigningKey.for_owner(organization_id)
        stub = self.identity(self.admin)
        registered = stub.RegisterOrganization(
            pb.RegisterOrganizationRequest(
                organization_id=organization_id,
                display_name=organization_id.title(),
                role=_ROLE_VALUES[role],
                public_key=signing.public_key,
                proof_of_possession=signing.proof,
            ),
            timeout=10,
        )
        folder = self.root / "parties" / organization_id
        folder.mkdir(parents=True, exist_ok=True)
        key, csr = files.new_csr(organization_id)
        issued = stub.IssueCertificate(
            pb.IssueCertificateRequest(organization_id=organization_id, csr_pem=csr), timeout=10
        )
        files.write_secret(folder / files.KEY_FILE, files.private_pem(key))
        (folder / files.CERT_FILE).write_text(issued.certificate_pem)
        (folder / files.CA_FILE).write_text(files.root_of(issued.certificate_chain_pem))
        # The folder `swiftchain identity register-org --out` makes: the CLI can act as it.
        files.write_secret(folder / files.SIGNING_KEY_FILE, files.private_pem(signing.private_key))
        files.write_json(
            folder / files.ORGANIZATION_FILE,
            {
                "organization_id": organization_id,
                "key_id": registered.organization.keys[0].key_id,
            },
        )
        principal = Principal(
            label,
            role,
            organization_id,
            folder,
            signing_key=signing.private_key,
        )
        principal.extra["serial"] = issued.serial_number
        return principal

    def register_patient(self, label: str, registrar: Principal) -> Principal:
        """Register a patient with one device as ``registrar`` and log it in."""
        request_id = str(uuid.uuid4())
        device = files.NewSigningKey.for_owner(request_id)
        registered = self.identity(registrar).RegisterPatient(
            pb.RegisterPatientRequest(
                hospital_reference=f"ref-{label.replace(' ', '-')}",
                device_public_key=device.public_key,
                device_proof_of_possession=device.proof,
                device_label="phone",
                request_id=request_id,
            ),
            timeout=10,
        )
        subject_id = registered.patient.subject_id
        folder = self.root / "parties" / subject_id
        files.write_secret(folder / files.DEVICE_KEY_FILE, files.private_pem(device.private_key))
        files.write_json(
            folder / files.DEVICE_FILE,
            {"subject_id": subject_id, "key_id": registered.patient.devices[0].key_id},
        )
        (folder / files.CA_FILE).write_bytes(self.stack.pki.ca_pem)
        principal = Principal(label, Role.PATIENT, subject_id, device_dir=folder)
        principal.token = self.login(principal)
        return principal

    def login(self, patient: Principal) -> str:
        """A fresh token for ``patient`` through BeginLogin/CompleteLogin on the public port."""
        assert patient.device_dir is not None
        return login_token(self.identity(self.parties["anonymous"]), patient.device_dir)

    def wait_key_active(self, caller: Principal, organization_id: str, key_id: str) -> None:
        """Wait until the log has sequenced the KEY entry of ``key_id``."""

        def active() -> bool:
            organization = (
                self.identity(caller)
                .GetOrganization(
                    pb.GetOrganizationRequest(organization_id=organization_id), timeout=10
                )
                .organization
            )
            return any(
                k.key_id == key_id and k.status == identity_pb2.KEY_STATUS_ACTIVE
                for k in organization.keys
            )

        wait_for(f"key {key_id} to be ACTIVE", active)
