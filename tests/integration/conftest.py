"""Real Kafka and FerretDB for integration tests.

Session-scoped: each server starts once per test run, on free ports, with its data and log in
the run's temp dir, and is stopped afterwards whatever happens (fixture teardown, then the root
conftest's ``pytest_unconfigure``, then ``atexit``, then the kernel's parent-death signal).

* ``kafka_bootstrap`` — ``"127.0.0.1:<port>"`` of a KRaft broker with every topic of
  :data:`services.platform.topics.TOPICS` created (replication factor 1).
* ``mongo_uri`` — ``"mongodb://127.0.0.1:<port>/"`` of a FerretDB (SQLite) server.
* ``kafka_broker`` / ``ferretdb_server`` — the server objects, for tests that need their logs or
  want to stop and restart them.

The first run downloads the Kafka jars and builds FerretDB (minutes); that happens once after
collection, outside any test's timeout. A server that cannot be prepared or started fails the
tests that need it (never skips them), with the tail of its log in the message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from devstack.ferretdb import FerretDB, ensure_ferretdb
from devstack.kafka import KafkaBroker, create_topics, ensure_kafka
from devstack.process import ProcessError
from devstack.toolchain import BootstrapError, ToolchainMissing

_KAFKA_FIXTURES = {"kafka_bootstrap", "kafka_broker"}
_MONGO_FIXTURES = {"mongo_uri", "ferretdb_server"}
_bootstrap_errors: dict[str, str] = {}


def _writer(config: pytest.Config) -> Callable[[str], None]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return lambda line: print(line, flush=True)

    def write(line: str) -> None:
        reporter.write_line(f"[devstack] {line}")

    return write


def _prepare(what: str, ensure: Callable[[], object]) -> None:
    try:
        ensure()
    except (ToolchainMissing, BootstrapError) as exc:
        _bootstrap_errors[what] = str(exc)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Download/build what the selected tests need before any test (and its timeout) starts."""
    if session.config.option.collectonly:
        return
    needed: set[str] = set()
    for item in session.items:
        needed.update(getattr(item, "fixturenames", ()))
    log = _writer(session.config)
    if needed & _KAFKA_FIXTURES:
        _prepare("kafka", lambda: ensure_kafka(log=log))
    if needed & _MONGO_FIXTURES:
        _prepare("ferretdb", lambda: ensure_ferretdb(log=log))


def _failure(what: str, exc: BaseException, log_tail: str = "") -> str:
    message = f"could not start {what} for the integration tests: {exc}"
    if log_tail and log_tail not in message:
        message += f"\n--- last lines of the {what} log ---\n{log_tail}"
    return message


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    if "kafka" in _bootstrap_errors:
        pytest.fail(_bootstrap_errors["kafka"], pytrace=False)
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        failure = None
        try:
            ensure_kafka(log=lambda line: None)
            broker.start()
            broker.wait_ready(timeout=90)
            create_topics(broker.bootstrap, replication_factor=1)
        except (ToolchainMissing, BootstrapError, ProcessError) as exc:
            failure = _failure("Kafka", exc)
        except Exception as exc:  # e.g. topic creation; the broker log says why
            failure = _failure("Kafka", exc, broker.log_tail())
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``"127.0.0.1:<port>"`` of the test run's Kafka broker, topics created."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def ferretdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    if "ferretdb" in _bootstrap_errors:
        pytest.fail(_bootstrap_errors["ferretdb"], pytrace=False)
    server = FerretDB(tmp_path_factory.mktemp("ferretdb"))
    try:
        failure = None
        try:
            ensure_ferretdb(log=lambda line: None)
            server.start()
            server.wait_ready(timeout=60)
        except (ToolchainMissing, BootstrapError, ProcessError) as exc:
            failure = _failure("FerretDB", exc)
        except Exception as exc:
            failure = _failure("FerretDB", exc, server.log_tail())
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_uri(ferretdb_server: FerretDB) -> str:
    """``"mongodb://127.0.0.1:<port>/"`` of the test run's FerretDB; add a database name."""
    return ferretdb_server.uri
