"""The floor that Python gRPC sets on this machine: a no-op unary call at a fixed rate.

    python bench/grpc_floor_bench.py            # 10 s at 1,000 calls/s for each server
    python bench/grpc_floor_bench.py --quick    # 2 s each

A server process answers ``grpc.health.v1.Health/Check`` (no TLS, no interceptors, nothing
else running: the least a service can do per call), once as grpcio's thread-pool server (what
the services run, ``services/platform/server.py``) and once as its asyncio server
(``grpc.aio``). A client in another process sends calls open loop, call i at
``start + i / rate`` over four channels, and measures each from its scheduled time to its
answer, so a server that falls behind shows as latency. Printed per server: p50, p99, and the
server process's CPU per call. This is the peer of ``consent_bench``'s target (CheckAccess p99
<= 10 ms at 1,000/s): what is left of 10 ms once the server stack alone has answered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench.common import figure  # noqa: E402
from devstack.process import free_port  # noqa: E402

SERVERS = ("threads", "asyncio")
CHANNELS = 4


def serve(kind: str, port: int) -> None:
    """Run a health-only server of ``kind`` on ``port`` until killed."""
    address = f"127.0.0.1:{port}"
    if kind == "threads":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        server.add_insecure_port(address)
        server.start()
        server.wait_for_termination()
        return

    async def run() -> None:
        aio_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), aio_server)
        aio_server.add_insecure_port(address)
        await aio_server.start()
        await aio_server.wait_for_termination()

    asyncio.run(run())


async def load(port: int, rate: int, seconds: float, server_pid: int) -> tuple[list[float], float]:
    """Latencies in ms of ``rate * seconds`` calls sent open loop, and the CPU seconds the
    server used meanwhile (its start and the channels' first calls not counted)."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    stubs = [health_pb2_grpc.HealthStub(channel) for channel in channels]
    request = health_pb2.HealthCheckRequest()
    for stub in stubs:  # connect every channel before the clock starts
        await stub.Check(request, timeout=10, wait_for_ready=True)
    latencies: list[float] = []
    cpu_before = cpu_seconds_of(server_pid)
    start = time.perf_counter() + 0.1

    async def call(i: int) -> None:
        await stubs[i % CHANNELS].Check(request, timeout=30)
        latencies.append((time.perf_counter() - (start + i / rate)) * 1000)

    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(i)))
    await asyncio.gather(*tasks)
    cpu = cpu_seconds_of(server_pid) - cpu_before
    for channel in channels:
        await channel.close()
    return latencies, cpu


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, rate: int, seconds: float) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, server CPU ms per call) of one server kind."""
    port = free_port()
    argv = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    server = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        latencies, cpu = asyncio.run(load(port, rate, seconds, server.pid))
    finally:
        server.kill()
        server.wait()
    p99 = statistics.quantiles(latencies, n=100)[98]
    return statistics.median(latencies), p99, cpu / len(latencies) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per server")
    parser.add_argument("--rate", type=int, default=1000, help="calls per second")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    seconds = 2.0 if args.quick else 10.0
    rows = []
    for kind in SERVERS:
        print(f"{kind}: a no-op call at {args.rate:,}/s for {seconds:.0f} s...", flush=True)
        p50, p99, cpu = measure(kind, args.rate, seconds)
        figure(f"{kind}.p50_ms", p50, "ms")
        figure(f"{kind}.p99_ms", p99, "ms")
        figure(f"{kind}.server_cpu_per_call_ms", cpu, "ms")
        rows.append((kind, p50, p99, cpu))
    print(
        f"{'server (no-op call, ' + format(args.rate, ',') + '/s)':<36} p50 ms  p99 ms  CPU ms/call"
    )
    for kind, p50, p99, cpu in rows:
        print(f"{kind:<36} {p50:>6.2f}  {p99:>6.2f}  {cpu:>11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
