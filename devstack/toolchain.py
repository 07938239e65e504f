"""Find the toolchain the local stack needs: ``java`` (runs Kafka), ``mvn`` (fetches the Kafka
jars from Maven Central) and ``go`` (builds FerretDB from the Go module proxy).

A missing or too old tool raises :class:`ToolchainMissing`, whose message is one line that says
what was looked for and how to install it; ``python -m devstack`` prints it and exits 2.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.versions import GO_MIN_VERSION, JAVA_MIN_MAJOR

__all__ = [
    "BootstrapError",
    "Tool",
    "ToolchainMissing",
    "find_go",
    "find_java",
    "find_maven",
    "java_home_of",
]

_PROBE_TIMEOUT = 30.0
_GO_FALLBACK_DIRS = (Path("/usr/local/go/bin"),)


class BootstrapError(RuntimeError):
    """Fetching or building part of the local stack failed; the message says where the log is."""


class ToolchainMissing(RuntimeError):  # noqa: N818 - the name says what happened
    """A tool the local stack needs is missing or too old; ``str(exc)`` is one line."""


@dataclass(frozen=True)
class Tool:
    """A tool that was found: its executable and the version it reported."""

    name: str
    path: Path
    version: str


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _which(name: str, env: Mapping[str, str]) -> Path | None:
    found = shutil.which(name, path=env.get("PATH", ""))
    return Path(found) if found else None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _probe(argv: list[str], env: Mapping[str, str]) -> str | None:
    """Run a version probe; its combined output, or None if it could not run or failed."""
    try:
        done = subprocess.run(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout + done.stderr


# -- java ---------------------------------------------------------------------------------------

_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?[^"]*"')
_JAVA_PACKAGE = f"openjdk-{JAVA_MIN_MAJOR}-jre-headless"
_JAVA_HINT = f"install OpenJDK {JAVA_MIN_MAJOR}, e.g. `apt-get install {_JAVA_PACKAGE}`"


def _java_major(output: str) -> tuple[int, str] | None:
    match = _JAVA_VERSION.search(output)
    if not match:
        return None
    first, second = int(match.group(1)), match.group(2)
    major = int(second) if first == 1 and second is not None else first  # "1.8.0_392" is Java 8
    version = match.group(0).split('"')[1]
    return major, version


def find_java(env: Mapping[str, str] | None = None) -> Tool:
    """``$JAVA_HOME/bin/java`` if ``JAVA_HOME`` is set and holds one, else ``java`` on ``PATH``;
    it must be Java 17 or newer."""
    environ = _environ(env)
    candidates: list[Path] = []
    java_home = environ.get("JAVA_HOME", "")
    if java_home:
        home_java = Path(java_home) / "bin" / "java"
        if _executable(home_java):
            candidates.append(home_java)
    on_path = _which("java", environ)
    if on_path is not None and on_path not in candidates:
        candidates.append(on_path)

    too_old: list[str] = []
    for java in candidates:
        output = _probe([str(java), "-version"], environ)
        parsed = _java_major(output) if output is not None else None
        if parsed is None:
            too_old.append(f"{java} did not report a version")
            continue
        major, version = parsed
        if major >= JAVA_MIN_MAJOR:
            return Tool("java", java, version)
        too_old.append(f"found Java {major} at {java}")

    looked = (
        f"looked for {Path(java_home) / 'bin' / 'java'} ($JAVA_HOME) and java on PATH"
        if java_home
        else "looked for $JAVA_HOME/bin/java and java on PATH"
    )
    detail = "; ".join(too_old) if too_old else looked
    raise ToolchainMissing(f"swiftchain: Java {JAVA_MIN_MAJOR}+ not found ({detail}); {_JAVA_HINT}")


def java_home_of(java: Path) -> Path:
    """The JDK/JRE home of a ``java`` executable (follows symlinks such as /usr/bin/java)."""
    return java.resolve().parent.parent


# -- maven --------------------------------------------------------------------------------------


def find_maven(env: Mapping[str, str] | None = None) -> Tool:
    """``$MAVEN_HOME/bin/mvn`` or ``$M2_HOME/bin/mvn`` if set, else ``mvn`` on ``PATH``."""
    environ = _environ(env)
    for var in ("MAVEN_HOME", "M2_HOME"):
        home = environ.get(var, "")
        if home and _executable(Path(home) / "bin" / "mvn"):
            return Tool("mvn", Path(home) / "bin" / "mvn", "")
    on_path = _which("mvn", environ)
    if on_path is not None:
        return Tool("mvn", on_path, "")
    raise ToolchainMissing(
        "swiftchain: Maven not found (looked for $MAVEN_HOME/bin/mvn and mvn on PATH); "
        "install Maven 3.6+, e.g. `apt-get install maven`"
    )


# -- go -----------------------------------------------------------------------------------------

_GO_VERSION = re.compile(r"go(\d+)\.(\d+)")


def find_go(
    env: Mapping[str, str] | None = None,
    fallback_dirs: Iterable[Path] = _GO_FALLBACK_DIRS,
) -> Tool:
    """``go`` on ``PATH``, else ``$GOROOT/bin/go``, else the usual install folder
    (/usr/local/go/bin); it must be at least the version FerretDB's go.mod asks for."""
    environ = _environ(env)
    candidates: list[Path] = []
    on_path = _which("go", environ)
    if on_path is not None:
        candidates.append(on_path)
    goroot = environ.get("GOROOT", "")
    dirs = [Path(goroot) / "bin"] if goroot else []
    dirs.extend(fallback_dirs)
    for folder in dirs:
        go = folder / "go"
        if _executable(go) and go not in candidates:
            candidates.append(go)

    want = ".".join(str(part) for part in GO_MIN_VERSION)
    too_old: list[str] = []
    for go in candidates:
        output = _probe([str(go), "env", "GOVERSION"], environ)
        match = _GO_VERSION.search(output or "")
        if match is None:
            too_old.append(f"{go} did not report a version")
            continue
        if (int(match.group(1)), int(match.group(2))) >= GO_MIN_VERSION:
            return Tool("go", go, (output or "").strip())
        too_old.append(f"found {(output or '').strip()} at {go}")

    looked = ", ".join(["go on PATH", *(f"{folder / 'go'}" for folder in dirs)])
    detail = "; ".join(too_old) if too_old else f"looked for {looked}"
    raise ToolchainMissing(
        f"swiftchain: Go {want}+ not found ({detail}); install Go {want} or newer from "
        "https://go.dev/dl/ (Debian's golang-go package may be too old)"
    )
