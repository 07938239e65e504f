"""A process's long-lived threads: retried through transient failures, and never dead unseen.

Background loops (Kafka consumers, the chain node's sequencer and cosigner, outbox relays, the
log writer) are started with :func:`start_supervised`. Their I/O retries what is transient (the
broker or the database away for a while) with :func:`retry_transient`, exponential backoff and
no limit but the process stopping. A loop that raises anything else is logged and recorded in
the process's :class:`ThreadRegistry`; the server factory (``services/platform/server.py``)
watches the registry with :func:`watch_deaths`: the process turns its health ``NOT_SERVING``,
stops, and exits with status 1, so that its supervisor (``make up``, Kubernetes) restarts it. A
process whose loop is dead must never keep answering ``SERVING``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import grpc
from kafka.errors import KafkaError
from pymongo.errors import ConnectionFailure

from chain.errors import UnavailableError

__all__ = [
    "PROCESS_THREADS",
    "Backoff",
    "DeathWatch",
    "Stopped",
    "ThreadFailure",
    "ThreadRegistry",
    "is_transient",
    "retry_transient",
    "start_supervised",
    "watch_deaths",
]

_log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_GRPC = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Stopped(Exception):  # noqa: N818  (a signal, not an error)
    """Raised by :func:`retry_transient` when the process stops while it waits: the loop that
    called it ends quietly (a supervised thread ending this way is not a death)."""


def is_transient(error: BaseException) -> bool:
    """True for failures that go away by themselves: the database unreachable (pymongo's
    ``ConnectionFailure`` family: "connection closed", timeouts, no server selected), Kafka's
    retriable errors (no broker, timeouts, leaders moving), a gRPC peer unavailable or late,
    socket errors, and our own :class:`~chain.errors.UnavailableError`."""
    if isinstance(error, ConnectionFailure | ConnectionError | TimeoutError | UnavailableError):
        return True
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False))
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return error.code() in _TRANSIENT_GRPC
    return False


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``first`` seconds, times ``factor`` each time, at most ``maximum``,
    each delay drawn between half and all of that (so that processes that lost the same
    database do not come back in step)."""

    first: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """The successive delays, without end."""
        delay = self.first
        while True:
            yield delay * random.uniform(0.5, 1.0)  # noqa: S311  (jitter, not a secret)
            delay = min(delay * self.factor, self.maximum)


def retry_transient(
    operation: Callable[[], T],
    *,
    stop: threading.Event,
    doing: str,
    backoff: Backoff = Backoff(),
) -> T:
    """``operation()``, called again after a backoff for as long as it fails transiently (see
    :func:`is_transient`), until it succeeds. Any other error is raised at once. Raises
    :class:`Stopped` if ``stop`` is set while waiting. ``doing`` names the work in the log
    ("persisting block 12")."""
    delays = backoff.delays()
    failures = 0
    while True:
        try:
            return operation()
        except Exception as error:
            if not is_transient(error):
                raise
            failures += 1
            delay = next(delays)
            # The first failure, then every tenth: an outage of minutes stays readable.
            if failures == 1 or failures % 10 == 0:
                _log.warning(
                    "%s failed (%s: %s); retrying in %.1f s (attempt %d)",
                    doing,
                    type(error).__name__,
                    error,
                    delay,
                    failures + 1,
                )
            if stop.wait(delay):
                raise Stopped(doing) from error


class ThreadFailure(NamedTuple):
    """A supervised thread that died: its name and what it raised."""

    name: str
    error: BaseException


class ThreadRegistry:
    """The supervised threads of a process and the deaths among them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[ThreadFailure] = []
        self._listeners: list[Callable[[ThreadFailure], None]] = []

    def start(self, name: str, target: Callable[..., Any], *args: Any) -> threading.Thread:
        """Start ``target(*args)`` in a daemon thread named ``name``; if it raises (anything
        but :class:`Stopped`), log it and tell the listeners (see :meth:`on_failure`)."""

        def run() -> None:
            try:
                target(*args)
            except Stopped:
                return
            except BaseException as error:
                _log.exception("thread %s died", name)
                self._failed(ThreadFailure(name, error))

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    @property
    def failures(self) -> list[ThreadFailure]:
        """The threads that died so far, in order."""
        with self._lock:
            return list(self._failures)

    def on_failure(self, listener: Callable[[ThreadFailure], None]) -> None:
        """Call ``listener`` for each death from now on, and at once for the first one if a
        thread died already."""
        with self._lock:
            self._listeners.append(listener)
            first = self._failures[0] if self._failures else None
        if first is not None:
            listener(first)

    def remove_listener(self, listener: Callable[[ThreadFailure], None]) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _failed(self, failure: ThreadFailure) -> None:
        with self._lock:
            self._failures.append(failure)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(failure)
            except Exception:
                _log.exception("a listener of thread %s's death failed", failure.name)


#: The registry of this process's threads, which the server factory watches.
PROCESS_THREADS = ThreadRegistry()


def start_supervised(
    name: str,
    target: Callable[..., Any],
    *args: Any,
    registry: ThreadRegistry | None = None,
) -> threading.Thread:
    """Start a long-lived thread whose death takes the process down (see the module
    docstring); ``registry`` defaults to :data:`PROCESS_THREADS`."""
    return (registry or PROCESS_THREADS).start(name, target, *args)


class DeathWatch:
    """Runs ``actions`` in order when the first supervised thread of ``registry`` dies (at
    once if one has died already); see :func:`watch_deaths`."""

    def __init__(self, registry: ThreadRegistry, actions: tuple[Callable[[], None], ...]) -> None:
        self._registry = registry
        self._actions = actions
        self._died = False
        self._lock = threading.Lock()
        registry.on_failure(self._on_death)

    def _on_death(self, failure: ThreadFailure) -> None:
        with self._lock:
            first = not self._died
            self._died = True
        if not first:
            return
        _log.error(
            "thread %s died (%s: %s): this process reports NOT_SERVING and exits with status 1, "
            "for its supervisor to restart it",
            failure.name,
            type(failure.error).__name__,
            failure.error,
        )
        for action in self._actions:
            action()

    def stop(self) -> int:
        """Stop watching (a loop that fails while the process stops is no reason to exit
        non-zero) and return the exit status: 1 if a thread died before, else 0."""
        self._registry.remove_listener(self._on_death)
        with self._lock:
            return 1 if self._died else 0


def watch_deaths(
    *actions: Callable[[], None], registry: ThreadRegistry | None = None
) -> DeathWatch:
    """Run ``actions`` in order (turn health NOT_SERVING, request the stop) when the first
    supervised thread of the process dies; call :meth:`DeathWatch.stop` when stopping."""
    return DeathWatch(registry or PROCESS_THREADS, actions)
