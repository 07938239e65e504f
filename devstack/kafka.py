"""A local Apache Kafka broker: jars from Maven Central, run on the machine's JDK.

* :func:`ensure_kafka` resolves the broker's runtime classpath with Maven (``devstack/kafka/
  pom.xml``) into ``.stack/cache/kafka-<ver>/libs/`` once; later calls see the marker and return.
* :class:`KafkaBroker` runs one KRaft node in combined mode (broker + controller) on
  127.0.0.1, formats its storage on first start, and is stopped like every managed process.
* :func:`create_topics` creates the topics of :mod:`services.platform.topics`, idempotently.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self

from devstack.paths import cache_dir, file_lock
from devstack.process import ManagedProcess, ProcessError, ServerProcess, free_port, port_open, tail
from devstack.toolchain import BootstrapError, find_java, find_maven, java_home_of
from devstack.versions import KAFKA_SCALA_VERSION, KAFKA_VERSION, LOG4J_VERSION
from services.platform.topics import TOPICS, TopicSpec, min_insync_replicas_for

__all__ = [
    "KAFKA_DIR_NAME",
    "BootstrapError",
    "KafkaBroker",
    "create_topics",
    "ensure_kafka",
    "kafka_home",
]

KAFKA_DIR_NAME = f"kafka-{KAFKA_VERSION}"
_HERE = Path(__file__).resolve().parent / "kafka"
POM = _HERE / "pom.xml"
LOG4J2_CONFIG = _HERE / "log4j2.xml"
_MARKER = "complete.json"
_BROKER_JAR = f"kafka_{KAFKA_SCALA_VERSION}-{KAFKA_VERSION}.jar"

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


# -- download -----------------------------------------------------------------------------------


def kafka_home(cache: Path | None = None) -> Path:
    """``.stack/cache/kafka-<ver>`` (holds ``libs/`` once :func:`ensure_kafka` has run)."""
    return (cache or cache_dir()) / KAFKA_DIR_NAME


def _pins() -> dict[str, str]:
    return {"kafka": KAFKA_VERSION, "scala": KAFKA_SCALA_VERSION, "log4j": LOG4J_VERSION}


def _complete(home: Path) -> bool:
    try:
        marker = json.loads((home / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("pins") == _pins()
        and (home / "libs" / _BROKER_JAR).is_file()
    )


def ensure_kafka(cache: Path | None = None, *, log: Log = _print) -> Path:
    """Fetch the Kafka broker jars (first run only); returns the Kafka home folder.

    Raises :class:`~devstack.toolchain.ToolchainMissing` without Java 17+ or Maven, and
    :class:`BootstrapError` if Maven fails.
    """
    home = kafka_home(cache)
    if _complete(home):
        return home
    with file_lock(
        home.parent / f"{home.name}.lock",
        on_wait=lambda: log("waiting for another process that is fetching the Kafka jars…"),
    ):
        if _complete(home):  # the other process finished it
            return home
        return _fetch_kafka(home, log)


def _fetch_kafka(home: Path, log: Log) -> Path:
    java = find_java()
    mvn = find_maven()
    home.mkdir(parents=True, exist_ok=True)
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    maven_log = home / "maven.log"
    log(
        f"fetching Apache Kafka {KAFKA_VERSION} (kafka_{KAFKA_SCALA_VERSION}) and Log4j "
        f"{LOG4J_VERSION} jars from Maven Central into {home / 'libs'} (first run only)…"
    )
    began = time.monotonic()
    env = dict(os.environ)
    env.setdefault("JAVA_HOME", str(java_home_of(java.path)))
    argv = [
        str(mvn.path),
        "-B",
        "--no-transfer-progress",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
        f"-Dkafka.version={KAFKA_VERSION}",
        f"-Dscala.binary.version={KAFKA_SCALA_VERSION}",
        f"-Dlog4j.version={LOG4J_VERSION}",
    ]
    with maven_log.open("wb") as out:
        done = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0 or not (partial / _BROKER_JAR).is_file():
        raise BootstrapError(
            f"swiftchain: fetching the Kafka jars with Maven failed (exit {done.returncode}); "
            f"see {maven_log}\n{tail(maven_log, 20)}"
        )
    shutil.rmtree(home / "libs", ignore_errors=True)
    partial.rename(home / "libs")
    jars = sorted(p.name for p in (home / "libs").glob("*.jar"))
    (home / _MARKER).write_text(json.dumps({"pins": _pins(), "jars": jars}, indent=2) + "\n")
    log(f"  Kafka jars ready: {len(jars)} jars in {time.monotonic() - began:.1f}s")
    return home


# -- broker -------------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID, URL-safe base64 without padding (as Kafka makes
    them; Kafka also avoids ids starting with '-', which look like a flag)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker(ServerProcess):
    """One local KRaft node (``process.roles=broker,controller``, ``node.id=1``).

    ``data_dir`` holds ``server.properties``, the log dirs and (by default) ``kafka.log``. The
    storage is formatted on the first start only, so a persistent ``data_dir`` keeps its topics
    across restarts. Ports default to free ones.
    """

    NODE_ID = 1
    stop_grace = 20.0

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        home: Path | None = None,
        heap: str = "512m",
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.controller_port = controller_port or free_port(host)
        self.log_path = log_path or data_dir / "kafka.log"
        self.home = home or kafka_home()
        self.heap = heap
        self.overrides = dict(overrides or {})
        self.config_path = data_dir / "server.properties"
        self.log_dir = data_dir / "kraft-logs"
        self.ready_seconds: float | None = None
        self._process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    def properties(self) -> dict[str, str]:
        """The broker configuration (single node: every replication factor and ISR is 1)."""
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.NODE_ID),
            "controller.quorum.voters": f"{self.NODE_ID}@{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:"
                f"{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            # a laptop with 2 cores does not need the defaults' thread pools
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.check.interval.ms": "300000",
        }
        props.update(self.overrides)
        return props

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = ["# written by devstack.kafka.KafkaBroker; rewritten on every start"]
        lines += [f"{key}={value}" for key, value in self.properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def _java_argv(self, main_class: str, *args: str) -> list[str]:
        java = find_java()
        return [
            str(java.path),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            str(self.home / "libs" / "*"),
            main_class,
            *args,
        ]

    def formatted(self) -> bool:
        return (self.log_dir / "meta.properties").is_file()

    def format_storage(self, cluster_id: str | None = None) -> None:
        """``kafka.tools.StorageTool format`` (what ``kafka-storage.sh format`` runs)."""
        argv = self._java_argv(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id or new_cluster_id(),
            "--config",
            str(self.config_path),
            "--ignore-formatted",
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"=== formatting storage: {' '.join(argv)}\n".encode())
            out.flush()
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=180,
                check=False,
            )
        if done.returncode != 0:
            raise ProcessError(
                f"kafka: formatting the storage failed (exit {done.returncode})\n"
                f"--- last 40 lines of {self.log_path} ---\n{tail(self.log_path)}"
            )

    def start(self) -> Self:
        """Write the config, format the storage if new, start the broker (does not wait)."""
        if not (self.home / "libs" / _BROKER_JAR).is_file():
            raise ProcessError(
                f"kafka: no broker jars in {self.home / 'libs'}; run `python -m devstack "
                "bootstrap` (or devstack.kafka.ensure_kafka()) first"
            )
        self.write_config()
        if not self.formatted():
            self.format_storage()
        self._process = ManagedProcess(
            "kafka",
            self._java_argv("kafka.Kafka", str(self.config_path)),
            log_path=self.log_path,
            cwd=self.data_dir,
        ).start()
        return self

    def _cluster_ready(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        admin: Any = None
        try:
            from kafka.admin import KafkaAdminClient

            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="devstack-ready",
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,  # bounds a probe that hits a half-started broker
            )
            cluster = admin.describe_cluster()
            return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) != -1
        except Exception:  # not ready yet: any client error just means "try again"
            return False
        finally:
            if admin is not None:
                admin.close()

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Wait until a Kafka client can describe the cluster; returns seconds since start.
        Raises :class:`ProcessError` (with the log tail) if the broker dies or times out."""
        proc = self.process
        proc.wait_until(self._cluster_ready, timeout=timeout, what="ready", interval=0.25)
        assert proc.started_at is not None
        self.ready_seconds = time.monotonic() - proc.started_at
        return self.ready_seconds


