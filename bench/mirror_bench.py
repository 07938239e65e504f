"""The node's public mirror against a plain static file server, on the same files, in one run.

    python bench/mirror_bench.py              # 128,000 entries, 8 s per server and kind
    python bench/mirror_bench.py --quick      # 25,600 entries, 2 s

A data directory is written the way a node writes it (``chain/node/tile_store.py``: hash tiles
and entry bundles in the C2SP tlog-tiles paths). Then, one after the other, each server serves
it in a process of its own: the node's mirror (``chain/node/mirror.py``, what ``python -m
chain.node`` runs with ``SWIFTCHAIN_MIRROR_PORT``) and ``python -m http.server --directory``.
``--clients`` client processes each request random full tiles for ``--seconds`` over one
connection (kept alive where the server allows it: the mirror speaks HTTP/1.1, http.server
HTTP/1.0, so its clients reconnect for every request, as real clients of it would). Two kinds of
request: level-0 hash tiles (8 KiB) and entry bundles (256 entries). The figures: requests per
second, the server's CPU per request (from /proc), and the ratio of the two servers. Last,
verified reads from the mirror: ``--reads`` random entries proved by ``sdk.mirror`` against the
signed checkpoint (2 of 3 members), each tile fetched once (as a client proving many entries
keeps them): reads per second and CPU per read, mirror and client.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, figure  # noqa: E402
from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint  # noqa: E402
from chain.consortium import ConsortiumConfig, Member  # noqa: E402
from chain.hashing import leaf_hash  # noqa: E402
from chain.note import Signer, sign  # noqa: E402
from chain.tiles import (  # noqa: E402
    TILE_WIDTH,
    MemoryHashStore,
    Tile,
    entries_path,
    tile_bytes,
    tile_path,
    tiles_touched,
)
from devstack.process import free_port  # noqa: E402
from sdk.mirror import MirrorClient, prove_from_mirror  # noqa: E402

ENTRY_BYTES = 400  # about a RECORD entry


def write_log(root: Path, size: int) -> MemoryHashStore:
    """A data directory of ``size`` entries, as a node writes it (blocks of 1,000); its tree."""
    from chain.node.tile_store import TileStore

    store = TileStore(root, fsync=False)
    tree = MemoryHashStore()
    rng = random.Random(1)
    for first in range(0, size, 1000):
        entries = [rng.randbytes(ENTRY_BYTES) for _ in range(min(1000, size - first))]
        tree.extend(leaf_hash(e) for e in entries)
        tiles = [
            (t.level, t.index, t.width, tile_bytes(tree, t))
            for t in tiles_touched(first, tree.size)
        ]
        store.write_log(first, entries, tiles)
    return tree


def signed_checkpoint(root: Path, tree: MemoryHashStore) -> ConsortiumConfig:
    """Write ``root/checkpoint``: the tree's checkpoint signed by two of three new members; the
    consortium that pins them."""
    signers = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "abc"]
    config = ConsortiumConfig(
        origin="bench/mirror",
        quorum=2,
        members=tuple(Member(s.name, s.verifier().vkey) for s in signers),
        genesis_keys=(),
    )
    checkpoint = Checkpoint(config.origin, tree.size, tree.root(), 1, GENESIS_PREVIOUS_HASH, 0)
    (root / "checkpoint").write_bytes(sign(checkpoint.to_text(), signers[:2]))
    return config


class CachingClient(MirrorClient):
    """A mirror client that keeps what it fetched, as a client proving many entries would (a
    tile path's bytes never change)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self._kept: dict[str, bytes] = {}
        self.requests = 0

    def get(self, path: str) -> bytes:
        found = self._kept.get(path)
        if found is None or path == "checkpoint":
            found = self._kept[path] = super().get(path)
            self.requests += 1
        return found


def verified_reads(
    root: Path, config: ConsortiumConfig, size: int, reads: int
) -> tuple[float, float, float, int]:
    """Verified reads from the node's mirror: ``reads`` random entries proved by
    :func:`sdk.mirror.prove_from_mirror` from tiles fetched once. Reads per second, mirror CPU
    ms and client CPU ms per read, requests made."""
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(root), str(port), str(size)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, process)
        leaves = random.Random(2).sample(range(size), reads)
        client = CachingClient(f"http://127.0.0.1:{port}")
        server_before, client_before = cpu_seconds(process.pid), time.process_time()
        began = time.monotonic()
        bundle = prove_from_mirror(client, config, leaves)
        elapsed = time.monotonic() - began
        server = cpu_seconds(process.pid) - server_before
        spent = time.process_time() - client_before
        client.close()
        if len(bundle.entries) != reads:
            raise RuntimeError(f"expected {reads} proofs, got {len(bundle.entries)}")
        return reads / elapsed, 1000 * server / reads, 1000 * spent / reads, client.requests
    finally:
        process.terminate()
        process.wait(10)


