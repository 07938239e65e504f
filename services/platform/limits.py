"""Per-caller limits of every server: how many streams one caller may hold open, how many the
server holds in all, and how fast anonymous callers may call.

A call over a limit is refused at once with RESOURCE_EXHAUSTED, a message that says which limit,
and a ``google.rpc.RetryInfo`` (services/platform/errors.py), so that overload is a status and
never a hang. A caller is its identity (role and id) once authenticated; anonymous callers are
told apart by their network address only, so everything anonymous that comes through one relay
shares one budget.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from services.platform.aio import serving_stream_of
from services.platform.caller import Caller, current_caller
from services.platform.errors import HandlerInterceptor, OverloadedError, Wrap

#: Token buckets kept for anonymous addresses before full ones are forgotten.
_MAX_TRACKED_ADDRESSES = 10_000


@dataclass(frozen=True)
class LimitSettings:
    """The limits of one server (from :class:`services.platform.settings.ProcessSettings`)."""

    #: Streams (server, client or both ways) one caller may hold open at once.
    max_streams_per_caller: int
    #: Streams the server holds open at once, all callers together.
    max_streams: int
    #: Sustained anonymous calls per second from one address, and the burst above it.
    anonymous_calls_per_second: float
    anonymous_burst: int
    #: Seconds a refused caller is told to wait before trying again.
    retry_after_seconds: float


def peer_address(peer: str) -> str:
    """The host part of a grpc peer string: ``ipv4:10.0.0.7:51234`` -> ``10.0.0.7``,
    ``ipv6:[::1]:51234`` -> ``::1``."""
    _, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if rest.count(":") else rest
    return host.strip("[]") or peer


def caller_key(caller: Caller, peer: str) -> str:
    """Whom a limit counts: an authenticated caller by identity, an anonymous one by address."""
    if caller.is_anonymous:
        return f"anonymous@{peer_address(peer)}"
    return f"{caller.role.value}:{caller.id}"


class CallerLimits:
    """The counters behind the limits. Used on the server's event loop only (no locks)."""

    def __init__(
        self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._streams: dict[str, int] = {}
        self.open_streams = 0
        #: address -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def _refuse(self, message: str) -> OverloadedError:
        retry = self._settings.retry_after_seconds
        return OverloadedError(f"{message}; try again in {retry:g} s", retry_after=retry)

    def open_stream(self, key: str) -> None:
        """Count a stream for ``key``, or raise OverloadedError when a limit is reached."""
        settings = self._settings
        held = self._streams.get(key, 0)
        if held >= settings.max_streams_per_caller:
            raise self._refuse(
                f"{key} already holds {held} open streams, the most one caller may hold; "
                "close one first"
            )
        if self.open_streams >= settings.max_streams:
            raise self._refuse(
                f"the server holds {self.open_streams} open streams, the most it holds"
            )
        self._streams[key] = held + 1
        self.open_streams += 1

    def close_stream(self, key: str) -> None:
        """Uncount a stream of ``key``."""
        held = self._streams.get(key, 0) - 1
        if held > 0:
            self._streams[key] = held
        else:
            self._streams.pop(key, None)
        self.open_streams -= 1

    def anonymous_call(self, address: str) -> None:
        """Take a token from ``address``'s bucket, or raise OverloadedError when it is empty."""
        settings = self._settings
        now = self._clock()
        tokens, then = self._buckets.get(address, (float(settings.anonymous_burst), now))
        tokens = min(
            float(settings.anonymous_burst),
            tokens + (now - then) * settings.anonymous_calls_per_second,
        )
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            raise self._refuse(
                f"too many anonymous calls from {address} (at most "
                f"{settings.anonymous_calls_per_second:g} a second, bursts of "
                f"{settings.anonymous_burst})"
            )
        if address not in self._buckets and len(self._buckets) >= _MAX_TRACKED_ADDRESSES:
            self._forget_full(now)
        self._buckets[address] = (tokens - 1.0, now)

    def _forget_full(self, now: float) -> None:
        settings = self._settings
        refill = settings.anonymous_burst / settings.anonymous_calls_per_second
        for address, (_, then) in list(self._buckets.items()):
            if now - then >= refill:
                del self._buckets[address]


class LimitsInterceptor(HandlerInterceptor):
    """Applies :class:`CallerLimits` to every call; runs inside the authorization interceptor,
    which has bound the caller."""

    def __init__(self, limits: CallerLimits) -> None:
        self.limits = limits

    def wrappers(self, handler_call_details: grpc.HandlerCallDetails) -> tuple[Wrap, Wrap]:
        """Behaviours counted against their caller's limits."""
        limits = self.limits

        def admit(context: grpc.aio.ServicerContext[Any, Any]) -> str:
            caller = current_caller()
            peer = context.peer()
            if caller.is_anonymous:
                limits.anonymous_call(peer_address(peer))
            return caller_key(caller, peer)

        def unary(behavior: Callable[..., Any], streamed: bool) -> Callable[..., Any]:
            async def limited(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                key = admit(context)
                if not streamed:
                    return await behavior(request, context)
                limits.open_stream(key)
                serving_stream_of(key)
                try:
                    return await behavior(request, context)
                finally:
                    limits.close_stream(key)

            return limited

        def stream(behavior: Callable[..., Any], _streamed: bool) -> Callable[..., Any]:
            async def limited(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                key = admit(context)
                limits.open_stream(key)
                serving_stream_of(key)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    limits.close_stream(key)

            return limited

        return unary, stream
