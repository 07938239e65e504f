"""The bridge between the asyncio gRPC server and the synchronous code of the services.

Every server is a ``grpc.aio`` server (services/platform/server.py) so that an idle stream costs
a coroutine, not a thread. Servicers stay synchronous: :class:`SyncAdapter` runs their unary
methods in a bounded thread pool with a :class:`SyncContext`, the familiar
``grpc.ServicerContext`` surface. Handlers that wait for long (streams, waits for a seal) are
``async`` and use :func:`run_blocking` for their short blocking steps and :class:`Pulse` to be
woken by the threads that change what they wait for.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent import futures
from typing import Any, ParamSpec, TypeVar

import grpc
import grpc.aio

from services.platform.errors import HandlerInterceptor, OverloadedError, Wrap

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: Seconds a waiting call may wait, as the server that runs it allows (see :func:`wait_budget`).
_max_wait: contextvars.ContextVar[float] = contextvars.ContextVar(
    "swiftchain_max_wait", default=30.0
)


def wait_budget(context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]) -> float:
    """Seconds a call may still wait: the server's maximum wait, cut to the caller's deadline
    (less a margin to answer in)."""
    limit = _max_wait.get()
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return limit
    return max(0.0, min(limit, remaining - 0.05))


#: Blocking steps one caller's streams run on the server's pool at once: a caller holding a
#: hundred streams waits for its own turns and leaves the pool to every other call.
STREAM_STEPS_PER_CALLER = 2

#: Whose stream the running task serves (its limits key), set for a stream's whole call.
_stream_owner: contextvars.ContextVar[str] = contextvars.ContextVar(
    "swiftchain_stream_owner", default=""
)


def serving_stream_of(key: str) -> None:
    """Mark the running call as a stream of the caller ``key`` (a limits key): its
    :func:`run_blocking` steps take turns with that caller's other streams. Each call runs in
    a task of its own, so the mark ends with the call."""
    _stream_owner.set(key)


class _StepTurns:
    """Per caller, a semaphore of :data:`STREAM_STEPS_PER_CALLER` turns, kept while used (on
    one event loop, no locks)."""

    def __init__(self) -> None:
        self._turns: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def run(self, key: str, step: Callable[[], Awaitable[_T]]) -> _T:
        turns, users = self._turns.get(key) or (asyncio.Semaphore(STREAM_STEPS_PER_CALLER), 0)
        self._turns[key] = (turns, users + 1)
        try:
            async with turns:
                return await step()
        finally:
            turns, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (turns, users - 1)


_turns_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StepTurns] = (
    weakref.WeakKeyDictionary()
)


async def run_blocking(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a short blocking step (a store read) on the server's thread pool, with the call's
    context variables (its caller, its span); in a stream, in turn with the same caller's
    other streams (:data:`STREAM_STEPS_PER_CALLER` at a time)."""
    owner = _stream_owner.get()
    if not owner:
        return await asyncio.to_thread(function, *args, **kwargs)
    loop = asyncio.get_running_loop()
    turns = _turns_by_loop.get(loop)
    if turns is None:
        turns = _turns_by_loop[loop] = _StepTurns()
    return await turns.run(owner, lambda: asyncio.to_thread(function, *args, **kwargs))


