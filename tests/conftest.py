"""Root test configuration, kept generic: fixtures that need real servers live next to the
tests that use them (tests/integration/conftest.py)."""

from __future__ import annotations

import pytest

from devstack import process


def pytest_unconfigure(config: pytest.Config) -> None:
    # Backstop: no server a test run started (Kafka, FerretDB, services) outlives the run, even
    # if a fixture's own teardown did not get to run. devstack.process also stops them atexit.
    process.stop_all()
