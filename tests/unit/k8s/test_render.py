"""render.py: the kustomize subset the other tests read the manifests with."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.k8s.manifests import KUSTOMIZATIONS, rendered
from tests.unit.k8s.render import (
    KustomizeError,
    merge_patch,
    render,
    resource_id,
    split_image,
    strategic_merge,
)

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "a", "labels": {"tier": "x"}},
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "swiftchain-health",
                        "ports": [{"containerPort": 1, "name": "one"}],
                        "args": ["--a"],
                    },
                    {"name": "side", "image": "busybox:1.36"},
                ]
            }
        }
    },
}


def test_strategic_merge_merges_named_lists_and_replaces_the_others() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "ports": [{"containerPort": 2}],
                            "args": ["--b"],
                            "image": None,
                        }
                    ]
                }
            }
        }
    }
    merged = strategic_merge(DEPLOYMENT, patch)
    server, side = merged["spec"]["template"]["spec"]["containers"]
    assert server == {
        "name": "server",
        "ports": [{"containerPort": 1, "name": "one"}, {"containerPort": 2}],
        "args": ["--b"],
    }
    assert side == {"name": "side", "image": "busybox:1.36"}
    assert DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["args"] == ["--a"]  # type: ignore[index]


def test_service_ports_merge_by_port() -> None:
    service = {"spec": {"ports": [{"port": 1, "name": "a"}, {"port": 2, "name": "b"}]}}
    merged = strategic_merge(service, {"spec": {"ports": [{"port": 2, "name": "c"}]}})
    assert merged["spec"]["ports"] == [{"port": 1, "name": "a"}, {"port": 2, "name": "c"}]


def test_merge_patch_replaces_lists_and_deletes_nulls() -> None:
    target = {"spec": {"volumes": [{"id": 0, "size": "1Gi"}], "keep": 1, "drop": 2}}
    merged = merge_patch(target, {"spec": {"volumes": [{"id": 0}], "drop": None}})
    assert merged == {"spec": {"volumes": [{"id": 0}], "keep": 1}}


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("swiftchain-health", ("swiftchain-health", "", "")),
        ("registry:5000/team/app:1.2", ("registry:5000/team/app", "1.2", "")),
        ("app@sha256:abc", ("app", "", "sha256:abc")),
    ],
)
def test_split_image(image: str, parts: tuple[str, str, str]) -> None:
    assert split_image(image) == parts


def _write(folder: Path, name: str, content: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(content))


def test_patches_targets_and_images(tmp_path: Path) -> None:
    _write(tmp_path / "base", "kustomization.yaml", {"resources": ["app.yaml"]})
    _write(tmp_path / "base", "app.yaml", DEPLOYMENT)
    _write(
        tmp_path / "overlay",
        "kustomization.yaml",
        {
            "resources": ["../base"],
            "images": [{"name": "swiftchain-health", "newName": "reg/app", "newTag": "7"}],
            "patches": [
                {
                    "target": {"kind": "Deployment", "labelSelector": "tier=x"},
                    "patch": yaml.safe_dump(
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "metadata": {"name": "ignored"},
                            "spec": {"replicas": 2},
                        }
                    ),
                }
            ],
        },
    )
    [deployment] = render(tmp_path / "overlay")
    assert deployment["spec"]["replicas"] == 2
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert images == ["reg/app:7", "busybox:1.36"]


def test_unsupported_fields_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "kustomization.yaml", {"resources": [], "namePrefix": "x-"})
    with pytest.raises(KustomizeError, match="namePrefix"):
        render(tmp_path)


def test_a_patch_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "app.yaml", DEPLOYMENT)
    _write(
        tmp_path,
        "kustomization.yaml",
        {
            "resources": ["app.yaml"],
            "patches": [{"patch": yaml.safe_dump({**DEPLOYMENT, "metadata": {"name": "b"}})}],
        },
    )
    with pytest.raises(KustomizeError, match="matches no resource"):
        render(tmp_path)


@pytest.mark.skipif(shutil.which("kustomize") is None, reason="kustomize is not on PATH")
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_the_same_as_kustomize_build(directory: Path) -> None:
    kustomize = shutil.which("kustomize")
    assert kustomize is not None
    output = subprocess.run(
        [kustomize, "build", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    theirs = {resource_id(r): r for r in yaml.safe_load_all(output) if r}
    ours = {resource_id(r): r for r in rendered(directory)}
    assert sorted(theirs) == sorted(ours)
    for key, resource in ours.items():
        assert theirs[key] == resource, key
