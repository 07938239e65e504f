"""k8s/make_material.py makes every Secret and ConfigMap the manifests reference but do not
define, with the keys they mount, certificates valid for the names callers and probes use, and
database credentials that match the users the init job creates."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from chain.consortium import parse_consortium
from k8s import make_material
from services.platform import tls
from tests.unit.k8s.manifests import (
    KUSTOMIZATIONS,
    NAMESPACE,
    environment,
    named,
    of_kind,
    processes,
    rendered,
)
from tests.unit.k8s.render import Resource, containers, pod_spec

#: What Strimzi's cluster and user operators write into the Secrets they create: the cluster
#: CA's certificate (``<cluster>-cluster-ca-cert``) and each KafkaUser's certificate and key.
STRIMZI_SECRET_KEYS = frozenset({"ca.crt", "user.crt", "user.key"})
#: The clients CA Strimzi reads (k8s/base/kafka.yaml: clientsCa), by name rather than mounted.
CLIENTS_CA_SECRETS = (make_material.CLIENTS_CA_CERT_SECRET, make_material.CLIENTS_CA_SECRET)


def strimzi_secrets(resources: tuple[Resource, ...]) -> set[tuple[str, str]]:
    """The Secrets Strimzi's operators create: the cluster CA's certificate, one per KafkaUser."""
    [kafka] = of_kind(resources, "Kafka")
    names = {f"{kafka['metadata']['name']}-cluster-ca-cert"}
    names |= {user["metadata"]["name"] for user in of_kind(resources, "KafkaUser")}
    return {("Secret", name) for name in names}


def test_the_clients_ca_is_the_platform_ca(material: make_material.Material) -> None:
    ca = material.secrets / make_material.CA_SECRET
    cert = material.secrets / make_material.CLIENTS_CA_CERT_SECRET / "ca.crt"
    key = material.secrets / make_material.CLIENTS_CA_SECRET / "ca.key"
    assert cert.read_bytes() == (ca / tls.CA_FILE).read_bytes()
    assert key.read_bytes() == (ca / "ca-key.pem").read_bytes()


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> make_material.Material:
    return make_material.make_material(tmp_path_factory.mktemp("material"))


def references(resources: tuple[Resource, ...]) -> set[tuple[str, str, str | None]]:
    """(kind, name, key or None for "the whole object") of every Secret and ConfigMap the
    workloads use: volumes (with their items), projected sources, env and envFrom."""
    found: set[tuple[str, str, str | None]] = set()

    def add(kind: str, name: str, items: list[dict[str, Any]] | None) -> None:
        if items is None:
            found.add((kind, name, None))
        found.update((kind, name, item["key"]) for item in items or [])

    for resource in resources:
        spec = pod_spec(resource)
        if spec is None:
            continue
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                add("Secret", volume["secret"]["secretName"], volume["secret"].get("items"))
            if "configMap" in volume:
                add("ConfigMap", volume["configMap"]["name"], volume["configMap"].get("items"))
            for source in volume.get("projected", {}).get("sources", []):
                for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
                    if key in source:
                        add(kind, source[key]["name"], source[key].get("items"))
        for container in containers(resource):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    add("Secret", ref["secretKeyRef"]["name"], [ref["secretKeyRef"]])
                if "configMapKeyRef" in ref:
                    add("ConfigMap", ref["configMapKeyRef"]["name"], [ref["configMapKeyRef"]])
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    add("ConfigMap", source["configMapRef"]["name"], None)
                if "secretRef" in source:
                    add("Secret", source["secretRef"]["name"], None)
    return found


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_it_makes_every_object_the_manifests_reference_but_do_not_define(
    material: make_material.Material, directory: Path
) -> None:
    resources = rendered(directory)
    defined = {(r["kind"], r["metadata"]["name"]) for r in resources}
    for kind, name, key in sorted(references(resources), key=str):
        if (kind, name) in strimzi_secrets(resources):
            assert key in STRIMZI_SECRET_KEYS, (kind, name, key)
            continue
        if (kind, name) in defined:
            if key is not None:
                assert key in named(resources, kind, name)["data"], (kind, name, key)
            continue
        folder = (material.secrets if kind == "Secret" else material.configmaps) / name
        assert folder.is_dir(), f"make_material.py makes no {kind} {name}"
        if key is not None:
            assert (folder / key).is_file(), f"{kind} {name} has no key {key}"
    # and nothing the manifests do not use
    used = {(kind, name) for kind, name, _ in references(resources)}
    used |= {("Secret", name) for name in CLIENTS_CA_SECRETS}
    for folder in material.secrets.iterdir():
        assert ("Secret", folder.name) in used, f"Secret {folder.name} is unused"


def _certificate(material: make_material.Material, process: str) -> x509.Certificate:
    folder = material.secrets / make_material.tls_secret(process)
    return x509.load_pem_x509_certificate((folder / tls.CERT_FILE).read_bytes())


@pytest.mark.parametrize("process", make_material.PROCESSES)
def test_certificates_name_what_callers_and_probes_dial(
    material: make_material.Material, process: str
) -> None:
    certificate = _certificate(material, process)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    assert f"{process}.{NAMESPACE}.svc" in dns  # the probes' -tls-server-name
    assert "localhost" in dns  # kubectl port-forward
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == process
    unit = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    assert unit == make_material.UNITS[process]
    ca = x509.load_pem_x509_certificate(
        (material.secrets / make_material.CA_SECRET / tls.CA_FILE).read_bytes()
    )
    certificate.verify_directly_issued_by(ca)
    for directory in KUSTOMIZATIONS:
        for other in processes(rendered(directory)):
            address = environment(rendered(directory), other).get("SWIFTCHAIN_CHAIN_NODE")
            if isinstance(address, str) and address.split(".")[0] == process:
                assert address.rpartition(":")[0] in dns


def test_the_consortium_matches_the_chain_nodes(material: make_material.Material) -> None:
    config = parse_consortium(
        (material.configmaps / make_material.CONSORTIUM_CONFIGMAP / "consortium.json").read_text()
    )
    assert [member.name for member in config.members] == list(make_material.NODES)
    assert config.quorum == make_material.QUORUM
    for directory in KUSTOMIZATIONS:
        nodes = of_kind(rendered(directory), "StatefulSet")
        assert {n["metadata"]["name"] for n in nodes} == {*make_material.NODES, "mongo"}


def test_database_credentials_match_the_replica_set_and_the_users(
    material: make_material.Material,
) -> None:
    secret = material.secrets / make_material.MONGO_SECRET
    for directory in KUSTOMIZATIONS:
        resources = rendered(directory)
        mongo = named(resources, "StatefulSet", "mongo")
        [mongod] = mongo["spec"]["template"]["spec"]["containers"]
        args = mongod["args"]
        replica_set = args[args.index("--replSet") + 1]
        hosts = [
            f"mongo-{i}.{mongo['spec']['serviceName']}.{NAMESPACE}.svc:27017"
            for i in range(mongo["spec"]["replicas"])
        ]
        assert list(make_material.MONGO_HOSTS) == hosts
        init = named(resources, "ConfigMap", "mongo-init")["data"]
        assert f"const SET = '{replica_set}';" in init["init.js"]
        assert "mongo-${i}.mongo.swiftchain.svc:27017" in init["init.js"]
        users = {entry["user"] for entry in json.loads(init["users.json"])}
        assert users == set(make_material.PROCESSES)
    for process in make_material.PROCESSES:
        uri = urlsplit((secret / make_material.mongo_uri_key(process)).read_text())
        assert uri.scheme == "mongodb" and uri.username == process
        assert uri.password == (secret / make_material.mongo_password_key(process)).read_text()
        assert uri.hostname is not None
        assert uri.netloc.split("@")[1].split(",") == list(make_material.MONGO_HOSTS)
        assert uri.path == "/", "no database in the URI: SWIFTCHAIN_DATABASE chooses it"
        query = parse_qs(uri.query)
        assert query == {"replicaSet": [make_material.MONGO_REPLICA_SET], "authSource": ["admin"]}
    keyfile = (secret / "keyfile").read_bytes()
    assert 6 <= len(keyfile) <= 1024 and re.fullmatch(rb"[A-Za-z0-9+/=]+", keyfile)
    base64.b64decode(keyfile, validate=True)


def test_running_it_again_keeps_the_consortium_and_the_ca(tmp_path: Path) -> None:
    first = make_material.make_material(tmp_path)
    config = (first.configmaps / "swiftchain-consortium" / "consortium.json").read_bytes()
    ca = (first.secrets / make_material.CA_SECRET / tls.CA_FILE).read_bytes()
    uri = (first.secrets / make_material.MONGO_SECRET / "identity-uri").read_bytes()
    again = make_material.make_material(tmp_path)
    assert (again.configmaps / "swiftchain-consortium" / "consortium.json").read_bytes() == config
    assert (again.secrets / make_material.CA_SECRET / tls.CA_FILE).read_bytes() == ca
    assert (again.secrets / make_material.MONGO_SECRET / "identity-uri").read_bytes() == uri
    key = again.secrets / make_material.tls_secret("identity") / tls.KEY_FILE
    assert key.stat().st_mode & 0o077 == 0, "private files are mode 0600"
    assert tmp_path.stat().st_mode & 0o077 == 0, "and the folder 0700"


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert make_material.main([str(tmp_path / "out"), "--cert-days", "30"]) == 0
    assert "secrets:" in capsys.readouterr().out
    assert (tmp_path / "out" / "consortium-admin" / tls.CERT_FILE).is_file()
