"""Parties acting on a running stack through its own APIs.

:class:`StackParties` reaches a stack by its folder (PKI, consortium files) and its ports, and
registers the parties of a scenario through the identity service itself, as the consortium
admin: organizations with a signing key and a client certificate issued from a CSR (the folder
``swiftchain identity register-org --out`` writes), and patients, for whom the registrar is
given a one-time code that the patient's phone enrolls its own key with, logged in on the public
port. The end-to-end tests (``tests/e2e/platform.py``) and ``make demo`` both use it.
"""

from __future__ import annotations

import functools
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from cli import identity_files as files
from cli.patient_commands import login_token
from devstack.pki import ADMIN, Pki
from devstack.stack import StackPorts
from sdk.anchoring import HospitalClient
from sdk.identity import enroll_device, register_patient_request
from services.platform.caller import Role
from services.platform.consortium_files import ConsortiumFiles
from services.platform.kafka import KafkaSecurity
from services.platform.tls import open_channel, open_public_channel
from services.platform.tokens import DEFAULT_LIFETIME
from services.platform.topics import EVENT_TOPICS
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2
from swiftchain.identity.v1 import identity_pb2, identity_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as pb

_ROLE_VALUES = {
    Role.HOSPITAL: common_pb2.ORGANIZATION_ROLE_HOSPITAL,
    Role.REGULATOR: common_pb2.ORGANIZATION_ROLE_REGULATOR,
    Role.APP: common_pb2.ORGANIZATION_ROLE_APP_OPERATOR,
}

#: The audit service's gauge of the tree size its log index is complete up to, as Prometheus
#: names it (``swiftchain.audit.log_indexed_tree_size`` in services/audit/log_follower.py).
AUDIT_INDEXED_GAUGE = "swiftchain_audit_log_indexed_tree_size"
#: A patient's token is renewed after this (the identity service issues them for DEFAULT_LIFETIME).
_TOKEN_RENEW_AFTER = DEFAULT_LIFETIME / 2


@dataclass
class Principal:
    """One party: how it authenticates and what it holds."""

    label: str
    role: Role
    id: str = ""
    #: Its TLS folder (mTLS on the main ports); None for patients and anonymous callers.
    tls_dir: Path | None = None
    #: An organization's Ed25519 signing key (a hospital's signs RECORD entries).
    signing_key: Ed25519PrivateKey | None = None
    #: A patient's device folder (device key, subject id, device key id, ca.pem).
    device_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: How a patient logs in again: :attr:`token` renews itself through it.
    login: Callable[[], str] | None = field(default=None, repr=False)
    _token: str = field(default="", repr=False)
    _token_at: float = field(default=0.0, repr=False)

    @property
    def token(self) -> str:
        """A patient's bearer token ("" for other parties), logged in again once it is older
        than half a token's lifetime, so that a long run never presents an expired one."""
        stale = time.monotonic() - self._token_at > _TOKEN_RENEW_AFTER.total_seconds()
        if self.login is not None and (not self._token or stale):
            self._token, self._token_at = self.login(), time.monotonic()
        return self._token

    @property
    def key_id(self) -> str:
        """The id of an organization's first signing key."""
        return f"{self.id}#1"


