"""A missing or too old toolchain is reported in one line, never with a stack trace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack.paths import REPO_ROOT
from devstack.toolchain import ToolchainMissing, find_go, find_java, find_maven


def _fake(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def _java(folder: Path, version: str) -> Path:
    return _fake(folder, "java", f"echo 'openjdk version \"{version}\" 2024-01-16' >&2")


def _one_line(exc: pytest.ExceptionInfo[ToolchainMissing]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("swiftchain: ")
    return message


def test_java_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolchainMissing) as exc:
        find_java(env={"PATH": str(tmp_path)})
    message = _one_line(exc)
    assert "Java 17+ not found" in message
    assert "looked for $JAVA_HOME/bin/java and java on PATH" in message
    assert "apt-get install openjdk-17-jre-headless" in message


def test_java_home_without_java_is_named(tmp_path: Path) -> None:
    with pytest.raises(ToolchainMissing) as exc:
        find_java(env={"PATH": str(tmp_path / "bin"), "JAVA_HOME": str(tmp_path / "jdk")})
    assert f"looked for {tmp_path / 'jdk' / 'bin' / 'java'} ($JAVA_HOME)" in _one_line(exc)


def test_java_too_old(tmp_path: Path) -> None:
    java = _java(tmp_path / "bin", "11.0.22")
    with pytest.raises(ToolchainMissing) as exc:
        find_java(env={"PATH": str(java.parent)})
    assert f"found Java 11 at {java}" in _one_line(exc)


def test_java_8_version_scheme_is_understood(tmp_path: Path) -> None:
    java = _java(tmp_path / "bin", "1.8.0_392")
    with pytest.raises(ToolchainMissing) as exc:
        find_java(env={"PATH": str(java.parent)})
    assert "found Java 8 at" in _one_line(exc)


def test_java_on_path(tmp_path: Path) -> None:
    java = _java(tmp_path / "bin", "17.0.15")
    tool = find_java(env={"PATH": str(java.parent)})
    assert (tool.path, tool.version) == (java, "17.0.15")


def test_java_home_wins_over_path(tmp_path: Path) -> None:
    _java(tmp_path / "bin", "17.0.15")
    home_java = _java(tmp_path / "jdk21" / "bin", "21.0.3")
    tool = find_java(env={"PATH": str(tmp_path / "bin"), "JAVA_HOME": str(tmp_path / "jdk21")})
    assert (tool.path, tool.version) == (home_java, "21.0.3")


def test_old_java_home_falls_back_to_path(tmp_path: Path) -> None:
    _java(tmp_path / "jdk11" / "bin", "11.0.22")
    path_java = _java(tmp_path / "bin", "17.0.15")
    tool = find_java(env={"PATH": str(tmp_path / "bin"), "JAVA_HOME": str(tmp_path / "jdk11")})
    assert tool.path == path_java


def test_maven_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolchainMissing) as exc:
        find_maven(env={"PATH": str(tmp_path)})
    message = _one_line(exc)
    assert "Maven not found" in message
    assert "apt-get install maven" in message


def test_maven_home(tmp_path: Path) -> None:
    mvn = _fake(tmp_path / "maven" / "bin", "mvn", "exit 0")
    assert find_maven(env={"PATH": "", "MAVEN_HOME": str(tmp_path / "maven")}).path == mvn


def test_go_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolchainMissing) as exc:
        find_go(env={"PATH": str(tmp_path)}, fallback_dirs=[tmp_path / "usr-local-go" / "bin"])
    message = _one_line(exc)
    assert "Go 1.24+ not found" in message
    assert "go on PATH" in message
    assert "https://go.dev/dl/" in message


def test_go_too_old(tmp_path: Path) -> None:
    go = _fake(tmp_path / "bin", "go", "echo go1.19.13")
    with pytest.raises(ToolchainMissing) as exc:
        find_go(env={"PATH": str(go.parent)}, fallback_dirs=[])
    assert f"found go1.19.13 at {go}" in _one_line(exc)


def test_go_fallback_dir(tmp_path: Path) -> None:
    go = _fake(tmp_path / "go" / "bin", "go", "echo go1.26.1")
    tool = find_go(env={"PATH": str(tmp_path / "empty")}, fallback_dirs=[go.parent])
    assert (tool.path, tool.version) == (go, "go1.26.1")


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "bootstrap"],
        cwd=REPO_ROOT,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("swiftchain: Java 17+ not found (looked for $JAVA_HOME/bin/java")
