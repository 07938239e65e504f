"""The one table that maps the project's error family to gRPC status codes.

Domain code raises :class:`chain.errors.SwiftchainError` subclasses and never imports grpc; the
:class:`ErrorMappingInterceptor` turns them into a gRPC status with a human message and a
``google.rpc.ErrorInfo`` detail (and a ``google.rpc.RetryInfo`` when the server is full).
A backend that did not answer (the database or the broker away for a moment: see
:func:`services.platform.threads.is_transient`) is an :class:`~chain.errors.UnavailableError`,
so the caller hears UNAVAILABLE and may try again. Anything else is a bug: it is logged with its
traceback and the client gets INTERNAL with a reference, never the traceback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
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
from services.platform.threads import is_transient

_log = logging.getLogger(__name__)

ERROR_DOMAIN = "swiftchain.health"


class OverloadedError(SwiftchainError):
    """The server (or this caller's share of it) is full: try again after ``retry_after``
    seconds. A platform error, not a domain one: only the servers' limits raise it."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
    (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
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
    """A rich gRPC status (code, message, google.rpc.ErrorInfo) for a domain error; an
    :class:`OverloadedError` also carries a google.rpc.RetryInfo with its retry delay."""
    code = status_code_for(error)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error_reason(error), domain=ERROR_DOMAIN))
    details = [info]
    if isinstance(error, OverloadedError):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(round(error.retry_after * 1000))
        hint = any_pb2.Any()
        hint.Pack(retry)
        details.append(hint)
    status = status_pb2.Status(code=code.value[0], message=str(error), details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


async def _abort_internal(
    context: grpc.aio.ServicerContext[Any, Any], error: BaseException
) -> None:
    ref = uuid.uuid4().hex[:12]
    _log.error("unexpected error (ref %s)", ref, exc_info=error)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error, reference {ref}; nothing was changed"
    )


def _unavailable(error: BaseException) -> UnavailableError:
    """What a caller hears when a backend did not answer the call."""
    module = type(error).__module__
    backend = (
        "the database"
        if module.startswith("pymongo")
        else "the broker"
        if module.startswith("kafka")
        else "a service this call needs"
    )
    _log.warning("answering UNAVAILABLE: %s did not answer (%r)", backend, error)
    return UnavailableError(f"{backend} did not answer; try again in a few seconds")


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
    """End the call with the status for ``error`` (raises grpc's abort): the table's status
    for a domain error or a backend that did not answer (UNAVAILABLE), INTERNAL with a logged
    reference for anything else."""
    if not isinstance(error, SwiftchainError) and is_transient(error):
        error = _unavailable(error)
    if isinstance(error, SwiftchainError):
        status = to_grpc_status(error)
        # abort (not abort_with_status) so that the tracing interceptor records the code
        await context.abort(status.code, status.details, status.trailing_metadata)
    await _abort_internal(context, error)


def _passes_through(error: BaseException) -> bool:
    """True for grpc's own abort (the call already has its status)."""
    return isinstance(error, grpc.aio.AbortError)


class _Undecodable:
    """What a request deserializer gives for bytes that are not the message: grpc would answer
    UNKNOWN for an exception raised while decoding, before any handler could say why."""

    __slots__ = ("reason", "size")

    def __init__(self, size: int, reason: str) -> None:
        self.size = size
        self.reason = reason

    def error(self) -> InvalidInputError:
        return InvalidInputError(
            f"expected a serialized request message, got {self.size} bytes that do not decode "
            f"({self.reason})"
        )


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None or getattr(deserializer, "tolerant", False):
        return deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, or a string field that is not UTF-8
            return _Undecodable(len(data), str(error) or type(error).__name__)

    deserialize.tolerant = True  # type: ignore[attr-defined]
    return deserialize


def _decoded(request: Any, request_streaming: bool) -> Any:
    """The request, or its stream, refusing an undecodable message with INVALID_ARGUMENT."""
    if not request_streaming:
        if isinstance(request, _Undecodable):
            raise request.error()
        return request

    async def checked() -> AsyncIterator[Any]:
        async for item in request:
            if isinstance(item, _Undecodable):
                raise item.error()
            yield item

    return checked()


def _guard_unary(behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(_decoded(request, request_streaming), context)
        except Exception as error:  # the boundary: every error leaves as a status
            if _passes_through(error):
                raise
            await abort_for(context, error)

    return guarded


def _guard_stream(behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            async for response in behavior(_decoded(request, request_streaming), context):
                yield response
        except Exception as error:
            if _passes_through(error):
                raise
            await abort_for(context, error)

    return guarded


#: Wraps a method's behaviour: ``wrap(behavior, request_streaming)`` -> the new behaviour.
Wrap = Callable[[Callable[..., Any], bool], Callable[..., Any]]


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps each method's behaviour; a subclass says how in
    :meth:`wrappers` (one wrap for behaviours that answer once, one for streams)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        unary, stream = self.wrappers(handler_call_details)
        return rebuild_handler(handler, unary, stream, self.request_deserializer(handler))

    def request_deserializer(
        self, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> Callable[[bytes], Any] | None:
        """The deserializer the rebuilt handler gets: by default the handler's own."""
        return handler.request_deserializer

    def wrappers(self, handler_call_details: grpc.HandlerCallDetails) -> tuple[Wrap, Wrap]:
        """How to wrap this call's behaviour: (unary wrap, stream wrap)."""
        raise NotImplementedError


class ErrorMappingInterceptor(HandlerInterceptor):
    """Maps domain errors to statuses for every RPC shape (unary and streaming)."""

    def wrappers(self, handler_call_details: grpc.HandlerCallDetails) -> tuple[Wrap, Wrap]:
        """Every behaviour guarded."""
        return _guard_unary, _guard_stream

    def request_deserializer(
        self, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> Callable[[bytes], Any] | None:
        """A deserializer that never raises: undecodable bytes reach the guard, which answers
        INVALID_ARGUMENT."""
        return _tolerant(handler.request_deserializer)


def rebuild_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    unary_result: Wrap,
    stream_result: Wrap,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """Rebuild a method handler with its behaviour wrapped: ``unary_result(behavior,
    request_streaming)`` for behaviours that answer once, ``stream_result`` for those that
    stream their answers (and, if given, another request deserializer). Shared by every
    interceptor of the platform's servers."""
    kwargs = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary_result(handler.unary_unary, False), **kwargs
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            stream_result(handler.unary_stream, False), **kwargs
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary_result(handler.stream_unary, True), **kwargs
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            stream_result(handler.stream_stream, True), **kwargs
        )
    return handler
