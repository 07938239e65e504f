"""Benchmark of the node's validation path: ``Sequencer.apply`` in process, no Kafka, no store.

    python bench/sequencer_bench.py              # 50,000 entries per scenario
    python bench/sequencer_bench.py --quick      # 5,000 entries per scenario, one run
    python bench/sequencer_bench.py --profile    # and a cProfile of the batch-1,000 scenario

Each scenario feeds a fresh :class:`~chain.sequencer.Sequencer` (genesis RECORD key, the
default ``batch_max`` of 500) with RECORD entries wrapped in ordering records, in ``apply``
calls of ``--poll`` records (as the node polls Kafka), and reports accepted entries per second
over the whole run: parsing, validation (key, batch path, signatures), duplicate-id checks,
appending to the tree and cutting checkpoints. Signing and building the records is not timed.

Two rates per scenario, medians of ``--repeat`` runs: per wall-clock second, and per CPU second
of this process (steadier on a shared machine). A 3-node cluster on 2 cores seals 20,000
entries/s only if each node, which validates every entry, does so well above 30,000 entries per
CPU second (3 x 20,000 / 2), before Kafka, the store and cosigning take their share; the last
line checks that floor for the batched scenarios.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import platform
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `python bench/sequencer_bench.py`
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from bench.common import figure, slug  # noqa: E402
from chain.consortium import ConsortiumConfig, GenesisKey, Member  # noqa: E402
from chain.entry import EntrySigner  # noqa: E402
from chain.note import generate_key  # noqa: E402
from chain.sequencer import OrderedRecord, Sequencer, entry_record  # noqa: E402
from chain.tiles import MemoryHashStore  # noqa: E402
from chain.validation import EntryValidator, KeyRegistry  # noqa: E402
from swiftchain.chain.v1 import entry_pb2  # noqa: E402
from swiftchain.common.v1 import common_pb2  # noqa: E402

TARGET = 20_000  # entries/s the 3-node cluster must seal with batched submission
FLOOR = 3 * TARGET // 2  # every node validates every entry: 3 sequencers share 2 cores
HOSPITAL = "hospital-a"
KEY_ID = "hospital-a/records/1"
T0_MS = 1_767_225_600_000


@dataclass
class Setup:
    config: ConsortiumConfig
    signer: EntrySigner


def make_setup(batch_max: int) -> Setup:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    _, vkey = generate_key("node-a")
    config = ConsortiumConfig(
        origin="swiftchain.example/bench",
        quorum=1,
        members=(Member("node-a", vkey),),
        genesis_keys=(GenesisKey(KEY_ID, HOSPITAL, ("RECORD",), public),),
        batch_max=batch_max,
    )
    return Setup(config, EntrySigner(KEY_ID, private))


def record_body(i: int) -> bytes:
    """A RECORD body as the anchoring service writes it (random tags, fixed-size fields)."""
    return entry_pb2.EntryBody(
        entry_id=str(uuid.uuid4()),
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id=HOSPITAL,
        time=Timestamp(seconds=T0_MS // 1000 + i, nanos=123_000_000),
        commitment=uuid.uuid4().bytes * 2,
        subject_tag=uuid.uuid4().bytes * 2,
        record=entry_pb2.RecordDetail(
            record_tag=uuid.uuid4().bytes * 2,
            version=1,
            action=common_pb2.RECORD_ACTION_CREATE,
            reason_code="clinical-update",
        ),
    ).SerializeToString()


def make_records(setup: Setup, total: int, batch: int) -> list[OrderedRecord]:
    """``total`` entries, batch-signed in batches of ``batch`` (0: each signed on its own)."""
    bodies = [record_body(i) for i in range(total)]
    entries: list[bytes] = []
    if batch:
        for start in range(0, total, batch):
            entries.extend(setup.signer.sign_batch(bodies[start : start + batch]))
    else:
        entries = [setup.signer.sign_entry(body) for body in bodies]
    return [
        OrderedRecord(offset, T0_MS + offset // 100, entry_record(entry))
        for offset, entry in enumerate(entries)
    ]


def run_once(
    setup: Setup, records: list[OrderedRecord], poll: int
) -> tuple[int, float, float, int]:
    """Apply ``records`` to a fresh sequencer: (accepted entries, wall s, CPU s, blocks)."""
    sequencer = Sequencer(
        setup.config,
        MemoryHashStore(),
        EntryValidator(KeyRegistry(setup.config.genesis_keys)),
    )
    on_log: set[str] = set()

    def stored_ids(ids: Iterable[str]) -> set[str]:
        return {i for i in ids if i in on_log}

    accepted = blocks = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, len(records), poll):
        output = sequencer.apply(records[start : start + poll], stored_ids)
        for block in output.blocks:  # what the node persists before its next poll
            on_log.update(e.parsed.entry_id for e in block.entries)
            accepted += len(block.entries)
        blocks += len(output.blocks)
        if output.rejections:
            raise SystemExit(f"unexpected rejection: {output.rejections[0]}")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return accepted + sequencer.pending_count, elapsed, cpu, blocks


@dataclass
class Result:
    name: str
    wall: float  # median entries/s over wall-clock time
    cpu: float  # median entries/s over the process's CPU time
    best: float  # best wall-clock entries/s
    blocks: int


def measure(
    name: str, setup: Setup, records: list[OrderedRecord], poll: int, repeat: int
) -> Result:
    """Median of ``repeat`` runs. The prebuilt records are frozen out of the garbage
    collector's sight (a node holds one poll of records at a time, not the whole run); the
    collector stays on for everything the sequencer allocates, as in the node."""
    walls, cpus = [], []
    blocks = 0
    gc.collect()
    gc.freeze()
    try:
        for _ in range(repeat):
            accepted, elapsed, cpu, blocks = run_once(setup, records, poll)
            if accepted != len(records):
                raise SystemExit(f"{name}: expected {len(records)} accepted, got {accepted}")
            walls.append(accepted / elapsed)
            cpus.append(accepted / cpu)
            gc.collect()
    finally:
        gc.unfreeze()
    return Result(name, statistics.median(walls), statistics.median(cpus), max(walls), blocks)


def profile(setup: Setup, records: list[OrderedRecord], poll: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(run_once, setup, records, poll)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 entries, one run")
    parser.add_argument("--entries", type=int, help="entries per scenario (default 50,000)")
    parser.add_argument("--repeat", type=int, help="runs per scenario; the median is shown")
    parser.add_argument("--poll", type=int, default=5000, help="records per apply() call")
    parser.add_argument("--batch-max", type=int, default=500, help="consortium batch_max")
    parser.add_argument("--profile", action="store_true", help="cProfile the batch-1,000 run")
    args = parser.parse_args(argv)
    total = args.entries or (5_000 if args.quick else 50_000)
    repeat = args.repeat or (1 if args.quick else 3)
    setup = make_setup(args.batch_max)

    print(
        f"Sequencer.apply: {total:,} RECORD entries per scenario, batch_max {args.batch_max}, "
        f"{args.poll:,} records per apply(), median of {repeat}"
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    scenarios: list[tuple[str, Callable[[], list[OrderedRecord]]]] = [
        ("batch-signed, batches of 1,000", lambda: make_records(setup, total, 1_000)),
        ("batch-signed, batches of 10,000", lambda: make_records(setup, total, 10_000)),
        ("single-signed", lambda: make_records(setup, total, 0)),
    ]
    rows = []
    for name, build in scenarios:
        records = build()
        rows.append(measure(name, setup, records, args.poll, repeat))
        if args.profile and name.endswith("1,000"):
            print(profile(setup, records, args.poll, 25))
    print()
    print(f"{'scenario':<34} {'entries/s':>10} {'per CPU s':>10} {'best':>10} {'blocks':>7}")
    for r in rows:
        print(f"{r.name:<34} {r.wall:>10,.0f} {r.cpu:>10,.0f} {r.best:>10,.0f} {r.blocks:>7}")
        figure(f"{slug(r.name)}.per_s", r.wall, "entries/s")
        figure(f"{slug(r.name)}.per_cpu_s", r.cpu, "entries/s")
    batched = min(r.cpu for r in rows[:2])
    verdict = "PASS" if batched >= FLOOR else "MISS"
    print(
        f"\nbatched, per CPU second >= {FLOOR:,} (3 nodes x {TARGET:,} entries/s on 2 cores, "
        f"before Kafka and the store): {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
