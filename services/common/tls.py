"""TLS material for servers and clients, from a folder laid out by the platform CA.

Layout of ``tls_dir``: ``ca.pem`` (the platform CA), ``cert.pem`` and ``key.pem`` (this process).
A client certificate is requested but optional (DESIGN §6): patient apps present none.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from chain.errors import InvalidInputError

CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


def _read(folder: Path, name: str) -> bytes:
    path = folder / name
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"expected TLS file {path}, got: {error.strerror}") from error


def server_credentials(folder: Path) -> grpc.ServerCredentials:
    """Server TLS that asks for, but does not require, a client certificate."""
    return grpc.ssl_server_credentials(
        [(_read(folder, KEY_FILE), _read(folder, CERT_FILE))],
        root_certificates=_read(folder, CA_FILE),
        require_client_auth=False,
    )
