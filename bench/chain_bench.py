"""Benchmarks of the chain: the in-process Merkle tree core (end-to-end parts come later).

    python bench/chain_bench.py            # 1,000,000 leaves
    python bench/chain_bench.py --quick    # 100,000 leaves, fewer samples

Each benchmark is a function that takes the shared :class:`Context` and returns rows; ``main``
runs them in order and prints one table at the end. Rates are the median of ``--repeat`` runs
over random leaves / sizes (fixed seed); CPython's garbage collector stays on, as in a server.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `python bench/chain_bench.py` without an installed package
    sys.path.insert(0, str(ROOT))

from bench.common import figure, slug  # noqa: E402
from chain.hashing import leaf_hash  # noqa: E402
from chain.proof_build import consistency_proof, inclusion_proof, tree_root  # noqa: E402
from chain.proof_verify import verify_consistency, verify_inclusion  # noqa: E402
from chain.tiles import (  # noqa: E402
    MemoryHashStore,
    Tile,
    TiledHashReader,
    tile_bytes,
    tiles_touched,
)

INCLUSION_GENERATED_TARGET = 50_000  # proofs/s at 1M leaves
INCLUSION_VERIFIED_TARGET = 30_000


@dataclass
class Row:
    section: str
    metric: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Context:
    leaves: int
    samples: int
    repeat: int
    rng: random.Random = field(default_factory=lambda: random.Random(20240601))
    store: MemoryHashStore = field(default_factory=MemoryHashStore)
    scaling: list[tuple[int, float, float, float, float, float]] = field(default_factory=list)


def _rss_bytes() -> int:
    """Current resident set size (Linux), 0 elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _median_rate(run: Callable[[], int], repeat: int) -> tuple[float, float]:
    """Run ``run`` (returns how many operations it did) ``repeat`` times: (median, best) ops/s."""
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ops = run()
        rates.append(ops / (time.perf_counter() - t0))
    return statistics.median(rates), max(rates)


def _target(value: float, target: float) -> str:
    return f"target >= {target:,.0f}: {'PASS' if value >= target else 'MISS'}"


# --------------------------------------------------------------------------------- benchmarks


def bench_build(ctx: Context) -> list[Row]:
    """Leaf-hash and append ``ctx.leaves`` synthetic entries; memory of the stored hashes."""
    n = ctx.leaves
    gc.collect()
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    hashes = [leaf_hash(b"swiftchain bench entry %d" % i) for i in range(n)]
    t1 = time.perf_counter()
    ctx.store.extend(hashes)
    t2 = time.perf_counter()
    del hashes
    gc.collect()
    rss1 = _rss_bytes()
    t2b = time.perf_counter()
    root = ctx.store.root()
    t3 = time.perf_counter()
    ctx.store.root()
    t4 = time.perf_counter()
    # The same appends one by one (what the node does per entry), on a fresh store.
    one = MemoryHashStore()
    k = min(n, 200_000)
    lh = leaf_hash(b"x")
    t5 = time.perf_counter()
    for _ in range(k):
        one.append_leaf(lh)
    t6 = time.perf_counter()
    store = ctx.store
    mib = 2**20
    return [
        Row("build", f"leaf hashes ({n:,})", t1 - t0, "s", f"{n / (t1 - t0):,.0f} leaves/s"),
        Row("build", f"append to store ({n:,})", t2 - t1, "s", f"{n / (t2 - t1):,.0f} leaves/s"),
        Row("build", "total build", t2 - t0, "s", f"root {root.hex()[:16]}…"),
        Row("build", "append_leaf one at a time", k / (t6 - t5), "leaves/s", f"{k:,} appends"),
        Row("build", "root() first call", (t3 - t2b) * 1e6, "us", f"then {(t4 - t3) * 1e6:.2f} us"),
        Row("memory", "stored hashes", store.nbytes / mib, "MiB", f"{store.stored_hash_count:,}"),
        Row("memory", "per million leaves", store.nbytes / n * 1e6 / mib, "MiB",
            f"{store.nbytes / n:.1f} B/leaf"),
        Row("memory", "RSS growth for the build", (rss1 - rss0) / mib, "MiB", "allocator slack"),
    ]  # fmt: skip


