"""What the benchmarks under ``bench/`` share: the figure lines that ``bench/run_all.py``
collects into one table, percentiles, the CPU and memory of the processes a run started, and
the platform a benchmark runs on (:func:`bench_platform`).

A benchmark prints each of its results as one line ``FIGURE <name>=<value> <unit>`` (besides its
own human-readable table); ``run_all.py`` reads those lines from every script's output. A name
is a short identifier without spaces, unique within its script.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstack.parties import Principal
    from tests.e2e.platform import Platform

__all__ = [
    "FIGURE_LINE",
    "Figure",
    "bench_hospital",
    "bench_platform",
    "bench_servers",
    "cpu_seconds",
    "figure",
    "idle_cores",
    "parse_figures",
    "percentile",
    "platform_pids",
    "rss_bytes",
    "shared_platform",
    "slug",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

#: ``FIGURE name=value unit``; the unit may be empty.
FIGURE_LINE = re.compile(r"^FIGURE (?P<name>[A-Za-z0-9_.:/-]+)=(?P<value>\S+)(?: (?P<unit>.*))?$")


@dataclass(frozen=True)
class Figure:
    """One result of one benchmark."""

    name: str
    value: float
    unit: str


def figure(name: str, value: float, unit: str = "") -> None:
    """Print ``value`` as a figure line for ``run_all.py`` (flushed at once, so that a run that
    fails later still shows what it measured)."""
    if not FIGURE_LINE.match(f"FIGURE {name}=0"):
        raise ValueError(f"a figure name is one word of letters, digits and _.:/-, got {name!r}")
    print(f"FIGURE {name}={value:.6g} {unit}".rstrip(), flush=True)


def slug(text: str) -> str:
    """``text`` as a figure name: runs of other characters than letters and digits become
    ``_`` ("generated at 1,000,000" -> "generated_at_1_000_000")."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def parse_figures(output: str) -> list[Figure]:
    """Every figure line in a benchmark's output, in order."""
    found = []
    for line in output.splitlines():
        match = FIGURE_LINE.match(line.strip())
        if match:
            found.append(
                Figure(match["name"], float(match["value"]), (match["unit"] or "").strip())
            )
    return found


def percentile(values: list[float], p: int) -> float:
    """The p-th percentile (1..99) of ``values``."""
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def platform_pids(platform: Platform) -> dict[str, int]:
    """Process name -> pid of everything the platform runs."""
    stack = platform.stack
    pids = {"kafka": stack.kafka.process.pid, "ferretdb": stack.mongo.process.pid}
    pids.update({p.name: p.process.pid for p in stack.grpc_processes})
    return {name: pid for name, pid in pids.items() if pid is not None}


def idle_cores(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Cores each process used over the next ``seconds`` (sleeping meanwhile)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc; 0 if unknown."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * _PAGE


#: The platform :func:`shared_platform` lends to every :func:`bench_platform` meanwhile.
_shared: Platform | None = None


def _ensure_servers() -> None:
    """Fetch and build Kafka and FerretDB into the cache if not there yet (imported here: the
    in-process benchmarks need none of the servers' code)."""
    from devstack.ferretdb import ensure_ferretdb
    from devstack.kafka import ensure_kafka

    ensure_kafka(log=lambda line: None)
    ensure_ferretdb(log=lambda line: None)


@contextmanager
def bench_platform() -> Iterator[Platform]:
    """The whole platform (Kafka, FerretDB, three chain nodes, the services) a benchmark runs
    on: the one :func:`shared_platform` is lending, or else a fresh one in a temporary folder,
    stopped when the block ends."""
    if _shared is not None:
        yield _shared
        return
    from tests.e2e.platform import Platform

    _ensure_servers()
    with tempfile.TemporaryDirectory(prefix="swiftchain-bench-") as tmp:
        platform = Platform(Path(tmp))
        try:
            print("starting the platform (Kafka, FerretDB, 3 chain nodes, services)...", flush=True)
            platform.start()
            with kafka_client_as(platform.stack.kafka.admin_dir):
                yield platform
        finally:
            platform.stop()


@contextmanager
def kafka_client_as(tls_dir: Path | None) -> Iterator[None]:
    """Inside the block, this process's Kafka clients (``kafka_client_options()``,
    ``make_producer``, ...) present the certificate in ``tls_dir`` (the broker's super user,
    for a benchmark that sets up topics and ACLs of its own); plaintext with ``None``."""
    names = ("SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL", "SWIFTCHAIN_KAFKA_TLS_DIR")
    before = {name: os.environ.get(name) for name in names}
    os.environ[names[0]] = "PLAINTEXT" if tls_dir is None else "SSL"
    os.environ[names[1]] = str(tls_dir or "")
    if tls_dir is None:
        del os.environ[names[1]]
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def bench_servers(root: Path) -> Iterator[tuple[str, str]]:
    """(Kafka bootstrap, MongoDB URI) for a benchmark that brings its own nodes: those of the
    platform :func:`shared_platform` is lending, or else a Kafka broker and a FerretDB of its
    own under ``root``, stopped when the block ends. (Its nodes use topics and databases of
    their own either way.)"""
    if _shared is not None:
        with kafka_client_as(_shared.stack.kafka.admin_dir):
            yield _shared.stack.kafka.bootstrap, _shared.stack.mongo.uri
        return
    from devstack.ferretdb import FerretDB
    from devstack.kafka import BrokerTls, KafkaBroker, create_topics
    from devstack.pki import ADMIN, KAFKA_BROKER, KAFKA_BROKER_UNIT, ensure_pki

    _ensure_servers()
    # as the platform's: TLS with client certificates, ACLs, FerretDB on a private socket
    pki = ensure_pki(root / "pki", [(KAFKA_BROKER, KAFKA_BROKER_UNIT)])
    kafka = KafkaBroker(root / "kafka", tls=BrokerTls.of(pki, KAFKA_BROKER, ADMIN))
    mongo = FerretDB(root / "ferretdb", unix_socket=root / "ferretdb" / "ferretdb.sock")
    try:
        kafka.start()
        mongo.start()
        kafka.wait_ready()
        mongo.wait_ready()
        # the platform's topics, as on the shared one
        create_topics(kafka.bootstrap, security=kafka.admin)
        with kafka_client_as(kafka.admin_dir):
            yield kafka.bootstrap, mongo.uri
    finally:
        mongo.stop()
        kafka.stop()


@contextmanager
def shared_platform() -> Iterator[Platform]:
    """Start one platform and lend it (or its servers) to every :func:`bench_platform` and
    :func:`bench_servers` inside the block: what
    ``run_all.py --quick`` does, so that the small runs do not each spend half a minute
    starting servers. (The full runs each start their own: a platform that has taken 100,000
    anchors is not the one the next benchmark should measure.)"""
    global _shared
    with bench_platform() as platform:
        _shared = platform
        try:
            yield platform
        finally:
            _shared = None


def bench_hospital(platform: Platform) -> Principal:
    """hospital-bench, registered on ``platform`` once (benchmarks sharing a platform share it)
    with its first key on the log."""
    from services.platform.caller import Role

    hospital = platform.parties.get("bench hospital")
    if hospital is None:
        hospital = platform.register_organization("bench", Role.HOSPITAL, "hospital-bench")
        platform.wait_key_active(hospital, hospital.id, hospital.key_id)
        platform.parties["bench hospital"] = hospital
    return hospital
