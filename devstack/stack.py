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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chain.node.setup import create_consortium
from devstack.ferretdb import FerretDB
from devstack.kafka import KafkaBroker, create_topics
from devstack.paths import REPO_ROOT, run_dir
from devstack.process import ManagedProcess, ProcessError
from devstack.toolchain import BootstrapError, ToolchainMissing

KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
MONGO_PORT = 27017
NODES = (("hospital-a", 50061), ("hospital-b", 50062), ("hospital-c", 50063))
SERVICES = (("identity", 50051), ("anchoring", 50052), ("consent", 50053), ("audit", 50054))
ORIGIN = "swiftchain.local/consortium-log"
HEALTH_TIMEOUT = 90.0


def _say(line: str) -> None:
    print(line, flush=True)


@dataclass
class _GrpcProcess:
    name: str
    port: int
    process: ManagedProcess


def _pid_file() -> Path:
    return run_dir() / "stack.pid"


def _wait_serving(proc: _GrpcProcess, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not proc.process.is_running():
            raise proc.process.error(f"{proc.name} exited during start")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise proc.process.error(f"{proc.name} did not answer SERVING within {HEALTH_TIMEOUT:.0f}s")


def _python_process(
    name: str, module: str, port: int, env: dict[str, str], logs: Path
) -> _GrpcProcess:
    full_env = {
        "SWIFTCHAIN_PORT": str(port),
        "SWIFTCHAIN_KAFKA_BOOTSTRAP": f"127.0.0.1:{KAFKA_PORT}",
        "SWIFTCHAIN_MONGO_URI": f"mongodb://127.0.0.1:{MONGO_PORT}/",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    process = ManagedProcess(
        name,
        [sys.executable, "-m", module],
        log_path=logs / f"{name}.log",
        env=full_env,
        cwd=REPO_ROOT,
        pid_path=run_dir() / "pids" / f"{name}.pid",
    )
    return _GrpcProcess(name, port, process)


def up() -> int:
    """Start everything and wait for Ctrl-C; see the module docstring."""
    from devstack.__main__ import bootstrap

    if _pid_file().exists() and _alive(int(_pid_file().read_text() or 0)):
        _say(f"a stack is running already (pid {_pid_file().read_text().strip()}); `make down`")
        return 1
    bootstrap()
    root = run_dir()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _pid_file().write_text(str(os.getpid()))
    stop_requested = False

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    began = time.monotonic()
    kafka = KafkaBroker(
        root / "kafka",
        port=KAFKA_PORT,
        controller_port=KAFKA_CONTROLLER_PORT,
        log_path=logs / "kafka.log",
    )
    mongo = FerretDB(root / "ferretdb", port=MONGO_PORT, log_path=logs / "ferretdb.log")
    grpc_processes: list[_GrpcProcess] = []
    try:
        kafka.start()
        mongo.start()
        kafka.wait_ready(timeout=120)
        mongo.wait_ready(timeout=60)
        create_topics(kafka.bootstrap)
        _say(f"kafka      {kafka.bootstrap}  (log {kafka.log_path})")
        _say(f"ferretdb   {mongo.uri}  (log {mongo.log_path})")
        files = create_consortium(
            root / "consortium", [name for name, _ in NODES], quorum=2, origin=ORIGIN
        )
        for name, port in NODES:
            grpc_processes.append(
                _python_process(
                    name,
                    "chain.node",
                    port,
                    {
                        "SWIFTCHAIN_NODE_NAME": name,
                        "SWIFTCHAIN_CONSORTIUM_FILE": str(files.config_path),
                        "SWIFTCHAIN_SIGNING_KEY_FILE": str(files.node_key_path(name)),
                    },
                    logs,
                )
            )
        for name, port in SERVICES:
            grpc_processes.append(_python_process(name, f"services.{name}", port, {}, logs))
        for proc in grpc_processes:
            proc.process.start()
        deadline = time.monotonic() + HEALTH_TIMEOUT
        for proc in grpc_processes:
            _wait_serving(proc, deadline)
            _say(f"{proc.name:<10} 127.0.0.1:{proc.port}  SERVING  (log {proc.process.log_path})")
        _say(f"all SERVING in {time.monotonic() - began:.1f}s; Ctrl-C (or `make down`) stops all")
        while True:
            for proc in grpc_processes:
                if not proc.process.is_running():
                    raise proc.process.error(f"{proc.name} stopped unexpectedly")
            time.sleep(0.5)
    except KeyboardInterrupt:
        _say("stopping…")
        return 0
    except (ProcessError, ToolchainMissing, BootstrapError) as error:
        _say(f"swiftchain: {error}")
        return 1
    finally:
        for proc in reversed(grpc_processes):
            proc.process.stop(grace=15)
        mongo.stop()
        kafka.stop()
        _pid_file().unlink(missing_ok=True)
        _say("stopped" + (" on request" if stop_requested else "") + "; no process left behind")


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
