"""Real Kafka and FerretDB for integration tests.

Session-scoped: each server starts once per test run, on free ports, with its data and log in
the run's temp dir, and is stopped afterwards whatever happens (fixture teardown, then the root
conftest's ``pytest_unconfigure``, then ``atexit``, then the kernel's parent-death signal).

* ``kafka_bootstrap`` — ``"127.0.0.1:<port>"`` of a KRaft broker with every topic of
  :data:`services.platform.topics.TOPICS` created (replication factor 1). It speaks TLS only,
  requires a client certificate of the run's PKI (``kafka_pki``) and allows each process of the
  platform what :mod:`services.platform.kafka_acls` says. The test process itself connects as
  the PKI's consortium admin, the broker's super user: the fixture sets
  ``SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL`` and ``SWIFTCHAIN_KAFKA_TLS_DIR`` for the session, so
  ``make_producer`` / ``make_consumer`` / ``kafka_client_options()`` connect as it.
* ``kafka_pki`` — that PKI (devstack/pki.py): the broker's folder, one per service and chain
  node of the platform (their Kafka principals), and the admin's.
* ``mongo_uri`` — ``"mongodb://<the socket's path>/"`` of a FerretDB (SQLite) server that
  listens on a Unix socket in a folder only this user may enter, and on no TCP port.
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
from devstack.kafka import (
    BrokerTls,
    KafkaBroker,
    create_topics,
    ensure_kafka,
    grant,
    platform_grants,
)
from devstack.pki import ADMIN, KAFKA_BROKER, KAFKA_BROKER_UNIT, Pki, ensure_pki
from devstack.process import ProcessError
from devstack.toolchain import BootstrapError, ToolchainMissing
from services.platform.kafka_acls import SERVICE_ACCESS

#: The chain nodes of the run's PKI (principals with the chain nodes' access).
CHAIN_NODES = ("hospital-a", "hospital-b", "hospital-c")

_KAFKA_FIXTURES = {"kafka_bootstrap", "kafka_broker", "kafka_pki"}
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
def kafka_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The PKI the run's broker trusts: its own certificate, the platform's processes', the
    consortium admin's (the broker's super user)."""
    return ensure_pki(
        tmp_path_factory.mktemp("kafka-pki"),
        [(name, "service") for name in SERVICE_ACCESS]
        + [(name, "chain-node") for name in CHAIN_NODES]
        + [(KAFKA_BROKER, KAFKA_BROKER_UNIT)],
    )


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory, kafka_pki: Pki) -> Iterator[KafkaBroker]:
    if "kafka" in _bootstrap_errors:
        pytest.fail(_bootstrap_errors["kafka"], pytrace=False)
    broker = KafkaBroker(
        tmp_path_factory.mktemp("kafka"), tls=BrokerTls.of(kafka_pki, KAFKA_BROKER, ADMIN)
    )
    environment = pytest.MonkeyPatch()
    try:
        failure = None
        try:
            ensure_kafka(log=lambda line: None)
            broker.start()
            broker.wait_ready(timeout=90)
            create_topics(broker.bootstrap, replication_factor=1, security=broker.admin)
            grant(
                broker.bootstrap,
                platform_grants(kafka_pki, services=SERVICE_ACCESS, nodes=CHAIN_NODES),
                security=broker.admin,
            )
        except (ToolchainMissing, BootstrapError, ProcessError) as exc:
            failure = _failure("Kafka", exc)
        except Exception as exc:  # e.g. topic creation; the broker log says why
            failure = _failure("Kafka", exc, broker.log_tail())
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        # the test process talks to the broker as its super user
        environment.setenv("SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL", "SSL")
        environment.setenv("SWIFTCHAIN_KAFKA_TLS_DIR", str(kafka_pki.tls_dir(ADMIN)))
        yield broker
    finally:
        environment.undo()
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``"127.0.0.1:<port>"`` of the test run's Kafka broker, topics created."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def ferretdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    if "ferretdb" in _bootstrap_errors:
        pytest.fail(_bootstrap_errors["ferretdb"], pytrace=False)
    folder = tmp_path_factory.mktemp("ferretdb")
    server = FerretDB(folder, unix_socket=folder / "ferretdb.sock")
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
    """``"mongodb://<socket path>/"`` of the test run's FerretDB; add a database name."""
    return ferretdb_server.uri
