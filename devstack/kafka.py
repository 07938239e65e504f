"""A local Apache Kafka broker: jars from Maven Central, run on the machine's JDK.

* :func:`ensure_kafka` resolves the broker's runtime classpath with Maven (``devstack/kafka/
  pom.xml``) into ``.stack/cache/kafka-<ver>/libs/`` once; later calls see the marker and return.
* :class:`KafkaBroker` runs one KRaft node in combined mode (broker + controller) on
  127.0.0.1, formats its storage on first start, and is stopped like every managed process.
  With :class:`BrokerTls` every listener speaks TLS and requires a client certificate from the
  platform CA; the principal is the certificate's subject, and only ACLs allow anything
  (``StandardAuthorizer``, ``allow.everyone.if.no.acl.found=false``) but to the super users.
* :func:`create_topics` creates the topics of :mod:`services.platform.topics`, idempotently.
* :func:`grant` creates the ACLs of :mod:`services.platform.kafka_acls` for the principals of a
  local PKI, idempotently.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from devstack.paths import cache_dir, file_lock
from devstack.pki import Pki, kafka_principal
from devstack.process import ManagedProcess, ProcessError, ServerProcess, free_port, port_open, tail
from devstack.toolchain import BootstrapError, find_java, find_maven, java_home_of
from devstack.versions import KAFKA_SCALA_VERSION, KAFKA_VERSION, LOG4J_VERSION
from services.platform.kafka import KafkaSecurity
from services.platform.kafka_acls import KafkaAccess, Operation, ResourceKind, access_of
from services.platform.tls import CA_FILE, CERT_FILE, KEY_FILE
from services.platform.topics import TOPICS, TopicSpec, min_insync_replicas_for

__all__ = [
    "KAFKA_DIR_NAME",
    "BootstrapError",
    "BrokerTls",
    "KafkaBroker",
    "create_topics",
    "ensure_kafka",
    "grant",
    "kafka_home",
    "platform_grants",
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


#: The authorizer of a KRaft cluster: ACLs kept in the metadata log.
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class BrokerTls:
    """A broker that knows who is talking: its own TLS folder (``ca.pem``, ``cert.pem``,
    ``key.pem`` from the platform CA, the certificate valid for the broker's host), and the
    client TLS folder of the one client that may do anything (topics and ACLs: the tooling that
    sets the platform up); the broker itself is a super user too, for its own requests."""

    broker_dir: Path
    admin_dir: Path

    @classmethod
    def of(cls, pki: Pki, broker: str, admin: str) -> BrokerTls:
        """The broker ``broker`` and the super user ``admin`` of a local PKI."""
        return cls(pki.tls_dir(broker), pki.tls_dir(admin))

    @property
    def admin(self) -> KafkaSecurity:
        """How the super user connects."""
        return KafkaSecurity.tls(self.admin_dir)

    def super_users(self) -> list[str]:
        """The principals the authorizer lets do anything: the broker, the admin."""
        return [
            kafka_principal((folder / CERT_FILE).read_bytes())
            for folder in (self.broker_dir, self.admin_dir)
        ]


class KafkaBroker(ServerProcess):
    """One local KRaft node (``process.roles=broker,controller``, ``node.id=1``).

    ``data_dir`` holds ``server.properties``, the log dirs and (by default) ``kafka.log``. The
    storage is formatted on the first start only, so a persistent ``data_dir`` keeps its topics
    across restarts. Ports default to free ones. With ``tls`` (see :class:`BrokerTls`) both
    listeners, the clients' and the controller's, speak TLS and require a client certificate,
    and only ACLs allow anything; without it, both are plaintext and anyone may do anything.
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
        tls: BrokerTls | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.tls = tls
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

    @property
    def admin(self) -> KafkaSecurity:
        """How the super user connects (plaintext for a broker without TLS)."""
        return self.tls.admin if self.tls is not None else KafkaSecurity()

    @property
    def admin_dir(self) -> Path | None:
        """The super user's TLS folder (``None`` for a broker without TLS)."""
        return self.tls.admin_dir if self.tls is not None else None

    @property
    def keystore_path(self) -> Path:
        """The broker's key and certificate as a PKCS#12 keystore (written at each start)."""
        return self.data_dir / "keystore.p12"

    def _listener_properties(self) -> dict[str, str]:
        protocol = "PLAINTEXT" if self.tls is None else "SSL"
        props = {
            "listeners": (
                f"{protocol}://{self.host}:{self.port},CONTROLLER://{self.host}:"
                f"{self.controller_port}"
            ),
            "advertised.listeners": f"{protocol}://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": protocol,
            "listener.security.protocol.map": f"CONTROLLER:{protocol},{protocol}:{protocol}",
        }
        if self.tls is None:
            return props
        return {
            **props,
            "ssl.client.auth": "required",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore_path),
            "ssl.keystore.password": self._keystore_password(),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.broker_dir / CA_FILE),
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "allow.everyone.if.no.acl.found": "false",
            "super.users": ";".join(self.tls.super_users()),
        }

    def _keystore_password(self) -> str:
        path = self.data_dir / "keystore.password"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24))
        return path.read_text()

    def _write_keystore(self) -> None:
        """Kafka reads a PEM key only encrypted; a PKCS#12 file with the broker's key and
        certificate, under a password kept next to it (mode 0600), is what its JVM reads best."""
        assert self.tls is not None
        folder = self.tls.broker_dir
        key = serialization.load_pem_private_key((folder / KEY_FILE).read_bytes(), None)
        certificate = x509.load_pem_x509_certificate((folder / CERT_FILE).read_bytes())
        password = self._keystore_password().encode()
        data = pkcs12.serialize_key_and_certificates(
            b"kafka",
            key,  # type: ignore[arg-type]
            certificate,
            None,
            serialization.BestAvailableEncryption(password),
        )
        self.keystore_path.touch(mode=0o600, exist_ok=True)
        self.keystore_path.chmod(0o600)
        self.keystore_path.write_bytes(data)

    def properties(self) -> dict[str, str]:
        """The broker configuration (single node: every replication factor and ISR is 1)."""
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.NODE_ID),
            "controller.quorum.voters": f"{self.NODE_ID}@{self.host}:{self.controller_port}",
            **self._listener_properties(),
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
        if self.tls is not None:
            self._write_keystore()
        lines = ["# written by devstack.kafka.KafkaBroker; rewritten on every start"]
        lines += [f"{key}={value}" for key, value in self.properties().items()]
        # it may hold the keystore's password
        self.config_path.touch(mode=0o600, exist_ok=True)
        self.config_path.chmod(0o600)
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
            # 3 s bounds a probe that hits a half-started broker
            admin = _admin_client(self.bootstrap, "devstack-ready", self.admin, timeout=3.0)
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


