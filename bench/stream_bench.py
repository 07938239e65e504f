"""Idle streams a server holds, and what they cost its unary calls, side by side in one run.

    python bench/stream_bench.py                  # 10,000 idle streams, 10 s of calls at 500/s
    python bench/stream_bench.py --quick          # 2,000 streams, 2 s of calls at 200/s
    python bench/stream_bench.py --streams 20000  # try more

A server process built by the platform's factory (``services/platform/server.py``: the asyncio
server, tracing, error mapping, authorization and the per-caller limits, synchronous unary
handlers on its thread pool) answers ``grpc.health.v1.Health``, as every Swiftchain server does.
A client in this process sends ``Check`` open loop (call i at ``start + i / rate``, each timed
from its scheduled time, so a server that falls behind shows as latency), after a second of
warm-up first with nothing
else open, then while another process holds ``--streams`` idle ``Health.Watch`` streams on it
(every one answered once, so each is open on the server), then with them closed again.
Printed: the streams held, the server's memory per stream and its CPU while they idle, and the
unary p50 and p99 of the three runs; the figure is the p99 ratio, with the streams over the mean
of the two runs without. Plaintext on loopback: the
streams are anonymous callers from one address, so the server's per-caller limits are raised
for the run (``SWIFTCHAIN_MAX_STREAMS_PER_CALLER`` and the anonymous rate).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from bench.common import figure, rss_bytes  # noqa: E402
from bench.grpc_floor_bench import cpu_seconds_of, load  # noqa: E402
from devstack.process import free_port  # noqa: E402

#: Streams per client channel (one HTTP/2 connection each) in the holding process.
STREAMS_PER_CHANNEL = 1000
HELD = "HELD"


def serve(port: int, streams: int) -> None:
    """Run a server built by the platform's factory on ``port`` until killed."""
    from services.platform.auth import AuthInterceptor, Authorizer
    from services.platform.revocations import RevocationList
    from services.platform.server import build_server
    from services.platform.settings import ProcessSettings

    settings = ProcessSettings(
        process_name="stream-bench",
        port=port,
        max_streams=streams + 1000,
        max_streams_per_caller=streams + 1000,
        anonymous_calls_per_second=1_000_000,
        anonymous_burst=1_000_000,
    )
    server = build_server(
        settings, [], interceptors=[AuthInterceptor(Authorizer(RevocationList(), None))]
    )
    server.wait()


def hold(port: int, count: int) -> None:
    """Open ``count`` Health.Watch streams, print how many answered, hold them until stdin
    closes."""
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{port}")
        for _ in range((count + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    ]
    calls = []
    held = 0
    for i in range(count):
        stub = health_pb2_grpc.HealthStub(channels[i // STREAMS_PER_CHANNEL])
        calls.append(stub.Watch(health_pb2.HealthCheckRequest()))
    for call in calls:
        try:
            next(call)
            held += 1
        except grpc.RpcError as error:
            print(f"a stream was refused: {error.code()} {error.details()}", flush=True)
            break
    print(f"{HELD} {held}", flush=True)
    sys.stdin.read()
    for call in calls:
        call.cancel()


def _p(latencies: list[float], q: int) -> float:
    return statistics.quantiles(latencies, n=100)[q - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 streams, 2 s of calls")
    parser.add_argument("--streams", type=int, help="idle streams to hold (10,000)")
    parser.add_argument("--rate", type=int, help="unary calls per second (500)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hold", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    streams = args.streams or (2000 if args.quick else 10_000)
    if args.serve:
        serve(args.port, args.serve)
        return 0
    if args.hold:
        hold(args.port, args.hold)
        return 0
    rate = args.rate or (200 if args.quick else 500)
    seconds = 2.0 if args.quick else 10.0
    port = free_port()
    script = str(Path(__file__).resolve())
    server = subprocess.Popen(
        [sys.executable, script, "--serve", str(streams), "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )
    holder: subprocess.Popen[str] | None = None
    try:
        asyncio.run(load(port, rate, 1.0, server.pid))  # warm up: threads, caches, connections
        print(f"unary Check at {rate}/s for {seconds:.0f} s, no other stream open...", flush=True)
        alone, _ = asyncio.run(load(port, rate, seconds, server.pid))
        rss_before = rss_bytes(server.pid)
        print(f"opening {streams:,} idle Health.Watch streams from another process...", flush=True)
        began = time.monotonic()
        holder = subprocess.Popen(
            [sys.executable, script, "--hold", str(streams), "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        held = 0
        for line in holder.stdout:
            print(f"  holder: {line.rstrip()}", flush=True)
            if line.startswith(HELD):
                held = int(line.split()[1])
                break
        opened_in = time.monotonic() - began
        cpu_before = cpu_seconds_of(server.pid)
        time.sleep(2.0)
        idle_cpu = (cpu_seconds_of(server.pid) - cpu_before) / 2.0
        rss_with = rss_bytes(server.pid)
        print(f"unary Check at {rate}/s for {seconds:.0f} s, {held:,} streams open...", flush=True)
        loaded, _ = asyncio.run(load(port, rate, seconds, server.pid))
        holder.kill()
        holder.wait()
        time.sleep(2.0)  # the server closes the streams
        print(
            f"unary Check at {rate}/s for {seconds:.0f} s, the streams closed again...", flush=True
        )
        after, _ = asyncio.run(load(port, rate, seconds, server.pid))
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        server.kill()
        server.wait()
    p50_alone, p99_alone = statistics.median(alone), _p(alone, 99)
    p50_loaded, p99_loaded = statistics.median(loaded), _p(loaded, 99)
    p50_after, p99_after = statistics.median(after), _p(after, 99)
    per_stream = (rss_with - rss_before) / max(held, 1)
    figure("streams_held", held, "streams")
    figure("streams_opened_s", opened_in, "s")
    figure("server_kib_per_stream", per_stream / 1024, "KiB")
    figure("server_idle_cpu_with_streams", idle_cpu, "cores")
    figure("unary_p50_ms_alone", p50_alone, "ms")
    figure("unary_p99_ms_alone", p99_alone, "ms")
    figure("unary_p50_ms_with_streams", p50_loaded, "ms")
    figure("unary_p99_ms_with_streams", p99_loaded, "ms")
    figure("unary_p50_ms_after", p50_after, "ms")
    figure("unary_p99_ms_after", p99_after, "ms")
    # against the mean of the runs without streams, one before and one after them
    baseline = (p99_alone + p99_after) / 2
    figure("unary_p99_ratio", p99_loaded / baseline, "x")
    figure("unary_p50_ratio", p50_loaded / ((p50_alone + p50_after) / 2), "x")
    print(f"idle streams held by one server process: {held:,} of {streams:,} ({opened_in:.1f} s)")
    print(
        f"server memory per idle stream: {per_stream / 1024:.1f} KiB; CPU while idle: "
        f"{idle_cpu:.3f} cores"
    )
    print(f"{'unary Check, ' + format(rate, ',') + '/s':<32} p50 ms  p99 ms")
    print(f"{'no stream open':<32} {p50_alone:>6.2f}  {p99_alone:>6.2f}")
    print(f"{format(held, ',') + ' idle streams open':<32} {p50_loaded:>6.2f}  {p99_loaded:>6.2f}")
    print(f"{'no stream open (after)':<32} {p50_after:>6.2f}  {p99_after:>6.2f}")
    print(f"p99 with / without (mean of before and after): {p99_loaded / baseline:.2f}x")
    return 0 if held == streams else 1


if __name__ == "__main__":
    raise SystemExit(main())