# -- topics -------------------------------------------------------------------------------------

_TOPIC_ALREADY_EXISTS = 36


def create_topics(
    bootstrap: str,
    *,
    replication_factor: int = 1,
    specs: Iterable[TopicSpec] = TOPICS,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics in ``specs`` that do not exist yet; returns the names created.

    Idempotent: existing topics are left as they are. ``min.insync.replicas`` follows the
    replication factor (1 locally, 2 with 3 replicas). Waits until every topic has a leader.
    """
    from kafka import errors as kafka_errors
    from kafka.admin import KafkaAdminClient

    wanted = list(specs)
    min_isr = str(min_insync_replicas_for(replication_factor))
    admin: Any = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="devstack-topics",
        request_timeout_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000),
    )
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        created: list[str] = []
        if missing:
            request = {
                spec.name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": replication_factor,
                    "configs": {**spec.config, "min.insync.replicas": min_isr},
                }
                for spec in missing
            }
            result = admin.create_topics(
                request, timeout_ms=int(timeout * 1000), raise_errors=False
            )
            failures = []
            for topic in result["topics"]:
                code = topic.get("error_code", 0)
                if code == 0:
                    created.append(topic["name"])
                elif code != _TOPIC_ALREADY_EXISTS:  # lost a race with another creator: fine
                    error = kafka_errors.for_code(code).__name__
                    message = topic.get("error_message") or ""
                    failures.append(f"{topic['name']}: {error} {message}".strip())
            if failures:
                raise RuntimeError("creating Kafka topics failed: " + "; ".join(failures))
        admin.wait_for_topics([spec.name for spec in wanted], timeout_ms=int(timeout * 1000))
        logging.getLogger(__name__).debug("topics created: %s", created)
        return created
    finally:
        admin.close()
