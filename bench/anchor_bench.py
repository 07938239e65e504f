"""End-to-end benchmark of anchoring: hospital SDK -> anchoring service -> Kafka -> three chain
nodes (quorum 2) -> sealed receipt, everything real and on this machine, over mTLS.

    python bench/anchor_bench.py             # 20,000 versions; 10 s at 1,000 versions/s
    python bench/anchor_bench.py --quick     # 1,000 versions; 2 s at 50 versions/s

1. Throughput: record versions signed by the SDK in batches of 1,000 (signed before the clock
   starts) are sent through one ``AnchorRecords`` stream; the figure is versions / (time from
   the first send until a quorum-sealed checkpoint covers every one of them), as the anchoring
   service reports it (its RecordSealed events on ``records.events.v1``, read afterwards) and
   timed by this client's view of one node's sealed checkpoints. A version whose event has not
   come within 60 s is looked up on the chain instead and counted (``sealed_events_missing``).
2. Latency: single versions sent with ``AnchorRecord`` at a steady rate (signed beforehand);
   for each, the time from its send to the first sealed checkpoint (seen by this client on
   ``WatchCheckpoints``) that covers it, i.e. from send until its sealed receipt can be had.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from kafka import KafkaConsumer, TopicPartition  # noqa: E402

from bench.common import (  # noqa: E402
    bench_hospital,
    bench_platform,
    figure,
    idle_cores,
    platform_pids,
)
from sdk.anchoring import HospitalClient  # noqa: E402
from services.platform.events import decode  # noqa: E402
from services.platform.kafka import kafka_client_options  # noqa: E402
from services.platform.topics import RECORDS_EVENTS_TOPIC  # noqa: E402
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc  # noqa: E402
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc  # noqa: E402
from swiftchain.events.v1 import events_pb2  # noqa: E402
from tests.e2e.platform import Platform  # noqa: E402

THROUGHPUT_TARGET = 20_000  # sealed versions/s
P99_TARGET_MS = 150.0
SUBJECT = "pt-BENCHBENCHBENCHBENCH00"


class SealWatcher:
    """Follows one chain node's sealed checkpoints; when each tree size was first seen."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.seen: list[tuple[float, int]] = []
        self.stub = chain_service_pb2_grpc.ChainServiceStub(channel)
        self._stream = self.stub.WatchCheckpoints(chain_service_pb2.WatchCheckpointsRequest())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._stream:
                self.seen.append((time.perf_counter(), response.checkpoint.tree_size))
        except grpc.RpcError:
            return  # cancelled at the end

    def first_covering(self, tree_size: int, timeout: float = 300.0) -> float:
        """perf_counter time the first checkpoint of at least ``tree_size`` was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, size in list(self.seen):
                if size >= tree_size:
                    return at
            time.sleep(0.005)
        raise TimeoutError(f"no sealed checkpoint of size {tree_size} within {timeout:.0f}s")

    def stop(self) -> None:
        self._stream.cancel()


#: Versions whose RecordSealed event did not arrive within the wait (counted over the run).
MISSING_EVENTS: list[str] = []
#: Status codes of the latency phase's AnchorRecord calls that failed.
FAILED_CALLS: list[str] = []


def sealed_sizes(
    bootstrap: str,
    chain: chain_service_pb2_grpc.ChainServiceStub,
    entry_ids: set[str],
    timeout: float = 60.0,
) -> dict[str, int]:
    """entry id -> tree size of the checkpoint that sealed it, from RecordSealed events; for a
    version whose event has not arrived within ``timeout`` seconds, from the chain node
    (GetEntryStatus), and counted in :data:`MISSING_EVENTS`."""
    consumer = KafkaConsumer(
        **kafka_client_options(), bootstrap_servers=bootstrap, consumer_timeout_ms=1000
    )
    consumer.assign(
        [
            TopicPartition(RECORDS_EVENTS_TOPIC, p)
            for p in consumer.partitions_for_topic(RECORDS_EVENTS_TOPIC) or ()
        ]
    )
    consumer.seek_to_beginning()
    sizes: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(sizes) < len(entry_ids) and time.monotonic() < deadline:
        for message in consumer:
            event = decode(message.value)
            if not event.type.endswith(".RecordSealed"):
                continue
            sealed = events_pb2.RecordSealed()
            event.payload.Unpack(sealed)
            if sealed.entry_id in entry_ids:
                sizes[sealed.entry_id] = sealed.tree_size
    consumer.close()
    for entry_id in sorted(entry_ids - set(sizes)):
        status = chain.GetEntryStatus(
            chain_service_pb2.GetEntryStatusRequest(entry_id=entry_id), timeout=10
        )
        if not status.HasField("sealed_tree_size"):
            raise TimeoutError(f"version {entry_id} is neither announced nor sealed on the log")
        sizes[entry_id] = status.sealed_tree_size
        MISSING_EVENTS.append(entry_id)
    return sizes


def throughput(
    client: HospitalClient, platform: Platform, watcher: SealWatcher, count: int
) -> tuple[float, float]:
    """(sealed versions/s, accepted versions/s) for ``count`` versions in one stream."""
    drafts = [
        client.record_version(f"tp-{i}", 1, f"document {i}".encode(), subject_id=SUBJECT)
        for i in range(count)
    ]
    requests = client.sign(drafts)
    began = time.perf_counter()
    results = client.anchor_signed(requests, timeout=600)
    accepted = time.perf_counter()
    failed = [r for r in results if r.WhichOneof("outcome") != "receipt"]
    if failed:
        raise RuntimeError(f"{len(failed)} versions failed, e.g. {failed[0].error}")
    sizes = sealed_sizes(
        platform.stack.kafka.bootstrap, watcher.stub, {r.receipt.entry_id for r in results}
    )
    sealed_at = watcher.first_covering(max(sizes.values()))
    return count / (sealed_at - began), count / (accepted - began)


def latency(
    client: HospitalClient, platform: Platform, watcher: SealWatcher, rate: int, seconds: float
) -> list[float]:
    """Send-to-sealed milliseconds of single versions sent at ``rate`` per second."""
    total = int(rate * seconds)
    requests = [
        client.sign(
            [client.record_version(f"lat-{i}", 1, f"doc {i}".encode(), subject_id=SUBJECT)]
        )[0]
        for i in range(total)
    ]
    stub = anchoring_service_pb2_grpc.AnchoringServiceStub(client.channel)
    sent: list[float] = []
    pending = []
    began = time.perf_counter()
    for i, request in enumerate(requests):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent.append(time.perf_counter())
        pending.append(stub.AnchorRecord.future(request, timeout=60))
    answered: list[tuple[str, float]] = []
    for future, sent_at in zip(pending, sent, strict=True):
        try:
            answered.append((future.result().receipt.entry_id, sent_at))
        except grpc.RpcError as error:  # e.g. DEADLINE_EXCEEDED when the rate is too high
            FAILED_CALLS.append(error.code().name)
    sizes = sealed_sizes(platform.stack.kafka.bootstrap, watcher.stub, {e for e, _ in answered})
    return [(watcher.first_covering(sizes[e]) - sent_at) * 1000 for e, sent_at in answered]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("--versions", type=int, default=None, help="versions for throughput")
    parser.add_argument("--rate", type=int, default=None, help="versions/s for latency")
    parser.add_argument("--seconds", type=float, default=None, help="latency run length")
    args = parser.parse_args(argv)
    count = args.versions or (1_000 if args.quick else 20_000)
    # Quick: a rate this machine's anchoring sustains with single calls (1,000/s does not).
    rate = args.rate or (50 if args.quick else 1000)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    idle_seconds = 2.0 if args.quick else 10.0
    MISSING_EVENTS.clear()
    FAILED_CALLS.clear()
    with bench_platform() as platform:
        hospital = bench_hospital(platform)
        client = platform.hospital_client(hospital)
        watcher = SealWatcher(platform.channel(platform.admin, "hospital-a"))
        try:
            print(f"throughput: {count:,} versions through one AnchorRecords stream...")
            sealed_rate, accepted_rate = throughput(client, platform, watcher, count)
            print(f"latency: {rate:,} versions/s for {seconds:.0f} s...")
            lat = latency(client, platform, watcher, rate, seconds)
            print(f"idle: the platform's CPU over {idle_seconds:.0f} s once the load is over...")
            time.sleep(2)  # the last seals and events
            idle = idle_cores(platform_pids(platform), idle_seconds)
        finally:
            watcher.stop()
    figure("latency_calls_failed", len(FAILED_CALLS), "calls")
    if len(lat) < 2:
        print(f"latency: {len(FAILED_CALLS)} of {len(FAILED_CALLS) + len(lat)} calls failed")
        return 1
    p50 = statistics.median(lat)
    p99 = statistics.quantiles(lat, n=100)[98]
    figure("sealed_per_s", sealed_rate, "versions/s")
    figure("accepted_per_s", accepted_rate, "versions/s")
    figure("seal_p50_ms", p50, "ms")
    figure("seal_p99_ms", p99, "ms")
    figure("sealed_events_missing", len(MISSING_EVENTS), "versions")
    figure("idle_after.all_cores", sum(idle.values()), "cores")
    for name in ("ferretdb", "anchoring"):
        figure(f"idle_after.{name}_cores", idle.get(name, 0.0), "cores")
    print(f"{'benchmark':<56} {'figure':>12}  target")
    print(
        f"{'sealed versions/s through AnchorRecords (' + format(count, ',') + ')':<56} "
        f"{sealed_rate:>12,.0f}  >= {THROUGHPUT_TARGET:,}"
    )
    print(f"{'  of which accepted (promise receipts) per second':<56} {accepted_rate:>12,.0f}")
    print(f"{'send -> sealed p50 at ' + str(rate) + ' versions/s (ms)':<56} {p50:>12.1f}")
    print(
        f"{'send -> sealed p99 at ' + str(rate) + ' versions/s (ms)':<56} {p99:>12.1f}  "
        f"<= {P99_TARGET_MS:.0f}"
    )
    codes = ",".join(sorted(set(FAILED_CALLS)))
    failed_label = "AnchorRecord calls that failed" + (f" ({codes})" if codes else "")
    print(f"{failed_label:<56} {len(FAILED_CALLS):>12,}  0")
    print(
        f"{'sealed versions without a RecordSealed event after 60 s':<56} "
        f"{len(MISSING_EVENTS):>12,}  0 (sealed on the log: the chain said so)"
    )
    busiest = ", ".join(f"{n} {c:.2f}" for n, c in sorted(idle.items(), key=lambda i: -i[1])[:3])
    print(f"{'idle afterwards, cores (' + busiest + ')':<56} {sum(idle.values()):>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
