"""``make up`` / ``make down``: the whole local platform in one terminal.

``up`` bootstraps what is missing, starts Kafka, FerretDB, the three chain nodes and the four
services, waits until every gRPC health check answers SERVING, prints one line per process, and
stops everything (services first, infrastructure last) on Ctrl-C or SIGTERM. ``down`` sends
SIGTERM to a running ``up`` from another terminal and waits until it is gone. Data and logs live
in ``.stack/run/`` (``logs/<process>.log``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from chain.errors import SwiftchainError
from chain.genesis import genesis_hash
from devstack.ferretdb import FerretDB
from devstack.kafka import BrokerTls, KafkaBroker, create_topics, grant, platform_grants
from devstack.paths import REPO_ROOT, run_dir
from devstack.pki import ADMIN, KAFKA_BROKER, KAFKA_BROKER_UNIT, Pki, ensure_pki
from devstack.ports import check_ports
from devstack.process import (
    ManagedProcess,
    ProcessError,
    ServerProcess,
    free_port,
    wait_grpc_serving,
)
from devstack.supervisor import Supervisor, Unit
from devstack.toolchain import BootstrapError, ToolchainMissing
from services.platform.consortium_files import create_consortium

KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
NODES = (("hospital-a", 50061), ("hospital-b", 50062), ("hospital-c", 50063))
#: Each chain node's public mirror (its log over HTTP in tlog-tiles paths).
MIRRORS = (("hospital-a", 8061), ("hospital-b", 8062), ("hospital-c", 8063))
SERVICES = (("identity", 50051), ("anchoring", 50052), ("consent", 50053), ("audit", 50054))
#: Every gRPC process's public port (server-only TLS: patient apps, anonymous calls) is its
#: main port + 100.
PUBLIC_PORT_OFFSET = 100
#: The Prometheus endpoints of ``make up``: 9464 (the exporter's usual port) for the first
#: process, then one more for each.
FIRST_METRICS_PORT = 9464
ORIGIN = "swiftchain.local/consortium-log"
HEALTH_TIMEOUT = 90.0


Log = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)


@dataclass
class GrpcProcess:
    """A gRPC process of the stack and its port."""

    name: str
    port: int
    public_port: int
    process: ManagedProcess


def _pid_file() -> Path:
    return run_dir() / "stack.pid"


@dataclass(frozen=True)
class StackPorts:
    """Where each process of the stack listens."""

    kafka: int = KAFKA_PORT
    kafka_controller: int = KAFKA_CONTROLLER_PORT
    nodes: tuple[tuple[str, int], ...] = NODES
    services: tuple[tuple[str, int], ...] = SERVICES
    #: process name -> public port; by default each main port + PUBLIC_PORT_OFFSET.
    public: tuple[tuple[str, int], ...] = tuple(
        (name, port + PUBLIC_PORT_OFFSET) for name, port in NODES + SERVICES
    )
    #: process name -> port of its Prometheus endpoint (``/metrics``).
    metrics: tuple[tuple[str, int], ...] = tuple(
        (name, FIRST_METRICS_PORT + index) for index, (name, _) in enumerate(NODES + SERVICES)
    )
    #: chain node -> port of its public mirror (HTTP).
    mirrors: tuple[tuple[str, int], ...] = MIRRORS

    @classmethod
    def free(cls) -> StackPorts:
        """Free ports for everything (tests run a stack beside a developer's ``make up``)."""
        return cls(
            kafka=free_port(),
            kafka_controller=free_port(),
            nodes=tuple((name, free_port()) for name, _ in NODES),
            services=tuple((name, free_port()) for name, _ in SERVICES),
            public=tuple((name, free_port()) for name, _ in NODES + SERVICES),
            metrics=tuple((name, free_port()) for name, _ in NODES + SERVICES),
            mirrors=tuple((name, free_port()) for name, _ in NODES),
        )

    def port(self, name: str) -> int:
        """The main (mTLS) port of process ``name``."""
        return dict(self.nodes + self.services)[name]

    def public_port(self, name: str) -> int:
        """The public (TLS, no client certificate) port of process ``name``."""
        return dict(self.public)[name]

    def metrics_port(self, name: str) -> int:
        """The port of process ``name``'s Prometheus endpoint."""
        return dict(self.metrics)[name]

    def named(self) -> dict[str, int]:
        """Every port of the stack, by what uses it (``kafka``, ``consent public``, …)."""
        named = {"kafka": self.kafka, "kafka controller": self.kafka_controller}
        named.update(self.nodes + self.services)
        named.update((f"{name} public", port) for name, port in self.public)
        named.update((f"{name} metrics", port) for name, port in self.metrics)
        named.update((f"{name} mirror", port) for name, port in self.mirrors)
        return named

    def mirror_port(self, name: str) -> int:
        """The port of chain node ``name``'s public mirror."""
        return dict(self.mirrors)[name]


class LocalStack:
    """Kafka, FerretDB, three chain nodes and the four services, under one folder.

    Kafka takes only clients with a certificate of the stack's PKI, each allowed what
    :mod:`services.platform.kafka_acls` says; FerretDB listens on a Unix socket in a folder only
    this user may enter, ``<root>/ferretdb/ferretdb.sock``, and on no TCP port.

    :meth:`start` brings every process to SERVING (or raises :class:`ProcessError` with the
    failing process's log tail); :meth:`stop` stops them all, services first. With
    ``spans_dir``, every process writes its finished spans to ``<spans_dir>/<process>.jsonl``.
    """

    def __init__(
        self,
        root: Path,
        ports: StackPorts | None = None,
        say: Log = _say,
        *,
        spans_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.spans_dir = spans_dir
        self.ports = ports or StackPorts()
        self.logs = root / "logs"
        self._say = say
        self.pki = Pki(root / "pki")
        self.kafka = KafkaBroker(
            root / "kafka",
            port=self.ports.kafka,
            controller_port=self.ports.kafka_controller,
            log_path=self.logs / "kafka.log",
            tls=BrokerTls.of(self.pki, KAFKA_BROKER, ADMIN),
        )
        self.mongo = FerretDB(
            root / "ferretdb",
            log_path=self.logs / "ferretdb.log",
            unix_socket=root / "ferretdb" / "ferretdb.sock",
        )
        self.grpc_processes: list[GrpcProcess] = []

    def _python_process(
        self, name: str, module: str, port: int, env: dict[str, str]
    ) -> GrpcProcess:
        public_port = self.ports.public_port(name)
        full_env = {
            "SWIFTCHAIN_PORT": str(port),
            "SWIFTCHAIN_PUBLIC_PORT": str(public_port),
            "SWIFTCHAIN_TLS_DIR": str(self.pki.tls_dir(name)),
            "SWIFTCHAIN_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            # the broker knows the process by its certificate
            "SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL": "SSL",
            "SWIFTCHAIN_KAFKA_TLS_DIR": str(self.pki.tls_dir(name)),
            "SWIFTCHAIN_MONGO_URI": self.mongo.uri,
            "SWIFTCHAIN_METRICS_PORT": str(self.ports.metrics_port(name)),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        if self.spans_dir is not None:
            full_env["SWIFTCHAIN_SPANS_FILE"] = str(self.spans_dir / f"{name}.jsonl")
        process = ManagedProcess(
            name,
            [sys.executable, "-m", module],
            log_path=self.logs / f"{name}.log",
            env=full_env,
            cwd=REPO_ROOT,
            pid_path=self.root / "pids" / f"{name}.pid",
        )
        return GrpcProcess(name, port, public_port, process)

    def start(self) -> None:
        """Start everything and wait until every gRPC process answers SERVING; raises
        :class:`~devstack.ports.PortsTakenError` first if a port is held by someone else."""
        check_ports(self.ports.named(), say=self._say)
        self.logs.mkdir(parents=True, exist_ok=True)
        # The genesis ceremony, with this process playing every founder and service (kept from
        # the first start): first, so that a consortium folder the nodes would refuse stops
        # the stack before anything runs.
        files = create_consortium(
            self.root / "consortium",
            [name for name, _ in self.ports.nodes],
            quorum=2,
            origin=ORIGIN,
        )
        genesis = files.load()
        self._say(
            f"{'genesis':<10} {genesis_hash(genesis).hex()[:16]}… signed by "
            f"{', '.join(s.name for s in genesis.founder_signatures)}  ({files.config_path})"
        )
        self.pki = ensure_pki(
            self.root / "pki",
            [(name, "chain-node") for name, _ in self.ports.nodes]
            + [(name, "service") for name, _ in self.ports.services]
            + [(KAFKA_BROKER, KAFKA_BROKER_UNIT)],
        )
        self.kafka.start()
        self.mongo.start()
        self.kafka.wait_ready(timeout=120)
        self.mongo.wait_ready(timeout=60)
        create_topics(self.kafka.bootstrap, security=self.kafka.admin)
        grant(
            self.kafka.bootstrap,
            platform_grants(
                self.pki,
                services=[name for name, _ in self.ports.services],
                nodes=[name for name, _ in self.ports.nodes],
            ),
            security=self.kafka.admin,
        )
        self._say(f"{'kafka':<10} {self.kafka.bootstrap}  (log {self.kafka.log_path})")
        self._say(f"{'ferretdb':<10} {self.mongo.uri}  (log {self.mongo.log_path})")
        for name, port in self.ports.nodes:
            env = {
                "SWIFTCHAIN_NODE_NAME": name,
                "SWIFTCHAIN_CONSORTIUM_FILE": str(files.config_path),
                "SWIFTCHAIN_SIGNING_KEY_FILE": str(files.node_key_path(name)),
                "SWIFTCHAIN_DATA_DIR": str(self.root / name / "data"),
                "SWIFTCHAIN_MIRROR_PORT": str(self.ports.mirror_port(name)),
            }
            self.grpc_processes.append(self._python_process(name, "chain.node", port, env))
        first_node = self.ports.nodes[0][1]
        service_env = {
            "identity": {
                "SWIFTCHAIN_CONSORTIUM_DIR": str(files.folder),
                "SWIFTCHAIN_CA_DIR": str(self.pki.ca_dir),
                "SWIFTCHAIN_CHAIN_NODE": f"127.0.0.1:{first_node}",
            },
            "anchoring": {
                "SWIFTCHAIN_CONSORTIUM_DIR": str(files.folder),
                "SWIFTCHAIN_CHAIN_NODE": f"127.0.0.1:{first_node}",
            },
            "consent": {
                "SWIFTCHAIN_CONSORTIUM_DIR": str(files.folder),
                "SWIFTCHAIN_CHAIN_NODE": f"127.0.0.1:{first_node}",
            },
            "audit": {
                "SWIFTCHAIN_CONSORTIUM_DIR": str(files.folder),
                "SWIFTCHAIN_CHAIN_NODE": f"127.0.0.1:{first_node}",
            },
        }
        for name, port in self.ports.services:
            self.grpc_processes.append(
                self._python_process(name, f"services.{name}", port, service_env.get(name, {}))
            )
        for proc in self.grpc_processes:
            proc.process.start()
        deadline = time.monotonic() + HEALTH_TIMEOUT
        for proc in self.grpc_processes:
            wait_grpc_serving(
                proc.process,
                proc.port,
                max(deadline - time.monotonic(), 0.1),
                tls_dir=self.pki.tls_dir(ADMIN),
            )
            mirror = dict(self.ports.mirrors).get(proc.name)
            self._say(
                f"{proc.name:<10} 127.0.0.1:{proc.port} (mTLS), :{proc.public_port} (public TLS),"
                f" :{self.ports.metrics_port(proc.name)}/metrics"
                + (f", http://127.0.0.1:{mirror}/ (mirror)" if mirror else "")
                + f"  SERVING  (log {proc.process.log_path})"
            )

    def units(self) -> list[Unit]:
        """Every process of the stack as a unit a :class:`Supervisor` keeps running: the
        broker, FerretDB, then the nodes and services."""
        return [
            _ServerUnit("kafka", self.kafka),
            _ServerUnit("ferretdb", self.mongo),
            *(_GrpcUnit(proc) for proc in self.grpc_processes),
        ]

    def supervisor(self) -> Supervisor:
        """A supervisor of every process of the stack (see :mod:`devstack.supervisor`)."""
        return Supervisor(self.units(), self._say)

    def stop(self) -> None:
        """Stop every process, services and nodes first, then FerretDB and Kafka."""
        for proc in reversed(self.grpc_processes):
            proc.process.stop(grace=15)
        self.mongo.stop()
        self.kafka.stop()


class _ServerUnit:
    """The broker or FerretDB: restarted in place (same folder, same port or socket)."""

    def __init__(self, name: str, server: ServerProcess) -> None:
        self.name = name
        self._server = server

    def running(self) -> bool:
        return self._server.process.is_running()

    def exit_status(self) -> int | None:
        return self._server.process.returncode

    def restart(self) -> None:
        self._server.stop(grace=5)
        self._server.start()


class _GrpcUnit:
    """A chain node or a service: the same command, environment and ports again."""

    def __init__(self, proc: GrpcProcess) -> None:
        self.name = proc.name
        self._proc = proc

    def running(self) -> bool:
        return self._proc.process.is_running()

    def exit_status(self) -> int | None:
        return self._proc.process.returncode

    def restart(self) -> None:
        self._proc.process.stop(grace=5)
        self._proc.process = self._proc.process.fresh().start()


def up() -> int:
    """Start everything and wait for Ctrl-C; see the module docstring."""
    from devstack.__main__ import bootstrap

    if stack_is_running():
        _say(f"a stack is running already (pid {_pid_file().read_text().strip()}); `make down`")
        return 1
    bootstrap()
    root = run_dir()
    root.mkdir(parents=True, exist_ok=True)
    _pid_file().write_text(str(os.getpid()))
    stop_requested = False

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    began = time.monotonic()
    stack = LocalStack(root)
    try:
        stack.start()
        _say(
            f"all SERVING in {time.monotonic() - began:.1f}s; a process that dies is restarted; "
            "Ctrl-C (or `make down`) stops all"
        )
        supervisor = stack.supervisor()
        while True:
            supervisor.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        _say("stopping…")
        return 0
    except (ProcessError, ToolchainMissing, BootstrapError, SwiftchainError) as error:
        _say(f"swiftchain: {error}")
        return 1
    finally:
        stack.stop()
        _pid_file().unlink(missing_ok=True)
        _say("stopped" + (" on request" if stop_requested else "") + "; no process left behind")


def stack_is_running() -> bool:
    """Whether a ``make up`` stack is running (its pid file names a live process)."""
    path = _pid_file()
    return path.exists() and _alive(int(path.read_text().strip() or 0))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def down(timeout: float = 60.0) -> int:
    """SIGTERM a running ``make up`` and wait until it has stopped everything."""
    path = _pid_file()
    if not path.exists():
        _say("no stack is running (no .stack/run/stack.pid)")
        return 0
    pid = int(path.read_text().strip() or 0)
    if not _alive(pid):
        path.unlink(missing_ok=True)
        _say(f"the stack (pid {pid}) is not running any more")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        _say(f"the stack (pid {pid}) did not stop within {timeout:.0f}s")
        return 1
    _say("stack stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devstack.stack up|down``."""
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args(argv)
    try:
        return up() if args.command == "up" else down()
    except ToolchainMissing as error:
        _say(str(error))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
