"""The Strimzi resources (no schema for them is at hand): the fields the platform relies on.

The topics must be exactly those of services/platform/topics.py (DESIGN §3.2, §5) — partitions,
retention, timestamps — with three replicas and min.insync.replicas 2; the cluster must have the
brokers, the listener and the broker settings that the processes' ``SWIFTCHAIN_KAFKA_BOOTSTRAP`` and
idempotent ``acks=all`` producers assume; the listener takes only client certificates from the
platform CA, and each process is a ``KafkaUser`` with exactly the ACLs of
services/platform/kafka_acls.py, whose certificate the process mounts as its Kafka TLS folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack.pki import kafka_principal
from devstack.versions import KAFKA_VERSION
from k8s import make_material
from services.platform import tls
from services.platform.kafka_acls import access_of
from services.platform.topics import TOPICS, min_insync_replicas_for
from tests.unit.k8s.manifests import (
    KUSTOMIZATIONS,
    NAMESPACE,
    environment,
    labels_match,
    named,
    of_kind,
    processes,
    projected_files,
    rendered,
)
from tests.unit.k8s.render import Resource

STRIMZI_API = "kafka.strimzi.io/v1"
CLUSTER = "swiftchain"
#: DESIGN §3.2: replication 3, min.insync.replicas 2 in production.
REPLICAS = 3

pytestmark = pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)


def _kafka(directory: Path) -> Resource:
    [kafka] = of_kind(rendered(directory), "Kafka")
    return kafka


def _brokers(directory: Path) -> int:
    return sum(
        pool["spec"]["replicas"]
        for pool in of_kind(rendered(directory), "KafkaNodePool")
        if "broker" in pool["spec"]["roles"]
    )


def test_every_strimzi_resource_uses_the_v1_api_and_names_the_cluster(directory: Path) -> None:
    resources = rendered(directory)
    strimzi = [r for r in resources if r["apiVersion"].startswith("kafka.strimzi.io/")]
    assert {r["kind"] for r in strimzi} == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    for resource in strimzi:
        assert resource["apiVersion"] == STRIMZI_API, resource["metadata"]["name"]
        assert resource["metadata"]["namespace"] == NAMESPACE
        if resource["kind"] != "Kafka":
            assert resource["metadata"]["labels"]["strimzi.io/cluster"] == CLUSTER
    assert _kafka(directory)["metadata"]["name"] == CLUSTER


def test_the_topics_are_those_of_the_design(directory: Path) -> None:
    topics = {
        topic["spec"].get("topicName", topic["metadata"]["name"]): topic["spec"]
        for topic in of_kind(rendered(directory), "KafkaTopic")
    }
    assert set(topics) == {spec.name for spec in TOPICS}
    for spec in TOPICS:
        topic = topics[spec.name]
        assert topic["partitions"] == spec.partitions, spec.name
        assert topic["replicas"] == REPLICAS, spec.name
        config = {key: str(value) for key, value in topic["config"].items()}
        expected = {
            **spec.config,
            "min.insync.replicas": str(min_insync_replicas_for(REPLICAS)),
        }
        assert config == expected, spec.name
    # one total order; chain history and events kept for ever, nothing compacted away
    assert topics["chain.ordering.v1"]["partitions"] == 1
    assert topics["chain.ordering.v1"]["config"]["message.timestamp.type"] == "LogAppendTime"
    for name, topic in topics.items():
        assert str(topic["config"]["retention.ms"]) == "-1", name
        assert topic["config"].get("cleanup.policy", "delete") == "delete", name


def test_there_are_enough_brokers_for_the_replicas(directory: Path) -> None:
    assert _brokers(directory) >= REPLICAS
    for pool in of_kind(rendered(directory), "KafkaNodePool"):
        assert set(pool["spec"]["roles"]) <= {"broker", "controller"}
    controllers = sum(
        pool["spec"]["replicas"]
        for pool in of_kind(rendered(directory), "KafkaNodePool")
        if "controller" in pool["spec"]["roles"]
    )
    assert controllers % 2 == 1, "KRaft needs an odd number of controllers for a majority"
    for pool in of_kind(rendered(directory), "KafkaNodePool"):
        storage = pool["spec"]["storage"]
        volumes = storage["volumes"] if storage["type"] == "jbod" else [storage]
        assert all(v["type"] == "persistent-claim" for v in volumes), "the log must survive"
        assert set(pool["spec"]["resources"]) == {"requests", "limits"}


def test_the_cluster_serves_what_the_clients_expect(directory: Path) -> None:
    resources = rendered(directory)
    kafka = _kafka(directory)["spec"]
    assert kafka["kafka"]["version"] == KAFKA_VERSION, "the version the local stack tests"
    [listener] = kafka["kafka"]["listeners"]
    # TLS with a client certificate, nothing else
    assert listener["type"] == "internal" and listener["tls"] is True
    assert listener["authentication"] == {"type": "tls"}
    common = named(resources, "ConfigMap", "swiftchain-common")["data"]
    bootstrap = common["SWIFTCHAIN_KAFKA_BOOTSTRAP"]
    assert bootstrap == f"{CLUSTER}-kafka-bootstrap.{NAMESPACE}.svc:{listener['port']}"
    assert common["SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    config = kafka["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["default.replication.factor"] == REPLICAS
    assert config["min.insync.replicas"] == min_insync_replicas_for(REPLICAS)
    assert config["offsets.topic.replication.factor"] == REPLICAS
    assert config["transaction.state.log.replication.factor"] == REPLICAS
    assert "topicOperator" in kafka["entityOperator"], "KafkaTopic resources need it"
    # only Swiftchain's processes may use the listener
    peers = listener["networkPolicyPeers"]
    for component in ("service", "chain-node"):
        labels = {"app.kubernetes.io/component": component}
        assert any(labels_match(peer["podSelector"], labels) for peer in peers)
    assert not any(labels_match(peer["podSelector"], {}) for peer in peers)


def test_every_principal_gets_only_what_an_acl_allows(
    directory: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    kafka = _kafka(directory)["spec"]
    assert kafka["kafka"]["config"]["allow.everyone.if.no.acl.found"] is False
    assert "userOperator" in kafka["entityOperator"], "KafkaUser resources need it"
    # the users' certificates come from the platform CA (make_material writes it as the
    # clients CA), and the only super user is the consortium admin's certificate
    assert kafka["clientsCa"]["generateCertificateAuthority"] is False
    material = make_material.make_material(tmp_path_factory.mktemp("material"))
    admin = kafka_principal((material.admin_tls_dir / tls.CERT_FILE).read_bytes())
    authorization = kafka["kafka"]["authorization"]
    assert authorization["type"] == "simple"
    assert ["User:" + user for user in authorization["superUsers"]] == [admin]


def _granted(user: Any) -> set[tuple[str, str, str]]:
    granted: set[tuple[str, str, str]] = set()
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        assert resource.get("patternType", "literal") == "literal", resource
        assert acl.get("type", "allow") == "allow" and acl.get("host", "*") == "*"
        granted |= {(resource["type"], resource["name"], op) for op in acl["operations"]}
    return granted


def test_each_process_is_a_kafka_user_with_the_acls_of_the_table(directory: Path) -> None:
    users = {u["metadata"]["name"]: u for u in of_kind(rendered(directory), "KafkaUser")}
    assert sorted(users) == sorted(make_material.PROCESSES)
    for name, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == CLUSTER
        assert user["spec"]["authentication"] == {"type": "tls"}
        assert user["spec"]["authorization"]["type"] == "simple"
        access = access_of(name, chain_node=name in make_material.NODES)
        expected = {(r.kind.value, r.name, r.operation.value) for r in access.rules()}
        # Describe comes with every resource: clients look up a topic's partitions with it
        expected |= {(kind, resource, "Describe") for kind, resource, _ in expected}
        assert _granted(user) == expected, name


def test_each_process_presents_its_kafka_users_certificate(directory: Path) -> None:
    resources = rendered(directory)
    for process in processes(resources):
        env = environment(resources, process)
        folder = env["SWIFTCHAIN_KAFKA_TLS_DIR"]
        assert isinstance(folder, str) and folder != env["SWIFTCHAIN_TLS_DIR"]
        files = projected_files(process.volume(folder))
        assert files == {
            tls.CA_FILE: ("Secret", f"{CLUSTER}-cluster-ca-cert", "ca.crt"),
            tls.CERT_FILE: ("Secret", process.name, "user.crt"),
            tls.KEY_FILE: ("Secret", process.name, "user.key"),
        }, process.name
