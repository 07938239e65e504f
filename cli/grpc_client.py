"""How the CLI reaches a node: the channel seam, and gRPC errors as one-line messages.

Plaintext gRPC for now. TLS arrives with the identity issue: :func:`open_channel` is the one
place that makes channels, so that issue replaces its body with ``grpc.secure_channel`` and
credentials from the platform CA (and a client certificate for regulators and hospitals),
and every command follows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import grpc

from swiftchain.chain.v1 import chain_service_pb2_grpc

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024

CALL_TIMEOUT: Final = 10.0
"""Seconds allowed for a call that does not wait for anything."""

_OPTIONS: Final = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def open_channel(target: str) -> grpc.Channel:
    """A channel to ``target`` (``HOST:PORT``). Plaintext until the identity issue adds TLS."""
    return grpc.insecure_channel(target, options=_OPTIONS)


@contextmanager
def chain_stub(target: str) -> Iterator[chain_service_pb2_grpc.ChainServiceStub]:
    """A ChainService stub on a channel that is closed afterwards."""
    with open_channel(target) as channel:
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
