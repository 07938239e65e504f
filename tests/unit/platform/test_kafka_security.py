"""Who may talk to Kafka, as code: the ACL table (services/platform/kafka_acls.py) grants each
principal exactly what the design says, and a client's connection options
(services/platform/kafka.py: KafkaSecurity) come from its settings and its TLS folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.errors import InvalidInputError
from services.platform.kafka import KafkaSecurity
from services.platform.kafka_acls import (
    AUDIT_GROUP,
    CHAIN_NODE_ACCESS,
    SERVICE_ACCESS,
    KafkaAccess,
    Operation,
    ResourceKind,
    Rule,
    access_of,
)
from services.platform.settings import ProcessSettings
from services.platform.tls import CA_FILE, CERT_FILE, KEY_FILE
from services.platform.topics import (
    ACCESS_EVENTS_TOPIC,
    CONSENT_EVENTS_TOPIC,
    COSIGNATURES_TOPIC,
    EVENT_TOPICS,
    IDENTITY_EVENTS_TOPIC,
    ORDERING_TOPIC,
    RECORDS_EVENTS_TOPIC,
    TOPICS,
)

EVERYONE: dict[str, KafkaAccess] = {**SERVICE_ACCESS, "hospital-a": CHAIN_NODE_ACCESS}


@pytest.fixture(autouse=True)
def _no_kafka_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings here come from the test alone (the integration fixtures set these for the
    whole session, and a full run may have them in its environment)."""
    for name in (
        "SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL",
        "SWIFTCHAIN_KAFKA_TLS_DIR",
        "SWIFTCHAIN_TLS_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def writers(topic: str) -> set[str]:
    return {name for name, access in EVERYONE.items() if access.may_write(topic)}


def readers(topic: str) -> set[str]:
    return {name for name, access in EVERYONE.items() if access.may_read(topic)}


def test_only_submitters_and_nodes_write_the_ordering_topic() -> None:
    assert writers(ORDERING_TOPIC) == {"identity", "anchoring", "consent", "hospital-a"}
    assert readers(ORDERING_TOPIC) == {"hospital-a"}


def test_only_chain_nodes_write_and_read_cosignatures() -> None:
    assert writers(COSIGNATURES_TOPIC) == readers(COSIGNATURES_TOPIC) == {"hospital-a"}


def test_each_service_writes_only_its_own_event_topics() -> None:
    assert writers(IDENTITY_EVENTS_TOPIC) == {"identity"}
    assert writers(RECORDS_EVENTS_TOPIC) == {"anchoring"}
    assert writers(CONSENT_EVENTS_TOPIC) == writers(ACCESS_EVENTS_TOPIC) == {"consent"}


def test_readers_read_only_what_they_consume() -> None:
    # every process follows identity's events for the revocation list
    assert readers(IDENTITY_EVENTS_TOPIC) == set(EVERYONE)
    for topic in (RECORDS_EVENTS_TOPIC, CONSENT_EVENTS_TOPIC, ACCESS_EVENTS_TOPIC):
        assert readers(topic) == {"audit"}, topic
    assert access_of("audit") == KafkaAccess(reads=EVENT_TOPICS, groups=(AUDIT_GROUP,))
    assert not access_of("audit").writes
    groups = {name for name, access in EVERYONE.items() if access.groups}
    assert groups == {"audit"}


def test_every_rule_names_a_topic_of_the_platform() -> None:
    names = {spec.name for spec in TOPICS}
    for access in EVERYONE.values():
        for rule in access.rules():
            assert rule.kind is ResourceKind.GROUP or rule.name in names, rule


def test_a_test_cluster_renames_the_chain_topics() -> None:
    renamed = CHAIN_NODE_ACCESS.renamed({ORDERING_TOPIC: "o.1", COSIGNATURES_TOPIC: "c.1"})
    assert set(renamed.rules()) == {
        Rule(ResourceKind.TOPIC, "o.1", Operation.WRITE),
        Rule(ResourceKind.TOPIC, "c.1", Operation.WRITE),
        Rule(ResourceKind.TOPIC, "o.1", Operation.READ),
        Rule(ResourceKind.TOPIC, "c.1", Operation.READ),
        Rule(ResourceKind.TOPIC, IDENTITY_EVENTS_TOPIC, Operation.READ),
    }


def test_an_unknown_process_has_no_access() -> None:
    with pytest.raises(KeyError):
        access_of("mallory")


# ------------------------------------------------------------------ connection options


def _folder(tmp_path: Path) -> Path:
    for name in (CA_FILE, CERT_FILE, KEY_FILE):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    return tmp_path


def test_ssl_presents_the_folders_certificate(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    settings = ProcessSettings(kafka_security_protocol="SSL", kafka_tls_dir=folder)
    assert KafkaSecurity.from_settings(settings).client_options() == {
        "security_protocol": "SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(folder / CA_FILE),
        "ssl_certfile": str(folder / CERT_FILE),
        "ssl_keyfile": str(folder / KEY_FILE),
    }


def test_the_kafka_folder_defaults_to_the_process_tls_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    settings = ProcessSettings(kafka_security_protocol="SSL", tls_dir=folder)
    assert KafkaSecurity.from_settings(settings) == KafkaSecurity.tls(folder)


def test_plaintext_unless_asked(tmp_path: Path) -> None:
    settings = ProcessSettings(tls_dir=_folder(tmp_path))
    assert KafkaSecurity.from_settings(settings).client_options() == {
        "security_protocol": "PLAINTEXT"
    }


def test_ssl_without_a_folder_or_a_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="SWIFTCHAIN_KAFKA_TLS_DIR or SWIFTCHAIN_TLS_DIR"):
        KafkaSecurity.from_settings(ProcessSettings(kafka_security_protocol="SSL"))
    (tmp_path / CA_FILE).write_text("x")
    with pytest.raises(InvalidInputError, match=f"Kafka TLS file {tmp_path / CERT_FILE}"):
        KafkaSecurity.tls(tmp_path).client_options()
