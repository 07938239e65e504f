"""The error table at work on a real in-process gRPC server: domain errors become the mapped
status with a human message and a google.rpc.ErrorInfo detail; a backend that did not answer
becomes UNAVAILABLE; a bug becomes INTERNAL with a reference and no traceback."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from kafka.errors import KafkaTimeoutError
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from chain.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    SwiftchainError,
    UnauthenticatedError,
    UnavailableError,
    VerificationError,
)
from services.platform.errors import STATUS_BY_ERROR, status_code_for
from services.platform.server import ServiceRegistration, build_server
from services.platform.settings import ProcessSettings

_METHOD = "/test.Errors/Raise"
_STREAM = "/test.Errors/RaiseStream"
_raise_next: list[BaseException] = []


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise _raise_next[0]


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise _raise_next[0]


def _register(server: grpc.Server) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Raise": grpc.unary_unary_rpc_method_handler(_unary),
        "RaiseStream": grpc.unary_stream_rpc_method_handler(_stream),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Errors", handlers),)
    )


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = build_server(
        ProcessSettings(port=0, max_workers=2), [ServiceRegistration("test.Errors", _register)]
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan
    server.stop(0)


def _call(channel: grpc.Channel) -> bytes:
    method: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_METHOD)
    return method(b"", timeout=5)


CASES = [
    (InvalidInputError("expected 32 bytes, got 31"), grpc.StatusCode.INVALID_ARGUMENT),
    (VerificationError("signature does not verify"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError("no such entry"), grpc.StatusCode.NOT_FOUND),
    (ConflictError("another commitment"), grpc.StatusCode.FAILED_PRECONDITION),
    (PreconditionError("not sealed yet"), grpc.StatusCode.FAILED_PRECONDITION),
    (UnavailableError("kafka down"), grpc.StatusCode.UNAVAILABLE),
    (UnauthenticatedError("no certificate"), grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError("not yours"), grpc.StatusCode.PERMISSION_DENIED),
    (AlreadyExistsError("exists"), grpc.StatusCode.ALREADY_EXISTS),
]


REASONS = {
    InvalidInputError: "INVALID_INPUT",
    VerificationError: "VERIFICATION",
    NotFoundError: "NOT_FOUND",
    ConflictError: "CONFLICT",
    PreconditionError: "PRECONDITION",
    UnavailableError: "UNAVAILABLE",
    UnauthenticatedError: "UNAUTHENTICATED",
    PermissionDeniedError: "PERMISSION_DENIED",
    AlreadyExistsError: "ALREADY_EXISTS",
}


@pytest.mark.parametrize(("error", "code"), CASES, ids=lambda v: type(v).__name__)
def test_domain_error_becomes_its_status_with_error_info(
    channel: grpc.Channel, error: SwiftchainError, code: grpc.StatusCode
) -> None:
    _raise_next[:] = [error]
    with pytest.raises(grpc.RpcError) as caught:
        _call(channel)
    assert caught.value.code() == code
    assert caught.value.details() == str(error)
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.domain == "swiftchain.health"
    assert info.reason == REASONS[type(error)]


def test_streaming_rpc_maps_errors_after_the_first_message(channel: grpc.Channel) -> None:
    _raise_next[:] = [NotFoundError("gone")]
    stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(_STREAM)
    responses: Iterator[bytes] = stream(b"", timeout=5)
    assert next(responses) == b"first"
    with pytest.raises(grpc.RpcError) as caught:
        next(responses)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_bug_is_internal_with_a_reference_and_no_traceback(channel: grpc.Channel) -> None:
    _raise_next[:] = [KeyError("secret internals")]
    with pytest.raises(grpc.RpcError) as caught:
        _call(channel)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    details = caught.value.details() or ""
    assert "reference" in details and "secret internals" not in details
    assert "Traceback" not in details


@pytest.mark.parametrize(
    ("error", "backend"),
    [
        (AutoReconnect("connection closed"), "the database"),
        (ServerSelectionTimeoutError("no servers"), "the database"),
        (KafkaTimeoutError("no broker"), "the broker"),
    ],
    ids=["AutoReconnect", "ServerSelectionTimeoutError", "KafkaTimeoutError"],
)
def test_a_backend_that_did_not_answer_is_unavailable_not_internal(
    channel: grpc.Channel, error: Exception, backend: str
) -> None:
    _raise_next[:] = [error]
    with pytest.raises(grpc.RpcError) as caught:
        _call(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == f"{backend} did not answer; try again in a few seconds"


def test_every_error_class_has_a_row() -> None:
    mapped = {error_type for error_type, _ in STATUS_BY_ERROR}
    for error, code in CASES:
        assert type(error) in mapped
        assert status_code_for(error) == code
