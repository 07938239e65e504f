"""An outside client reads a node's public mirror: a Go program built against
``golang.org/x/mod/sumdb/tlog`` (from the Go module proxy, like FerretDB) fetches ``/checkpoint``
and the tiles it points to from three real nodes, checks the note's signatures with
``sumdb/note``, recomputes the root through ``tlog.TileHashReader`` (which checks every tile
against it), proves and checks records with ``tlog.ProveRecord`` / ``tlog.CheckRecord``, and
checks each entry bundle against the leaves (tests/integration/tlog_client/main.go)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.checkpoint import parse_checkpoint
from chain.note import parse_note
from devstack.chain_cluster import MEMBERS, ChainCluster
from devstack.gobuild import run_go
from devstack.paths import cache_dir, file_lock
from devstack.toolchain import ToolchainMissing, find_go

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).parent / "tlog_client"
FILES = ("go.mod", "go.sum", "main.go")


def build_client() -> Path:
    """The client binary, built once per source version into ``.stack/cache/tlog-client-*``."""
    digest = hashlib.sha256(b"".join((SOURCE / f).read_bytes() for f in FILES)).hexdigest()[:16]
    binary = cache_dir() / f"tlog-client-{digest}" / "tlog_client"
    if binary.is_file():
        return binary
    try:
        go = find_go()
    except ToolchainMissing as error:
        # Go builds FerretDB for every test run too (make bootstrap): its absence is a broken
        # machine, not a reason to pass without checking the mirror.
        pytest.fail(f"expected a Go toolchain to build the tlog client, got none: {error}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(binary.parent.parent / f"{binary.parent.name}.lock"):
        if binary.is_file():
            return binary
        with tempfile.TemporaryDirectory(prefix="swiftchain-tlog-client-") as tmp:
            for name in FILES:
                shutil.copy(SOURCE / name, Path(tmp) / name)
            partial = binary.parent / "tlog_client.partial"
            run_go(
                [str(go.path), "build", "-mod=mod", "-trimpath", "-o", str(partial), "."],
                cwd=Path(tmp),
                env=dict(os.environ),
                log_file=binary.parent / "build.log",
                what="the tlog tiles client (golang.org/x/mod)",
            )
            partial.replace(binary)
    return binary


@pytest.fixture(scope="module")
def client() -> Path:
    return build_client()


@pytest.fixture
def cluster(tmp_path: Path, kafka_bootstrap: str, mongo_uri: str) -> Iterator[ChainCluster]:
    made = ChainCluster(tmp_path, kafka_bootstrap, mongo_uri)
    yield made
    made.stop_all()


def _run_client(client: Path, cluster: ChainCluster, name: str) -> str:
    keys = [m.verifier_key for m in cluster.config.members]
    done = subprocess.run(
        [str(client), cluster.mirror_url(name), str(cluster.config.quorum), *keys],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_go_tlog_reads_every_nodes_mirror_to_the_checkpoints_root(
    client: Path, cluster: ChainCluster
) -> None:
    cluster.start_all()
    cluster.submit([cluster.hospital_key_entry()])
    entries = cluster.hospital.sign_batch([cluster.record_body() for _ in range(299)])
    for start in range(0, len(entries), 10):
        cluster.submit(entries[start : start + 10])
    notes = {name: cluster.wait_sealed_size(name, 300) for name in MEMBERS}
    for name in MEMBERS:
        with urllib.request.urlopen(f"{cluster.mirror_url(name)}/checkpoint", timeout=10) as r:
            served = r.read()
        checkpoint = parse_checkpoint(parse_note(served).text)
        assert checkpoint.size >= 300
        root = base64.b64encode(checkpoint.root_hash).decode()
        out = _run_client(client, cluster, name)
        # the Go client read the checkpoint the node serves now (no entries came since)
        assert out in (
            f"ok size={checkpoint.size} root={root} signers=2",
            f"ok size={checkpoint.size} root={root} signers=3",
        ), (out, notes[name])
