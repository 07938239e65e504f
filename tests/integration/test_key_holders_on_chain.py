"""Keys belong to their holders on real chain nodes (issue #25, items 1 and 2): the KEY entries
the identity service makes, carrying the holders' own signatures, are sealed by nodes reading
real Kafka; the same entries signed by the registrar alone are rejected with
KEY_STATE_CONFLICT. The identity domain runs over the unit tests' in-memory stores; what is
under test is the log's verdict."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.entry import parse_entry
from chain.signed_messages import (
    device_add_message,
    enrollment_message,
    organization_key_rotate_message,
    possession_message,
)
from devstack.chain_cluster import ChainCluster
from services.identity.domain.device_keys import DeviceKeyLog
from services.identity.domain.organizations import OrganizationRegistry
from services.identity.domain.patients import PatientDirectory
from services.identity.domain.request_signatures import RequestSignature
from services.platform.tokens import TokenIssuer
from swiftchain.chain.v1 import chain_service_pb2, entry_pb2
from swiftchain.common.v1 import common_pb2
from tests.unit.identity.test_organizations import FakeStore as OrganizationStore
from tests.unit.identity.test_patients import FakeStore as PatientStore
from tests.unit.identity.test_patients import raw

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, kafka_bootstrap: str, mongo_uri: str) -> Iterator[ChainCluster]:
    cluster = ChainCluster(tmp_path, kafka_bootstrap, mongo_uri, batch_max=1)
    cluster.start("hospital-a")
    cluster.start("hospital-b")
    yield cluster
    cluster.stop_all()


def settled(cluster: ChainCluster, entry_id: str) -> chain_service_pb2.GetEntryStatusResponse:
    """The entry's status once it is sealed or rejected (30 s at most)."""
    deadline = time.monotonic() + 30
    request = chain_service_pb2.GetEntryStatusRequest(entry_id=entry_id)
    done = (common_pb2.ENTRY_STATE_SEALED, common_pb2.ENTRY_STATE_REJECTED)
    while True:
        with cluster.client("hospital-a") as stub:
            try:
                status = stub.GetEntryStatus(request, timeout=5)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            else:
                if status.state in done or time.monotonic() > deadline:
                    return status
        time.sleep(0.1)


def registrar_only(cluster: ChainCluster, raw_entry: bytes) -> bytes:
    """``raw_entry`` without its holder's signature, under a fresh entry id (so that the node's
    status of each is its own), signed again by the registrar."""
    body = parse_entry(raw_entry).body
    body.key.ClearField("holder_signature")
    body.entry_id = str(uuid.uuid4())
    return cluster.registrar.sign_entry(body.SerializeToString())


def expect_rejected_then_sealed(cluster: ChainCluster, raw_entry: bytes) -> None:
    """The registrar-only copy of ``raw_entry`` is rejected; the entry itself is sealed."""
    stripped = registrar_only(cluster, raw_entry)
    cluster.submit([stripped])
    refused = settled(cluster, parse_entry(stripped).entry_id)
    assert refused.state == common_pb2.ENTRY_STATE_REJECTED, refused
    assert refused.rejection_reason == entry_pb2.REJECTION_REASON_KEY_STATE_CONFLICT
    assert "the registrar alone cannot change" in refused.rejection_detail
    cluster.submit([raw_entry])
    sealed = settled(cluster, parse_entry(raw_entry).entry_id)
    assert sealed.state == common_pb2.ENTRY_STATE_SEALED, sealed


def test_nodes_take_key_changes_with_the_holders_signature_and_not_without(
    cluster: ChainCluster,
) -> None:
    now = datetime.now(UTC)
    organizations = OrganizationStore()
    registry = OrganizationRegistry(organizations, cluster.registrar, cluster.config.genesis_keys)
    key = Ed25519PrivateKey.generate()
    proof = key.sign(possession_message("hospital-x", raw(key)))
    registry.register(
        "hospital-x", "Hospital X", common_pb2.ORGANIZATION_ROLE_HOSPITAL, raw(key), proof, now
    )
    [registration] = organizations.entries
    cluster.submit([registration.entry])
    sealed = settled(cluster, registration.entry_id)
    assert sealed.state == common_pb2.ENTRY_STATE_SEALED, sealed
    registry.record_sequenced(registration.entry_id, sealed.leaf_index)

    # The hospital rotates its key with a request its current key signs.
    new_key = Ed25519PrivateKey.generate()
    new_proof = new_key.sign(possession_message("hospital-x", raw(new_key)))
    nonce = secrets.token_bytes(32)
    reason = entry_pb2.KEY_REASON_ROUTINE_ROTATION
    message = organization_key_rotate_message(
        "hospital-x", "hospital-x#1", raw(new_key), reason, "hospital-x#1", now, nonce
    )
    signed = RequestSignature("hospital-x#1", now, nonce, key.sign(message))
    registry.rotate_key("hospital-x", "hospital-x#1", raw(new_key), new_proof, reason, signed, now)
    expect_rejected_then_sealed(cluster, organizations.entries[-1].entry)

    # A patient's phone enrolls, then adds a tablet with a request it signs.
    patients = PatientStore()
    issuer = TokenIssuer(Ed25519PrivateKey.generate(), issuer="identity", audience="x")
    directory = PatientDirectory(
        patients, issuer, device_keys=DeviceKeyLog(cluster.registrar, secrets.token_bytes(32))
    )
    registered = directory.register("hospital-x", "mrn-1", str(uuid.uuid4()), now)
    phone = Ed25519PrivateKey.generate()
    phone_proof = phone.sign(enrollment_message(registered.code.digest, raw(phone)))
    subject_id, phone_device = directory.enroll(
        str(registered.code), raw(phone), phone_proof, "phone", now
    )
    expect_rejected_then_sealed(cluster, patients.entries[-1].entry)
    tablet = Ed25519PrivateKey.generate()
    nonce = secrets.token_bytes(32)
    add = device_add_message(raw(tablet), phone_device.key_id, now, nonce)
    directory.add_device(
        subject_id,
        raw(tablet),
        tablet.sign(possession_message(subject_id, raw(tablet))),
        "tablet",
        RequestSignature(phone_device.key_id, now, nonce, phone.sign(add)),
        now,
    )
    expect_rejected_then_sealed(cluster, patients.entries[-1].entry)
