"""End-to-end benchmark of the chain: three real nodes (quorum 2) on a real Kafka and FerretDB.

    python bench/chain_e2e_bench.py            # 100,000 entries; 10 s at 1,000 entries/s
    python bench/chain_e2e_bench.py --quick    # 5,000 entries; 3 s at 1,000 entries/s

1. Throughput: entries batch-signed in batches of 10,000 (signed before the clock starts) are
   sent as fast as the producer goes; the figure is entries / (time until a quorum-sealed
   checkpoint covers the last one), as seen by one node's WatchCheckpoints stream.
2. Seal latency: single-signed entries sent at a steady 1,000 entries/s; for each entry, the
   time from its send to the first sealed checkpoint that covers it (p50, p99).
Everything runs on this machine: Kafka, FerretDB, three node processes and this client.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench.common import bench_servers, figure  # noqa: E402
from devstack.chain_cluster import MEMBERS, ChainCluster  # noqa: E402
from swiftchain.chain.v1 import chain_service_pb2  # noqa: E402

THROUGHPUT_TARGET = 20_000  # sealed entries/s
P99_TARGET_MS = 150.0


class SealWatcher:
    """Follows one node's sealed checkpoints and records when each size was first seen."""

    def __init__(self, cluster: ChainCluster, node: str) -> None:
        self.seen: list[tuple[float, int]] = []
        self._cluster = cluster
        self._node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._cluster.client(self._node) as stub:
            stream = stub.WatchCheckpoints(chain_service_pb2.WatchCheckpointsRequest())
            try:
                for response in stream:
                    self.seen.append((time.perf_counter(), response.checkpoint.tree_size))
                    if self._stop.is_set():
                        stream.cancel()
                        return
            except grpc.RpcError:
                return  # the node stopped at the end of the run

    def wait_size(self, size: int, timeout: float) -> float:
        """perf_counter time at which ``size`` was first covered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, seen_size in self.seen:
                if seen_size >= size:
                    return at
            time.sleep(0.005)
        raise TimeoutError(f"size {size} not sealed within {timeout}s")

    def stop(self) -> None:
        self._stop.set()


def throughput(cluster: ChainCluster, watcher: SealWatcher, base: int, count: int) -> float:
    batches = []
    for start in range(0, count, 10_000):
        bodies = [cluster.record_body() for _ in range(min(10_000, count - start))]
        batches.append(cluster.hospital.sign_batch(bodies))
    began = time.perf_counter()
    for entries in batches:
        cluster.submit(entries)
    sealed_at = watcher.wait_size(base + count, timeout=600)
    return count / (sealed_at - began)


def latency(
    cluster: ChainCluster, watcher: SealWatcher, base: int, rate: int, seconds: float
) -> list[float]:
    total = int(rate * seconds)
    entries = [cluster.hospital.sign_entry(cluster.record_body()) for _ in range(total)]
    sent: list[float] = []
    began = time.perf_counter()
    per_tick = max(1, rate // 100)  # send every 10 ms
    for i in range(0, total, per_tick):
        target = began + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        chunk = entries[i : i + per_tick]
        now = time.perf_counter()
        cluster.submit(chunk)
        sent.extend([now] * len(chunk))
    watcher.wait_size(base + total, timeout=120)
    seals = sorted(watcher.seen, key=lambda item: item[1])
    latencies = []
    pointer = 0
    for i, sent_at in enumerate(sent):
        size_needed = base + i + 1
        while seals[pointer][1] < size_needed:
            pointer += 1
        latencies.append((seals[pointer][0] - sent_at) * 1000)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, for the test suite")
    parser.add_argument("--entries", type=int, default=None)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args(argv)
    count = args.entries or (5_000 if args.quick else 100_000)
    seconds = 3.0 if args.quick else 10.0
    with (
        tempfile.TemporaryDirectory(prefix="swiftchain-bench-") as tmp,
        bench_servers(Path(tmp)) as (bootstrap, mongo_uri),
    ):
        cluster = ChainCluster(
            Path(tmp) / "cluster", bootstrap, mongo_uri, batch_max=2000, batch_timeout_ms=20
        )
        try:
            cluster.start_all()
            cluster.submit([cluster.hospital_key_entry()])
            cluster.wait_sealed_size(MEMBERS[0], 1)
            watcher = SealWatcher(cluster, MEMBERS[0])
            rate = throughput(cluster, watcher, 1, count)
            for member in MEMBERS:  # let every node catch up before measuring latency
                cluster.wait_sealed_size(member, 1 + count, timeout=600)
            lat = latency(cluster, watcher, 1 + count, args.rate, seconds)
            watcher.stop()
        finally:
            cluster.stop_all()
    p50 = statistics.median(lat)
    p99 = statistics.quantiles(lat, n=100)[98]
    figure("sealed_per_s", rate, "entries/s")
    figure("seal_p50_ms", p50, "ms")
    figure("seal_p99_ms", p99, "ms")
    print(f"{'benchmark':<52} {'figure':>14}  target")
    print(
        f"{'sealed entries/s, batched (' + format(count, ',') + ' entries)':<52} "
        f"{rate:>14,.0f}  >= {THROUGHPUT_TARGET:,}"
    )
    print(f"{'seal latency p50 at ' + str(args.rate) + ' entries/s (ms)':<52} {p50:>14.1f}")
    print(
        f"{'seal latency p99 at ' + str(args.rate) + ' entries/s (ms)':<52} {p99:>14.1f}  "
        f"<= {P99_TARGET_MS:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