def _admin_client(
    bootstrap: str, client_id: str, security: KafkaSecurity | None, timeout: float
) -> Any:
    """An admin client connecting with ``security`` (by default this process's settings)."""
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(
        **(security or KafkaSecurity.from_environment()).client_options(),
        bootstrap_servers=bootstrap,
        client_id=client_id,
        request_timeout_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000),
    )


_TOPIC_ALREADY_EXISTS = 36


def create_topics(
    bootstrap: str,
    *,
    replication_factor: int = 1,
    specs: Iterable[TopicSpec] = TOPICS,
    timeout: float = 30.0,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create the topics in ``specs`` that do not exist yet; returns the names created.

    Idempotent: existing topics are left as they are. ``min.insync.replicas`` follows the
    replication factor (1 locally, 2 with 3 replicas). Waits until every topic has a leader.
    Connects with ``security`` (by default as this process's settings say).
    """
    from kafka import errors as kafka_errors

    wanted = list(specs)
    min_isr = str(min_insync_replicas_for(replication_factor))
    admin = _admin_client(bootstrap, "devstack-topics", security, timeout)
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


# -- ACLs ---------------------------------------------------------------------------------------


def platform_grants(
    pki: Pki,
    *,
    services: Iterable[str] = (),
    nodes: Iterable[str] = (),
    topics: Mapping[str, str] | None = None,
) -> dict[str, KafkaAccess]:
    """Each process's principal (from its certificate in ``pki``) and what
    :mod:`services.platform.kafka_acls` lets it do; ``topics`` renames topics (table name ->
    name used), for test clusters whose chain topics have a suffix."""

    def principal(name: str) -> str:
        return kafka_principal((pki.tls_dir(name) / CERT_FILE).read_bytes())

    grants = {principal(name): access_of(name) for name in services}
    grants |= {principal(name): access_of(name, chain_node=True) for name in nodes}
    return {who: access.renamed(topics or {}) for who, access in grants.items()}


def grant(
    bootstrap: str,
    grants: Mapping[str, KafkaAccess],
    *,
    security: KafkaSecurity | None = None,
    timeout: float = 30.0,
) -> int:
    """Create the ALLOW ACLs that give each principal (``User:...``, see
    :func:`devstack.pki.kafka_principal`) its access; returns how many rules were asked for.

    Idempotent: the broker keeps one copy of a rule created twice. Read and Write imply
    Describe. Connects with ``security`` (a super user's; by default this process's settings).
    """
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ResourcePattern,
        ResourceType,
    )

    operations = {Operation.READ: ACLOperation.READ, Operation.WRITE: ACLOperation.WRITE}
    resources = {ResourceKind.TOPIC: ResourceType.TOPIC, ResourceKind.GROUP: ResourceType.GROUP}
    acls = [
        ACL(
            principal=principal,
            host="*",
            operation=operations[rule.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(resources[rule.kind], rule.name),
        )
        for principal, access in grants.items()
        for rule in access.rules()
    ]
    admin = _admin_client(bootstrap, "devstack-acls", security, timeout)
    try:
        if acls:
            result = admin.create_acls(acls)
            if result["failed"]:
                raise RuntimeError(
                    "creating Kafka ACLs failed: "
                    + "; ".join(
                        getattr(error, "__name__", str(error)) for error in result["failed"]
                    )
                )
        return len(acls)
    finally:
        admin.close()
