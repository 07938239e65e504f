"""The Dockerfile, checked without a container engine: what it copies reaches the build
context, it installs with the pinned constraints, runs unprivileged and holds the probe the
manifests call."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import PurePosixPath

from tests.unit.k8s.manifests import KUSTOMIZATIONS, REPO, processes, rendered

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def _copies() -> list[tuple[list[str], str, bool]]:
    """(sources, destination, from another stage) of every COPY."""
    result = []
    for line in INSTRUCTIONS:
        if not line.startswith("COPY "):
            continue
        words = line.split()[1:]
        from_stage = any(word.startswith("--from=") for word in words)
        words = [word for word in words if not word.startswith("--")]
        result.append((words[:-1], words[-1], from_stage))
    return result


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(prefix, pattern)
            or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
            or fnmatch.fnmatch(PurePosixPath(prefix).name, pattern.removeprefix("**/"))
            for prefix in prefixes
        ):
            ignored = not negated
    return ignored


def test_the_final_image_is_python_3_11_slim_and_unprivileged() -> None:
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in INSTRUCTIONS
    stages = [line for line in INSTRUCTIONS if line.startswith("FROM ")]
    assert stages[-1] == "FROM ${PYTHON_IMAGE}"
    users = [line for line in INSTRUCTIONS if line.startswith("USER ")]
    assert users and re.fullmatch(r"USER [1-9]\d*(:[1-9]\d*)?", users[-1]), (
        "a numeric non-root user"
    )


def test_it_installs_the_package_with_the_pinned_constraints() -> None:
    installs = [line for line in INSTRUCTIONS if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
    assert any(line.rstrip().endswith(" .") or " . " in line for line in installs)


def test_it_copies_every_package_and_the_generated_code() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    find = project["tool"]["setuptools"]["packages"]["find"]
    copied = {
        source.rstrip("/") for sources, _, stage in _copies() if not stage for source in sources
    }
    for include in find["include"]:
        package = include.rstrip("*")
        homes = [where for where in find["where"] if (REPO / where / package).is_dir()]
        assert homes, f"no folder for package {package}"
        for where in homes:
            top = package if where == "." else where
            assert top in copied, f"the Dockerfile does not COPY {top} (package {package})"
    assert "protos" in copied
    assert {"pyproject.toml", "constraints.txt", "README.md"} <= copied  # README: the metadata


def test_what_it_copies_is_in_the_build_context() -> None:
    for sources, _, from_stage in _copies():
        if from_stage:
            continue
        for source in sources:
            assert (REPO / source).exists(), source
            assert not _ignored(source), f".dockerignore leaves out {source}"
    for private in (".venv", ".stack", ".git", "tests", "k8s/base"):
        assert _ignored(private), f".dockerignore should leave out {private}"
    assert _ignored("services/__pycache__/x.pyc")


def test_the_health_probe_the_manifests_run_is_on_the_path() -> None:
    destinations = {
        PurePosixPath(destination).name: destination
        for _, destination, from_stage in _copies()
        if from_stage
    }
    probes = {
        process.container[kind]["exec"]["command"][0]
        for directory in KUSTOMIZATIONS
        for process in processes(rendered(directory))
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    for probe in probes:
        assert probe in destinations, f"the image has no {probe}"
        assert str(PurePosixPath(destinations[probe]).parent) == "/usr/local/bin"
    assert re.search(r"grpc-health-probe@\$\{GRPC_HEALTH_PROBE_VERSION\}", DOCKERFILE)
    assert re.search(r"^ARG GRPC_HEALTH_PROBE_VERSION=v\d+\.\d+\.\d+$", DOCKERFILE, re.MULTILINE)
