"""The evidence CLI against three real chain nodes (DESIGN §3.5): ``swiftchain chain
checkpoint`` / ``chain prove`` fetch a bundle from a running node, ``swiftchain verify`` accepts
it offline against the pinned consortium file and rejects every tampered copy."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from chain.checkpoint import parse_checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.evidence import commitment, parse_bundle
from chain.note import Signer, parse_note
from cli.main import app
from devstack.chain_cluster import ChainCluster
from swiftchain.chain.v1 import entry_pb2

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(
    tmp_path: Path, kafka_bootstrap: str, mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ChainCluster]:
    cluster = ChainCluster(tmp_path, kafka_bootstrap, mongo_uri)
    # The CLI reaches the nodes over mTLS as the cluster's consortium admin.
    monkeypatch.setenv("SWIFTCHAIN_TLS_DIR", str(cluster.tls_dir))
    # Nothing pinned but what a test pins, whatever the machine's own config says.
    monkeypatch.setenv("SWIFTCHAIN_CONFIG_DIR", str(tmp_path / "swiftchain-config"))
    yield cluster
    cluster.stop_all()


def cli(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def foreign_consortium(cluster: ChainCluster) -> ConsortiumConfig:
    """The cluster's consortium with member keys of someone else's making."""
    members = tuple(
        Member(m.name, Signer(m.name, Ed25519PrivateKey.generate()).verifier().vkey)
        for m in cluster.config.members
    )
    return replace(cluster.config, members=members)


def entry_id(body: bytes) -> str:
    parsed = entry_pb2.EntryBody()
    parsed.ParseFromString(body)
    return parsed.entry_id


def committed_body(cluster: ChainCluster, salt: bytes, document: bytes) -> bytes:
    """A RECORD body whose commitment is HMAC-SHA256(salt, document)."""
    body = entry_pb2.EntryBody()
    body.ParseFromString(cluster.record_body())
    body.commitment = commitment(salt, document)
    return body.SerializeToString()


def flip_b64(value: str, byte: int) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[byte] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def verify_json(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("verify", str(path), "--json", *extra)
    return result.exit_code, json.loads(result.stdout)


def failed_checks(report: dict[str, Any]) -> set[str]:
    return {c["name"] for c in report["checks"] if not c["ok"]}


# Tamperings of a bundle (as JSON) and the check that must catch each.


def _alter_entry(d: dict[str, Any]) -> None:
    d["entries"][0]["entry"] = flip_b64(d["entries"][0]["entry"], byte=20)


def _alter_proof_hash(d: dict[str, Any]) -> None:
    proof = d["entries"][0]["inclusion_proof"]
    proof[0] = flip_b64(proof[0], byte=5)


def _alter_checkpoint_size(d: dict[str, Any]) -> None:
    lines = d["checkpoint"].split("\n")
    lines[1] = str(int(lines[1]) + 1)
    d["checkpoint"] = "\n".join(lines)


def _alter_signature(d: dict[str, Any]) -> None:
    text, _, sigs = d["checkpoint"].rpartition("\n\n")
    first, rest = sigs.split("\n", 1)
    prefix, b64 = first.rsplit(" ", 1)
    d["checkpoint"] = f"{text}\n\n{prefix} {flip_b64(b64, byte=30)}\n{rest}"


def _keep_one_signature(d: dict[str, Any]) -> None:
    text, _, sigs = d["checkpoint"].rpartition("\n\n")
    d["checkpoint"] = f"{text}\n\n{sigs.split(chr(10))[0]}\n"


def _alter_consistency(d: dict[str, Any]) -> None:
    proof = d["consistency"][0]["proof"]
    proof[-1] = flip_b64(proof[-1], byte=0)


TAMPERINGS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("altered-entry", _alter_entry, "entries[0].inclusion", "leads to root"),
    ("altered-proof-hash", _alter_proof_hash, "entries[0].inclusion", "leads to root"),
    ("altered-checkpoint-size", _alter_checkpoint_size, "checkpoint.signatures", "invalid sig"),
    ("altered-signature", _alter_signature, "checkpoint.signatures", "invalid signature by key"),
    ("one-signature-left", _keep_one_signature, "checkpoint.signatures", "quorum is 2"),
    ("altered-consistency", _alter_consistency, "consistency[0].proof", "consistency proof"),
]


def test_prove_then_verify_and_reject_tampered_copies(
    cluster: ChainCluster, tmp_path: Path
) -> None:
    cluster.start_all()
    node_a = f"127.0.0.1:{cluster.ports['hospital-a']}"
    node_b = f"127.0.0.1:{cluster.ports['hospital-b']}"

    # A first block, and the checkpoint a regulator saves at that time.
    cluster.submit([cluster.hospital_key_entry()])
    early_bodies = [cluster.record_body() for _ in range(9)]
    cluster.submit(cluster.hospital.sign_batch(early_bodies))
    cluster.wait_sealed_size("hospital-a", 10)
    early = tmp_path / "early.note"
    pinned = ("--consortium", str(cluster.files.config_path))
    unpinned = cli("chain", "checkpoint", "--node", node_a, "--out", str(early))
    assert unpinned.exit_code == 2, unpinned.output
    assert "expected a pinned consortium file" in unpinned.stderr and not early.exists()
    foreign = tmp_path / "foreign.json"
    foreign.write_text(foreign_consortium(cluster).to_json())
    refused = cli("chain", "checkpoint", "--node", node_a, "--consortium", str(foreign))
    assert refused.exit_code == 1, refused.output
    assert "does not verify against the pinned consortium" in refused.stderr
    saved = cli("chain", "checkpoint", "--node", node_a, "--out", str(early), *pinned)
    assert saved.exit_code == 0, saved.output
    assert "signed by hospital-" in saved.stdout
    early_size = parse_checkpoint(parse_note(early.read_bytes()).text).size
    assert early_size >= 10

    # The log grows; one new entry commits to a document.
    salt = os.urandom(32)
    document = b'{"resourceType":"Observation","id":"bp-1","status":"final"}'
    body = committed_body(cluster, salt, document)
    later_bodies = [cluster.record_body() for _ in range(60)]
    cluster.submit(cluster.hospital.sign_batch([*later_bodies[:30], body, *later_bodies[30:]]))

    # Prove it (and an old entry) from another node, waiting until it is sealed.
    bundle = tmp_path / "bundle.json"
    proved = cli(
        "chain",
        "prove",
        "--node",
        node_b,
        "--entry-id",
        entry_id(body),
        "--entry-id",
        entry_id(early_bodies[3]),
        "--since-checkpoint",
        str(early),
        "--out",
        str(bundle),
        "--wait",
        "30",
        *pinned,
    )
    assert proved.exit_code == 0, proved.output
    assert f"wrote {bundle}" in proved.stdout
    parsed = parse_bundle(bundle.read_bytes())
    assert parsed.origin == cluster.config.origin
    assert parsed.quorum == 2
    assert len(parsed.entries) == 2
    assert parsed.consistency[0].from_checkpoint == early.read_text(encoding="utf-8")

    # verify: nothing pinned is refused; pinned to the consortium file it holds.
    consortium = str(cluster.files.config_path)
    code, report = verify_json(bundle)
    assert code == 2, report
    assert "expected a pinned consortium file" in report["error"]
    code, report = verify_json(bundle, "--consortium", consortium)
    assert code == 0, report
    assert report["keys_source"] == "trusted"
    assert report["checkpoint"]["tree_size"] > early_size
    assert [e["entry_id"] for e in report["entries"]] == [
        entry_id(body),
        entry_id(early_bodies[3]),
    ]
    assert "consistency[0].proof" in {c["name"] for c in report["checks"]}
    assert cli("config", "pin", consortium).exit_code == 0
    code, report = verify_json(bundle)
    assert (code, report["consortium"]["pinned_by"]) == (0, "swiftchain config pin"), report

    # The commitment, with the document and its salt.
    doc_file = tmp_path / "record.json"
    doc_file.write_bytes(document)
    code, report = verify_json(bundle, "--document", str(doc_file), "--salt", salt.hex())
    assert code == 0, report
    doc_file.write_bytes(document.replace(b"final", b"amended"))
    code, report = verify_json(bundle, "--document", str(doc_file), "--salt", salt.hex())
    assert code == 1
    assert failed_checks(report) == {"commitment"}

    # The human report, through the real module entry point.
    completed = subprocess.run(
        [sys.executable, "-m", "cli", "verify", str(bundle), "--consortium", consortium],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "VERIFIED: all 6 checks hold" in completed.stdout

    # Every tampered copy fails, with the check that caught it.
    original = json.loads(bundle.read_text(encoding="utf-8"))
    for name, tamper, check, fragment in TAMPERINGS:
        document_copy = copy.deepcopy(original)
        tamper(document_copy)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document_copy, ensure_ascii=False), encoding="utf-8")
        code, report = verify_json(path, "--consortium", consortium)
        assert code == 1, (name, report)
        failures = {c["name"]: c["message"] for c in report["checks"] if not c["ok"]}
        assert check in failures, (name, failures)
        assert fragment in failures[check], (name, failures[check])
        human = cli("verify", str(path), "--consortium", consortium)
        assert human.exit_code == 1
        assert "NOT VERIFIED" in human.stdout


def test_node_status_and_prove_errors(cluster: ChainCluster, tmp_path: Path) -> None:
    cluster.start("hospital-a")
    cluster.start("hospital-b")
    node = f"127.0.0.1:{cluster.ports['hospital-a']}"
    cluster.submit([cluster.hospital_key_entry()])
    cluster.wait_sealed_size("hospital-a", 1)

    status = cli("node", "status", "--node", node, "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["node"] == "hospital-a"
    human = cli("node", "status", "--node", node)
    assert human.exit_code == 0
    assert "last sealed" in human.stdout

    pinned = ("--consortium", str(cluster.files.config_path))
    printed = cli("chain", "checkpoint", "--node", node, *pinned)
    assert printed.exit_code == 0
    assert printed.stdout.startswith(cluster.config.origin + "\n")
    assert "\n\n\u2014 hospital-" in printed.stdout

    unknown = cli(
        "chain",
        "prove",
        "--node",
        node,
        "--entry-id",
        "00000000-0000-4000-8000-000000000000",
        "--out",
        str(tmp_path / "never.json"),
        "--wait",
        "1",
        *pinned,
    )
    assert unknown.exit_code == 1
    assert "has not been seen by node hospital-a" in unknown.stderr
    assert not (tmp_path / "never.json").exists()
