"""The running platform, shared by the end-to-end tests of one run (it takes ~15 s to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.ferretdb import ensure_ferretdb
from devstack.kafka import ensure_kafka
from tests.e2e.platform import Platform


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    ensure_kafka(log=lambda line: None)
    ensure_ferretdb(log=lambda line: None)
    running = Platform(tmp_path_factory.mktemp("platform"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The benchmarks' quick run goes first among the end-to-end tests, before the shared
    platform starts: it starts a platform of its own, and two on two cores slow both down. The
    chaos drills go last: they kill and restart the shared platform's processes, and whatever
    a drill that fails leaves behind can then harm no other test."""
    drills = [item for item in items if item.path.name == "test_chaos.py"]
    items[:] = [item for item in items if item.path.name != "test_chaos.py"] + drills
    quick = [item for item in items if item.path.name == "test_bench_quick.py"]
    if not quick:
        return
    rest = [item for item in items if item.path.name != "test_bench_quick.py"]
    first_e2e = next((n for n, item in enumerate(rest) if "e2e" in item.path.parts), len(rest))
    items[:] = rest[:first_e2e] + quick + rest[first_e2e:]