def inclusion_rates(ctx: Context, size: int, count: int) -> tuple[float, float, float, float]:
    """(generated/s, verified/s, mean proof length, hashes read per proof) at ``size``."""
    store, rng = ctx.store, ctx.rng
    indexes = [rng.randrange(size) for _ in range(count)]

    def generate() -> int:
        for i in indexes:
            inclusion_proof(i, size, store)
        return count

    generated, _ = _median_rate(generate, ctx.repeat)
    root = tree_root(size, store)
    proofs = [inclusion_proof(i, size, store) for i in indexes]
    leaves = [store.leaf_hash(i) for i in indexes]
    work = list(zip(indexes, leaves, proofs, strict=True))

    def verify() -> int:
        for i, lh, proof in work:
            verify_inclusion(lh, i, size, proof, root)
        return count

    verified, _ = _median_rate(verify, ctx.repeat)
    mean_len = statistics.fmean(len(p) for p in proofs)
    return generated, verified, mean_len, mean_len


def consistency_rates(ctx: Context, size2: int, count: int) -> tuple[float, float, float]:
    store, rng = ctx.store, ctx.rng
    sizes = [rng.randrange(1, size2) if size2 > 1 else 1 for _ in range(count)]

    def generate() -> int:
        for s1 in sizes:
            consistency_proof(s1, size2, store)
        return count

    generated, _ = _median_rate(generate, ctx.repeat)
    root2 = tree_root(size2, store)
    work = [(s1, consistency_proof(s1, size2, store), tree_root(s1, store)) for s1 in sizes]

    def verify() -> int:
        for s1, proof, root1 in work:
            verify_consistency(s1, size2, proof, root1, root2)
        return count

    verified, _ = _median_rate(verify, ctx.repeat)
    return generated, verified, statistics.fmean(len(p) for _, p, _ in work)


def bench_inclusion(ctx: Context) -> list[Row]:
    """Inclusion proofs of random leaves in the full tree: generated/s and verified/s."""
    n = ctx.leaves
    generated, verified, mean_len, _ = inclusion_rates(ctx, n, ctx.samples)
    full = n == 1_000_000
    return [
        Row("inclusion", f"generated at {n:,}", generated, "proofs/s",
            _target(generated, INCLUSION_GENERATED_TARGET) if full else "(targets are at 1M)"),
        Row("inclusion", f"verified at {n:,}", verified, "proofs/s",
            _target(verified, INCLUSION_VERIFIED_TARGET) if full else ""),
        Row("inclusion", "mean proof length", mean_len, "hashes"),
    ]  # fmt: skip


def bench_consistency(ctx: Context) -> list[Row]:
    """Consistency proofs from a random older size to the full tree."""
    n = ctx.leaves
    generated, verified, mean_len = consistency_rates(ctx, n, ctx.samples)
    return [
        Row("consistency", f"generated to {n:,}", generated, "proofs/s"),
        Row("consistency", f"verified to {n:,}", verified, "proofs/s"),
        Row("consistency", "mean proof length", mean_len, "hashes"),
    ]


