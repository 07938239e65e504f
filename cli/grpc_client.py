"""How the CLI reaches the platform: the channel seam, and gRPC errors as one-line messages.

Every server speaks mTLS on its main port: the CLI presents the certificate of ``--tls-dir``
(or ``$SWIFTCHAIN_TLS_DIR``; by default the local stack's consortium-admin folder
``.stack/run/pki/consortium-admin`` when it exists). Patient commands use the public port with
server-only TLS (:func:`open_public_channel`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Final

import grpc
import typer

from cli.defaults import local_admin_tls_dir
from services.platform import tls
from swiftchain.chain.v1 import chain_service_pb2_grpc

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024

CALL_TIMEOUT: Final = 10.0
"""Seconds allowed for a call that does not wait for anything."""

_OPTIONS: Final = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


TLS_DIR_ENV: Final = "SWIFTCHAIN_TLS_DIR"

TlsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--tls-dir",
        metavar="DIR",
        help="Folder with ca.pem, cert.pem and key.pem: who you are to the platform (mTLS). "
        f"Default: ${TLS_DIR_ENV}, else the local stack's consortium-admin folder.",
        show_default=False,
    ),
]
"""The ``--tls-dir DIR`` option of every command that talks to a server's mTLS port."""


def default_tls_dir() -> Path | None:
    """``$SWIFTCHAIN_TLS_DIR``, else the local stack's admin folder if it exists, else None."""
    configured = os.environ.get(TLS_DIR_ENV)
    if configured:
        return Path(configured)
    local = local_admin_tls_dir()
    return local if (local / tls.CERT_FILE).exists() else None


def open_channel(target: str, tls_dir: Path | None = None) -> grpc.Channel:
    """An mTLS channel to ``target`` (``HOST:PORT``) as the identity in ``tls_dir`` (or the
    default); plaintext only when there is no TLS folder at all."""
    return tls.open_channel(target, tls_dir or default_tls_dir(), _OPTIONS)


def open_public_channel(target: str, ca_file: Path) -> grpc.Channel:
    """A TLS channel without a client certificate (patients), trusting ``ca_file``."""
    return tls.open_public_channel(target, ca_file.read_bytes(), _OPTIONS)


@contextmanager
def chain_stub(
    target: str, tls_dir: Path | None = None
) -> Iterator[chain_service_pb2_grpc.ChainServiceStub]:
    """A ChainService stub on a channel that is closed afterwards."""
    with open_channel(target, tls_dir) as channel:
        yield chain_service_pb2_grpc.ChainServiceStub(channel)


def rpc_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    """The status code of a failed call (``None`` if the error carries none)."""
    code = getattr(error, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else None


def rpc_error_message(target: str, error: grpc.RpcError) -> str:
    """``node HOST:PORT answered <CODE>: <details>`` for a failed call, without a traceback."""
    code = rpc_code(error)
    details = getattr(error, "details", None)
    text = details() if callable(details) else None
    text = str(text) if text else str(error)
    if code is grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach node {target} (UNAVAILABLE): {text}"
    return f"node {target} answered {code.name if code else 'an error'}: {text}"
