"""One caller's streams take turns at the server's thread pool (services/platform/aio.py
``run_blocking``): a caller holding many streams whose steps block keeps at most
``STREAM_STEPS_PER_CALLER`` threads, so every other call still finds one; the limits
interceptor marks each stream with its caller."""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from typing import Any

import grpc

from services.platform import aio
from services.platform.aio import STREAM_STEPS_PER_CALLER, run_blocking, serving_stream_of
from services.platform.caller import Caller, Role, bound_caller
from services.platform.limits import CallerLimits, LimitSettings, LimitsInterceptor

WORKERS = 3
STREAMS = 10


def test_a_callers_blocked_streams_leave_the_pool_to_other_calls() -> None:
    release = threading.Event()
    lock = threading.Lock()
    running = {"now": 0, "most": 0}

    def blocked_step() -> None:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        release.wait(30)
        with lock:
            running["now"] -= 1

    async def stream(owner: str) -> None:
        serving_stream_of(owner)
        await run_blocking(blocked_step)

    async def scenario() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(futures.ThreadPoolExecutor(max_workers=WORKERS))
        streams = [loop.create_task(stream("regulator:hostile")) for _ in range(STREAMS)]
        await asyncio.sleep(0.2)  # every stream has asked for its step
        # A unary call's step and another caller's stream step each find a free thread.
        unary = await asyncio.wait_for(run_blocking(lambda: "unary"), 10)

        async def other_caller() -> str:
            serving_stream_of("patient:someone")
            return await run_blocking(lambda: "other")

        other = await asyncio.wait_for(loop.create_task(other_caller()), 10)
        release.set()
        await asyncio.gather(*streams)
        return unary, other

    assert asyncio.run(scenario()) == ("unary", "other")
    assert running["most"] == STREAM_STEPS_PER_CALLER


def test_every_turn_given_is_given_back() -> None:
    async def scenario() -> int:
        async def stream(n: int) -> int:
            serving_stream_of(f"caller-{n % 3}")
            return await run_blocking(lambda: n)

        results = await asyncio.gather(*(stream(n) for n in range(30)))
        assert sorted(results) == list(range(30))
        return len(aio._turns_by_loop[asyncio.get_running_loop()]._turns)

    assert asyncio.run(scenario()) == 0


class _Details(grpc.HandlerCallDetails):
    method = "/test.Streams/Follow"
    invocation_metadata = ()


class _Context:
    def peer(self) -> str:
        return "ipv4:10.0.0.7:5000"


def test_the_limits_interceptor_marks_a_stream_with_its_caller() -> None:
    limits = CallerLimits(LimitSettings(10, 100, 10.0, 10, 1.0))
    _, stream_wrapper = LimitsInterceptor(limits).wrappers(_Details())

    async def behavior(request: Any, context: Any) -> Any:
        yield aio._stream_owner.get()

    async def scenario() -> list[str]:
        with bound_caller(Caller(Role.REGULATOR, "regulator-1")):
            wrapped = stream_wrapper(behavior, True)
            return [owner async for owner in wrapped(None, _Context())]

    assert asyncio.run(scenario()) == ["regulator:regulator-1"]
