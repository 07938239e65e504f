"""Create the secret material the Kubernetes manifests in ``k8s/`` mount, one folder per object.

    python k8s/make_material.py OUT [--origin ORIGIN] [--cert-days N]

writes, under ``OUT``:

* ``secrets/<secret name>/<key>``: one folder per Secret the manifests reference, one file per
  key, ready for ``kubectl create secret generic NAME --from-file=OUT/secrets/NAME`` (and the
  platform CA once more as Strimzi's clients CA, which signs the KafkaUsers' certificates);
* ``configmaps/swiftchain-consortium/consortium.json``: the public consortium config, the
  genesis every founder signed (a ConfigMap, because nothing in it is secret; a node refuses
  to start from one not signed by every founder);
* ``consortium-admin/``: the consortium admin's client TLS folder, for the ``swiftchain`` CLI
  (``--tls-dir``); it is never uploaded to the cluster;
* ``consortium/``, ``pki/``, ``mongo/``: the sources the folders above are copied from.

The sources are created once and kept: running it again re-issues only the process
certificates that are missing or expire within a week (they live :data:`PROCESS_LIFETIME`
by default) and copies everything again, so re-run it, then re-create the Secrets, to renew.
It uses the code ``make up`` uses (``create_consortium``, the platform CA), but the
certificates name the in-cluster Service DNS names, which the local PKI's do not.

The consortium comes from the genesis ceremony (``services/platform/genesis_ceremony.py``),
with this process playing every founder and service: each node key, the registrar key and the
consent key is made by the code its holder runs with ``swiftchain consortium keygen``, the
genesis is proposed from their public cards and signed by every founder, as ``swiftchain
consortium genesis`` does. This one cluster runs every member's node, so its Secrets hold
every member's key; members who keep their own keys run those commands on their own machines
instead (docs/operations.md).
"""

from __future__ import annotations

import argparse
import base64
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.platform.ca import CA_KEY_FILE, PlatformCA, create_platform_ca
from services.platform.consortium_files import ConsortiumFiles, create_consortium
from services.platform.tls import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    TOKEN_SIGNING_FILE,
    TOKEN_VERIFY_FILE,
)

#: The namespace every manifest names (k8s/base/namespace.yaml).
NAMESPACE = "swiftchain"
#: The consortium members: one chain node (StatefulSet) each.
NODES: tuple[str, ...] = ("hospital-a", "hospital-b", "hospital-c")
#: Signatures a checkpoint needs to be sealed (also the chain nodes' PodDisruptionBudget).
QUORUM = 2
SERVICES: tuple[str, ...] = ("identity", "anchoring", "consent", "audit")
#: Every process: its name is its Service name, its certificate's CN and its Mongo user.
PROCESSES: tuple[str, ...] = SERVICES + NODES
#: The certificate's OU, which the authorization interceptor reads the role from.
UNITS = {**{name: "service" for name in SERVICES}, **{name: "chain-node" for name in NODES}}
ADMIN = "consortium-admin"
DEFAULT_ORIGIN = "swiftchain.k8s/consortium-log"
PROCESS_LIFETIME = timedelta(days=90)
_RENEW_BEFORE = timedelta(days=7)

#: The MongoDB replica set (k8s/base/mongo.yaml): its name and its members' addresses.
MONGO_REPLICA_SET = "rs0"
MONGO_HOSTS: tuple[str, ...] = tuple(
    f"mongo-{index}.mongo.{NAMESPACE}.svc:27017" for index in range(3)
)
MONGO_ROOT_USER = "root"

#: Names of the Secrets and ConfigMaps the manifests reference (created by an operator).
CONSORTIUM_CONFIGMAP = "swiftchain-consortium"
CONSORTIUM_KEYS_SECRET = "swiftchain-consortium-keys"  # noqa: S105  (a name, not a secret)
CA_SECRET = "swiftchain-ca"  # noqa: S105  (a name, not a secret)
MONGO_SECRET = "swiftchain-mongo"  # noqa: S105  (a name, not a secret)
#: Strimzi's clients CA of the Kafka cluster "swiftchain" (k8s/base/kafka.yaml: clientsCa), which
#: is the platform CA: its certificate (key ``ca.crt``) and its private key (key ``ca.key``).
CLIENTS_CA_CERT_SECRET = "swiftchain-clients-ca-cert"  # noqa: S105  (a name, not a secret)
CLIENTS_CA_SECRET = "swiftchain-clients-ca"  # noqa: S105  (a name, not a secret)


