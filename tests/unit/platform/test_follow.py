"""services/platform/follow.py: the follower retries after the node or the store failed, and
stops when told."""

from __future__ import annotations

import logging
import threading

import grpc
import pytest

from services.platform.follow import follow_until_stopped


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "no checkpoint has been sealed yet; try again shortly"


def test_it_retries_after_each_failure_until_stopped(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    calls: list[int] = []

    def once() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise _Unavailable()
        if len(calls) == 2:
            raise RuntimeError("the database is away")
        stop.set()

    with caplog.at_level(logging.WARNING, logger="services.platform.follow"):
        follow_until_stopped(stop, once, doing="recording seals", retry_after=0.01)
    assert calls == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "recording seals: the chain node failed (StatusCode.UNAVAILABLE: no checkpoint has "
        "been sealed yet; try again shortly); again in 0 s",
        "recording seals failed; again in 0 s",
    ]


def test_a_call_cancelled_by_stop_ends_it_quietly(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()

    def once() -> None:
        stop.set()  # stop() cancels the stream, which then raises
        raise _Unavailable()

    with caplog.at_level(logging.WARNING, logger="services.platform.follow"):
        follow_until_stopped(stop, once, doing="indexing the log", retry_after=0.01)
    assert caplog.records == []
