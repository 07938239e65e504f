"""services/platform/threads.py: transient failures are retried with backoff, anything else is
raised; a supervised thread that dies is recorded and reported; and a process whose thread
died reports NOT_SERVING on health and exits with status 1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka.errors import CommitFailedError, KafkaTimeoutError
from pymongo.errors import AutoReconnect, DuplicateKeyError, ServerSelectionTimeoutError

from chain.errors import InvalidInputError, UnavailableError
from services.platform.threads import (
    Backoff,
    Stopped,
    ThreadFailure,
    ThreadRegistry,
    is_transient,
    retry_transient,
    start_supervised,
    watch_deaths,
)

FAST = Backoff(first=0.001, maximum=0.002)
ROOT = Path(__file__).resolve().parents[3]


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


class _Denied(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (AutoReconnect("localhost:27017: connection closed"), True),
        (ServerSelectionTimeoutError("no servers"), True),
        (KafkaTimeoutError("metadata"), True),
        (UnavailableError("broker away"), True),
        (ConnectionResetError(), True),
        (_Unavailable(), True),
        (DuplicateKeyError("dup"), False),
        (CommitFailedError("rebalanced"), False),
        (InvalidInputError("bad"), False),
        (TypeError("expected bytes, NoneType found"), False),
        (_Denied(), False),
    ],
)
def test_what_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def failing(times: int, error: Exception) -> Callable[[], str]:
    calls = [0]

    def operation() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise error
        return f"done after {calls[0]} calls"

    return operation


def test_a_transient_failure_is_retried_until_it_succeeds() -> None:
    operation = failing(5, AutoReconnect("connection closed"))
    got = retry_transient(operation, stop=threading.Event(), doing="writing", backoff=FAST)
    assert got == "done after 6 calls"


def test_any_other_failure_is_raised_at_once() -> None:
    operation = failing(1, TypeError("expected bytes, NoneType found"))
    with pytest.raises(TypeError):
        retry_transient(operation, stop=threading.Event(), doing="writing", backoff=FAST)


def test_a_stop_while_waiting_ends_the_retries() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        retry_transient(failing(1, AutoReconnect("x")), stop=stop, doing="writing")


def test_backoff_grows_to_its_maximum_with_jitter() -> None:
    delays = Backoff(first=1.0, maximum=8.0).delays()
    got = [next(delays) for _ in range(6)]
    for delay, ceiling in zip(got, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_a_thread_that_dies_is_recorded_and_reported_once_started_or_later() -> None:
    registry = ThreadRegistry()
    seen: list[ThreadFailure] = []
    registry.on_failure(seen.append)

    def broken() -> None:
        raise RuntimeError("the loop broke")

    def stopped() -> None:
        raise Stopped("the process is stopping")

    start_supervised("broken", broken, registry=registry).join()
    start_supervised("stopped", stopped, registry=registry).join()
    start_supervised("fine", lambda: None, registry=registry).join()
    assert [(f.name, str(f.error)) for f in seen] == [("broken", "the loop broke")]
    assert [f.name for f in registry.failures] == ["broken"]
    late: list[ThreadFailure] = []
    registry.on_failure(late.append)  # registered after the death: told at once
    assert [f.name for f in late] == ["broken"]


def test_a_death_watch_acts_once_and_gives_the_exit_status() -> None:
    registry = ThreadRegistry()
    actions: list[str] = []
    watch = watch_deaths(lambda: actions.append("not serving"), registry=registry)
    for name in ("a", "b"):
        start_supervised(name, lambda: 1 / 0, registry=registry).join()
    assert actions == ["not serving"]
    assert watch.stop() == 1
    quiet = watch_deaths(lambda: actions.append("again"), registry=ThreadRegistry())
    assert quiet.stop() == 0


_PROBE = textwrap.dedent(
    """
    import sys
    from services.platform.server import build_server, run_until_signalled
    from services.platform.settings import ProcessSettings
    from services.platform.threads import start_supervised

    server = build_server(ProcessSettings(process_name="probe", port=0), [])
    print(server.port, flush=True)

    def loop() -> None:
        sys.stdin.readline()  # the test says when
        raise RuntimeError("the loop broke")

    start_supervised("loop", loop)
    run_until_signalled(server, grace=2.0)
    """
)


def test_a_process_whose_thread_died_reports_not_serving_and_exits_non_zero() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        port = int(process.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=60
            )
            statuses = iter(watch)
            assert next(statuses).status == health_pb2.HealthCheckResponse.SERVING
            process.stdin.write("die\n")
            process.stdin.flush()
            assert next(statuses).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert process.wait(timeout=60) == 1
        assert process.stderr is not None
        assert "thread loop died" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
