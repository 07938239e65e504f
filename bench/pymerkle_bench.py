"""chain/'s Merkle tree against pymerkle's, in process, on the same leaves.

    python bench/pymerkle_bench.py            # 1,000,000 leaves, 20,000 proofs of each kind
    python bench/pymerkle_bench.py --quick    # 10,000 leaves, 2,000 proofs

pymerkle (PyPI, pure Python like chain/) hashes as RFC 9162 does (SHA-256, 0x00 before a leaf,
0x01 before a pair), so both trees of the same entries have the same root; the script checks
that, and that every proof verifies. The peer is its ``InmemoryTree`` (nodes in memory, with
its subroot cache), against chain/'s ``MemoryHashStore`` (what a node keeps). The figures:
building the tree, generating and verifying inclusion proofs of random leaves and consistency
proofs from random older sizes to the full tree, and the memory each tree holds. Each side runs
the same operations on the same random choices, alternately (ours, theirs), median of
``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pymerkle import InmemoryTree  # noqa: E402
from pymerkle import verify_consistency as their_verify_consistency  # noqa: E402
from pymerkle import verify_inclusion as their_verify_inclusion  # noqa: E402

from bench.common import figure, rss_bytes  # noqa: E402
from chain.hashing import leaf_hash  # noqa: E402
from chain.proof_build import consistency_proof, inclusion_proof, tree_root  # noqa: E402
from chain.proof_verify import verify_consistency, verify_inclusion  # noqa: E402
from chain.tiles import MemoryHashStore  # noqa: E402


def timed(run: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs of ``run``."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 leaves, 2,000 proofs")
    parser.add_argument("--leaves", type=int, help="tree size (default 1,000,000)")
    parser.add_argument("--samples", type=int, help="proofs of each kind (default 20,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args(argv)
    n = args.leaves or (10_000 if args.quick else 1_000_000)
    samples = args.samples or (2_000 if args.quick else 20_000)
    rng = random.Random(20261203)
    entries = [b"swiftchain bench entry %d" % i for i in range(n)]
    mib = 2**20

    # Build: ours hashes the leaves and appends them in bulk (a block) and, separately, one by
    # one; pymerkle appends one by one (its append_entries is that loop).
    gc.collect()
    rss0 = rss_bytes()
    began = time.perf_counter()
    ours = MemoryHashStore()
    ours.extend([leaf_hash(e) for e in entries])
    our_build = time.perf_counter() - began
    gc.collect()
    our_rss = rss_bytes() - rss0
    one_by_one = MemoryHashStore()
    began = time.perf_counter()
    for e in entries:
        one_by_one.append_leaf(leaf_hash(e))
    our_build_single = time.perf_counter() - began
    del one_by_one
    gc.collect()
    rss0 = rss_bytes()
    began = time.perf_counter()
    theirs = InmemoryTree()
    for e in entries:
        theirs.append_entry(e)
    their_build = time.perf_counter() - began
    gc.collect()
    their_rss = rss_bytes() - rss0
    root = tree_root(n, ours)
    if theirs.get_root() != root:
        raise SystemExit("pymerkle's root differs from chain/'s for the same entries")

    # Inclusion proofs of the same random leaves.
    indexes = [rng.randrange(n) for _ in range(samples)]
    our_gen = timed(lambda: [inclusion_proof(i, n, ours) for i in indexes], args.repeat)
    their_gen = timed(lambda: [theirs.prove_inclusion(i + 1, n) for i in indexes], args.repeat)
    our_proofs = [(i, ours.leaf_hash(i), inclusion_proof(i, n, ours)) for i in indexes]
    their_proofs = [(theirs.get_leaf(i + 1), theirs.prove_inclusion(i + 1, n)) for i in indexes]

    def our_verify() -> None:
        for i, leaf, proof in our_proofs:
            verify_inclusion(leaf, i, n, proof, root)

    def their_verify() -> None:
        for leaf, proof in their_proofs:
            their_verify_inclusion(leaf, root, proof)

    our_ver = timed(our_verify, args.repeat)
    their_ver = timed(their_verify, args.repeat)

    # Consistency proofs from the same random older sizes to the full tree.
    sizes = [rng.randrange(1, n) for _ in range(samples)]
    our_cgen = timed(lambda: [consistency_proof(s, n, ours) for s in sizes], args.repeat)
    their_cgen = timed(lambda: [theirs.prove_consistency(s, n) for s in sizes], args.repeat)
    our_cons = [(s, consistency_proof(s, n, ours), tree_root(s, ours)) for s in sizes]
    their_cons = [(theirs.get_root(s), theirs.prove_consistency(s, n)) for s in sizes]

    def our_cverify() -> None:
        for s, proof, old_root in our_cons:
            verify_consistency(s, n, proof, old_root, root)

    def their_cverify() -> None:
        for old_root, proof in their_cons:
            their_verify_consistency(old_root, root, proof)

    our_cver = timed(our_cverify, args.repeat)
    their_cver = timed(their_cverify, args.repeat)

    rows = [
        ("build", f"build {n:,} leaves (ours in bulk)", our_build, their_build, "s"),
        ("build_single", f"build {n:,} leaves one by one", our_build_single, their_build, "s"),
        ("inclusion_gen", "inclusion proof generated", our_gen / samples * 1e6,
         their_gen / samples * 1e6, "us"),
        ("inclusion_verify", "inclusion proof verified", our_ver / samples * 1e6,
         their_ver / samples * 1e6, "us"),
        ("consistency_gen", "consistency proof generated", our_cgen / samples * 1e6,
         their_cgen / samples * 1e6, "us"),
        ("consistency_verify", "consistency proof verified", our_cver / samples * 1e6,
         their_cver / samples * 1e6, "us"),
        ("memory", "memory of the tree (RSS growth)", our_rss / mib, their_rss / mib, "MiB"),
    ]  # fmt: skip
    print()
    print(f"pymerkle_bench: {n:,} leaves, {samples:,} proofs of each kind, median of "
          f"{args.repeat}; same root {root.hex()[:16]}…")  # fmt: skip
    print(f"  {'figure':<38} {'ours':>12} {'pymerkle':>12} {'ours/theirs':>12}  unit")
    for key, label, mine, peer, unit in rows:
        ratio = mine / peer if peer else float("nan")
        print(f"  {label:<38} {mine:>12,.3f} {peer:>12,.3f} {ratio:>12.3f}  {unit}")
        figure(f"{key}.ours", mine, unit)
        figure(f"{key}.pymerkle", peer, unit)
        figure(f"{key}.ratio", ratio, "x")
    print("  (ours/theirs below 1: ours takes less time or memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