def tls_secret(process: str) -> str:
    """The Secret with a process's TLS folder."""
    return f"swiftchain-tls-{process}"


def node_key_secret(node: str) -> str:
    """The Secret with a chain node's signed-note private key."""
    return f"swiftchain-node-key-{node}"


def mongo_password_key(process: str) -> str:
    """The key, in :data:`MONGO_SECRET`, of a process's Mongo password."""
    return f"{process}-password"


def mongo_uri_key(process: str) -> str:
    """The key, in :data:`MONGO_SECRET`, of a process's ``SWIFTCHAIN_MONGO_URI``."""
    return f"{process}-uri"


def service_hosts(process: str) -> tuple[str, ...]:
    """The names a process's server certificate is valid for: its Service's DNS names, and
    localhost for ``kubectl port-forward`` and the in-pod health probe."""
    return (
        process,
        f"{process}.{NAMESPACE}",
        f"{process}.{NAMESPACE}.svc",
        f"{process}.{NAMESPACE}.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    )


def mongo_uri(user: str, password: str) -> str:
    """The connection string of ``user`` (authenticated against ``admin``, no database: each
    process picks its own with ``SWIFTCHAIN_DATABASE``)."""
    hosts = ",".join(MONGO_HOSTS)
    return f"mongodb://{user}:{password}@{hosts}/?replicaSet={MONGO_REPLICA_SET}&authSource=admin"


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _copy(source: Path, target: Path) -> None:
    _write_secret(target, source.read_bytes())


@dataclass(frozen=True)
class Material:
    """Where :func:`make_material` put things."""

    root: Path

    @property
    def secrets(self) -> Path:
        """One folder per Secret."""
        return self.root / "secrets"

    @property
    def configmaps(self) -> Path:
        """One folder per ConfigMap an operator creates."""
        return self.root / "configmaps"

    @property
    def admin_tls_dir(self) -> Path:
        """The consortium admin's client TLS folder."""
        return self.root / ADMIN


def _ensure_ca(folder: Path, now: datetime) -> PlatformCA:
    if not (folder / CA_KEY_FILE).exists():
        key_pem, cert_pem = create_platform_ca("Swiftchain Health platform CA", now)
        _write_secret(folder / CA_KEY_FILE, key_pem)
        (folder / CA_FILE).write_bytes(cert_pem)
    return PlatformCA.load(folder)


def _ensure_token_key(path: Path) -> bytes:
    """The identity service's token signing key (created once); returns the verifying key."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        _write_secret(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    signing = serialization.load_pem_private_key(path.read_bytes(), None)
    return signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _needs_certificate(folder: Path, hosts: Sequence[str], now: datetime) -> bool:
    cert_path = folder / CERT_FILE
    if not cert_path.exists() or not (folder / KEY_FILE).exists():
        return True
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if certificate.not_valid_after_utc - now < _RENEW_BEFORE:
        return True
    if not hosts:
        return False
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(n) for n in names.get_values_for_type(x509.DNSName)}
    have |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return not set(hosts) <= have


def _ensure_tls_dir(
    folder: Path,
    ca: PlatformCA,
    *,
    name: str,
    unit: str,
    hosts: Sequence[str],
    verify_pem: bytes,
    now: datetime,
    lifetime: timedelta,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CA_FILE).write_text(ca.certificate_pem)
    (folder / TOKEN_VERIFY_FILE).write_bytes(verify_pem)
    if _needs_certificate(folder, hosts, now):
        key_pem, issued = ca.issue_with_new_key(
            common_name=name, unit=unit, now=now, lifetime=lifetime, hosts=hosts
        )
        _write_secret(folder / KEY_FILE, key_pem)
        (folder / CERT_FILE).write_text(issued.pem)


def _ensure_mongo_passwords(folder: Path) -> dict[str, str]:
    """Passwords for root and every process, and the replica set's keyfile (created once)."""
    passwords: dict[str, str] = {}
    for user in (MONGO_ROOT_USER, *PROCESSES):
        path = folder / f"{user}.password"
        if not path.exists():
            # URL-safe, so that it goes into a connection string as it is
            _write_secret(path, secrets.token_urlsafe(32).encode())
        passwords[user] = path.read_text().strip()
    keyfile = folder / "keyfile"
    if not keyfile.exists():
        # the members authenticate to each other with this shared key: 6 to 1024 characters of
        # the base64 alphabet (756 bytes make 1008 characters, without padding)
        _write_secret(keyfile, base64.b64encode(secrets.token_bytes(756)))
    return passwords


def make_material(
    root: Path,
    *,
    origin: str = DEFAULT_ORIGIN,
    lifetime: timedelta = PROCESS_LIFETIME,
    now: datetime | None = None,
) -> Material:
    """Create (or refresh) everything under ``root``; see the module docstring."""
    now = now or datetime.now(UTC)
    material = Material(root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)  # it holds every private key of the deployment
    files = create_consortium(root / "consortium", list(NODES), quorum=QUORUM, origin=origin)
    ca = _ensure_ca(root / "pki" / "ca", now)
    verify_pem = _ensure_token_key(root / "pki" / TOKEN_SIGNING_FILE)
    for process in PROCESSES:
        _ensure_tls_dir(
            root / "pki" / process,
            ca,
            name=process,
            unit=UNITS[process],
            hosts=service_hosts(process),
            verify_pem=verify_pem,
            now=now,
            lifetime=lifetime,
        )
    _ensure_tls_dir(
        material.admin_tls_dir,
        ca,
        name=ADMIN,
        unit="admin",
        hosts=(),
        verify_pem=verify_pem,
        now=now,
        lifetime=lifetime,
    )
    passwords = _ensure_mongo_passwords(root / "mongo")

    # Assemble the folders from scratch, so that nothing stale is uploaded.
    shutil.rmtree(material.secrets, ignore_errors=True)
    shutil.rmtree(material.configmaps, ignore_errors=True)
    _copy(files.config_path, material.configmaps / CONSORTIUM_CONFIGMAP / files.config_path.name)
    _assemble_consortium_secrets(material, files)
    for process in PROCESSES:
        source = root / "pki" / process
        target = material.secrets / tls_secret(process)
        for name in (CA_FILE, CERT_FILE, KEY_FILE, TOKEN_VERIFY_FILE):
            _copy(source / name, target / name)
    _copy(
        root / "pki" / TOKEN_SIGNING_FILE,
        material.secrets / tls_secret("identity") / TOKEN_SIGNING_FILE,
    )
    ca_target = material.secrets / CA_SECRET
    _copy(root / "pki" / "ca" / CA_FILE, ca_target / CA_FILE)
    _copy(root / "pki" / "ca" / CA_KEY_FILE, ca_target / CA_KEY_FILE)
    # Strimzi signs the KafkaUsers' certificates with the platform CA and trusts only it
    _copy(root / "pki" / "ca" / CA_FILE, material.secrets / CLIENTS_CA_CERT_SECRET / "ca.crt")
    _copy(root / "pki" / "ca" / CA_KEY_FILE, material.secrets / CLIENTS_CA_SECRET / "ca.key")
    mongo_target = material.secrets / MONGO_SECRET
    _write_secret(mongo_target / "root-username", MONGO_ROOT_USER.encode())
    _write_secret(mongo_target / "root-password", passwords[MONGO_ROOT_USER].encode())
    _copy(root / "mongo" / "keyfile", mongo_target / "keyfile")
    for process in PROCESSES:
        _write_secret(mongo_target / mongo_password_key(process), passwords[process].encode())
        _write_secret(
            mongo_target / mongo_uri_key(process), mongo_uri(process, passwords[process]).encode()
        )
    return material


def _assemble_consortium_secrets(material: Material, files: ConsortiumFiles) -> None:
    keys = material.secrets / CONSORTIUM_KEYS_SECRET
    for path in (files.tag_key_path, files.registrar_key_path, files.consent_key_path):
        _copy(path, keys / path.name)
    for node in NODES:
        source = files.node_key_path(node)
        _copy(source, material.secrets / node_key_secret(node) / source.name)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python k8s/make_material.py",
        description="Create the Secrets' and ConfigMaps' files for the k8s/ manifests.",
    )
    parser.add_argument("out", type=Path, help="folder to create or refresh (keep it private)")
    parser.add_argument("--origin", default=DEFAULT_ORIGIN, help="the log's origin line")
    parser.add_argument(
        "--cert-days",
        type=int,
        default=PROCESS_LIFETIME.days,
        help="lifetime of the process certificates issued now",
    )
    args = parser.parse_args(argv)
    material = make_material(args.out, origin=args.origin, lifetime=timedelta(days=args.cert_days))
    print(f"secrets:    {material.secrets}/<name>/  (kubectl create secret generic <name>)")
    print(f"configmaps: {material.configmaps}/<name>/")
    print(f"admin TLS:  {material.admin_tls_dir}  (swiftchain --tls-dir)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
