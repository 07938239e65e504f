"""The broker knows who is talking (tests/integration/conftest.py starts it as ``make up`` does):
TLS with a client certificate from the platform CA is the only way in, the principal is the
certificate's subject, and each principal may read and write exactly what
services/platform/kafka_acls.py says — every principal, topic, read and write, allowed and
refused. A refusal is an error the client sees (TopicAuthorizationFailed, a failed future),
never a hang."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.admin import KafkaAdminClient

from devstack.kafka import KafkaBroker
from devstack.pki import ADMIN, Pki
from services.platform.ca import PlatformCA, create_platform_ca
from services.platform.kafka import KafkaSecurity, kafka_client_options
from services.platform.kafka_acls import AUDIT_GROUP, SERVICE_ACCESS, KafkaAccess, access_of
from services.platform.tls import CA_FILE, CERT_FILE, KEY_FILE
from services.platform.topics import TOPICS
from tests.integration.conftest import CHAIN_NODES

pytestmark = pytest.mark.integration

#: Every principal of the platform and its access: the four services and a chain node.
PRINCIPALS: dict[str, KafkaAccess] = {
    **SERVICE_ACCESS,
    CHAIN_NODES[0]: access_of(CHAIN_NODES[0], chain_node=True),
}
TOPIC_NAMES = [spec.name for spec in TOPICS]
#: Errors that mean "refused": the broker's answer, as kafka-python raises it.
REFUSED = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
)
#: Longest wait for an answer; a refusal comes within a round trip or two.
ANSWER_WITHIN = 30.0


@pytest.fixture(scope="module", autouse=True)
def every_topic_has_a_record(kafka_bootstrap: str) -> None:
    """A record on every topic, written as the super user, so an allowed read has one to get."""
    producer = KafkaProducer(
        **kafka_client_options(), bootstrap_servers=kafka_bootstrap, acks="all"
    )
    try:
        for topic in TOPIC_NAMES:
            producer.send(topic, b"acl-matrix-marker").get(timeout=ANSWER_WITHIN)
    finally:
        producer.close()


def _producer(bootstrap: str, folder: Path, *, idempotent: bool = False) -> Any:
    return KafkaProducer(
        **KafkaSecurity.tls(folder).client_options(),
        bootstrap_servers=bootstrap,
        client_id=f"acl-test-{folder.name}",
        acks="all",
        enable_idempotence=idempotent,
        max_block_ms=int(ANSWER_WITHIN * 1000),
        # a refusal is final; an idempotent producer keeps its own retries, as the processes do
        **({} if idempotent else {"retries": 0}),
    )


def _write(bootstrap: str, folder: Path, topic: str) -> BaseException | None:
    """None if the write was acknowledged, else the error the client got."""
    producer = _producer(bootstrap, folder)
    try:
        producer.send(topic, b"acl-matrix-write").get(timeout=ANSWER_WITHIN)
        return None
    except REFUSED as error:
        refused: BaseException = error
        return refused
    finally:
        producer.close(timeout=5)


def _describe(bootstrap: str, folder: Path, topic: str) -> BaseException | None:
    """The broker's answer to "describe ``topic``" as an error, or None: a principal that may
    neither read nor write a topic does not even learn of it (TOPIC_AUTHORIZATION_FAILED)."""
    admin = KafkaAdminClient(
        **KafkaSecurity.tls(folder).client_options(),
        bootstrap_servers=bootstrap,
        client_id=f"acl-test-{folder.name}",
        request_timeout_ms=int(ANSWER_WITHIN * 1000),
    )
    try:
        [described] = admin.describe_topics([topic])
    finally:
        admin.close()
    code = described.get("error_code", 0)
    if code == 0:
        return None
    refused: BaseException = kafka_errors.for_code(code)(topic)
    return refused


def _read(
    bootstrap: str, folder: Path, topic: str, group: str | None = None
) -> BaseException | None:
    """None if a record of ``topic`` was read (from the beginning, in ``group`` if given),
    else the error the client got: the topic hidden from it, or the fetch refused."""
    hidden = _describe(bootstrap, folder, topic)
    if hidden is not None:
        return hidden
    consumer = KafkaConsumer(
        **KafkaSecurity.tls(folder).client_options(),
        bootstrap_servers=bootstrap,
        client_id=f"acl-test-{folder.name}",
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(ANSWER_WITHIN * 1000),
    )
    try:
        if group is None:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.subscribe([topic])
        deadline = time.monotonic() + ANSWER_WITHIN
        while time.monotonic() < deadline:
            if any(consumer.poll(timeout_ms=500).values()):
                return None
        raise AssertionError(f"{folder.name}: no answer about {topic} within {ANSWER_WITHIN}s")
    except REFUSED as error:
        refused: BaseException = error
        return refused
    finally:
        consumer.close()


CASES = [
    pytest.param(name, topic, operation, id=f"{name}-{operation}-{topic}")
    for name in PRINCIPALS
    for topic in TOPIC_NAMES
    for operation in ("write", "read")
]


@pytest.mark.parametrize(("name", "topic", "operation"), CASES)
def test_each_principal_may_do_exactly_what_the_table_allows(
    kafka_bootstrap: str, kafka_pki: Pki, name: str, topic: str, operation: str
) -> None:
    access = PRINCIPALS[name]
    folder = kafka_pki.tls_dir(name)
    if operation == "write":
        allowed, error = access.may_write(topic), _write(kafka_bootstrap, folder, topic)
    else:
        allowed, error = access.may_read(topic), _read(kafka_bootstrap, folder, topic)
    if allowed:
        assert error is None, f"{name} should {operation} {topic}, got {error!r}"
    else:
        assert error is not None, f"{name} must not {operation} {topic}, but did"


def test_the_audit_reads_in_its_own_group_only(kafka_bootstrap: str, kafka_pki: Pki) -> None:
    folder = kafka_pki.tls_dir("audit")
    topic = "access.events.v1"
    assert _read(kafka_bootstrap, folder, topic, group=AUDIT_GROUP) is None
    refused = _read(kafka_bootstrap, folder, topic, group=f"not-audit-{uuid.uuid4().hex[:6]}")
    assert isinstance(refused, kafka_errors.GroupAuthorizationFailedError)
    # and nobody else reads in the audit's group
    other = _read(kafka_bootstrap, kafka_pki.tls_dir("consent"), "identity.events.v1", AUDIT_GROUP)
    assert isinstance(other, kafka_errors.GroupAuthorizationFailedError)


def test_an_idempotent_producer_writes_where_it_may(kafka_bootstrap: str, kafka_pki: Pki) -> None:
    """The processes' producers are idempotent (acks=all): Write on a topic is all they need."""
    producer = _producer(kafka_bootstrap, kafka_pki.tls_dir("anchoring"), idempotent=True)
    try:
        producer.send("records.events.v1", b"idempotent").get(timeout=ANSWER_WITHIN)
        with pytest.raises(REFUSED):
            producer.send("chain.cosignatures.v1", b"forged").get(timeout=ANSWER_WITHIN)
    finally:
        producer.close(timeout=5)


