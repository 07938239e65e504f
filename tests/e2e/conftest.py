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