class Pulse:
    """Wakes coroutines on the server's event loop when something changes on another thread.

    A waiter takes :meth:`current` before it looks at what it waits for, then awaits
    :meth:`wait`; :meth:`fire` (from any thread) ends every such wait, so a change between the
    look and the wait is never missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._scheduled = False

    def current(self) -> asyncio.Event:
        """The event the next :meth:`fire` sets; call on the event loop."""
        with self._lock:
            if self._event is None or self._loop is not asyncio.get_running_loop():
                self._loop = asyncio.get_running_loop()
                self._event = asyncio.Event()
            return self._event

    def fire(self) -> None:
        """Wake every waiter (thread-safe, cheap: repeated fires before the loop runs are one)."""
        with self._lock:
            loop = self._loop
            if loop is None or self._scheduled or loop.is_closed():
                return
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting
            with self._lock:
                self._scheduled = False

    def _wake(self) -> None:
        with self._lock:
            self._scheduled = False
            event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``event``; True if it was set."""
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class SyncContext:
    """What a synchronous handler sees as its ``grpc.ServicerContext`` on the asyncio server.

    It forwards to the call's asyncio context; :meth:`abort` runs on the event loop and raises
    here, :meth:`time_remaining` is cut to the server's maximum wait, and :meth:`is_active`
    turns false (and :meth:`add_callback` callbacks run) once the call ends or is cancelled.
    """

    def __init__(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        loop: asyncio.AbstractEventLoop,
        max_wait: float,
    ) -> None:
        self._context = context
        self._loop = loop
        self._max_wait = max_wait
        self._ended = threading.Event()
        self._callbacks: list[Callable[[], object]] = []
        self._callbacks_lock = threading.Lock()

    def _on_loop(self, coroutine: Awaitable[_T]) -> _T:
        async def run() -> _T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        """End the call with ``code``; raises (as grpc's does)."""
        self._on_loop(self._context.abort(code, details, tuple(trailing_metadata)))

    def abort_with_status(self, status: grpc.Status) -> None:
        """End the call with a rich status; raises."""
        self.abort(status.code, status.details, status.trailing_metadata)

    def invocation_metadata(self) -> Any:
        """The call's metadata."""
        return self._context.invocation_metadata()

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        """The TLS peer's properties (the client certificate under ``x509_pem_cert``)."""
        return self._context.auth_context()

    def peer(self) -> str:
        """The peer's address, e.g. ``ipv4:127.0.0.1:50000``."""
        return self._context.peer()

    def time_remaining(self) -> float | None:
        """Seconds before the caller's deadline, but at most the server's maximum wait."""
        remaining = self._context.time_remaining()
        return self._max_wait if remaining is None else min(remaining, self._max_wait)

    def is_active(self) -> bool:
        """False once the call has ended or was cancelled."""
        return not self._ended.is_set()

    def add_callback(self, callback: Callable[[], object]) -> bool:
        """Run ``callback`` when the call ends (at once if it has)."""
        with self._callbacks_lock:
            if not self._ended.is_set():
                self._callbacks.append(callback)
                return True
        callback()
        return True

    def set_code(self, code: grpc.StatusCode) -> None:
        """Set the status code the call ends with."""
        self._context.set_code(code)

    def set_details(self, details: str) -> None:
        """Set the status message the call ends with."""
        self._context.set_details(details)

    def set_trailing_metadata(self, metadata: Any) -> None:
        """Set the trailing metadata."""
        self._context.set_trailing_metadata(tuple(metadata))

    def code(self) -> grpc.StatusCode | None:
        """The status code set so far."""
        code: grpc.StatusCode | None = self._context.code()
        return code

    def end(self) -> None:
        """Mark the call ended and run the callbacks (called by the adapter)."""
        with self._callbacks_lock:
            if self._ended.is_set():
                return
            self._ended.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