# ------------------------------------------------------------------ who gets in at all


#: An ApiVersions request: size 10, api key 18, version 0, correlation id 1, no client id. A
#: client the broker refuses never gets its answer.
API_VERSIONS_REQUEST = bytes.fromhex("0000000a0012000000000001ffff")


def _handshake(broker: KafkaBroker, context: ssl.SSLContext) -> None:
    """Open a TLS connection to the broker and read: the broker's refusal of the client's
    certificate arrives as an alert at the first read (TLS 1.3) or in the handshake."""
    address = (broker.host, broker.port)
    with (
        socket.create_connection(address, timeout=ANSWER_WITHIN) as raw,
        context.wrap_socket(raw, server_hostname=broker.host) as tls,
    ):
        tls.sendall(API_VERSIONS_REQUEST)
        if not tls.recv(4):
            raise ConnectionResetError("the broker closed the connection")


def _context(kafka_pki: Pki, folder: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(kafka_pki.tls_dir(ADMIN) / CA_FILE))
    if folder is not None:
        context.load_cert_chain(folder / CERT_FILE, folder / KEY_FILE)
    return context


def test_a_client_with_a_platform_certificate_gets_an_answer(
    kafka_broker: KafkaBroker, kafka_pki: Pki
) -> None:
    _handshake(kafka_broker, _context(kafka_pki, kafka_pki.tls_dir("audit")))


def test_a_client_without_a_certificate_is_refused(
    kafka_broker: KafkaBroker, kafka_pki: Pki
) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _handshake(kafka_broker, _context(kafka_pki, None))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A client certificate with the subject of a real service, from another CA."""
    now = datetime.now(UTC)
    key_pem, cert_pem = create_platform_ca("not the platform CA", now)
    folder = tmp_path_factory.mktemp("stranger")
    (folder / "ca-key.pem").write_bytes(key_pem)
    (folder / "ca.pem").write_bytes(cert_pem)
    key, issued = PlatformCA(key_pem, cert_pem).issue_with_new_key(
        common_name="anchoring", unit="service", now=now, lifetime=timedelta(days=1)
    )
    (folder / KEY_FILE).write_bytes(key)
    (folder / CERT_FILE).write_text(issued.pem)
    yield folder


def test_a_certificate_from_another_ca_is_refused(
    kafka_broker: KafkaBroker, kafka_pki: Pki, stranger: Path
) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _handshake(kafka_broker, _context(kafka_pki, stranger))


def test_a_plaintext_client_gets_nothing(kafka_broker: KafkaBroker) -> None:
    """A request in the clear, as a client without TLS sends it: the broker takes it for a bad
    TLS handshake and answers with a TLS alert (record type 21), or nothing, never Kafka."""
    address = (kafka_broker.host, kafka_broker.port)
    with socket.create_connection(address, timeout=ANSWER_WITHIN) as raw:
        raw.sendall(API_VERSIONS_REQUEST)
        try:
            answer = raw.recv(4)
        except ConnectionResetError:
            answer = b""
    assert answer[:1] in (b"", b"\x15"), answer
