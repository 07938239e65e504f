"""The identity stores for organizations, certificates and patients (with their enrollment
codes), and the outbox relay, on the real FerretDB and Kafka."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaConsumer, TopicPartition

from chain.consortium import GenesisKey
from chain.enrollment_codes import parse_enrollment_code
from chain.entry import EntrySigner, parse_entry
from chain.errors import ConflictError, PermissionDeniedError, UnauthenticatedError
from chain.signed_messages import (
    device_add_message,
    enrollment_message,
    possession_message,
    recovery_message,
)
from services.identity.domain.certificates import CertificateRecord
from services.identity.domain.device_keys import DeviceKeyLog
from services.identity.domain.organizations import OrganizationRegistry
from services.identity.domain.patients import (
    Challenge,
    Device,
    Patient,
    PatientDirectory,
    Registration,
)
from services.identity.domain.recovery import RecoveryDesk
from services.identity.domain.request_signatures import RequestSignature
from services.identity.store import ALIAS
from services.identity.store.certificates import CertificateDoc, CertificateStore
from services.identity.store.organizations import OrganizationDoc, OrganizationStore
from services.identity.store.patients import PatientDoc, PatientStore
from services.platform import mongo
from services.platform.events import decode, envelope
from services.platform.kafka import kafka_client_options, make_producer
from services.platform.outbox import OutboxRelay
from services.platform.tokens import TokenIssuer
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from swiftchain.identity.v1 import identity_pb2

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def database(mongo_uri: str) -> Iterator[str]:
    name = f"identity_test_{uuid.uuid4().hex[:8]}"
    mongo.connect(mongo_uri, name, alias=ALIAS)
    yield name
    mongo.disconnect(ALIAS)


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def registry(store: OrganizationStore) -> OrganizationRegistry:
    registrar = Ed25519PrivateKey.generate()
    genesis = GenesisKey("registrar", "identity", ("KEY",), raw(registrar))
    return OrganizationRegistry(store, EntrySigner("registrar", registrar), [genesis])


def patient_directory(store: PatientStore) -> PatientDirectory:
    token_key = Ed25519PrivateKey.generate()
    return PatientDirectory(
        store, TokenIssuer(token_key, issuer="swiftchain-identity", audience="swiftchain")
    )


def enroll(directory: PatientDirectory, code: str, device: Ed25519PrivateKey) -> Device:
    digest = parse_enrollment_code(code).digest
    proof = device.sign(enrollment_message(digest, raw(device)))
    return directory.enroll(code, raw(device), proof, "phone", NOW)[1]


def register(registry: OrganizationRegistry, name: str) -> str:
    key = Ed25519PrivateKey.generate()
    proof = key.sign(possession_message(name, raw(key)))
    _, entry_id = registry.register(
        name, name.title(), common_pb2.ORGANIZATION_ROLE_HOSPITAL, raw(key), proof, NOW
    )
    return entry_id


def test_an_organization_round_trips_with_its_entry_and_events_in_one_document(
    database: str,
) -> None:
    store = OrganizationStore()
    entry_id = register(registry(store), "hospital-a")
    stored = store.get("hospital-a")
    assert stored is not None and stored.keys[0].register_entry_id == entry_id
    assert stored.create_time == NOW
    doc = OrganizationDoc.objects(id="hospital-a").first()
    assert doc.outbox_pending and len(doc.outbox) == 2
    [(organization_id, entries)] = store.entries_to_submit()
    assert organization_id == "hospital-a" and len(entries) == 1
    store.mark_submitted("hospital-a", entries)
    assert store.entries_to_submit() == []
    assert store.entries_awaiting_log() == [entry_id]
    found = store.find_by_entry(entry_id)
    assert found is not None and found.organization_id == "hospital-a"


def test_a_second_create_of_the_same_id_is_refused_and_a_stale_update_conflicts(
    database: str,
) -> None:
    store = OrganizationStore()
    organizations = registry(store)
    entry_id = register(organizations, "hospital-a")
    first = store.get("hospital-a")
    assert first is not None and not store.create(first, [], [])
    stale = store.get("hospital-a")
    assert organizations.record_sequenced(entry_id, 3)
    assert stale is not None
    with pytest.raises(ConflictError, match="changed by another request"):
        store.update(stale, [], [])
    current = store.get("hospital-a")
    assert current is not None
    assert current.keys[0].status == identity_pb2.KEY_STATUS_ACTIVE
    assert store.entries_awaiting_log() == []


def test_request_nonces_are_stored_with_their_owner_and_refuse_a_replay(database: str) -> None:
    organizations = OrganizationStore()
    register(registry(organizations), "hospital-a")
    organization = organizations.get("hospital-a")
    assert organization is not None and organization.request_nonces == {}
    organization.request_nonces = {b"\x01" * 32: NOW}
    organizations.update(organization, [], [])
    stored = organizations.get("hospital-a")
    assert stored is not None and stored.request_nonces == {b"\x01" * 32: NOW}

    patients = PatientStore()
    directory = patient_directory(patients)
    phone = Ed25519PrivateKey.generate()
    registered = directory.register("hospital-a", "mrn-1", str(uuid.uuid4()), NOW)
    patient = registered.patient
    signer = enroll(directory, str(registered.code), phone).key_id
    tablet = Ed25519PrivateKey.generate()
    nonce = b"\x02" * 32
    message = device_add_message(raw(tablet), signer, NOW, nonce)
    signed = RequestSignature(signer, NOW, nonce, phone.sign(message))
    proof = tablet.sign(possession_message(patient.subject_id, raw(tablet)))
    directory.add_device(patient.subject_id, raw(tablet), proof, "tablet", signed, NOW)
    stored_patient = patients.get(patient.subject_id)
    assert stored_patient is not None and stored_patient.request_nonces == {nonce: NOW}
    with pytest.raises(PermissionDeniedError, match="used already"):
        directory.add_device(patient.subject_id, raw(tablet), proof, "tablet", signed, NOW)


def test_a_patients_device_key_entries_wait_with_the_patient_until_kafka_has_them(
    database: str,
) -> None:
    patients = PatientStore()
    registrar = EntrySigner("registrar", Ed25519PrivateKey.generate())
    directory = PatientDirectory(
        patients,
        TokenIssuer(Ed25519PrivateKey.generate(), issuer="swiftchain-identity", audience="x"),
        device_keys=DeviceKeyLog(registrar, bytes(32)),
    )
    registered = directory.register("hospital-a", "mrn-2", str(uuid.uuid4()), NOW)
    assert patients.entries_to_submit() == []
    device = enroll(directory, str(registered.code), Ed25519PrivateKey.generate())
    [(subject_id, entries)] = patients.entries_to_submit()
    assert subject_id == registered.patient.subject_id and len(entries) == 1
    assert parse_entry(entries[0]).body.key.key_id == device.key_id
    doc = PatientDoc.objects(id=subject_id).first()
    assert [r.entry_id for r in doc.key_records] == [parse_entry(entries[0]).entry_id]
    patients.mark_submitted(subject_id, entries)
    assert patients.entries_to_submit() == []


def test_a_recovery_round_trips_with_its_patient(database: str) -> None:
    patients = PatientStore()
    directory = patient_directory(patients)
    registered = directory.register("hospital-a", "mrn-3", str(uuid.uuid4()), NOW)
    enroll(directory, str(registered.code), Ed25519PrivateKey.generate())
    subject_id = registered.patient.subject_id
    desk = RecoveryDesk(patients)
    code, _ = desk.issue_code(subject_id, "hospital-a", NOW)
    key = Ed25519PrivateKey.generate()
    proof = key.sign(recovery_message(code.digest, raw(key), NOW))
    _, recovery = desk.begin(str(code), raw(key), proof, "new phone", NOW, NOW)
    stored = patients.get(subject_id)
    assert stored is not None and stored.recoveries == [recovery]
    assert stored.recovery_code is None
    device = desk.complete(subject_id, recovery.recovery_id, NOW + timedelta(days=1))
    stored = patients.get(subject_id)
    assert stored is not None and stored.recoveries[0].complete_time == NOW + timedelta(days=1)
    assert stored.device(device.key_id).public_key == raw(key)


def test_listing_filters_by_role_and_pages_by_id(database: str) -> None:
    store = OrganizationStore()
    organizations = registry(store)
    for name in ("hospital-c", "hospital-a", "hospital-b"):
        register(organizations, name)
    organizations.register(
        "regulator", "Regulator", common_pb2.ORGANIZATION_ROLE_REGULATOR, b"", b"", NOW
    )
    page, token = organizations.list(common_pb2.ORGANIZATION_ROLE_HOSPITAL, 2, "")
    assert [o.organization_id for o in page] == ["hospital-a", "hospital-b"]
    rest, end = organizations.list(common_pb2.ORGANIZATION_ROLE_HOSPITAL, 2, token)
    assert [o.organization_id for o in rest] == ["hospital-c"] and end == ""


def test_a_certificate_is_revoked_once(database: str) -> None:
    store = CertificateStore()
    record = CertificateRecord(
        serial_hex="1f2e",
        organization_id="hospital-a",
        certificate_pem="-----BEGIN CERTIFICATE-----\n...",
        chain_pem="",
        fingerprint_sha256=bytes(32),
        not_before=NOW,
        not_after=NOW + timedelta(days=30),
    )
    store.insert(record, [])
    assert store.mark_revoked("1f2e", NOW, 1, [])
    assert not store.mark_revoked("1f2e", NOW + timedelta(hours=1), 3, [])
    stored = store.get("1f2e")
    assert stored is not None and (stored.revoke_time, stored.revoke_reason) == (NOW, 1)


def test_the_relay_publishes_the_outbox_to_kafka_and_empties_it(
    database: str, kafka_bootstrap: str
) -> None:
    topic = "identity.events.v1"
    consumer = KafkaConsumer(
        **kafka_client_options(), bootstrap_servers=kafka_bootstrap, enable_auto_commit=False
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    start = consumer.end_offsets(partitions)
    register(registry(OrganizationStore()), "hospital-a")
    producer = make_producer(kafka_bootstrap, "outbox-test")
    try:
        relay = OutboxRelay(producer, topic, [OrganizationDoc, CertificateDoc])
        assert relay.publish_pending() == 2
        assert relay.publish_pending() == 0
    finally:
        producer.close()
    assert not OrganizationDoc.objects(id="hospital-a").first().outbox_pending
    consumer.assign(partitions)
    for partition, offset in start.items():
        consumer.seek(partition, offset)
    seen: list[events_pb2.EventEnvelope] = []
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            seen.extend(decode(r.value) for r in records)
    consumer.close()
    assert [e.type for e in seen] == [
        "swiftchain.events.v1.OrganizationRegistered",
        "swiftchain.events.v1.KeyRegistered",
    ]
    assert {e.subject for e in seen} == {"hospital-a"}


def test_a_challenge_is_used_up_once_even_by_concurrent_answers(database: str) -> None:
    store = PatientStore()
    challenge = Challenge(
        str(uuid.uuid4()), "pt-" + "A" * 22, "dev-1", b"\x01" * 32, NOW + timedelta(minutes=1)
    )
    store.add_challenge(challenge)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda _: store.consume_challenge(challenge.challenge_id), range(8))
        )
    assert [r for r in results if r is not None] == [challenge]
    assert store.sweep_challenges(NOW + timedelta(minutes=2)) == 1


def test_an_enrollment_code_is_kept_as_its_digest_and_enrolls_one_device_under_a_race(
    database: str,
) -> None:
    store = PatientStore()
    directory = patient_directory(store)
    registered = directory.register("hospital-a", "mrn-9", str(uuid.uuid4()), NOW)
    code = str(registered.code)
    subject_id = registered.patient.subject_id
    assert store.enrollment_subject(registered.code.digest) == subject_id
    stored = store.get(subject_id)
    assert stored is not None and stored.enrollment is not None
    assert stored.enrollment.code_digest == registered.code.digest
    assert stored.enrollment.expire_time == registered.code_expire_time
    # Eight devices (one the registrar's, say) race with the one code: one enrolls.
    devices = [Ed25519PrivateKey.generate() for _ in range(8)]

    def attempt(device: Ed25519PrivateKey) -> Device | str:
        try:
            return enroll(directory, code, device)
        except (ConflictError, UnauthenticatedError) as error:
            return type(error).__name__

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, devices))
    enrolled = [o for o in outcomes if isinstance(o, Device)]
    assert len(enrolled) == 1, outcomes
    final: Patient | None = store.get(subject_id)
    assert final is not None and final.devices == enrolled and final.enrollment is None
    assert store.sweep_enrollment_codes(registered.code_expire_time) == 0
    assert store.sweep_enrollment_codes(registered.code_expire_time + timedelta(seconds=1)) == 1
    assert store.enrollment_subject(registered.code.digest) is None


def test_concurrent_registrations_of_one_reference_claim_one_subject(database: str) -> None:
    store = PatientStore()
    claims = [Registration("ref\x00hospital-a\x00mrn-1", f"pt-{i:022d}") for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(store.claim_registration, claims))
    assert len({r.subject_id for r in results}) == 1


def test_updates_made_while_the_relay_empties_the_outbox_are_all_kept_and_published(
    database: str, kafka_bootstrap: str
) -> None:
    """An organization updated again and again while the outbox relay removes what it published
    from the same document. FerretDB v1 runs an update as a read, then a write of the whole
    document: without the document lock the relay's removal could write back an older view,
    losing a change (the next update then conflicts) or its event."""
    store = OrganizationStore()
    register(registry(store), "hospital-a")
    producer = make_producer(kafka_bootstrap, "outbox-race-test")
    relay = OutboxRelay(producer, "identity.events.v1", [OrganizationDoc])
    published: list[int] = []
    updating_done = threading.Event()

    def relay_until_done() -> None:
        while not updating_done.is_set():
            published.append(relay.publish_pending())

    relaying = threading.Thread(target=relay_until_done)
    relaying.start()
    try:
        for index in range(100):
            organization = store.get("hospital-a")
            assert organization is not None
            organization.display_name = f"Hospital A {index}"
            renamed = envelope(
                events_pb2.OrganizationRegistered(
                    organization_id="hospital-a", display_name=organization.display_name
                ),
                producer="identity",
                subject="hospital-a",
                now=NOW,
            )
            store.update(organization, [], [renamed])
    finally:
        updating_done.set()
        relaying.join()
    published.append(relay.publish_pending())
    producer.close()
    final = store.get("hospital-a")
    assert final is not None and final.display_name == "Hospital A 99"
    assert sum(published) == 2 + 100  # the registration's two events, then one per update
    assert not OrganizationDoc.objects(id="hospital-a").first().outbox_pending
