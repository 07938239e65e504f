"""A running platform with its parties, for end-to-end tests.

:class:`Platform` starts the whole local stack (Kafka, FerretDB, three chain nodes, the four
services, all over TLS) and then, through the identity service itself, registers the parties
the tests act as: two hospitals, a regulator and an app operator (each with a client
certificate issued from a CSR), and two patients (each with a device key, logged in on the
public port). Each party is a :class:`Principal`; :meth:`Platform.channel` opens the channel it
would use.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from devstack.parties import Principal, StackParties, wait_for
from devstack.pki import ADMIN
from devstack.process import ManagedProcess, ProcessError, wait_grpc_serving
from devstack.stack import LocalStack, StackPorts
from services.platform.caller import Role

__all__ = ["Platform", "Principal", "wait_for"]


class Platform(StackParties):
    """The running stack and its registered parties."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spans_dir = root / "spans"
        #: What the stack said (its start, its supervisor's exits and restarts), each line with
        #: the monotonic time it was said at.
        self.said: list[tuple[float, str]] = []
        self.stack = LocalStack(
            root / "stack", StackPorts.free(), say=self._hear, spans_dir=self.spans_dir
        )
        super().__init__(self.stack.root, self.stack.ports, root / "parties")
        self.parties: dict[str, Principal] = {}

    def _hear(self, line: str) -> None:
        self.said.append((time.monotonic(), line))

    # --- parties --------------------------------------------------------------------------

    @property
    def hospital(self) -> Principal:
        """hospital-a."""
        return self.parties["hospital"]

    @property
    def patient(self) -> Principal:
        """patient-1, registered by hospital-a."""
        return self.parties["patient"]

    def callers(self) -> list[Principal]:
        """Every kind of caller, for the authorization matrix."""
        return [
            self.parties[label]
            for label in (
                "hospital",
                "other hospital",
                "patient",
                "other patient",
                "regulator",
                "app",
                "admin",
                "service",
                "chain node",
                "anonymous",
            )
        ]

    def start(self) -> None:
        """Start the stack and register every party through the identity service."""
        self.stack.start()
        self.parties["admin"] = self.admin
        self.parties["service"] = Principal(
            "service", Role.SERVICE, "anchoring", self.stack.pki.tls_dir("anchoring")
        )
        self.parties["chain node"] = Principal(
            "chain node", Role.CHAIN_NODE, "hospital-b", self.stack.pki.tls_dir("hospital-b")
        )
        self.parties["anonymous"] = self.anonymous
        for label, role, organization_id in (
            ("hospital", Role.HOSPITAL, "hospital-a"),
            ("other hospital", Role.HOSPITAL, "hospital-b"),
            ("regulator", Role.REGULATOR, "regulator-1"),
            ("app", Role.APP, "app-1"),
        ):
            self.parties[label] = self.register_organization(label, role, organization_id)
        self.parties["patient"] = self.register_patient("patient", self.parties["hospital"])
        self.parties["other patient"] = self.register_patient("other patient", self.parties["app"])

    def stop(self) -> None:
        """Stop everything."""
        self.stack.stop()

    def restart(self, process: str) -> None:
        """Stop a gRPC process of the stack (reap it, if it was killed) and start it again with
        the same command, environment and ports; return once it answers SERVING."""
        running = next(p for p in self.stack.grpc_processes if p.name == process)
        old = running.process
        old.stop(grace=15)
        running.process = old.fresh().start()
        wait_grpc_serving(running.process, running.port, 60, tls_dir=self.stack.pki.tls_dir(ADMIN))

    def process(self, name: str) -> ManagedProcess:
        """The running process of ``kafka``, ``ferretdb`` or a gRPC process of the stack."""
        if name == "kafka":
            return self.stack.kafka.process
        if name == "ferretdb":
            return self.stack.mongo.process
        return next(p.process for p in self.stack.grpc_processes if p.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL process ``name`` (see :meth:`process`), as a crash would end it."""
        pid = self.process(name).pid
        assert pid is not None, f"{name} was never started"
        os.kill(pid, signal.SIGKILL)

    def heal(self) -> None:
        """Bring the stack back to healthy after a drill, whatever it left: start the broker
        and FerretDB again if they are down and wait until they answer, then restart every
        gRPC process that is down or does not answer SERVING, and wait until all do."""
        for server in (self.stack.kafka, self.stack.mongo):
            if not server.process.is_running():
                server.stop(grace=5)
                server.start()
        self.stack.kafka.wait_ready(timeout=120)
        self.stack.mongo.wait_ready(timeout=60)
        tls_dir = self.stack.pki.tls_dir(ADMIN)
        for proc in self.stack.grpc_processes:
            try:
                wait_grpc_serving(proc.process, proc.port, 60, tls_dir=tls_dir)
            except ProcessError:
                self.restart(proc.name)
