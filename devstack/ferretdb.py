"""A local MongoDB-compatible server: FerretDB v1 with its SQLite backend, built from the Go
module proxy.

* :func:`ensure_ferretdb` builds ``.stack/cache/ferretdb-<ver>/ferretdb`` once (a few minutes
  the first time; Go's module and build caches make later builds fast).
* :class:`FerretDB` runs it on 127.0.0.1 with a data folder, and is stopped like every managed
  process.
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
from pathlib import Path
from typing import Any, Self

from devstack.paths import cache_dir, file_lock
from devstack.process import ManagedProcess, ServerProcess, free_port, port_open, tail
from devstack.toolchain import BootstrapError, find_go
from devstack.versions import FERRETDB_MODULE, FERRETDB_VERSION

__all__ = ["FerretDB", "ensure_ferretdb", "ferretdb_binary", "make_writable", "run_go"]

_MARKER = "complete.json"
Log = Callable[[str], None]

#: Our one change to FerretDB's source, applied before building (see :func:`_patch_id_lookups`).
#: Part of the build marker: a cache built without it is rebuilt.
_PATCH_ID = "sqlite-id-index-1"
_ID_COLUMN_FILE = Path("internal/backends/sqlite/metadata/metadata.go")
_ID_COLUMN_UPSTREAM = "IDColumn = DefaultColumn + \"->'$._id'\""
_ID_COLUMN_PATCHED = 'IDColumn = DefaultColumn + `->"_id"`'


def _print(line: str) -> None:
    print(line, flush=True)


def ferretdb_binary(cache: Path | None = None) -> Path:
    """``.stack/cache/ferretdb-<ver>/ferretdb`` (exists once :func:`ensure_ferretdb` ran)."""
    return (cache or cache_dir()) / f"ferretdb-{FERRETDB_VERSION}" / "ferretdb"


def _complete(binary: Path) -> bool:
    try:
        marker = json.loads((binary.parent / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("version") == FERRETDB_VERSION
        and marker.get("patch") == _PATCH_ID
        and binary.is_file()
        and os.access(binary, os.X_OK)
    )


def run_go(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_file: Path,
    what: str = f"FerretDB {FERRETDB_VERSION}",
) -> str:
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


def ensure_ferretdb(cache: Path | None = None, *, log: Log = _print) -> Path:
    """Build the FerretDB binary (first run only); returns its path.

    Raises :class:`~devstack.toolchain.ToolchainMissing` without Go and
    :class:`~devstack.toolchain.BootstrapError` if the download or the build fails.
    """
    binary = ferretdb_binary(cache)
    if _complete(binary):
        return binary
    with file_lock(
        binary.parent.parent / f"{binary.parent.name}.lock",
        on_wait=lambda: log("waiting for another process that is building FerretDB…"),
    ):
        if _complete(binary):  # the other process finished it
            return binary
        return _build_ferretdb(binary, log)


def _patch_id_lookups(src: Path) -> None:
    """Make lookups by ``_id`` use the ``_id`` index.

    FerretDB v1.24's SQLite backend creates the unique ``_id`` index on the expression
    ``_ferretdb_sjson->"_id"`` but filters ``find``, ``update`` and ``delete`` by ``_id`` with
    ``_ferretdb_sjson->'$._id'``. SQLite uses an expression index only for the identical
    expression, so every lookup by ``_id`` scanned the whole table: 83 ms at 30,000 documents
    against 0.2 ms with the index (``EXPLAIN QUERY PLAN`` says ``SCAN`` and ``SEARCH ... USING
    INDEX``). The two expressions select the same value, so filtering with the index's own
    expression changes only the plan.
    """
    path = src / _ID_COLUMN_FILE
    text = path.read_text()
    if _ID_COLUMN_UPSTREAM not in text:
        raise BootstrapError(
            f"swiftchain: expected {_ID_COLUMN_UPSTREAM!r} in {_ID_COLUMN_FILE} of FerretDB "
            f"{FERRETDB_VERSION}, got another text; update devstack/ferretdb.py for this version"
        )
    path.write_text(text.replace(_ID_COLUMN_UPSTREAM, _ID_COLUMN_PATCHED))


def _build_ferretdb(binary: Path, log: Log) -> Path:
    go = find_go()
    out_dir = binary.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    build_log = out_dir / "build.log"
    build_log.write_bytes(b"")
    log(
        f"building FerretDB {FERRETDB_VERSION} from the Go module proxy "
        "(first run only, a few minutes)…"
    )
    began = time.monotonic()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="swiftchain-ferretdb-") as tmp:
        work = Path(tmp)
        module = f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"
        log(f"  go mod download {module}")
        info: dict[str, Any] = json.loads(
            run_go(
                [str(go.path), "mod", "download", "-json", module],
                cwd=work,
                env=env,
                log_file=build_log,
            )
        )
        if info.get("Error") or not info.get("Dir"):
            raise BootstrapError(
                f"swiftchain: go mod download {module} failed: {info.get('Error')}; see {build_log}"
            )
        src = work / "src"
        shutil.copytree(info["Dir"], src, symlinks=True)
        make_writable(src)
        # Their build panics without build/version/version.txt (FerretDB issue #2982); it is
        # normally generated from git, which a module download does not have.
        (src / "build" / "version" / "version.txt").write_text(f"{FERRETDB_VERSION}\n")
        _patch_id_lookups(src)
        partial = out_dir / "ferretdb.partial"
        log(f"  go build ./cmd/ferretdb ({go.version}; compiling, this is the slow part)")
        run_go(
            [
                str(go.path),
                "build",
                "-trimpath",
                "-buildvcs=false",
                "-tags",
                "ferretdb_no_postgresql",
                "-o",
                str(partial),
                "./cmd/ferretdb",
            ],
            cwd=src,
            env=env,
            log_file=build_log,
        )
    partial.replace(binary)
    (out_dir / _MARKER).write_text(
        json.dumps({"version": FERRETDB_VERSION, "patch": _PATCH_ID, "go": go.version}, indent=2)
        + "\n"
    )
    log(f"  FerretDB ready: {binary} in {time.monotonic() - began:.1f}s")
    return binary


class FerretDB(ServerProcess):
    """A FerretDB server with the SQLite backend (one ``.sqlite`` file per database in
    ``data_dir/sqlite``), listening on ``host:port`` (a free port by default)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        binary: Path | None = None,
        log_level: str = "warn",
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path or data_dir / "ferretdb.log"
        self.binary = binary or ferretdb_binary()
        self.log_level = log_level
        self.ready_seconds: float | None = None
        self._process: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        """``mongodb://host:port/`` (append a database name as needed)."""
        return f"mongodb://{self.host}:{self.port}/"

    def argv(self) -> list[str]:
        sqlite_dir = self.data_dir / "sqlite"
        return [
            str(self.binary),
            "--handler=sqlite",
            # WAL (FerretDB's default) with synchronous=NORMAL: a commit survives a crash of
            # FerretDB or of our processes, not a power cut of the machine; without it every
            # write waits for an fsync and an upsert costs ~2.5 ms instead of ~30 µs.
            f"--sqlite-url=file:{sqlite_dir}/?_pragma=synchronous(normal)",
            f"--listen-addr={self.host}:{self.port}",
            "--telemetry=disable",
            "--debug-addr=-",  # "-" turns the HTTP debug/metrics listener off
            f"--state-dir={self.data_dir}",
            f"--log-level={self.log_level}",
        ]

    def start(self) -> Self:
        """Start the server (does not wait; see :meth:`wait_ready`)."""
        if not self.binary.is_file():
            raise BootstrapError(
                f"ferretdb: no binary at {self.binary}; run `python -m devstack bootstrap` "
                "(or devstack.ferretdb.ensure_ferretdb()) first"
            )
        (self.data_dir / "sqlite").mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            "ferretdb", self.argv(), log_path=self.log_path, cwd=self.data_dir
        ).start()
        return self

    def _ping(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        client: MongoClient[dict[str, Any]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
        )
        try:
            reply = client.admin.command("ping")
            return bool(reply.get("ok"))
        except PyMongoError:
            return False
        finally:
            client.close()

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until a ``ping`` succeeds; returns seconds since start. Raises
        :class:`~devstack.process.ProcessError` (with the log tail) on death or timeout."""
        proc = self.process
        proc.wait_until(self._ping, timeout=timeout, what="answering ping", interval=0.1)
        assert proc.started_at is not None
        self.ready_seconds = time.monotonic() - proc.started_at
        return self.ready_seconds
