"""Each chain node's log on a volume of its own, and its public mirror reachable: the settings
name a folder on the node's PersistentVolumeClaim and a port that a Service, an Ingress and a
NetworkPolicy all lead to."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.node.main import NodeSettings
from k8s import make_material
from tests.unit.k8s.manifests import (
    KUSTOMIZATIONS,
    SETTINGS_PREFIX,
    SecretRef,
    environment,
    labels_match,
    named,
    of_kind,
    processes,
    rendered,
)


def _node_settings(monkeypatch: pytest.MonkeyPatch, directory: Path, name: str) -> NodeSettings:
    resources = rendered(directory)
    (process,) = [p for p in processes(resources) if p.name == name]
    for variable, value in environment(resources, process).items():
        if not isinstance(value, SecretRef) and variable.startswith(SETTINGS_PREFIX):
            monkeypatch.setenv(variable, value)
    return NodeSettings()


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
@pytest.mark.parametrize("name", make_material.NODES)
def test_the_log_is_on_the_nodes_own_volume_and_its_mirror_is_reachable(
    monkeypatch: pytest.MonkeyPatch, directory: Path, name: str
) -> None:
    settings = _node_settings(monkeypatch, directory, name)
    resources = rendered(directory)
    (process,) = [p for p in processes(resources) if p.name == name]
    # the data directory is a volume claim of the StatefulSet, not a folder of the pod
    assert settings.data_dir is not None
    mount = process.mount_for(str(settings.data_dir))
    assert mount is not None
    (volume_mount,) = [m for m in process.container["volumeMounts"] if m["mountPath"] == mount]
    claims = [t["metadata"]["name"] for t in process.workload["spec"]["volumeClaimTemplates"]]
    assert volume_mount["name"] in claims
    assert not volume_mount.get("readOnly", False)
    # the mirror: the container port, a Service on it, an Ingress to that Service, open ingress
    assert process.port("mirror") == settings.mirror_port > 0
    service = named(resources, "Service", f"{name}-mirror")
    labels = process.workload["spec"]["template"]["metadata"]["labels"]
    assert labels_match({"matchLabels": service["spec"]["selector"]}, labels)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["mirror"]
    ingress = named(resources, "Ingress", f"{name}-mirror")
    backends = [
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [f"{name}-mirror"]
    open_ports = [
        (port["port"], port.get("endPort", port["port"]))
        for policy in of_kind(resources, "NetworkPolicy")
        if labels_match(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("ingress", [])
        if "from" not in rule
        for port in rule.get("ports", [])
    ]
    assert any(low <= settings.mirror_port <= high for low, high in open_ports)
