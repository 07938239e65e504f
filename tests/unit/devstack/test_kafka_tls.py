"""The local broker's configuration with TLS (devstack/kafka.py: BrokerTls), FerretDB's listener
on a private socket (devstack/ferretdb.py), and who the broker takes a certificate for
(devstack/pki.py: kafka_principal). Nothing is started here: the integration tests do that."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from devstack.ferretdb import MAX_SOCKET_PATH, FerretDB, socket_uri
from devstack.kafka import STANDARD_AUTHORIZER, BrokerTls, KafkaBroker, platform_grants
from devstack.pki import ADMIN, KAFKA_BROKER, KAFKA_BROKER_UNIT, Pki, ensure_pki, kafka_principal
from devstack.toolchain import BootstrapError
from services.platform.kafka_acls import CHAIN_NODE_ACCESS, SERVICE_ACCESS
from services.platform.tls import CERT_FILE


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(
        tmp_path_factory.mktemp("pki"),
        [("anchoring", "service"), ("hospital-a", "chain-node"), (KAFKA_BROKER, KAFKA_BROKER_UNIT)],
    )


def test_the_principal_is_the_certificates_subject(pki: Pki) -> None:
    cert = (pki.tls_dir("anchoring") / CERT_FILE).read_bytes()
    assert kafka_principal(cert) == "User:CN=anchoring,OU=service,O=Swiftchain Health"


def test_every_listener_speaks_tls_and_only_acls_allow(pki: Pki, tmp_path: Path) -> None:
    broker = KafkaBroker(
        tmp_path, port=9, controller_port=10, tls=BrokerTls.of(pki, KAFKA_BROKER, ADMIN)
    )
    props = broker.properties()
    assert props["listeners"] == "SSL://127.0.0.1:9,CONTROLLER://127.0.0.1:10"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SSL,SSL:SSL"
    assert props["inter.broker.listener.name"] == "SSL"
    assert props["ssl.client.auth"] == "required"
    assert props["authorizer.class.name"] == STANDARD_AUTHORIZER
    assert props["allow.everyone.if.no.acl.found"] == "false"
    broker_cert = (pki.tls_dir(KAFKA_BROKER) / CERT_FILE).read_bytes()
    admin_cert = (pki.tls_dir(ADMIN) / CERT_FILE).read_bytes()
    assert props["super.users"].split(";") == [
        kafka_principal(broker_cert),
        kafka_principal(admin_cert),
    ]
    assert "PLAINTEXT" not in props["listeners"] + props["advertised.listeners"]


def test_the_keystore_and_the_config_are_private(pki: Pki, tmp_path: Path) -> None:
    broker = KafkaBroker(
        tmp_path, port=9, controller_port=10, tls=BrokerTls.of(pki, "kafka", ADMIN)
    )
    config = broker.write_config()
    for path in (config, broker.keystore_path, tmp_path / "keystore.password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    password = (tmp_path / "keystore.password").read_text().encode()
    key, certificate, _ = pkcs12.load_key_and_certificates(
        broker.keystore_path.read_bytes(), password
    )
    assert key is not None and certificate is not None
    assert certificate.subject.rfc4514_string().startswith("CN=kafka,")


def test_without_tls_the_broker_is_plaintext(tmp_path: Path) -> None:
    props = KafkaBroker(tmp_path, port=9, controller_port=10).properties()
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert "authorizer.class.name" not in props


def test_grants_are_by_principal(pki: Pki) -> None:
    grants = platform_grants(
        pki, services=["anchoring"], nodes=["hospital-a"], topics={"chain.ordering.v1": "o.1"}
    )
    anchoring = kafka_principal((pki.tls_dir("anchoring") / CERT_FILE).read_bytes())
    node = kafka_principal((pki.tls_dir("hospital-a") / CERT_FILE).read_bytes())
    assert grants[anchoring] == SERVICE_ACCESS["anchoring"].renamed({"chain.ordering.v1": "o.1"})
    assert grants[node] == CHAIN_NODE_ACCESS.renamed({"chain.ordering.v1": "o.1"})
    assert set(grants) == {anchoring, node}


def test_ferretdb_on_a_socket_listens_on_no_tcp_address(tmp_path: Path) -> None:
    socket = tmp_path / "ferretdb.sock"
    server = FerretDB(tmp_path, unix_socket=socket, binary=tmp_path / "ferretdb")
    argv = server.argv()
    assert "--listen-addr=" in argv and f"--listen-unix={socket}" in argv
    assert server.uri == socket_uri(socket) == "mongodb://" + str(socket).replace("/", "%2F") + "/"


def test_a_socket_path_too_long_for_linux_is_refused_with_a_reason(tmp_path: Path) -> None:
    long = tmp_path / ("x" * MAX_SOCKET_PATH) / "ferretdb.sock"
    with pytest.raises(BootstrapError, match="Unix socket path of at most 107 bytes"):
        FerretDB(tmp_path, unix_socket=long)
