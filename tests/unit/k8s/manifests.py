"""The rendered manifests of ``k8s/``, and what the tests ask of them: the Swiftchain processes,
their environment (with ConfigMaps resolved), their volumes, Services and selectors."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.unit.k8s.render import Resource, containers, pod_spec, render

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
BASE = K8S / "base"
#: Every directory ``kubectl apply -k`` may be given: the base and each overlay.
KUSTOMIZATIONS: tuple[Path, ...] = (BASE, *sorted(p for p in (K8S / "overlays").iterdir()))
NAMESPACE = "swiftchain"
#: The image built from the repository's Dockerfile, before an overlay's ``images:``.
IMAGE = "swiftchain-health"
SETTINGS_PREFIX = "SWIFTCHAIN_"


@functools.cache
def _rendered(directory: str) -> tuple[Resource, ...]:
    return tuple(render(Path(directory)))


def rendered(directory: Path) -> tuple[Resource, ...]:
    """The resources of a kustomization (rendered once per test run; do not modify them)."""
    return _rendered(str(directory))


def of_kind(resources: tuple[Resource, ...], kind: str) -> list[Resource]:
    """The resources of one kind."""
    return [r for r in resources if r["kind"] == kind]


def named(resources: tuple[Resource, ...], kind: str, name: str) -> Resource:
    """The one resource of ``kind`` called ``name`` (KeyError if there is none)."""
    for resource in of_kind(resources, kind):
        if resource["metadata"]["name"] == name:
            return resource
    raise KeyError(f"{kind}/{name}")


@dataclass(frozen=True)
class SecretRef:
    """An environment variable taken from a Secret's key."""

    name: str
    key: str


@dataclass(frozen=True)
class Process:
    """A container that runs a Swiftchain process (``python -m <module>``)."""

    workload: Resource
    container: dict[str, Any]

    @property
    def name(self) -> str:
        """The workload's name (= the process's Service and certificate name)."""
        name: str = self.workload["metadata"]["name"]
        return name

    @property
    def module(self) -> str:
        """The module after ``python -m``."""
        command = [*self.container.get("command", []), *self.container.get("args", [])]
        assert command[:2] == ["python", "-m"], f"{self.name}: unexpected command {command}"
        module: str = command[2]
        return module

    @property
    def pod_spec(self) -> dict[str, Any]:
        """The pod spec the container is in."""
        spec = pod_spec(self.workload)
        assert spec is not None
        return spec

    @property
    def pod_annotations(self) -> dict[str, str]:
        """The annotations of the workload's pod template."""
        annotations: dict[str, str] = self.workload["spec"]["template"]["metadata"].get(
            "annotations", {}
        )
        return annotations

    def port(self, name: str) -> int:
        """The container port called ``name``."""
        for port in self.container.get("ports", []):
            if port.get("name") == name:
                number: int = port["containerPort"]
                return number
        raise KeyError(f"{self.name} has no port {name!r}")

    def volume(self, mount_path: str) -> dict[str, Any]:
        """The volume mounted at exactly ``mount_path``."""
        for mount in self.container.get("volumeMounts", []):
            if mount["mountPath"] == mount_path:
                for volume in self.pod_spec.get("volumes", []):
                    if volume["name"] == mount["name"]:
                        return dict(volume)
        raise KeyError(f"{self.name}: nothing is mounted at {mount_path}")

    def mount_for(self, path: str) -> str | None:
        """The mount path that holds ``path`` (itself or a parent folder), if any."""
        for mount in self.container.get("volumeMounts", []):
            mount_path: str = mount["mountPath"]
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                return mount_path
        return None


def is_swiftchain_container(container: Mapping[str, Any]) -> bool:
    """Whether a container runs the Swiftchain image (under any tag or registry)."""
    image: str = container.get("image", "")
    return image.split("@")[0].rsplit(":", 1)[0].endswith(IMAGE)


def processes(resources: tuple[Resource, ...]) -> list[Process]:
    """Every container that runs the Swiftchain image."""
    return [
        Process(resource, container)
        for resource in resources
        for container in containers(resource)
        if is_swiftchain_container(container)
    ]


def environment(resources: tuple[Resource, ...], process: Process) -> dict[str, str | SecretRef]:
    """The variables a container gets: ``envFrom`` ConfigMaps (which must be among
    ``resources``) in order, then ``env`` (literal values or Secret keys)."""
    result: dict[str, str | SecretRef] = {}
    for source in process.container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, (
            f"{process.name}: only envFrom ConfigMaps are supported (their keys are checked), "
            f"got {source}"
        )
        config = named(resources, "ConfigMap", source["configMapRef"]["name"])
        result.update({key: str(value) for key, value in config.get("data", {}).items()})
    for variable in process.container.get("env", []):
        if "value" in variable:
            result[variable["name"]] = str(variable["value"])
            continue
        reference = variable["valueFrom"]
        assert set(reference) == {"secretKeyRef"}, f"{process.name}: unexpected {reference}"
        result[variable["name"]] = SecretRef(
            reference["secretKeyRef"]["name"], reference["secretKeyRef"]["key"]
        )
    return result


def labels_match(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` and ``matchExpressions``) selects ``labels``."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        if operator == "In" and (not present or labels[key] not in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def pod_templates(resources: tuple[Resource, ...]) -> Iterator[tuple[Resource, dict[str, str]]]:
    """(workload, its pods' labels) for every workload."""
    for resource in resources:
        if pod_spec(resource) is None:
            continue
        template = resource["spec"].get("template", {})
        yield resource, dict(template.get("metadata", {}).get("labels", {}))


def projected_files(volume: Mapping[str, Any]) -> dict[str, tuple[str, str, str]]:
    """What a ConfigMap, Secret or projected volume puts in its folder: file name ->
    (kind, object name, key). Every such volume must list its ``items``, so the files are
    known."""
    sources: list[tuple[str, Mapping[str, Any]]] = []
    if "secret" in volume:
        sources.append(("Secret", {"name": volume["secret"]["secretName"], **volume["secret"]}))
    elif "configMap" in volume:
        sources.append(("ConfigMap", volume["configMap"]))
    elif "projected" in volume:
        for source in volume["projected"]["sources"]:
            [(kind, spec)] = source.items()
            sources.append(({"secret": "Secret", "configMap": "ConfigMap"}[kind], spec))
    files: dict[str, tuple[str, str, str]] = {}
    for kind, spec in sources:
        assert "items" in spec, f"volume {volume['name']}: list the items, so files are known"
        for item in spec["items"]:
            files[item["path"]] = (kind, spec["name"], item["key"])
    return files
