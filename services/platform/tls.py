"""TLS material for servers and clients, from a folder laid out by the platform CA.

Layout of a process's ``tls_dir`` (made by ``devstack/pki.py`` or ``swiftchain identity
register-org``): ``ca.pem`` (the platform root), ``cert.pem`` and ``key.pem`` (this process or
organization), and ``token-verify.pem`` (the public key that checks patients' bearer tokens);
the identity service's folder also holds ``token-signing.pem``.

Why two ports per server: DESIGN §6 asks for a client certificate that is requested but
optional. grpcio cannot do that — ``ssl_server_credentials(require_client_auth=False)`` does not
even request a certificate, so a client that has one cannot present it. So every server listens
on its main port with mTLS *required* (services, chain nodes, hospitals, regulators, app
operators, the admin) and on a public port with server-only TLS (patient apps with a bearer
token, and anonymous calls such as login). grpc reports a verified client certificate in the
call's ``auth_context()`` under ``x509_pem_cert`` (and ``x509_common_name``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from chain.errors import InvalidInputError
from services.platform.telemetry import traced_channel

CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
TOKEN_VERIFY_FILE = "token-verify.pem"  # noqa: S105  (a file name, not a secret)
TOKEN_SIGNING_FILE = "token-signing.pem"  # noqa: S105

ChannelOptions = Sequence[tuple[str, int | str]]


def read_tls_file(folder: Path, name: str) -> bytes:
    """The bytes of ``folder/name``; InvalidInputError saying which file is missing."""
    path = folder / name
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"expected TLS file {path}, got: {error.strerror}") from error


def server_credentials(folder: Path, *, require_client_cert: bool) -> grpc.ServerCredentials:
    """Server TLS with this folder's certificate; with ``require_client_cert``, only clients
    with a certificate from the platform CA get through the handshake."""
    return grpc.ssl_server_credentials(
        [(read_tls_file(folder, KEY_FILE), read_tls_file(folder, CERT_FILE))],
        root_certificates=read_tls_file(folder, CA_FILE),
        require_client_auth=require_client_cert,
    )


def client_credentials(folder: Path) -> grpc.ChannelCredentials:
    """mTLS client credentials: this folder's certificate, trusting only the platform CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=read_tls_file(folder, CA_FILE),
        private_key=read_tls_file(folder, KEY_FILE),
        certificate_chain=read_tls_file(folder, CERT_FILE),
    )


def public_client_credentials(ca_pem: bytes) -> grpc.ChannelCredentials:
    """TLS client credentials without a client certificate (patient apps, anonymous calls)."""
    return grpc.ssl_channel_credentials(root_certificates=ca_pem)


def open_channel(target: str, folder: Path | None, options: ChannelOptions = ()) -> grpc.Channel:
    """An mTLS channel to ``target`` with ``folder``'s identity, or plaintext without a folder
    (unit tests of servers that run without TLS); calls on it carry the trace context."""
    if folder is None:
        return traced_channel(grpc.insecure_channel(target, options=list(options)))
    return traced_channel(
        grpc.secure_channel(target, client_credentials(folder), options=list(options))
    )


def open_public_channel(target: str, ca_pem: bytes, options: ChannelOptions = ()) -> grpc.Channel:
    """A TLS channel without a client certificate, trusting the platform CA ``ca_pem``; calls
    on it carry the trace context."""
    return traced_channel(
        grpc.secure_channel(target, public_client_credentials(ca_pem), options=list(options))
    )
