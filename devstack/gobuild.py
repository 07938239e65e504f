"""Building a Go server from the Go module proxy into the git-ignored cache, once: what FerretDB
(:mod:`devstack.ferretdb`) and immudb (:mod:`devstack.immudb`) share.

The pinned module version is fetched with ``go mod download`` and built from its own
``go.mod`` (``go install module@version`` would also ask the proxy for the module's version
list, which the proxy here refuses for some modules). The binary lands in
``.stack/cache/<dir>/`` next to a ``complete.json`` marker; a cache whose marker does not match
the pinned build (another version, another patch) is rebuilt. Concurrent builds of one binary
wait for each other on a file lock.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.paths import cache_dir, file_lock
from devstack.process import tail
from devstack.toolchain import BootstrapError, find_go

__all__ = ["GoBuild", "make_writable", "run_go"]

Log = Callable[[str], None]
_MARKER = "complete.json"


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class GoBuild:
    """How to build one Go server binary from a module version."""

    #: For messages: "FerretDB", "immudb".
    name: str
    module: str
    version: str
    #: The package to build inside the module: ``./cmd/ferretdb``.
    package: str
    #: The binary's file name; it goes to ``.stack/cache/<name lowercased>-<version>/``.
    executable: str
    #: Extra ``go build`` flags (tags, ``-mod=mod``).
    flags: tuple[str, ...] = ()
    #: Changes to the downloaded source before the build (given its root).
    prepare: Callable[[Path], None] | None = None
    #: Facts the marker must hold besides the version (a patch id): a mismatch rebuilds.
    marker: Mapping[str, str] = field(default_factory=dict)

    @property
    def what(self) -> str:
        """``FerretDB v1.24.2``."""
        return f"{self.name} {self.version}"

    def binary(self, cache: Path | None = None) -> Path:
        """Where the binary is once :meth:`ensure` ran."""
        folder = f"{self.name.lower()}-{self.version}"
        return (cache or cache_dir()) / folder / self.executable

    def complete(self, binary: Path) -> bool:
        """Whether ``binary`` is this build (its marker matches, it is executable)."""
        try:
            marker = json.loads((binary.parent / _MARKER).read_text())
        except (OSError, ValueError):
            return False
        expected = {"version": self.version, **self.marker}
        return (
            isinstance(marker, dict)
            and all(marker.get(key) == value for key, value in expected.items())
            and binary.is_file()
            and os.access(binary, os.X_OK)
        )

    def ensure(self, cache: Path | None = None, *, log: Log = _print) -> Path:
        """Build the binary (first run only); returns its path.

        Raises :class:`~devstack.toolchain.ToolchainMissing` without Go and
        :class:`~devstack.toolchain.BootstrapError` if the download or the build fails.
        """
        binary = self.binary(cache)
        if self.complete(binary):
            return binary
        with file_lock(
            binary.parent.parent / f"{binary.parent.name}.lock",
            on_wait=lambda: log(f"waiting for another process that is building {self.name}…"),
        ):
            if self.complete(binary):  # the other process finished it
                return binary
            return self._build(binary, log)

    def _build(self, binary: Path, log: Log) -> Path:
        go = find_go()
        out_dir = binary.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        build_log = out_dir / "build.log"
        build_log.write_bytes(b"")
        log(f"building {self.what} from the Go module proxy (first run only, a few minutes)…")
        began = time.monotonic()
        env = dict(os.environ)
        with tempfile.TemporaryDirectory(prefix=f"swiftchain-{self.name.lower()}-") as tmp:
            work = Path(tmp)
            module = f"{self.module}@{self.version}"
            log(f"  go mod download {module}")
            info: dict[str, Any] = json.loads(
                run_go(
                    [str(go.path), "mod", "download", "-json", module],
                    cwd=work,
                    env=env,
                    log_file=build_log,
                    what=self.what,
                )
            )
            if info.get("Error") or not info.get("Dir"):
                raise BootstrapError(
                    f"swiftchain: go mod download {module} failed: {info.get('Error')}; "
                    f"see {build_log}"
                )
            src = work / "src"
            shutil.copytree(info["Dir"], src, symlinks=True)
            make_writable(src)  # the module cache is read-only; the build writes files
            if self.prepare is not None:
                self.prepare(src)
            partial = out_dir / f"{self.executable}.partial"
            log(f"  go build {self.package} ({go.version}; compiling, this is the slow part)")
            run_go(
                [
                    str(go.path),
                    "build",
                    "-trimpath",
                    "-buildvcs=false",
                    *self.flags,
                    "-o",
                    str(partial),
                    self.package,
                ],
                cwd=src,
                env=env,
                log_file=build_log,
                what=self.what,
            )
        partial.replace(binary)
        marker = {"version": self.version, **self.marker, "go": go.version}
        (out_dir / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        log(f"  {self.name} ready: {binary} in {time.monotonic() - began:.1f}s")
        return binary


def run_go(argv: list[str], *, cwd: Path, env: Mapping[str, str], log_file: Path, what: str) -> str:
    """Run a go command, appending its stderr (and stdout) to ``log_file``; returns stdout.
    :class:`~devstack.toolchain.BootstrapError` naming ``what`` (the module built) if it
    fails."""
    with log_file.open("ab") as out:
        out.write(f"=== {' '.join(argv)}  (in {cwd})\n".encode())
        out.flush()
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=out,
            check=False,
        )
        out.write(done.stdout)
    if done.returncode != 0:
        raise BootstrapError(
            f"swiftchain: `{' '.join(argv[1:3])}` for {what} failed "
            f"(exit {done.returncode}); see {log_file}\n{tail(log_file, 20)}"
        )
    return done.stdout.decode()


def make_writable(root: Path) -> None:
    """``chmod -R u+w``: the module cache is read-only, the build needs to write a file."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
    root.chmod(root.stat().st_mode | stat.S_IWUSR)