def _requests_from(requests: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    """A client stream as a blocking iterator, for a synchronous handler on a pool thread."""

    async def next_request() -> Any:
        return await requests.__anext__()

    while True:
        try:
            yield asyncio.run_coroutine_threadsafe(next_request(), loop).result()
        except StopAsyncIteration:
            return


class Admission:
    """Bounds the calls that wait for or hold a pool thread: past ``capacity`` a call is
    refused at once (RESOURCE_EXHAUSTED with a retry hint) rather than queued until its
    deadline. Used on the event loop only."""

    def __init__(self, capacity: int, retry_after: float) -> None:
        self.capacity = capacity
        self._retry_after = retry_after
        self.in_flight = 0

    def enter(self) -> None:
        """Take a place, or raise OverloadedError."""
        if self.in_flight >= self.capacity:
            raise OverloadedError(
                f"the server is busy: {self.in_flight} calls are running or queued (at most "
                f"{self.capacity}); try again shortly",
                retry_after=self._retry_after,
            )
        self.in_flight += 1

    def leave(self) -> None:
        """Give the place back."""
        self.in_flight -= 1


class SyncAdapter(HandlerInterceptor):
    """The innermost interceptor: turns synchronous method handlers into coroutines.

    A unary behaviour runs on ``pool`` (admitted by ``admission``), a synchronous stream is
    advanced there one message at a time, a client stream is fed to it as a blocking iterator;
    ``async`` behaviours pass through untouched. The call's context variables go along.
    """

    def __init__(
        self, pool: futures.ThreadPoolExecutor, admission: Admission, max_wait: float
    ) -> None:
        self._pool = pool
        self._admission = admission
        self._max_wait = max_wait

    def wrappers(self, handler_call_details: grpc.HandlerCallDetails) -> tuple[Wrap, Wrap]:
        """Synchronous behaviours as coroutines; the call may wait as long as this server
        allows (:func:`wait_budget`)."""
        _max_wait.set(self._max_wait)
        return self._unary, self._stream

    def _unary(self, behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
        if _is_async(behavior):
            return behavior
        pool, admission, max_wait = self._pool, self._admission, self._max_wait

        async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            loop = asyncio.get_running_loop()
            admission.enter()
            sync = SyncContext(context, loop, max_wait)
            if request_streaming:
                request = _requests_from(request, loop)
            call = contextvars.copy_context()
            # The place is given back when the thread is done, not when a cancelled caller
            # stops waiting for it: the pool is what the admission counts.
            try:
                running = pool.submit(call.run, behavior, request, sync)
            except RuntimeError:  # the pool is shut down: the server is stopping
                admission.leave()
                raise
            running.add_done_callback(lambda _: loop.call_soon_threadsafe(admission.leave))
            try:
                return await asyncio.wrap_future(running)
            finally:
                sync.end()

        return run

    def _stream(self, behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):
            return behavior
        if inspect.iscoroutinefunction(behavior):
            return _written_to_yielded(behavior)
        pool, max_wait = self._pool, self._max_wait
        done = object()

        async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            loop = asyncio.get_running_loop()
            sync = SyncContext(context, loop, max_wait)
            if request_streaming:
                request = _requests_from(request, loop)
            call = contextvars.copy_context()
            responses: Iterator[Any] = await loop.run_in_executor(
                pool, call.run, behavior, request, sync
            )
            try:
                while True:
                    item = await loop.run_in_executor(pool, call.run, _next_or, responses, done)
                    if item is done:
                        return
                    yield item
            finally:
                sync.end()
                close = getattr(responses, "close", None)
                if close is not None:
                    pool.submit(call.run, close)

        return run


def _next_or(responses: Iterator[Any], end: object) -> Any:
    return next(responses, end)


class _Writer:
    """A stream's context whose ``write`` hands the message to :func:`_written_to_yielded`."""

    def __init__(self, context: Any, outbox: asyncio.Queue[Any]) -> None:
        self._context = context
        self._outbox = outbox

    async def write(self, message: Any) -> None:
        await self._outbox.put(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _written_to_yielded(behavior: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    """A stream handler that writes its answers (``await context.write(m)``, as grpc's own
    asyncio health servicer does) as one that yields them, the shape every interceptor wraps."""

    async def run(request: Any, context: Any) -> AsyncIterator[Any]:
        outbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        task = asyncio.ensure_future(behavior(request, _Writer(context, outbox)))
        receiving: asyncio.Future[Any] | None = None
        try:
            while True:
                receiving = asyncio.ensure_future(outbox.get())
                await asyncio.wait({receiving, task}, return_when=asyncio.FIRST_COMPLETED)
                if receiving.done():
                    yield receiving.result()
                    continue
                receiving.cancel()
                while not outbox.empty():
                    yield outbox.get_nowait()
                task.result()  # the handler's error, if it failed
                return
        finally:
            if receiving is not None and not receiving.done():
                receiving.cancel()
            if not task.done():
                task.cancel()

    return run


def _is_async(behavior: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


class StreamWriter(HandlerInterceptor):
    """The outermost interceptor: a stream's answers are written by one coroutine that grpc
    awaits, rather than pulled by grpc from a generator.

    When a caller goes away while an answer is being sent, grpc stops pulling and drops a
    generator without closing it; it is then closed later in another task, where the context
    that the interceptors (tracing, the caller) set no longer applies. Written from a coroutine,
    the answers stop with a cancellation raised inside that coroutine, which closes every
    generator of the chain in the call's own task.
    """

    def wrappers(self, handler_call_details: grpc.HandlerCallDetails) -> tuple[Wrap, Wrap]:
        """Streams written from a coroutine; the rest unchanged."""
        return _unchanged, _written


def _unchanged(behavior: Callable[..., Any], _request_streaming: bool) -> Callable[..., Any]:
    return behavior


def _written(behavior: Callable[..., Any], _request_streaming: bool) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behavior):
        return behavior

    async def write_all(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        responses = behavior(request, context)
        try:
            async for response in responses:
                await context.write(response)
        finally:
            await responses.aclose()

    return write_all
