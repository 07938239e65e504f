"""Entry point of the identity service: ``python -m services.identity``."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import Field

from chain.entry import EntrySigner
from chain.holder_signatures import RECOVERY_WAIT_FLOOR
from services.identity.domain.certificates import CertificateAuthority
from services.identity.domain.device_keys import DeviceKeyLog
from services.identity.domain.organizations import OrganizationRegistry
from services.identity.domain.patients import (
    ENROLLMENT_CODE_LIFETIME,
    PatientDirectory,
    PractitionerDirectory,
)
from services.identity.domain.recovery import DEFAULT_WAITING_PERIOD, RecoveryDesk
from services.identity.log_sync import KeyLogSync
from services.identity.servicer import IdentityServicer
from services.identity.store import ALIAS
from services.identity.store.certificates import CertificateDoc, CertificateStore
from services.identity.store.organizations import OrganizationDoc, OrganizationStore
from services.identity.store.patients import OUTBOX_DOCUMENTS, PatientStore
from services.platform import mongo, poison
from services.platform.ca import PlatformCA
from services.platform.consortium_files import REGISTRAR_KEY_ID, ConsortiumFiles, load_registrar_key
from services.platform.kafka import make_producer
from services.platform.outbox import OutboxRelay
from services.platform.poison import MongoPoisonStore
from services.platform.revocations import RevocationList
from services.platform.server import ServiceRegistration, configure_process, serve
from services.platform.settings import IDENTITY_PORT, ProcessSettings
from services.platform.threads import start_supervised
from services.platform.tls import TOKEN_SIGNING_FILE, open_channel
from services.platform.tokens import load_token_issuer
from services.platform.topics import IDENTITY_EVENTS_TOPIC, ORDERING_TOPIC
from swiftchain.identity.v1 import identity_service_pb2_grpc

_log = logging.getLogger(__name__)


class IdentitySettings(ProcessSettings):
    """Settings of the identity service (``SWIFTCHAIN_*``)."""

    process_name: str = "identity"
    port: int = IDENTITY_PORT
    database: str = "identity"
    #: The consortium's files: the public config and the registrar's private key.
    consortium_dir: Path = Path(".stack/run/consortium")
    #: The platform CA's folder (``ca.pem`` and ``ca-key.pem``), to issue client certificates.
    ca_dir: Path = Path(".stack/run/pki/ca")
    #: A chain node to ask where KEY entries landed (``HOST:PORT``, mTLS).
    chain_node: str = "127.0.0.1:50061"
    ordering_topic: str = ORDERING_TOPIC
    events_topic: str = IDENTITY_EVENTS_TOPIC
    #: How long a patient's enrollment code is good for (``SWIFTCHAIN_ENROLLMENT_CODE_LIFETIME``,
    #: seconds or ISO 8601, e.g. ``PT30M``); at most a day, since the code is the credential
    #: that makes a device the patient's.
    enrollment_code_lifetime: timedelta = Field(
        default=ENROLLMENT_CODE_LIFETIME, gt=timedelta(0), le=timedelta(days=1)
    )
    #: How long a patient's recovery waits for its devices to cancel it
    #: (``SWIFTCHAIN_RECOVERY_WAITING_PERIOD``); an hour at least, the least the log accepts.
    recovery_waiting_period: timedelta = Field(
        default=DEFAULT_WAITING_PERIOD, ge=RECOVERY_WAIT_FLOOR, le=timedelta(days=30)
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _device_key_log(files: ConsortiumFiles, registrar: EntrySigner) -> DeviceKeyLog | None:
    """What puts patients' device keys on the log, under their subject tags: it needs the
    consortium tag key. Without it, devices are still checked here but not logged, which is
    said once at start, since consent signatures then verify only through this service."""
    if not files.tag_key_path.exists():
        _log.warning(
            "no consortium tag key at %s: patients' device keys are not put on the log",
            files.tag_key_path,
        )
        return None
    return DeviceKeyLog(registrar, files.load_tag_key())


def main() -> None:
    """Run the identity service until SIGTERM."""
    settings = IdentitySettings()
    configure_process(settings)
    files = ConsortiumFiles(settings.consortium_dir)
    consortium = files.load()
    mongo.connect(settings.mongo_uri, settings.database, alias=ALIAS)
    poison.use_store(MongoPoisonStore(ALIAS))
    producer = make_producer(settings.kafka_bootstrap, settings.process_name)

    organization_store = OrganizationStore()
    registrar = EntrySigner(REGISTRAR_KEY_ID, load_registrar_key(files))
    registry = OrganizationRegistry(organization_store, registrar, consortium.genesis_keys)
    certificates = CertificateAuthority(
        CertificateStore(),
        PlatformCA.load(settings.ca_dir),
        registry,
    )
    if settings.tls_dir is None:
        raise SystemExit("identity needs SWIFTCHAIN_TLS_DIR (its certificate and token key)")
    tokens = load_token_issuer(
        settings.tls_dir / TOKEN_SIGNING_FILE,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
    )
    patient_store = PatientStore()
    device_keys = _device_key_log(files, registrar)
    patients = PatientDirectory(
        patient_store,
        tokens,
        enrollment_code_lifetime=settings.enrollment_code_lifetime,
        device_keys=device_keys,
    )
    recovery = RecoveryDesk(
        patient_store,
        waiting_period=settings.recovery_waiting_period,
        code_lifetime=settings.enrollment_code_lifetime,
        device_keys=device_keys,
    )
    practitioners = PractitionerDirectory(patient_store)

    relay = OutboxRelay(
        producer, settings.events_topic, [OrganizationDoc, CertificateDoc, *OUTBOX_DOCUMENTS]
    )
    chain_channel = open_channel(settings.chain_node, settings.tls_dir)
    log_sync = KeyLogSync(
        organization_store,
        registry,
        producer,
        chain_channel,
        settings.ordering_topic,
        patients=patient_store,
    )

    def on_write() -> None:
        relay.wake()
        log_sync.wake()

    stop = threading.Event()

    def sweep_challenges() -> None:
        while not stop.wait(60):
            try:
                patient_store.sweep_challenges(_now())
                patient_store.sweep_enrollment_codes(_now())
            except Exception:  # the database away: expired records wait for the next sweep
                _log.warning(
                    "sweeping login challenges and enrollment codes failed; will retry",
                    exc_info=True,
                )

    workers = [
        start_supervised("outbox", relay.run, stop),
        start_supervised("key-log-sync", log_sync.run, stop),
        start_supervised("challenge-sweep", sweep_challenges),
    ]
    revocations = RevocationList()
    servicer = IdentityServicer(
        organizations=registry,
        certificates=certificates,
        patients=patients,
        practitioners=practitioners,
        consortium=consortium,
        clock=_now,
        on_write=on_write,
        revocations=revocations,
        recovery=recovery,
    )

    def on_stop() -> None:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
        chain_channel.close()
        producer.close(timeout=10)

    serve(
        settings,
        [
            ServiceRegistration(
                "swiftchain.identity.v1.IdentityService",
                lambda s: identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(
                    servicer, s
                ),
            )
        ],
        on_stop=on_stop,
        revocations=revocations,
    )
