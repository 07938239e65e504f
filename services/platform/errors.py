"""The one table that maps the project's error family to gRPC status codes.

Domain code raises :class:`chain.errors.SwiftchainError` subclasses and never imports grpc; the
:class:`ErrorMappingInterceptor` turns them into a gRPC status with a human message and a
``google.rpc.ErrorInfo`` detail. Anything else is a bug: it is logged with its traceback and the
client gets INTERNAL with a reference, never the traceback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from chain.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    StaleVersionError,
    SwiftchainError,
    UnauthenticatedError,
    UnavailableError,
    VerificationError,
)

_log = logging.getLogger(__name__)

ERROR_DOMAIN = "swiftchain.health"


#: The single mapping from error class to gRPC status code. Order matters: first match wins.
STATUS_BY_ERROR: tuple[tuple[type[SwiftchainError], grpc.StatusCode], ...] = (
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (VerificationError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (StaleVersionError, grpc.StatusCode.ABORTED),
    (ConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (PreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
)


def status_code_for(error: SwiftchainError) -> grpc.StatusCode:
    """The gRPC status code for a domain error (FAILED_PRECONDITION for unlisted subclasses)."""
    for error_type, code in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


def error_reason(error: BaseException) -> str:
    """UPPER_SNAKE reason for ErrorInfo, from the class name: NotFoundError -> NOT_FOUND."""
    name = type(error).__name__.removesuffix("Error")
    out = [("_" + c) if c.isupper() and i else c for i, c in enumerate(name)]
    return "".join(out).upper()


def to_grpc_status(error: SwiftchainError) -> grpc.Status:
    """A rich gRPC status (code, message, google.rpc.ErrorInfo) for a domain error."""
    code = status_code_for(error)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=error_reason(error), domain=ERROR_DOMAIN))
    status = status_pb2.Status(code=code.value[0], message=str(error), details=[detail])
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _abort_internal(context: grpc.ServicerContext, error: BaseException) -> NoReturn:
    ref = uuid.uuid4().hex[:12]
    _log.error("unexpected error (ref %s)", ref, exc_info=error)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error, reference {ref}; nothing was changed")


def _abort_for(context: grpc.ServicerContext, error: BaseException) -> NoReturn:
    if isinstance(error, SwiftchainError):
        context.abort_with_status(to_grpc_status(error))
    _abort_internal(context, error)


_T = TypeVar("_T")


def _guard_unary(behavior: Callable[[Any, grpc.ServicerContext], _T]) -> Callable[..., _T]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> _T:
        try:
            return behavior(request, context)
        except Exception as error:  # the boundary: every error leaves as a status
            if _is_abort(context):
                raise
            _abort_for(context, error)

    return wrapper


def _guard_stream(
    behavior: Callable[[Any, grpc.ServicerContext], Iterator[_T]],
) -> Callable[..., Iterator[_T]]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[_T]:
        try:
            yield from behavior(request, context)
        except Exception as error:
            if _is_abort(context):
                raise
            _abort_for(context, error)

    return wrapper


def _is_abort(context: grpc.ServicerContext) -> bool:
    """True when the handler already called context.abort (grpc raises an Exception for it)."""
    code = getattr(context, "code", lambda: None)()
    return code is not None and code != grpc.StatusCode.OK


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Maps domain errors to statuses for every RPC shape (unary and streaming)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, _guard_unary, _guard_stream)


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    unary_result: Callable[[Any], Any],
    stream_result: Callable[[Any], Any],
) -> grpc.RpcMethodHandler[Any, Any]:
    """Rebuild a method handler with its behaviour wrapped.

    ``unary_result`` wraps behaviours that return one response, ``stream_result`` those that
    yield responses; shared by every server interceptor that needs to see the call.
    """
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_result(handler.unary_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_result(handler.unary_stream), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_result(handler.stream_unary), **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream_result(handler.stream_stream), **kwargs)
    return handler
