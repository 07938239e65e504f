"""sdk/mirror.py and ``swiftchain chain prove --mirror``: proofs built by the client from a node's
public mirror (a real MirrorServer over a real socket), checked against a pinned consortium; a
mirror that serves a wrong tile, a wrong checkpoint or nothing is caught, never believed."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.errors import InvalidInputError, NotFoundError, UnavailableError, VerificationError
from chain.evidence import parse_bundle, verify_bundle
from chain.hashing import leaf_hash
from chain.node.mirror import MirrorServer
from chain.node.tile_store import TileStore
from chain.note import Signer, sign
from chain.proof_build import tree_root
from chain.tiles import MemoryHashStore, Tile, tile_bytes, tile_path, tiles_touched
from cli.main import app
from sdk.mirror import MirrorClient, VerifiedMirror, prove_from_mirror

ORIGIN = "test.swiftchain/mirror"
SIGNERS = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "abc"]
CONFIG = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(s.name, s.verifier().vkey) for s in SIGNERS),
    genesis_keys=(),
)


def _note(tree: MemoryHashStore, size: int, signers: list[Signer] = SIGNERS[:2]) -> str:
    text = Checkpoint(ORIGIN, size, tree_root(size, tree), 1, GENESIS_PREVIOUS_HASH, 0).to_text()
    return sign(text, signers).decode()


class Node:
    """A node's log files (300 entries, a checkpoint of 290 sealed) and its mirror."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tiles = TileStore(root)
        self.tree = MemoryHashStore()
        self.entries = [f"entry {i}".encode() * 3 for i in range(300)]
        self.tree.extend(leaf_hash(e) for e in self.entries)
        touched = tiles_touched(0, 300)
        tiles = [(t.level, t.index, t.width, tile_bytes(self.tree, t)) for t in touched]
        self.tiles.write_log(0, self.entries, tiles)
        self.sealed = (290, _note(self.tree, 290))
        self.server = MirrorServer("127.0.0.1", 0, self.tiles, lambda: self.sealed).start()
        self.url = f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path / "node")
    yield made
    made.server.stop()


def test_proofs_built_from_the_mirror_verify(node: Node) -> None:
    older = _note(node.tree, 100).encode()
    client = MirrorClient(node.url)
    bundle = prove_from_mirror(client, CONFIG, [0, 257, 289], since=older)
    client.close()
    assert [e.entry for e in bundle.entries] == [node.entries[i] for i in (0, 257, 289)]
    report = verify_bundle(bundle)
    assert report.ok, report
    assert len(bundle.consistency) == 1


def test_a_wrong_tile_from_the_mirror_fails_the_proof(node: Node) -> None:
    (node.root / tile_path(Tile(0, 0, 256))).write_bytes(bytes(256 * 32))
    with pytest.raises(VerificationError):
        prove_from_mirror(MirrorClient(node.url), CONFIG, [3])


def test_a_checkpoint_without_the_quorum_is_refused(node: Node) -> None:
    node.sealed = (290, _note(node.tree, 290, SIGNERS[:1]))
    with pytest.raises(VerificationError, match=r"quorum|signature"):
        prove_from_mirror(MirrorClient(node.url), CONFIG, [3])


def test_a_leaf_past_the_checkpoint_and_a_missing_mirror(node: Node) -> None:
    with pytest.raises(InvalidInputError, match="expected a leaf index below 290"):
        prove_from_mirror(MirrorClient(node.url), CONFIG, [295])
    with pytest.raises(NotFoundError, match="404 not found"):
        MirrorClient(node.url).get("tile/0/005")
    with pytest.raises(UnavailableError, match=r"mirror http://127\.0\.0\.1:"):
        MirrorClient(f"http://127.0.0.1:{_closed_port()}", timeout=2).checkpoint()
    for url in ("ftp://x", "127.0.0.1:8061", "http://h/?q=1"):
        with pytest.raises(InvalidInputError, match="expected a mirror URL"):
            MirrorClient(url)


