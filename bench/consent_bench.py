"""End-to-end benchmark of CheckAccess: hospital (mTLS) -> consent service -> decision stored
and answered -> ACCESS entry to Kafka -> three chain nodes, everything real on this machine.

    python bench/consent_bench.py            # 10 s at 1,000 requests/s
    python bench/consent_bench.py --quick    # 2 s at 300 requests/s
    python bench/consent_bench.py --rate 500 --seconds 5

The load is open-loop: one asyncio client sends CheckAccess at fixed times (request i at
``start + i / rate``, each with a fresh request id) over several mTLS channels, whatever the
answers are doing, and a latency is measured from the request's *scheduled* time to its answer.
A slow server therefore shows up as latency instead of silently lowering the offered rate
(coordinated omission), and a client that falls behind its own schedule shows up too: the
script prints how late the client sent (its p99) and the CPU the client used, so one can tell a
saturated client from a slow server.

The decision is stored durably before the answer and its ACCESS entry is handed to Kafka
afterwards, so the latency includes the durable write but not Kafka; the anchoring runs during
the load on the same cores. Afterwards the run checks that every decision's ACCESS entry reached
the log (sequenced or sealed) — a decision lost fails the run — and prints how long after its
answer the last decision's entry was on the log. A call that fails (a gRPC error) is counted by
status code, not retried, and does not stop the run: the count is a figure (``calls_failed``,
target 0) and the consent service's last warnings are printed next to it. It also prints the
CPU time each process of the platform used during the load and while idle just before it, to
say where the time went.

A peer phase follows on the same channels at the same rate: a bare gRPC health check of the
consent service (same TLS, interceptors and thread pool, no decision), the floor that this
server stack sets on this machine; its latency and the consent process's CPU per call are
printed next to CheckAccess's.

``--pause-nodes`` stops the three chain nodes during the load (and resumes them after it): a peer
run that shows what the consent service does on these cores without the nodes, whose Kafka
polling keeps a large part of the machine busy even when idle; the ACCESS entries wait in Kafka
meanwhile and the log check after the resume still covers every one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench.common import (  # noqa: E402
    bench_platform,
    cpu_seconds,
    figure,
    percentile,
    platform_pids,
)
from sdk.consent import PERMIT, PatientDevice, bearer, organization, provision  # noqa: E402
from services.platform.tls import client_credentials  # noqa: E402
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc  # noqa: E402
from swiftchain.common.v1 import common_pb2  # noqa: E402
from swiftchain.consent.v1 import consent_service_pb2 as pb  # noqa: E402
from swiftchain.consent.v1 import consent_service_pb2_grpc  # noqa: E402
from tests.e2e.platform import Platform, wait_for  # noqa: E402

P99_TARGET_MS = 10.0
CHANNELS = 8
IDLE_SECONDS = 3.0
_ON_LOG = (common_pb2.ENTRY_STATE_SEQUENCED, common_pb2.ENTRY_STATE_SEALED)


@dataclass
class Run:
    """What one load phase measured."""

    #: Scheduled send -> answer, in ms, one per request.
    latencies: list[float] = field(default_factory=list)
    #: Actual send - scheduled send, in ms: how far the client fell behind its schedule.
    send_lag: list[float] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    #: Calls that ended in an error, by status code name (the run goes on without them).
    failed: Counter[str] = field(default_factory=Counter)
    wall_seconds: float = 0.0
    client_cpu_seconds: float = 0.0


#: One request of a load: sends on a channel, returns the ACCESS entry id ("" for none).
Call = Callable[[grpc.aio.Channel], Awaitable[str]]


def check_access(patient: str) -> Call:
    """CheckAccess for ``patient`` with a fresh request id; its ACCESS entry id."""

    async def call(channel: grpc.aio.Channel) -> str:
        answer = await consent_service_pb2_grpc.ConsentServiceStub(channel).CheckAccess(
            pb.CheckAccessRequest(
                patient_subject_id=patient,
                data_category="laboratory",
                purpose="TREAT",
                request_id=str(uuid.uuid4()),
            ),
            timeout=60,
        )
        assert answer.decision == common_pb2.ACCESS_DECISION_PERMIT
        return answer.access_entry_id

    return call


async def health_check(channel: grpc.aio.Channel) -> str:
    """A bare health check through the same server, interceptors and TLS: the floor."""
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60)
    return ""


async def drive(channels: list[grpc.aio.Channel], call: Call, rate: int, seconds: float) -> Run:
    """Make ``call`` at ``rate`` per second for ``seconds``, open-loop (see the module
    docstring), spread over ``channels``."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    run = Run()
    start = loop.time() + 0.1

    async def one(index: int, due: float) -> None:
        run.send_lag.append((loop.time() - due) * 1000)
        try:
            entry_id = await call(channels[index % len(channels)])
        except grpc.aio.AioRpcError as error:
            run.failed[error.code().name] += 1
            return
        run.latencies.append((loop.time() - due) * 1000)
        if entry_id:
            run.entries.append(entry_id)

    cpu = time.process_time()
    tasks = []
    for index in range(total):
        due = start + index / rate
        pause = due - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    run.wall_seconds = loop.time() - start
    run.client_cpu_seconds = time.process_time() - cpu
    return run


