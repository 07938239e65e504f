"""FerretDB is reachable by the platform only: it listens on a Unix socket in a folder only its
user may enter, and on no TCP port (devstack/ferretdb.py; FerretDB v1 has no authentication of
its own on the SQLite backend). A process of another user, or anything on the network, is
refused; the platform's own processes (the same user) connect through the socket."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pymongo
import pytest

from devstack.ferretdb import FerretDB

pytestmark = pytest.mark.integration

#: The unprivileged user a connection "from outside the platform" runs as.
NOBODY = 65534
#: A Python that any user may run (the virtualenv's may live in root's home).
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _listening_tcp_inodes() -> set[str]:
    """The socket inodes of every listening TCP socket of the machine (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    return inodes


def test_the_platform_connects_through_the_socket(
    mongo_uri: str, ferretdb_server: FerretDB
) -> None:
    assert ferretdb_server.unix_socket is not None
    assert mongo_uri.startswith("mongodb://%2F") and mongo_uri.endswith(".sock/")
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_uri, serverSelectionTimeoutMS=10_000
    )
    try:
        assert client.admin.command("ping")["ok"] == 1
    finally:
        client.close()


def test_it_listens_on_no_tcp_port(ferretdb_server: FerretDB) -> None:
    pid = ferretdb_server.process.pid
    assert pid is not None
    assert _socket_inodes(pid), "FerretDB holds its Unix socket"
    assert _socket_inodes(pid) & _listening_tcp_inodes() == set()


def test_only_its_user_may_reach_the_socket_or_the_files(ferretdb_server: FerretDB) -> None:
    assert ferretdb_server.unix_socket is not None
    for folder in (ferretdb_server.unix_socket.parent, ferretdb_server.data_dir):
        info = folder.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700, folder
        assert info.st_uid == os.geteuid(), folder


@pytest.mark.skipif(
    os.geteuid() != 0 or SYSTEM_PYTHON is None,
    reason="needs root (to run a client as another user, uid 65534) and /usr/bin/python3",
)
def test_a_process_of_another_user_is_refused(ferretdb_server: FerretDB) -> None:
    assert ferretdb_server.unix_socket is not None
    assert SYSTEM_PYTHON is not None
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('connected')\n"
    )
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", probe, str(ferretdb_server.unix_socket)],
        user=NOBODY,
        group=NOBODY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert done.stdout.strip() == "refused", done.stderr
    # the same probe as the platform's user gets through: the refusal is the folder's doing
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", probe, str(ferretdb_server.unix_socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "connected", done.stderr
