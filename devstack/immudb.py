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

from collections.abc import Callable
from pathlib import Path
from typing import Self

from devstack.gobuild import GoBuild
from devstack.process import ManagedProcess, ServerProcess, free_port, port_open
from devstack.toolchain import BootstrapError
from devstack.versions import IMMUDB_MODULE, IMMUDB_VERSION

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "IMMUDB_BUILD",
    "Immudb",
    "ensure_immudb",
    "immudb_binary",
]

#: immudb's built-in superuser and its password on a fresh data folder.
DEFAULT_USER = "immudb"
DEFAULT_PASSWORD = "immudb"  # noqa: S105 (immudb's documented default, local benchmark only)

Log = Callable[[str], None]

IMMUDB_BUILD = GoBuild(
    name="immudb",
    module=IMMUDB_MODULE,
    version=IMMUDB_VERSION,
    package="./cmd/immudb",
    executable="immudb",
    flags=("-mod=mod",),  # go may update go.sum
)


def _print(line: str) -> None:
    print(line, flush=True)


def immudb_binary(cache: Path | None = None) -> Path:
    """``.stack/cache/immudb-<ver>/immudb`` (exists once :func:`ensure_immudb` ran)."""
    return IMMUDB_BUILD.binary(cache)


def ensure_immudb(cache: Path | None = None, *, log: Log = _print) -> Path:
    """Build the immudb server binary (first run only); returns its path.

    Raises :class:`~devstack.toolchain.ToolchainMissing` without Go and
    :class:`~devstack.toolchain.BootstrapError` if the download or the build fails.
    """
    return IMMUDB_BUILD.ensure(cache, log=log)


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
