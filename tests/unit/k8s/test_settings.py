"""The manifests against the code: every process's settings class (pydantic-settings,
``SWIFTCHAIN_*``), the ports it listens on, the files it reads and the topics it uses."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from chain.node.main import NodeSettings
from k8s import make_material
from services.anchoring.main import AnchoringSettings
from services.audit.main import AuditSettings
from services.consent.main import ConsentSettings
from services.identity.main import IdentitySettings
from services.platform import tls
from services.platform.ca import CA_CERT_FILE, CA_KEY_FILE
from services.platform.consortium_files import ConsortiumFiles
from services.platform.settings import ProcessSettings
from services.platform.topics import TOPICS
from tests.unit.k8s.manifests import (
    KUSTOMIZATIONS,
    NAMESPACE,
    REPO,
    SETTINGS_PREFIX,
    Process,
    SecretRef,
    environment,
    named,
    of_kind,
    processes,
    projected_files,
    rendered,
)

#: What ``python -m <module>`` runs, and the settings class it reads.
SETTINGS_BY_MODULE: dict[str, type[ProcessSettings]] = {
    "services.identity": IdentitySettings,
    "services.anchoring": AnchoringSettings,
    "services.consent": ConsentSettings,
    "services.audit": AuditSettings,
    "chain.node": NodeSettings,
    "chain": NodeSettings,
}
#: Fields whose defaults describe the local stack, whatever their type says.
LOCAL_ONLY_FIELDS = frozenset({"listen_host", "port", "public_port", "node_name"})
#: Fields for tests and local debugging that a cluster leaves unset (it exports spans over OTLP).
DEVELOPMENT_ONLY_FIELDS = frozenset({"spans_file"})
#: The consortium files each process reads from ``consortium_dir`` (see each main.py), beyond
#: the public config every one of them loads.
_FILES = ConsortiumFiles(Path())
CONSORTIUM_FILES = {
    "identity": {_FILES.registrar_key_path.name, _FILES.tag_key_path.name},
    "anchoring": {_FILES.tag_key_path.name},
    "consent": {_FILES.tag_key_path.name, _FILES.consent_key_path.name},
}
TLS_FILES = {tls.CA_FILE, tls.CERT_FILE, tls.KEY_FILE, tls.TOKEN_VERIFY_FILE}

PAIRS = [(d, process) for d in KUSTOMIZATIONS for process in processes(rendered(d))]
CASES = [pytest.param(d, p, id=f"{d.name}-{p.name}") for d, p in PAIRS]


def _settings_class(process: Process) -> type[ProcessSettings]:
    assert process.module in SETTINGS_BY_MODULE, (
        f"{process.name} runs python -m {process.module}: add its settings class to "
        "SETTINGS_BY_MODULE"
    )
    return SETTINGS_BY_MODULE[process.module]


def _field_name(variable: str) -> str:
    return variable.removeprefix(SETTINGS_PREFIX).lower()


def needs_setting_in_k8s(settings: type[BaseSettings], field: str) -> bool:
    """Whether a settings field has no default that works in a cluster: an address on the
    machine itself, a path into the local stack's ``.stack/``, nothing at all (``tls_dir``:
    plaintext), or one of :data:`LOCAL_ONLY_FIELDS`."""
    info = settings.model_fields[field]
    default = info.default
    if field in DEVELOPMENT_ONLY_FIELDS:
        return False
    if field in LOCAL_ONLY_FIELDS or info.is_required() or default is None:
        return True
    if isinstance(default, Path):
        return True
    return isinstance(default, str) and ("127.0.0.1" in default or "localhost" in default)


def _load_settings(
    monkeypatch: pytest.MonkeyPatch, directory: Path, process: Process
) -> ProcessSettings:
    """The process's settings as the pod's environment makes them (Secret values replaced by
    stand-ins of the right shape)."""
    for variable in [v for v in os.environ if v.startswith(SETTINGS_PREFIX)]:
        monkeypatch.delenv(variable)
    for variable, value in environment(rendered(directory), process).items():
        if isinstance(value, SecretRef):
            value = "mongodb://user:secret@mongo-0.mongo:27017/?replicaSet=rs0"
        monkeypatch.setenv(variable, value)
    return _settings_class(process)()


def test_every_process_of_the_platform_is_deployed_once() -> None:
    for directory in KUSTOMIZATIONS:
        deployed = processes(rendered(directory))
        names = [process.name for process in deployed]
        assert sorted(names) == sorted(make_material.PROCESSES), directory
        modules = {process.name: process.module for process in deployed}
        for service in make_material.SERVICES:
            assert modules[service] == f"services.{service}"
        for node in make_material.NODES:
            assert SETTINGS_BY_MODULE[modules[node]] is NodeSettings


@pytest.mark.parametrize(("directory", "process"), CASES)
def test_every_variable_is_a_field_of_the_settings_class(directory: Path, process: Process) -> None:
    settings = _settings_class(process)
    for variable in environment(rendered(directory), process):
        assert variable.startswith(SETTINGS_PREFIX), (
            f"{process.name} sets {variable}: only SWIFTCHAIN_* settings (put anything else "
            "in the image)"
        )
        assert _field_name(variable) in settings.model_fields, (
            f"{process.name} sets {variable}, which {settings.__name__} does not have"
        )


@pytest.mark.parametrize(("directory", "process"), CASES)
def test_every_setting_without_a_cluster_default_is_set(directory: Path, process: Process) -> None:
    settings = _settings_class(process)
    have = {_field_name(variable) for variable in environment(rendered(directory), process)}
    needed = {field for field in settings.model_fields if needs_setting_in_k8s(settings, field)}
    assert needed - have == set(), f"{process.name} must set {sorted(needed - have)}"


@pytest.mark.parametrize(("directory", "process"), CASES)
def test_development_only_settings_are_not_set(directory: Path, process: Process) -> None:
    have = {_field_name(variable) for variable in environment(rendered(directory), process)}
    assert have & DEVELOPMENT_ONLY_FIELDS == set(), process.name


@pytest.mark.parametrize(("directory", "process"), CASES)
def test_the_metrics_endpoint_is_served_and_scraped(
    monkeypatch: pytest.MonkeyPatch, directory: Path, process: Process
) -> None:
    settings = _load_settings(monkeypatch, directory, process)
    assert settings.metrics_port, f"{process.name} serves no Prometheus endpoint"
    assert process.port("metrics") == settings.metrics_port
    annotations = process.pod_annotations
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    policy = named(rendered(directory), "NetworkPolicy", "metrics-ingress")
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": settings.metrics_port}]


@pytest.mark.parametrize(("directory", "process"), CASES)
def test_the_environment_makes_valid_settings(
    monkeypatch: pytest.MonkeyPatch, directory: Path, process: Process
) -> None:
    settings = _load_settings(monkeypatch, directory, process)
    assert settings.listen_host in ("0.0.0.0", "::", "[::]")
    assert settings.tls_dir is not None


@pytest.mark.parametrize(("directory", "process"), CASES)
def test_ports_services_and_probes_agree_with_the_settings(
    monkeypatch: pytest.MonkeyPatch, directory: Path, process: Process
) -> None:
    settings = _load_settings(monkeypatch, directory, process)
    resources = rendered(directory)
    assert process.port("grpc") == settings.port
    assert process.port("grpc-public") == settings.public_port == settings.port + 100
    service = named(resources, "Service", process.name)
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == settings.port and ports["grpc"]["targetPort"] == "grpc"
    assert ports["grpc-public"]["port"] == settings.public_port
    assert ports["grpc-public"]["targetPort"] == "grpc-public"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = process.container[kind]["exec"]["command"]
        flags = dict(arg.split("=", 1) for arg in command[1:] if "=" in arg)
        assert command[0] == "grpc-health-probe" and "-tls" in command
        assert flags["-addr"] == f"127.0.0.1:{settings.port}", kind
        assert flags["-tls-server-name"] == f"{process.name}.{NAMESPACE}.svc", kind
        assert settings.tls_dir is not None
        for flag, file in (
            ("-tls-ca-cert", tls.CA_FILE),
            ("-tls-client-cert", tls.CERT_FILE),
            ("-tls-client-key", tls.KEY_FILE),
        ):
            assert flags[flag] == str(PurePosixPath(settings.tls_dir) / file), (kind, flag)


@pytest.mark.parametrize(("directory", "process"), CASES)
def test_the_files_the_settings_name_are_mounted(
    monkeypatch: pytest.MonkeyPatch, directory: Path, process: Process
) -> None:
    settings = _load_settings(monkeypatch, directory, process)
    assert settings.tls_dir is not None
    tls_files = set(projected_files(process.volume(str(settings.tls_dir))))
    expected = TLS_FILES | ({tls.TOKEN_SIGNING_FILE} if process.name == "identity" else set())
    assert tls_files == expected
    if isinstance(settings, IdentitySettings | AnchoringSettings | ConsentSettings):
        files = set(projected_files(process.volume(str(settings.consortium_dir))))
        assert files == {_FILES.config_path.name, *CONSORTIUM_FILES[process.name]}
    if isinstance(settings, IdentitySettings):
        assert set(projected_files(process.volume(str(settings.ca_dir)))) == {
            CA_CERT_FILE,
            CA_KEY_FILE,
        }
    if isinstance(settings, NodeSettings):
        for path in (settings.consortium_file, settings.signing_key_file):
            volume = process.volume(str(path.parent))
            assert path.name in projected_files(volume), path
        assert settings.signing_key_file.name == f"{settings.node_name}.key"
    # every path-valued setting lies in a mounted volume
    for field, value in settings.model_dump().items():
        if isinstance(value, Path):
            assert process.mount_for(str(value)), f"{process.name}: {field}={value} not mounted"


@pytest.mark.parametrize(("directory", "process"), CASES)
def test_identity_of_each_process(
    monkeypatch: pytest.MonkeyPatch, directory: Path, process: Process
) -> None:
    settings = _load_settings(monkeypatch, directory, process)
    env = environment(rendered(directory), process)
    # its own Mongo user (mongo-init.yaml) and TLS identity
    assert env["SWIFTCHAIN_MONGO_URI"] == SecretRef(
        make_material.MONGO_SECRET, make_material.mongo_uri_key(process.name)
    )
    assert process.volume(str(settings.tls_dir))["secret"]["secretName"] == (
        make_material.tls_secret(process.name)
    )
    if isinstance(settings, NodeSettings):
        assert settings.node_name == process.name
        assert process.workload["kind"] == "StatefulSet"
        assert process.volume(str(settings.signing_key_file.parent))["secret"]["secretName"] == (
            make_material.node_key_secret(process.name)
        )


@pytest.mark.parametrize(
    ("directory", "process"),
    [
        pytest.param(d, p, id=f"{d.name}-{p.name}")
        for d, p in PAIRS
        if "chain_node" in SETTINGS_BY_MODULE[p.module].model_fields
    ],
)
def test_chain_node_addresses_name_a_node_service(
    monkeypatch: pytest.MonkeyPatch, directory: Path, process: Process
) -> None:
    settings = _load_settings(monkeypatch, directory, process)
    address: Any = getattr(settings, "chain_node")  # noqa: B009  (not every class has it)
    host, _, port = str(address).rpartition(":")
    service_name, _, domain = host.partition(".")
    assert domain == f"{NAMESPACE}.svc", "use the Service's namespaced name (it is in the SANs)"
    assert host in make_material.service_hosts(service_name)
    node = next(p for p in processes(rendered(directory)) if p.name == service_name)
    assert node.module in ("chain", "chain.node")
    assert int(port) == node.port("grpc")


def _topic_constants() -> set[str]:
    """Every ``*_TOPIC = "..."`` the code under services/ and chain/ declares."""
    topics: set[str] = set()
    for folder in ("services", "chain"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (
                    isinstance(node, ast.Assign)
                    and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                    and any(
                        isinstance(t, ast.Name) and t.id.endswith("_TOPIC") for t in node.targets
                    )
                ):
                    topics.add(node.value.value)
    return topics


def test_every_topic_the_code_uses_has_a_kafka_topic() -> None:
    used = {spec.name for spec in TOPICS} | _topic_constants()
    for settings in set(SETTINGS_BY_MODULE.values()):
        used |= {
            str(info.default)
            for field, info in settings.model_fields.items()
            if field.endswith("_topic")
        }
    assert len(used) >= 6
    for directory in KUSTOMIZATIONS:
        declared = {
            t["spec"].get("topicName", t["metadata"]["name"])
            for t in of_kind(rendered(directory), "KafkaTopic")
        }
        assert used - declared == set(), f"{directory}: no KafkaTopic for {used - declared}"
        assert declared - used == set(), f"{directory}: topics no code uses: {declared - used}"


def test_each_process_has_a_database_user_for_its_own_database() -> None:
    for directory in KUSTOMIZATIONS:
        resources = rendered(directory)
        users = json.loads(named(resources, "ConfigMap", "mongo-init")["data"]["users.json"])
        by_user = {entry["user"]: entry["db"] for entry in users}
        assert sorted(by_user) == sorted(make_material.PROCESSES)
        for process in processes(resources):
            settings = _settings_class(process)
            if settings is NodeSettings:
                expected = NodeSettings(node_name=process.name).database_name
            elif "database" in settings.model_fields:
                expected = str(settings.model_fields["database"].default)
            else:  # audit has no database yet; DESIGN §2 names it
                expected = process.name
            assert by_user[process.name] == expected, process.name


def test_a_new_setting_with_a_local_default_must_be_set_in_k8s() -> None:
    class Future(NodeSettings):
        archive_dir: Path = Path(".stack/run/archive")
        peer: str = "127.0.0.1:9"
        batch_size: int = 5
        label: str = "x"

    assert needs_setting_in_k8s(Future, "archive_dir")
    assert needs_setting_in_k8s(Future, "peer")
    assert needs_setting_in_k8s(Future, "tls_dir")  # None: plaintext
    assert not needs_setting_in_k8s(Future, "batch_size")
    assert not needs_setting_in_k8s(Future, "label")
