"""How chain/'s proofs and memory scale with the tree: 10^3 .. 10^7 leaves.

    python bench/scale_bench.py            # up to 10,000,000 leaves (about 1.3 GiB at the peak)
    python bench/scale_bench.py --quick    # up to 10,000 leaves

One ``MemoryHashStore`` (the structure a chain node keeps its tree in) is grown decade by
decade; at each size the script times inclusion proofs of random leaves and consistency proofs
from random older sizes (generated, then verified: microseconds per proof, median of
``--repeat`` runs) and measures the memory the stored hashes take, counted (``nbytes``) and as
this process's resident-set growth, per million leaves. A size is skipped if the machine's free
memory could not hold it.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chain_bench import Context, consistency_rates, inclusion_rates  # noqa: E402
from bench.common import figure, rss_bytes  # noqa: E402
from chain.hashing import leaf_hash  # noqa: E402

#: Bytes a leaf needs while it is added: its hash in the store plus the temporary bytes objects.
_PEAK_BYTES_PER_LEAF = 200


def _available_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 10,000 leaves")
    parser.add_argument("--max-leaves", type=int, help="largest size (default 10,000,000)")
    parser.add_argument("--samples", type=int, default=10_000, help="proofs per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args(argv)
    largest = args.max_leaves or (10_000 if args.quick else 10_000_000)
    samples = 1_000 if args.quick else args.samples
    ctx = Context(leaves=largest, samples=samples, repeat=args.repeat)
    mib = 2**20
    gc.collect()
    rss0 = rss_bytes()
    rows = []
    size = 1_000
    while size <= largest:
        grow = size - ctx.store.size
        if _available_bytes() and grow * _PEAK_BYTES_PER_LEAF > _available_bytes():
            print(f"skipping {size:,} leaves: not enough free memory", file=sys.stderr)
            break
        print(f"growing the tree to {size:,} leaves ...", file=sys.stderr, flush=True)
        for start in range(ctx.store.size, size, 1_000_000):
            end = min(size, start + 1_000_000)
            ctx.store.extend(
                [leaf_hash(b"swiftchain bench entry %d" % i) for i in range(start, end)]
            )
        gc.collect()
        rss = rss_bytes() - rss0
        gen, ver, length, _ = inclusion_rates(ctx, size, samples)
        cgen, cver, clength = consistency_rates(ctx, size, samples)
        counted = ctx.store.nbytes / size * 1e6 / mib
        resident = rss / size * 1e6 / mib
        rows.append((size, length, 1e6 / gen, 1e6 / ver, clength, 1e6 / cgen, 1e6 / cver,
                     counted, resident))  # fmt: skip
        exponent = len(str(size)) - 1
        figure(f"1e{exponent}.inclusion_gen", 1e6 / gen, "us")
        figure(f"1e{exponent}.inclusion_verify", 1e6 / ver, "us")
        figure(f"1e{exponent}.consistency_gen", 1e6 / cgen, "us")
        figure(f"1e{exponent}.consistency_verify", 1e6 / cver, "us")
        figure(f"1e{exponent}.memory_per_million", counted, "MiB")
        figure(f"1e{exponent}.rss_per_million", resident, "MiB")
        size *= 10
    print()
    print(f"scale_bench: {samples:,} proofs of each kind per size, median of {args.repeat}")
    print(f"  {'leaves':>12} {'incl len':>8} {'incl gen':>9} {'incl ver':>9} {'cons len':>8} "
          f"{'cons gen':>9} {'cons ver':>9} {'MiB/1M':>8} {'RSS/1M':>8}")  # fmt: skip
    for size, length, gen_us, ver_us, clength, cgen_us, cver_us, counted, resident in rows:
        print(f"  {size:>12,} {length:>8.1f} {gen_us:>9.2f} {ver_us:>9.2f} {clength:>8.1f} "
              f"{cgen_us:>9.2f} {cver_us:>9.2f} {counted:>8.1f} {resident:>8.1f}")  # fmt: skip
    print("  (microseconds per proof; MiB per million leaves: the store's count, RSS growth)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