async def missing_from_log(channel: grpc.aio.Channel, entries: list[str]) -> set[str]:
    """Entry ids not (yet) sequenced or sealed, asked 32 at a time."""
    chain = chain_service_pb2_grpc.ChainServiceStub(channel)
    limit = asyncio.Semaphore(32)

    async def absent(entry_id: str) -> bool:
        async with limit:
            try:
                status = await chain.GetEntryStatus(
                    chain_service_pb2.GetEntryStatusRequest(entry_id=entry_id), timeout=30
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return True
                raise
            return status.state not in _ON_LOG

    flags = await asyncio.gather(*(absent(e) for e in entries))
    return {e for e, flag in zip(entries, flags, strict=True) if flag}


def grant(platform: Platform) -> str:
    """Register a patient who permits hospital-a everything; its subject id."""
    hospital = platform.hospital
    patient = platform.register_patient("bench patient", hospital)
    assert patient.device_dir is not None
    device = PatientDevice.from_folder(patient.device_dir)
    stub = consent_service_pb2_grpc.ConsentServiceStub(platform.channel(patient, "consent"))
    signed = device.sign_directive(
        device.directive(grantee=organization(hospital.id), provision=provision(PERMIT))
    )

    def granted() -> bool:
        try:
            stub.GrantConsent(
                pb.GrantConsentRequest(signed_directive=signed),
                metadata=bearer(patient.token),
                timeout=10,
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False  # identity's events are on their way
            raise
        return True

    wait_for("the grant", granted, 30)
    return patient.id


async def measure(
    platform: Platform, patient: str, rate: int, seconds: float, *, pause_nodes: bool
) -> int:
    """Warm up, drive the load, check the log, print the figures; the exit status."""
    hospital = platform.hospital
    assert hospital.tls_dir is not None and platform.admin.tls_dir is not None
    credentials = client_credentials(hospital.tls_dir)
    channels = [
        grpc.aio.secure_channel(platform.target("consent"), credentials) for _ in range(CHANNELS)
    ]
    admin = grpc.aio.secure_channel(
        platform.target("hospital-a"), client_credentials(platform.admin.tls_dir)
    )
    await drive(channels, check_access(patient), min(rate, 200), 1.0)  # warm-up
    pids = platform_pids(platform)
    idle_from = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.sleep(IDLE_SECONDS)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    idle = {name: (before[name] - idle_from[name]) / IDLE_SECONDS for name in pids}
    nodes = [pids[name] for name, _ in platform.stack.ports.nodes] if pause_nodes else []
    for pid in nodes:
        os.kill(pid, signal.SIGSTOP)
    print(
        f"CheckAccess at {rate:,} requests/s for {seconds:.0f} s (open loop"
        f"{', chain nodes paused' if nodes else ''})..."
    )
    try:
        run = await drive(channels, check_access(patient), rate, seconds)
    finally:
        for pid in nodes:
            os.kill(pid, signal.SIGCONT)
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    answered = time.monotonic()
    deadline = answered + 120
    if not run.entries:
        raise SystemExit(f"no CheckAccess call was answered (failed: {dict(run.failed)})")
    last = [run.entries[-1]]
    while await missing_from_log(admin, last) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    drained = time.monotonic() - answered
    print(f"checking that all {len(run.entries):,} ACCESS entries reached the log...")
    missing = set(run.entries)
    while missing and time.monotonic() < deadline:
        missing = await missing_from_log(admin, sorted(missing))
        if missing:
            await asyncio.sleep(0.5)
    print(f"peer: a bare health check at {rate:,}/s for {seconds:.0f} s on the same channels...")
    consent = pids["consent"]
    consent_cpu = cpu_seconds(consent)
    floor = await drive(channels, health_check, rate, seconds)
    floor_cpu = cpu_seconds(consent) - consent_cpu
    for channel in [*channels, admin]:
        await channel.close()

    achieved = len(run.latencies) / run.wall_seconds
    label = f"at {rate:,} requests/s"
    figure("answers_per_s", achieved, "/s")
    figure("p50_ms", statistics.median(run.latencies), "ms")
    figure("p99_ms", percentile(run.latencies, 99), "ms")
    figure("missing_from_log", len(missing), "decisions")
    figure("calls_failed", run.failed.total(), "calls")
    figure("peer_health_p50_ms", statistics.median(floor.latencies), "ms")
    figure("peer_health_p99_ms", percentile(floor.latencies, 99), "ms")
    print(f"{'benchmark':<60} {'figure':>10}  target")
    print(f"{'CheckAccess answers/s achieved':<60} {achieved:>10,.0f}  {rate:,}")
    print(
        f"{'CheckAccess p50 ' + label + ' (ms, from scheduled send)':<60} "
        f"{statistics.median(run.latencies):>10.2f}"
    )
    print(
        f"{'CheckAccess p99 ' + label + ' (ms, from scheduled send)':<60} "
        f"{percentile(run.latencies, 99):>10.2f}  <= {P99_TARGET_MS:.0f}"
    )
    print(
        f"{'client: p99 of its own lateness in sending (ms)':<60} "
        f"{percentile(run.send_lag, 99):>10.2f}"
    )
    print(f"{'last answered ACCESS entry on the log, s after its answer':<60} {drained:>10.2f}")
    print(f"{'decisions without an ACCESS entry on the log':<60} {len(missing):>10,}  0")
    failed = ", ".join(f"{n:,} {code}" for code, n in sorted(run.failed.items())) or "none"
    print(f"{'CheckAccess calls that failed':<60} {run.failed.total():>10,}  0 ({failed})")
    if run.failed:
        log = platform.stack.logs / "consent.log"
        warnings = [line for line in log.read_text(errors="replace").splitlines() if "WARN" in line]
        print(f"  the consent service's last warnings ({log}):")
        for line in warnings[-5:] or ["  (none)"]:
            print(f"    {line[:300]}")
    print(
        f"{'peer: health check p50 / p99 ' + label + ' (ms)':<60} "
        f"{statistics.median(floor.latencies):>10.2f} / {percentile(floor.latencies, 99):.2f}"
    )
    print(
        f"{'peer: consent CPU per health check / per decision (ms)':<60} "
        f"{floor_cpu / len(floor.latencies) * 1000:>10.2f} / "
        f"{used['consent'] / len(run.latencies) * 1000:.2f}"
    )
    decisions = len(run.latencies)
    print(
        f"CPU during the load ({run.wall_seconds:.1f} s wall), per decision, and idle "
        f"(the {IDLE_SECONDS:.0f} s before it):"
    )
    for name, seconds_used in sorted(
        [*used.items(), ("bench client", run.client_cpu_seconds)], key=lambda kv: -kv[1]
    ):
        cores = seconds_used / run.wall_seconds
        print(
            f"  {name:<14} {cores:>5.2f} cores  {seconds_used / decisions * 1000:>6.2f} ms"
            f"  idle {idle.get(name, 0.0):>5.2f} cores"
        )
    total = sum(used.values()) + run.client_cpu_seconds
    print(
        f"  {'all':<14} {total / run.wall_seconds:>5.2f} cores  {total / decisions * 1000:>6.2f} ms"
        f"  idle {sum(idle.values()):>5.2f} cores  (the machine has {os.cpu_count()})"
    )
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("--rate", type=int, default=None, help="requests/s")
    parser.add_argument("--seconds", type=float, default=None, help="run length")
    parser.add_argument(
        "--pause-nodes",
        action="store_true",
        help="stop the chain nodes (SIGSTOP) during the load and resume them after it: the "
        "consent service without the nodes' CPU; the log check then covers the backlog",
    )
    args = parser.parse_args(argv)
    rate = args.rate or (300 if args.quick else 1000)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    with bench_platform() as platform:
        patient = grant(platform)
        return asyncio.run(measure(platform, patient, rate, seconds, pause_nodes=args.pause_nodes))


if __name__ == "__main__":
    raise SystemExit(main())
