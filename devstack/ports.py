"""Checking the stack's ports before anything starts, and naming whoever holds one.

The local stack keeps its documented ports (50051-50163, 8061-8063, 9092-9093, 9464-9470), but
those sit inside Linux's ephemeral range (32768-60999), so an outgoing connection of any program
may hold one for a while. :func:`check_ports` tries each port as a server would bind it; a port
held by a listening process is reported at once with that process's name and pid; a port held
only by a connection is waited for (it is released when the connection ends) and retried for a
bounded time (a connection's TIME_WAIT lasts 60 s on Linux), then reported the same way. Every
conflict is one line; never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.process import ProcessError

__all__ = ["Holder", "PortsTakenError", "check_ports", "holders"]

#: /proc/net/tcp state codes (include/net/tcp_states.h).
_LISTEN = "0A"
_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


class PortsTakenError(ProcessError):
    """Ports the stack needs are held by others; the message has one line per port."""


@dataclass(frozen=True)
class Holder:
    """A socket that uses a port locally: its TCP state and, if found, its process."""

    state: str
    pid: int | None
    program: str | None

    @property
    def listening(self) -> bool:
        """Whether it is a server listening on the port."""
        return self.state == "LISTEN"

    def describe(self) -> str:
        """``python (pid 4242)``, or what is known."""
        if self.pid is None:
            return "a process this user cannot see"
        return f"{self.program or 'a process'} (pid {self.pid})"


def _proc_sockets(port: int) -> Iterator[tuple[str, str]]:
    """(state code, inode) of every TCP socket whose local port is ``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                yield fields[3], fields[9]


def _owners(inodes: set[str]) -> dict[str, tuple[int, str]]:
    """inode -> (pid, program) for the sockets this user may see."""
    found: dict[str, tuple[int, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = fd.readlink().as_posix()
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        program = (proc / "comm").read_text().strip()
                        found[target[8:-1]] = (int(proc.name), program)
    return found


def holders(port: int) -> list[Holder]:
    """Every TCP socket on this machine that uses ``port`` locally (from /proc)."""
    sockets = list(_proc_sockets(port))
    owners = _owners({inode for _, inode in sockets if inode != "0"})
    result = []
    for state, inode in sockets:
        pid, program = owners.get(inode, (None, None))
        result.append(Holder(_STATES.get(state, state), pid, program))
    return result


def _bindable(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (as gRPC does, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _conflict(name: str, port: int) -> str | None:
    """One line naming who holds ``port``, or None if it is free or held by a connection."""
    listeners = [h for h in holders(port) if h.listening]
    if listeners:
        return (
            f"port {port} ({name}) is held by {listeners[0].describe()}, which listens on it: "
            "stop it, or stop the stack that runs it (`make down`)"
        )
    return None


def check_ports(
    named: Mapping[str, int],
    *,
    host: str = "127.0.0.1",
    wait: float = 75.0,
    say: Callable[[str], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once every port of ``named`` (what -> port) can be bound; raise
    :class:`PortsTakenError` naming each port that cannot: at once for one a process listens on,
    after ``wait`` seconds for one that only a connection holds."""
    deadline = clock() + wait
    told = False
    while True:
        busy = {name: port for name, port in named.items() if not _bindable(host, port)}
        if not busy:
            return
        listened = {name: line for name, port in busy.items() if (line := _conflict(name, port))}
        if listened or clock() >= deadline:
            lines = [
                listened.get(name)
                or (
                    f"port {port} ({name}) is still held by a connection after {wait:.0f}s "
                    f"({_states(port)}); the stack's ports sit in Linux's ephemeral range, "
                    "so a program's outgoing connection took it: try again shortly"
                )
                for name, port in busy.items()
            ]
            raise PortsTakenError("\n".join(lines))
        if not told:
            say(
                "waiting for ports held by outgoing connections: "
                + ", ".join(f"{port} ({name})" for name, port in busy.items())
            )
            told = True
        sleep(0.5)


def _states(port: int) -> str:
    found = sorted({h.state for h in holders(port)})
    return "/".join(found) if found else "state unknown"
