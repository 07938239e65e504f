"""Render a kustomization as ``kustomize build`` does, for the subset ``k8s/`` uses.

The tests cannot count on ``kubectl`` or ``kustomize`` being installed, so this reads the
kustomization files itself. It supports ``resources`` (files and directories), ``patches``
(strategic merge patches, from a ``path`` or inline, with or without a ``target``) and
``images`` (``newName``, ``newTag``, ``digest``), and refuses any other kustomization field, so
that using one without teaching it here fails loudly instead of rendering something else.

Strategic merge patches merge the lists named in :data:`MERGE_KEYS` item by item (as the
Kubernetes schemas declare) and replace every other list; custom resources are patched as JSON
merge patches (RFC 7386: lists replaced whole). ``$patch`` directives are not supported.
``test_render.py`` compares the result with the real ``kustomize build`` when one is on PATH.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "resources", "patches", "images"})
#: API groups of the built-in kinds the manifests use; anything else is a custom resource.
BUILTIN_GROUPS = frozenset({"", "apps", "batch", "policy", "networking.k8s.io"})
#: Lists merged item by item in a strategic merge patch: field name -> merge key (``envFrom``,
#: ``volumeClaimTemplates`` and other lists have none: they are replaced). ``ports`` is keyed
#: by ``containerPort`` in a container and by ``port`` in a Service.
MERGE_KEYS: Mapping[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}
_WORKLOAD_POD_SPECS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is wrong."""


def load_documents(path: Path) -> list[Resource]:
    """Every non-empty YAML document of ``path``; each must be a Kubernetes object."""
    documents: list[Resource] = []
    for document in yaml.safe_load_all(path.read_text()):
        if document is None:
            continue
        if not isinstance(document, dict) or not {"apiVersion", "kind", "metadata"} <= set(
            document
        ):
            raise KustomizeError(f"{path}: expected Kubernetes objects, got {document!r:.80}")
        documents.append(document)
    return documents


def resource_id(resource: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name): what identifies a resource in a kustomization."""
    metadata = resource["metadata"]
    return (resource["kind"], metadata.get("namespace", ""), metadata["name"])


def api_group(resource: Mapping[str, Any]) -> str:
    """The API group of a resource ("" for the core group)."""
    api_version: str = resource["apiVersion"]
    return api_version.rpartition("/")[0]


def is_builtin(resource: Mapping[str, Any]) -> bool:
    """Whether a resource is of a built-in kind (strategic merge) rather than a custom one."""
    return api_group(resource) in BUILTIN_GROUPS


def render(directory: Path) -> list[Resource]:
    """The resources ``kustomize build directory`` would print, in file order."""
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: fields {sorted(unknown)} are not supported by render.py")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        resources.extend(render(target) if target.is_dir() else load_documents(target))
    seen: set[tuple[str, str, str]] = set()
    for resource in resources:
        key = resource_id(resource)
        if key in seen:
            raise KustomizeError(f"{path}: {key} is defined twice")
        seen.add(key)
    for patch in kustomization.get("patches", []):
        _apply_patch(resources, directory, patch)
    for image in kustomization.get("images", []):
        for resource in resources:
            _set_images(resource, image)
    return resources


def _apply_patch(resources: list[Resource], directory: Path, entry: Mapping[str, Any]) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"patch fields {sorted(unknown)} are not supported")
    if "path" in entry:
        documents = load_documents(directory / entry["path"])
    else:
        documents = [yaml.safe_load(entry["patch"])]
    if len(documents) != 1:
        raise KustomizeError(f"expected one patch document in {entry}")
    [patch] = documents
    if "target" in entry:
        targets = [r for r in resources if _matches(r, entry["target"])]
    else:
        kind, namespace, name = resource_id(patch)
        targets = [
            r
            for r in resources
            if r["kind"] == kind
            and r["metadata"]["name"] == name
            and (not namespace or r["metadata"].get("namespace", "") == namespace)
        ]
    if not targets:
        raise KustomizeError(f"patch {entry} matches no resource")
    for resource in targets:
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
        metadata = {k: v for k, v in patch["metadata"].items() if k not in ("name", "namespace")}
        if metadata:
            body["metadata"] = metadata
        merged = (
            strategic_merge(resource, body) if is_builtin(resource) else merge_patch(resource, body)
        )
        resource.clear()
        resource.update(merged)


def _matches(resource: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace", "labelSelector"}
    if unknown:
        raise KustomizeError(f"patch target fields {sorted(unknown)} are not supported")
    group, _, version = resource["apiVersion"].rpartition("/")
    metadata = resource["metadata"]
    checks = [
        ("group", group),
        ("version", version),
        ("kind", resource["kind"]),
        ("namespace", metadata.get("namespace", "")),
    ]
    if any(key in target and target[key] != value for key, value in checks):
        return False
    # kustomize reads a target's name as an anchored regular expression
    if "name" in target and not re.fullmatch(target["name"], metadata["name"]):
        return False
    if "labelSelector" in target:
        return _selects(target["labelSelector"], metadata.get("labels", {}))
    return True


def _selects(selector: str, labels: Mapping[str, str]) -> bool:
    for term in selector.split(","):
        term = term.strip()
        if " in " in term or " notin " in term or "(" in term:
            raise KustomizeError(f"set-based label selector {term!r} is not supported")
        if "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (part.strip() for part in term.split("=", 1))
            if labels.get(key) != value.lstrip("="):
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merged recursively, ``None`` deletes, all else replaced."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any, field: str = "", parent: str = "") -> Any:
    """A strategic merge patch over built-in kinds, for the lists in :data:`MERGE_KEYS`
    (``parent`` tells a container's ``ports`` from a Service's)."""
    if isinstance(patch, dict):
        if "$patch" in patch or any(key.startswith("$") for key in patch):
            raise KustomizeError("$patch directives are not supported")
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge(result.get(key), value, key, field)
        return result
    if isinstance(patch, list):
        merge_key = _merge_key(field, parent)
        if not merge_key or not isinstance(target, list):
            return copy.deepcopy(patch)
        result_list = copy.deepcopy(target)
        for item in patch:
            match = next(
                (i for i, old in enumerate(result_list) if old.get(merge_key) == item[merge_key]),
                None,
            )
            if match is None:
                result_list.append(copy.deepcopy(item))
            else:
                result_list[match] = strategic_merge(result_list[match], item, f"{field}[]", field)
        return result_list
    return copy.deepcopy(patch)


def _merge_key(field: str, parent: str) -> str:
    if field == "ports":
        return "containerPort" if parent in ("containers[]", "initContainers[]") else "port"
    return MERGE_KEYS.get(field, "")


def pod_spec(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (Deployment, StatefulSet, Job, ...), else None."""
    path = _WORKLOAD_POD_SPECS.get(resource["kind"])
    if path is None or not is_builtin(resource):
        return None
    node: Any = resource
    for key in path:
        node = node.get(key, {})
    return node if isinstance(node, dict) else None


def containers(resource: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container (init containers first) of a workload; nothing for other kinds."""
    spec = pod_spec(resource)
    if spec is None:
        return
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; tag and digest may be empty."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest


def _set_images(resource: Resource, image: Mapping[str, Any]) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"image fields {sorted(unknown)} are not supported")
    for container in containers(resource):
        name, tag, digest = split_image(container["image"])
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{name}@{image['digest']}"
            continue
        tag = image.get("newTag", tag)
        reference = f"{name}:{tag}" if tag else name
        container["image"] = f"{reference}@{digest}" if digest else reference