class CountingClient(MirrorClient):
    """A mirror client that counts its requests by path."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.paths: list[str] = []

    def get(self, path: str) -> bytes:
        self.paths.append(path)
        return super().get(path)


def test_a_verified_mirror_keeps_its_checkpoint_and_takes_a_newer_one_only_if_consistent(
    node: Node,
) -> None:
    client = CountingClient(node.url)
    mirror = VerifiedMirror(client, CONFIG)
    proved = [mirror.prove(i) for i in (3, 257, 289)]
    assert [p.entry for p in proved] == [node.entries[i] for i in (3, 257, 289)]
    assert client.paths.count("checkpoint") == 1  # verified once, then held
    assert mirror.checkpoint is not None and mirror.checkpoint.size == 290
    node.sealed = (300, _note(node.tree, 300))
    assert mirror.prove(295).entry == node.entries[295]  # past the held tree: refreshed
    assert client.paths.count("checkpoint") == 2
    assert mirror.checkpoint.size == 300 and mirror.note == node.sealed[1].encode()


def test_a_verified_mirror_refuses_a_fork_and_a_rollback(node: Node) -> None:
    mirror = VerifiedMirror(MirrorClient(node.url), CONFIG)
    mirror.refresh()
    forked = MemoryHashStore()
    forked.extend(leaf_hash(b"not entry %d" % i) for i in range(300))
    node.sealed = (300, _note(forked, 300))
    with pytest.raises(VerificationError):
        mirror.prove(295)
    assert mirror.checkpoint is not None and mirror.checkpoint.size == 290  # still the old one
    node.sealed = (100, _note(node.tree, 100))
    with pytest.raises(VerificationError, match="older than the one verified before"):
        mirror.refresh()
    with pytest.raises(InvalidInputError, match="expected a leaf index below 100"):
        VerifiedMirror(MirrorClient(node.url), CONFIG).prove(100)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def no_pinned_consortium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty CLI config folder: nothing pinned, whatever the machine's own config says."""
    monkeypatch.setenv("SWIFTCHAIN_CONFIG_DIR", str(tmp_path / "swiftchain-config"))


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_the_cli_writes_a_verified_bundle_from_a_mirror(node: Node, tmp_path: Path) -> None:
    consortium = tmp_path / "consortium.json"
    consortium.write_text(CONFIG.to_json())
    out = tmp_path / "receipt.json"
    result = run(
        "chain", "prove", "--mirror", node.url, "--consortium", str(consortium),
        "--leaf-index", "7", "--leaf-index", "260", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tree size 290, signed by hospital-a, hospital-b" in result.output
    bundle = parse_bundle(out.read_text())
    assert [e.leaf_index for e in bundle.entries] == [7, 260]
    assert json.loads(out.read_text())["format"] == "swiftchain-evidence/v1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--leaf-index", "1"], "expected a pinned consortium file to check the node's"),
        (
            ["--leaf-index", "1", "--trust-bundle-keys"],
            "--mirror needs a pinned consortium (--consortium FILE or `swiftchain config pin`)",
        ),
        (["--consortium", "c.json"], "--mirror: expected at least one --leaf-index"),
        (["--entry-id", "x"], "--entry-id needs --node"),
        (["--node", "127.0.0.1:1", "--leaf-index", "1"], "expected either --node"),
    ],
)
def test_the_cli_refuses_options_that_do_not_fit_a_mirror(
    node: Node, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run("chain", "prove", "--mirror", node.url, "--out", str(tmp_path / "b"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_the_cli_exits_1_when_the_mirror_is_unreachable(tmp_path: Path) -> None:
    consortium = tmp_path / "consortium.json"
    consortium.write_text(CONFIG.to_json())
    url = f"http://127.0.0.1:{_closed_port()}"
    result = run(
        "chain", "prove", "--mirror", url, "--consortium", str(consortium),
        "--leaf-index", "1", "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"mirror {url}/checkpoint" in result.stderr


def test_the_cli_proves_from_a_mirror_against_the_pinned_consortium_only(
    node: Node, tmp_path: Path
) -> None:
    consortium = tmp_path / "consortium.json"
    consortium.write_text(CONFIG.to_json())
    assert run("config", "pin", str(consortium)).exit_code == 0
    out = tmp_path / "receipt.json"
    args = ("chain", "prove", "--mirror", node.url, "--leaf-index", "7", "--out", str(out))
    pinned = run(*args)
    assert pinned.exit_code == 0, pinned.output
    assert f"checked     against {consortium} (swiftchain config pin)" in pinned.stdout
    # A consortium of other keys (what a forger would hand out) refuses the mirror's checkpoint.
    others = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "abc"]
    foreign = tmp_path / "foreign.json"
    foreign.write_text(
        ConsortiumConfig(
            origin=ORIGIN,
            quorum=2,
            members=tuple(Member(s.name, s.verifier().vkey) for s in others),
            genesis_keys=(),
        ).to_json()
    )
    refused = run(*args[:-1], str(tmp_path / "not-written.json"), "--consortium", str(foreign))
    assert refused.exit_code == 1, refused.output
    assert not (tmp_path / "not-written.json").exists()
