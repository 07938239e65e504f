"""immudb, the peer that ``bench/immudb_bench.py`` measures the platform against, built from the
Go module proxy like FerretDB.

* :func:`ensure_immudb` builds ``.stack/cache/immudb-<ver>/immudb`` once (a few minutes the first
  time). ``go install github.com/codenotary/immudb/cmd/immudb@<ver>`` does not work here: it asks
  the proxy for the module's version list (to look for a deprecation notice) and the proxy
  refuses that list for immudb, so the pinned version is downloaded with ``go mod download`` and
  built from its own ``go.mod``.
* :class:`Immudb` runs it on 127.0.0.1 on a free port with its own data folder, without the
  PostgreSQL wire, metrics and web servers, and is stopped like every managed process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from devstack.ferretdb import make_writable, run_go
from devstack.paths import cache_dir, file_lock
from devstack.process import ManagedProcess, ServerProcess, free_port, port_open
from devstack.toolchain import BootstrapError, find_go
from devstack.versions import IMMUDB_MODULE, IMMUDB_VERSION

__all__ = ["DEFAULT_PASSWORD", "DEFAULT_USER", "Immudb", "ensure_immudb", "immudb_binary"]

#: immudb's built-in superuser and its password on a fresh data folder.
DEFAULT_USER = "immudb"
DEFAULT_PASSWORD = "immudb"  # noqa: S105 (immudb's documented default, local benchmark only)

_MARKER = "complete.json"
Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def immudb_binary(cache: Path | None = None) -> Path:
    """``.stack/cache/immudb-<ver>/immudb`` (exists once :func:`ensure_immudb` ran)."""
    return (cache or cache_dir()) / f"immudb-{IMMUDB_VERSION}" / "immudb"


def _complete(binary: Path) -> bool:
    try:
        marker = json.loads((binary.parent / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("version") == IMMUDB_VERSION
        and binary.is_file()
        and os.access(binary, os.X_OK)
    )


def ensure_immudb(cache: Path | None = None, *, log: Log = _print) -> Path:
    """Build the immudb server binary (first run only); returns its path.

    Raises :class:`~devstack.toolchain.ToolchainMissing` without Go and
    :class:`~devstack.toolchain.BootstrapError` if the download or the build fails.
    """
    binary = immudb_binary(cache)
    if _complete(binary):
        return binary
    with file_lock(
        binary.parent.parent / f"{binary.parent.name}.lock",
        on_wait=lambda: log("waiting for another process that is building immudb…"),
    ):
        if _complete(binary):
            return binary
        return _build(binary, log)


def _build(binary: Path, log: Log) -> Path:
    go = find_go()
    out_dir = binary.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    build_log = out_dir / "build.log"
    build_log.write_bytes(b"")
    what = f"immudb {IMMUDB_VERSION}"
    log(f"building {what} from the Go module proxy (first run only, a few minutes)…")
    began = time.monotonic()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="swiftchain-immudb-") as tmp:
        work = Path(tmp)
        module = f"{IMMUDB_MODULE}@{IMMUDB_VERSION}"
        info: dict[str, Any] = json.loads(
            run_go(
                [str(go.path), "mod", "download", "-json", module],
                cwd=work,
                env=env,
                log_file=build_log,
                what=what,
            )
        )
        if info.get("Error") or not info.get("Dir"):
            raise BootstrapError(
                f"swiftchain: go mod download {module} failed: {info.get('Error')}; see {build_log}"
            )
        src = work / "src"
        shutil.copytree(info["Dir"], src, symlinks=True)
        make_writable(src)  # the module cache is read-only; go may update go.sum
        partial = out_dir / "immudb.partial"
        log(f"  go build ./cmd/immudb ({go.version})")
        run_go(
            [
                str(go.path),
                "build",
                "-trimpath",
                "-buildvcs=false",
                "-mod=mod",
                "-o",
                str(partial),
                "./cmd/immudb",
            ],
            cwd=src,
            env=env,
            log_file=build_log,
            what=what,
        )
    partial.replace(binary)
    (out_dir / _MARKER).write_text(
        json.dumps({"version": IMMUDB_VERSION, "go": go.version}, indent=2) + "\n"
    )
    log(f"  immudb ready: {binary} in {time.monotonic() - began:.1f}s")
    return binary


class Immudb(ServerProcess):
    """An immudb server on ``host:port`` (a free port by default) keeping its databases in
    ``data_dir``; its default settings otherwise (``--synced``: every commit is fsynced)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.log_path = data_dir / "immudb.log"
        self.binary = binary or immudb_binary()
        self._process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        """``host:port`` for a client."""
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        """The server's command line."""
        return [
            str(self.binary),
            f"--dir={self.data_dir / 'data'}",
            f"--address={self.host}",
            f"--port={self.port}",
            "--pgsql-server=false",
            "--metrics-server=false",
            "--web-server=false",
            f"--pidfile={self.data_dir / 'immudb.pid'}",
        ]

    def start(self) -> Self:
        """Start the server and wait until it accepts connections (60 s at most)."""
        if not self.binary.is_file():
            raise BootstrapError(
                f"immudb: no binary at {self.binary}; run devstack.immudb.ensure_immudb() first"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            "immudb", self.argv(), log_path=self.log_path, cwd=self.data_dir
        ).start()
        self._process.wait_until(
            lambda: port_open(self.host, self.port), timeout=60, what="accepting connections"
        )
        return self
