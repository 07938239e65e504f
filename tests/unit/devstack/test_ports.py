"""The stack's port check (devstack/ports.py): a listener is named at once; a port that only an
outgoing connection holds is waited for, then reported; one line a port, no traceback."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.ports import PortsTakenError, check_ports, holders
from devstack.process import free_port


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


@pytest.fixture
def listener(server: socket.socket) -> int:
    port: int = server.getsockname()[1]
    return port


def _program() -> str:
    return Path(f"/proc/{os.getpid()}/comm").read_text().strip()


def test_free_ports_pass() -> None:
    check_ports({"identity": free_port(), "consent": free_port()}, wait=0)


def test_a_port_a_process_listens_on_is_named_with_that_process_at_once(listener: int) -> None:
    with pytest.raises(PortsTakenError) as raised:
        check_ports({"anchoring public": listener}, wait=30)
    assert str(raised.value) == (
        f"port {listener} (anchoring public) is held by {_program()} (pid {os.getpid()}), "
        "which listens on it: stop it, or stop the stack that runs it (`make down`)"
    )


def test_a_port_held_by_an_outgoing_connection_is_waited_for_and_then_passes(
    server: socket.socket, listener: int
) -> None:
    local = free_port()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.bind(("127.0.0.1", local))
    client.connect(("127.0.0.1", listener))
    assert [h.state for h in holders(local)] == ["ESTABLISHED"]
    said: list[str] = []

    def connection_ends(seconds: float) -> None:
        if client.fileno() != -1:
            accepted, _address = server.accept()
            accepted.close()  # the server ends it: the client's side does not linger
            client.close()
        time.sleep(seconds)

    check_ports({"consent public": local}, wait=30, say=said.append, sleep=connection_ends)
    assert said == [f"waiting for ports held by outgoing connections: {local} (consent public)"]


def test_a_port_still_held_by_a_connection_is_reported_after_the_wait(listener: int) -> None:
    local = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.bind(("127.0.0.1", local))
        client.connect(("127.0.0.1", listener))
        now = [0.0]

        def later(seconds: float) -> None:
            now[0] += seconds

        with pytest.raises(PortsTakenError) as raised:
            check_ports({"audit": local}, wait=5, clock=lambda: now[0], sleep=later)
    message = str(raised.value)
    assert message.startswith(f"port {local} (audit) is still held by a connection after 5s")
    assert "ESTABLISHED" in message and "\n" not in message