#: The longest pause between two polls of :func:`wait_for` (it starts at 0.1 s and grows).
MAX_POLL_INTERVAL = 1.0


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``check`` until true; AssertionError naming ``what`` after ``timeout`` seconds.

    The pause between polls grows from 0.1 s to :data:`MAX_POLL_INTERVAL`: a check is often a
    query that FerretDB v1 answers by scanning a collection (a second of its CPU for 12,000
    audit items), and polling that every 0.1 s saturates it and slows the very services
    being waited for."""
    deadline = time.monotonic() + timeout
    pause = 0.1
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 1.5, MAX_POLL_INTERVAL)


class StackParties:
    """A stack's addresses and files, and the parties registered on it.

    ``stack_root`` is the folder of a :class:`devstack.stack.LocalStack` (``pki/``,
    ``consortium/``); party folders are written under ``parties_dir``.
    """

    def __init__(self, stack_root: Path, ports: StackPorts, parties_dir: Path) -> None:
        self.stack_root = stack_root
        self.ports = ports
        self.parties_dir = parties_dir
        self.pki = Pki(stack_root / "pki")
        self.consortium = ConsortiumFiles(stack_root / "consortium")
        self.admin = Principal("admin", Role.ADMIN, ADMIN, self.pki.tls_dir(ADMIN))
        self.anonymous = Principal("anonymous", Role.ANONYMOUS)

    # --- channels -------------------------------------------------------------------------

    def target(self, process: str, *, public: bool = False) -> str:
        """``127.0.0.1:<port>`` of a process's main (or public) port."""
        return (
            f"127.0.0.1:{self.ports.public_port(process) if public else self.ports.port(process)}"
        )

    def channel(self, caller: Principal, process: str) -> grpc.Channel:
        """The channel ``caller`` uses for ``process``: mTLS with its certificate, or TLS on
        the public port without one."""
        if caller.tls_dir is not None:
            return open_channel(self.target(process), caller.tls_dir)
        return open_public_channel(self.target(process, public=True), self.pki.ca_pem)

    def identity(self, caller: Principal) -> identity_service_pb2_grpc.IdentityServiceStub:
        """An identity stub for ``caller`` (its channel lives as long as the stub)."""
        return identity_service_pb2_grpc.IdentityServiceStub(self.channel(caller, "identity"))

    @staticmethod
    def bearer(caller: Principal) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying ``caller``'s token."""
        return (("authorization", f"Bearer {caller.token}"),)

    # --- registration ---------------------------------------------------------------------

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
        folder = self.parties_dir / organization_id
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
        principal = Principal(label, role, organization_id, folder, signing_key=signing.private_key)
        principal.extra["serial"] = issued.serial_number
        return principal

    def register_patient(self, label: str, registrar: Principal) -> Principal:
        """Register a patient as ``registrar``, enroll its phone with the code, log it in."""
        return self.enroll_patient(label, self.patient_enrollment_code(label, registrar))

    def patient_enrollment_code(self, label: str, registrar: Principal) -> str:
        """Register a patient as ``registrar`` (a hospital or app): the one-time code it is
        given for the patient's device, never a key."""
        registered = self.identity(registrar).RegisterPatient(
            register_patient_request(f"ref-{label.replace(' ', '-')}"), timeout=10
        )
        return registered.enrollment_code

    def enroll_patient(self, label: str, code: str) -> Principal:
        """As the patient's phone: make the device key, enroll it with ``code`` on the public
        port, keep it in the device folder (as ``swiftchain identity enroll`` does), log in."""
        device = enroll_device(self.identity(self.anonymous), code, "phone")
        folder = self.parties_dir / device.subject_id
        files.write_device_folder(folder, device, self.pki.ca_pem)
        principal = Principal(label, Role.PATIENT, device.subject_id, device_dir=folder)
        principal.login = functools.partial(self.login, principal)
        assert principal.token, f"{label} could not log in"
        return principal

    def hospital_client(self, hospital: Principal, key_id: str | None = None) -> HospitalClient:
        """The anchoring SDK client of ``hospital`` (its first key unless ``key_id``), checking
        receipts against the stack's consortium file."""
        assert hospital.signing_key is not None, f"{hospital.label} holds no signing key"
        return HospitalClient(
            self.channel(hospital, "anchoring"),
            hospital.id,
            key_id or hospital.key_id,
            hospital.signing_key,
            self.consortium.load_tag_key(),
            consortium=self.consortium.load(),
        )

    def login(self, patient: Principal) -> str:
        """A fresh token for ``patient`` through BeginLogin/CompleteLogin on the public port."""
        assert patient.device_dir is not None
        return login_token(self.identity(self.anonymous), patient.device_dir)

    def wait_key_active(
        self, caller: Principal, organization_id: str, key_id: str, timeout: float = 60.0
    ) -> None:
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

        wait_for(f"key {key_id} to be ACTIVE", active, timeout)

    def audit_backlog(self) -> tuple[int, int]:
        """(events not yet read by the audit service, sealed leaves not yet in its log index),
        counted against the event topics' ends and a node's sealed checkpoint as of now: the
        first from the audit group's committed offsets, the second from the service's gauge of
        its log index (its metrics, not its database)."""
        bootstrap = f"127.0.0.1:{self.ports.kafka}"
        # A consumer of the audit group that never subscribes: it reads the group's committed
        # offsets without joining it.
        consumer = KafkaConsumer(
            # the broker's super user: the only principal besides audit that may see its group
            **KafkaSecurity.tls(self.pki.tls_dir(ADMIN)).client_options(),
            bootstrap_servers=bootstrap,
            client_id="backlog",
            group_id="audit",
            enable_auto_commit=False,
        )
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in EVENT_TOPICS
                for p in consumer.partitions_for_topic(topic) or ()
            ]
            ends = consumer.end_offsets(partitions)
            events = sum(max(0, end - (consumer.committed(tp) or 0)) for tp, end in ends.items())
            sealed = self.sealed_checkpoint("hospital-a").tree_size
            return events, max(0, sealed - self._audit_indexed_tree_size())
        finally:
            consumer.close(autocommit=False)

    def _audit_indexed_tree_size(self) -> int:
        """The tree size the audit service's log index is complete up to, as its Prometheus
        endpoint says (0 while it cannot say: starting or restarting)."""
        samples = self.metric_samples("audit", AUDIT_INDEXED_GAUGE)
        return int(max((value for _, value in samples), default=0))

    # --- what the processes say about themselves ------------------------------------------

    def grpc_process_names(self) -> list[str]:
        """Every gRPC process of the stack: the chain nodes, then the services."""
        return [name for name, _ in self.ports.nodes + self.ports.services]

    def metric_samples(self, process: str, family: str) -> list[tuple[dict[str, str], float]]:
        """The samples (labels, value) of metric ``family`` (its Prometheus name, e.g.
        ``swiftchain_poison_records`` for the counter ``swiftchain_poison_records_total``) on
        ``process``'s Prometheus endpoint; none while the endpoint does not answer."""
        url = f"http://127.0.0.1:{self.ports.metrics_port(process)}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
        except OSError:
            return []
        return [
            (dict(sample.labels), sample.value)
            for found in text_string_to_metric_families(text)
            if found.name == family
            for sample in found.samples
            if not sample.name.endswith("_created")
        ]

    def sealed_checkpoint(self, node: str) -> chain_service_pb2.SealedCheckpoint:
        """Chain node ``node``'s latest sealed checkpoint, asked as the admin."""
        with self.channel(self.admin, node) as channel:
            return (
                chain_service_pb2_grpc.ChainServiceStub(channel)
                .GetCheckpoint(chain_service_pb2.GetCheckpointRequest(), timeout=10)
                .checkpoint
            )

    def health(self, process: str) -> health_pb2.HealthCheckResponse.ServingStatus:
        """What ``process``'s health service says of the whole server, asked as the admin on
        its main port."""
        with self.channel(self.admin, process) as channel:
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), timeout=10)
                .status
            )

    def wait_audit_caught_up(
        self, timeout: float = 900.0, say: Callable[[str], None] = lambda line: None
    ) -> None:
        """Wait until the audit service has read every event published so far and indexed the
        log up to the sealed checkpoint of now (a burst of anchors before leaves it behind);
        ``say`` hears the backlog every 10 s."""
        deadline = time.monotonic() + timeout
        told = 0.0
        while True:
            events, leaves = self.audit_backlog()
            if events == 0 and leaves == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the audit service is still {events:,} events and {leaves:,} sealed leaves "
                    f"behind after {timeout:.0f}s"
                )
            if time.monotonic() - told >= 10:
                say(f"    the audit service is {events:,} events and {leaves:,} leaves behind…")
                told = time.monotonic()
            time.sleep(1.0)