def bench_scaling(ctx: Context) -> list[Row]:
    """Cost per proof at 10^3 .. 10^6 leaves (prefixes of the same store): grows with log n."""
    rows = []
    size = 1_000
    while size <= ctx.leaves:
        count = max(2_000, ctx.samples // 4)
        gen, ver, length, _ = inclusion_rates(ctx, size, count)
        cgen, cver, _ = consistency_rates(ctx, size, count)
        ctx.scaling.append((size, length, 1e6 / gen, 1e6 / ver, 1e6 / cgen, 1e6 / cver))
        rows.append(
            Row("scaling", f"inclusion gen+verify at {size:,}", 1e6 / gen + 1e6 / ver, "us")
        )
        size *= 10
    return rows


def bench_tiles(ctx: Context) -> list[Row]:
    """Tile blobs: writing a block of appends, and proofs served from tiles (the node's path)."""
    store, n = ctx.store, ctx.leaves
    t0 = time.perf_counter()
    blobs = {(t.level, t.index): tile_bytes(store, t) for t in tiles_touched(0, n)}
    t1 = time.perf_counter()
    block_old = n - 100
    t2 = time.perf_counter()
    touched = tiles_touched(block_old, n)
    block = [tile_bytes(store, t) for t in touched]
    t3 = time.perf_counter()

    def read_tiles(tiles: Sequence[Tile]) -> list[bytes]:
        return [blobs[t.level, t.index] for t in tiles]

    reader = TiledHashReader(n, read_tiles)
    rng = ctx.rng
    indexes = [rng.randrange(n) for _ in range(max(200, ctx.samples // 50))]

    def generate() -> int:
        for i in indexes:
            inclusion_proof(i, n, reader)
        return len(indexes)

    rate, _ = _median_rate(generate, ctx.repeat)
    assert inclusion_proof(indexes[0], n, reader) == inclusion_proof(indexes[0], n, store)
    return [
        Row("tiles", f"all tile blobs of {n:,} leaves", t1 - t0, "s", f"{len(blobs):,} blobs"),
        Row("tiles", "blobs for a block of 100 appends", (t3 - t2) * 1e3, "ms",
            f"{len(block)} tile(s), {sum(map(len, block)):,} bytes"),
        Row("tiles", f"inclusion generated from tiles at {n:,}", rate, "proofs/s",
            "recomputes levels inside tiles, no cache"),
    ]  # fmt: skip


BENCHMARKS: list[Callable[[Context], list[Row]]] = [
    bench_build,
    bench_inclusion,
    bench_consistency,
    bench_scaling,
    bench_tiles,
]


# ------------------------------------------------------------------------------------ report


def _format_value(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.3f}"


def print_table(rows: list[Row], ctx: Context) -> None:
    print()
    print(f"chain_bench: {ctx.leaves:,} leaves, {ctx.samples:,} samples, median of {ctx.repeat}")
    print(f"  {platform.python_implementation()} {platform.python_version()} on "
          f"{platform.machine()}, {os.cpu_count()} CPUs")  # fmt: skip
    width = max(len(r.metric) for r in rows)
    print()
    print(f"  {'section':<12} {'metric':<{width}} {'value':>14} {'unit':<9} note")
    print(f"  {'-' * 12} {'-' * width} {'-' * 14} {'-' * 9} {'-' * 30}")
    for r in rows:
        value = _format_value(r.value)
        print(f"  {r.section:<12} {r.metric:<{width}} {value:>14} {r.unit:<9} {r.note}")
    if ctx.scaling:
        print()
        print("  cost per proof (microseconds) by tree size")
        print(f"  {'leaves':>10} {'log2 n':>7} {'incl len':>8} {'incl gen':>9} {'incl ver':>9} "
              f"{'cons gen':>9} {'cons ver':>9}")  # fmt: skip
        for size, length, gen, ver, cgen, cver in ctx.scaling:
            print(f"  {size:>10,} {size.bit_length() - 1:>7} {length:>8.1f} {gen:>9.2f} "
                  f"{ver:>9.2f} {cgen:>9.2f} {cver:>9.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 leaves, fewer samples")
    parser.add_argument("--leaves", type=int, help="tree size (default 1,000,000; quick 100,000)")
    parser.add_argument("--samples", type=int, help="proofs per measurement (default 50,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args(argv)
    leaves = args.leaves or (100_000 if args.quick else 1_000_000)
    samples = args.samples or (10_000 if args.quick else 50_000)
    ctx = Context(leaves=leaves, samples=samples, repeat=args.repeat)
    rows: list[Row] = []
    for bench in BENCHMARKS:
        print(f"running {bench.__name__} ...", file=sys.stderr, flush=True)
        rows += bench(ctx)
    print_table(rows, ctx)
    for r in rows:
        figure(f"{r.section}.{slug(r.metric)}", r.value, r.unit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
