"""Every rendered manifest against the Kubernetes API schemas (``kubernetes-validate``, strict:
unknown fields are errors), and the rules the manifests keep: namespace, no secret values,
pod security, resources, selectors that select, PodDisruptionBudgets, NetworkPolicies."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from k8s import make_material
from tests.unit.k8s.manifests import (
    K8S,
    KUSTOMIZATIONS,
    NAMESPACE,
    labels_match,
    named,
    of_kind,
    pod_templates,
    processes,
    rendered,
)
from tests.unit.k8s.render import Resource, containers, is_builtin, pod_spec, resource_id

#: The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
#: Kinds that are cluster-scoped.
CLUSTER_SCOPED = frozenset({"Namespace"})


def _builtin_resources() -> list[Any]:
    """Every resource of a built-in kind; custom ones are for test_custom_resources.py."""
    return [
        pytest.param(directory, resource, id=f"{directory.name}-{'/'.join(resource_id(resource))}")
        for directory in KUSTOMIZATIONS
        for resource in rendered(directory)
        if is_builtin(resource)
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("directory", "resource"), _builtin_resources())
def test_builtin_resources_validate_against_the_kubernetes_schemas(
    directory: Path, resource: Resource, version: str
) -> None:
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        pytest.fail(f"{resource_id(resource)} against {version}: {path}: {error.message}")


def test_the_validator_rejects_what_the_api_server_would() -> None:
    deployment = copy.deepcopy(named(rendered(KUSTOMIZATIONS[0]), "Deployment", "identity"))
    deployment["spec"]["template"]["spec"]["containers"][0]["prots"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    deployment = copy.deepcopy(named(rendered(KUSTOMIZATIONS[0]), "Deployment", "identity"))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_everything_is_in_the_namespace(directory: Path) -> None:
    resources = rendered(directory)
    assert named(resources, "Namespace", NAMESPACE)
    for resource in resources:
        if resource["kind"] not in CLUSTER_SCOPED:
            assert resource["metadata"].get("namespace") == NAMESPACE, resource_id(resource)


PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|PRIVATE\+KEY\+")
CREDENTIALS_IN_URI = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def test_no_secret_values_in_git() -> None:
    for path in K8S.rglob("*.yaml"):
        text = path.read_text()
        assert not PRIVATE_KEY.search(text), path
        assert not CREDENTIALS_IN_URI.search(text), path
    for directory in KUSTOMIZATIONS:
        resources = rendered(directory)
        # Secrets are created by an operator and referenced by name only
        assert of_kind(resources, "Secret") == []
        for config in of_kind(resources, "ConfigMap"):
            for key in config.get("data", {}):
                assert not re.search(r"PASSWORD|SECRET|TOKEN_KEY|PRIVATE", key.upper()), key


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_pods_meet_the_restricted_pod_security_standard(directory: Path) -> None:
    for workload, _labels in pod_templates(rendered(directory)):
        spec = pod_spec(workload)
        assert spec is not None
        name = "/".join(resource_id(workload))
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would set <SERVICE>_* variables; for a Service named swiftchain-...
        # those are SWIFTCHAIN_* settings.
        assert spec["enableServiceLinks"] is False, name
        for container in containers(workload):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, (name, kind)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_the_image_runs_as_the_user_the_pods_ask_for(directory: Path) -> None:
    dockerfile = (K8S.parent / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\d+)(?::\d+)?$", dockerfile, re.MULTILINE)
    for process in processes(rendered(directory)):
        assert str(process.pod_spec["securityContext"]["runAsUser"]) == user


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_processes_are_probed_and_stop_gracefully(directory: Path) -> None:
    for process in processes(rendered(directory)):
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = process.container[kind]
            assert probe["exec"]["command"][0] == "grpc-health-probe", (process.name, kind)
            assert probe["timeoutSeconds"] >= 4, "above the probe's own 3 s timeouts"
        # the settings' default shutdown grace is 10 s; the kubelet must wait longer
        assert process.pod_spec["terminationGracePeriodSeconds"] > 10


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_services_select_pods_and_name_their_ports(directory: Path) -> None:
    resources = rendered(directory)
    templates = list(pod_templates(resources))
    for service in of_kind(resources, "Service"):
        selector = service["spec"]["selector"]
        selected = [
            workload
            for workload, labels in templates
            if labels_match({"matchLabels": selector}, labels)
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        port_names = {
            port.get("name")
            for workload in selected
            for c in containers(workload)
            for port in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert target in port_names, (service["metadata"]["name"], target)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_disruption_budgets(directory: Path) -> None:
    resources = rendered(directory)
    templates = list(pod_templates(resources))
    for budget in of_kind(resources, "PodDisruptionBudget"):
        selected = [
            workload
            for workload, labels in templates
            if labels_match(budget["spec"]["selector"], labels)
        ]
        assert selected, f"PodDisruptionBudget {budget['metadata']['name']} selects no pod"
    # the chain nodes keep a quorum through a drain
    nodes = named(resources, "PodDisruptionBudget", "chain-nodes")
    selected = [w for w, labels in templates if labels_match(nodes["spec"]["selector"], labels)]
    assert sorted(w["metadata"]["name"] for w in selected) == sorted(make_material.NODES)
    assert nodes["spec"]["minAvailable"] == make_material.QUORUM
    mongo = named(resources, "PodDisruptionBudget", "mongo")
    replicas = named(resources, "StatefulSet", "mongo")["spec"]["replicas"]
    assert mongo["spec"]["minAvailable"] == replicas // 2 + 1  # a majority
    for service in make_material.SERVICES:
        assert named(resources, "PodDisruptionBudget", service)["spec"]["maxUnavailable"] == 1


def _ports(rule: dict[str, Any]) -> list[tuple[int, int]]:
    return [(p["port"], p.get("endPort", p["port"])) for p in rule.get("ports", [])]


def _covers(ranges: list[tuple[int, int]], port: int) -> bool:
    return any(low <= port <= high for low, high in ranges)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_network_policies_deny_by_default_and_allow_what_the_design_needs(
    directory: Path,
) -> None:
    resources = rendered(directory)
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(resources, "NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def rules_for(labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
        key = "ingress" if direction == "Ingress" else "egress"
        return [
            rule
            for spec in policies.values()
            if direction in spec["policyTypes"] and labels_match(spec["podSelector"], labels)
            for rule in spec.get(key, [])
        ]

    templates = dict(
        (workload["metadata"]["name"], labels) for workload, labels in pod_templates(resources)
    )
    kafka_port = named(resources, "Kafka", "swiftchain")["spec"]["kafka"]["listeners"][0]["port"]
    mongo_labels = templates["mongo"]
    for process in processes(resources):
        labels = templates[process.name]
        # the gRPC ports are open to every caller (authenticated by mTLS or tokens)
        open_ports = [r for r in rules_for(labels, "Ingress") if "from" not in r]
        for port_name in ("grpc", "grpc-public"):
            assert any(_covers(_ports(r), process.port(port_name)) for r in open_ports)
        egress = rules_for(labels, "Egress")

        def reaches(peer: dict[str, str], port: int, rules: list[dict[str, Any]] = egress) -> bool:
            return any(
                _covers(_ports(rule), port)
                and any(labels_match(to.get("podSelector", {}), peer) for to in rule["to"])
                for rule in rules
                if "to" in rule
            )

        broker = {"strimzi.io/cluster": "swiftchain", "strimzi.io/kind": "Kafka"}
        assert reaches(broker, kafka_port), process.name
        assert reaches(mongo_labels, 27017), process.name
        if process.module.startswith("services."):
            node = next(p for p in processes(resources) if p.name == "hospital-a")
            assert reaches(templates["hospital-a"], node.port("grpc")), process.name
        else:
            assert not any(
                reaches(templates[other.name], other.port("grpc")) for other in processes(resources)
            ), f"{process.name}: chain nodes call no gRPC port"
    # MongoDB admits the processes and the init job, nothing else
    mongo_from = [
        peer["podSelector"]
        for rule in rules_for(mongo_labels, "Ingress")
        for peer in rule.get("from", [])
    ]
    assert mongo_from, "mongo admits nobody"
    assert not any(rule.get("from") is None for rule in rules_for(mongo_labels, "Ingress"))
    for name in (*make_material.PROCESSES, "mongo-init"):
        labels = templates[name]
        assert any(labels_match(selector, labels) for selector in mongo_from), name