def serve_mirror(root: str, port: int, size: int) -> None:
    """Run the node's mirror over ``root``, sealed at ``size`` entries."""
    from chain.node.mirror import MirrorServer
    from chain.node.tile_store import TileStore

    store = TileStore(Path(root), fsync=False)
    note = (Path(root) / "checkpoint").read_text()
    store.truncate(size)
    server = MirrorServer("127.0.0.1", port, store, lambda: (size, note)).start()
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


def _client(
    port: int, paths: list[str], seconds: float, seed: int, out: multiprocessing.Queue[int]
) -> None:
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.request("GET", "/" + rng.choice(paths))
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or not body:
            raise RuntimeError(f"GET failed: {response.status}")
        if response.will_close:
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        done += 1
    out.put(done)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/tile/0/000")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def measure(
    argv: list[str], port: int, paths: list[str], clients: int, seconds: float
) -> tuple[float, float]:
    """Requests per second and server CPU ms per request."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        _wait_listening(port, process)
        queue: multiprocessing.Queue[int] = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(target=_client, args=(port, paths, seconds, i, queue))
            for i in range(clients)
        ]
        cpu_before = cpu_seconds(process.pid)
        began = time.monotonic()
        for worker in workers:
            worker.start()
        total = sum(queue.get(timeout=seconds + 60) for _ in workers)
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(process.pid) - cpu_before
        for worker in workers:
            worker.join()
        return total / elapsed, 1000 * cpu / max(total, 1)
    finally:
        process.terminate()
        process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("--entries", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--reads", type=int, default=None, help="verified reads (2,000)")
    args = parser.parse_args(argv)
    size = args.entries or (25_600 if args.quick else 128_000)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    with tempfile.TemporaryDirectory(prefix="swiftchain-mirror-bench-") as tmp:
        root = Path(tmp)
        began = time.monotonic()
        tree = write_log(root, size)
        config = signed_checkpoint(root, tree)
        full = size // TILE_WIDTH
        print(
            f"{size} entries, {full} full tiles and bundles written in "
            f"{time.monotonic() - began:.1f}s; {args.clients} clients, {seconds:g}s each; "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        kinds = {
            "tiles": [tile_path(Tile(0, n, TILE_WIDTH)) for n in range(full)],
            "bundles": [entries_path(n) for n in range(full)],
        }
        results: dict[tuple[str, str], tuple[float, float]] = {}
        for kind, paths in kinds.items():
            for server in ("mirror", "static"):
                port = free_port()
                if server == "mirror":
                    command = [sys.executable, __file__, "--serve", str(root), str(port), str(size)]
                else:
                    command = [
                        sys.executable,
                        "-m",
                        "http.server",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--directory",
                        str(root),
                    ]
                rate, cpu_ms = measure(command, port, paths, args.clients, seconds)
                results[(kind, server)] = (rate, cpu_ms)
                print(
                    f"  {kind:<8} {server:<7} {rate:9,.0f} requests/s  "
                    f"{cpu_ms:6.3f} ms server CPU per request",
                    flush=True,
                )
                figure(f"mirror.{kind}.{server}.per_s", rate, "requests/s")
                figure(f"mirror.{kind}.{server}.cpu_ms", cpu_ms, "ms")
            ratio = results[(kind, "mirror")][0] / results[(kind, "static")][0]
            print(f"  {kind:<8} mirror / static: {ratio:.2f}x", flush=True)
            figure(f"mirror.{kind}.ratio", ratio, "x")
        reads = min(args.reads or (500 if args.quick else 2000), size)
        rate, server_ms, client_ms, requests = verified_reads(root, config, size, reads)
        print(
            f"  verified reads from the mirror ({reads:,} random entries, each tile fetched "
            f"once: {requests} requests): {rate:,.0f}/s, mirror CPU {server_ms:.3f} ms and "
            f"client CPU {client_ms:.3f} ms a read",
            flush=True,
        )
        figure("mirror.verified_reads.per_s", rate, "/s")
        figure("mirror.verified_reads.server_cpu_ms", server_ms, "ms")
        figure("mirror.verified_reads.client_cpu_ms", client_ms, "ms")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve_mirror(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(main())
