"""Membership by vote on the running platform (issue #25, item 3): hospital-d, which made its
own key with ``swiftchain consortium keygen``, is admitted by a vote of the founders
(``swiftchain consortium propose`` / ``approve``), its node starts and signs, a checkpoint
sealed after the quorum went up to 3 needs its signature and verifies offline against the
genesis alone, then a second vote removes it and a third puts the quorum back; a bundle made
before the votes still verifies.

It leaves the platform as it found it (members a, b, c; quorum 2) for the tests after it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from typer.testing import CliRunner, Result

from chain.evidence_verify import verify_against_consortium
from chain.note import parse_note
from cli.main import app
from devstack.kafka import grant, platform_grants
from devstack.paths import REPO_ROOT
from devstack.pki import ADMIN, ensure_pki
from devstack.process import ManagedProcess, free_port, wait_grpc_serving
from services.platform.chain_client import evidence_bundle, prove_leaf, prove_together
from services.platform.tls import open_channel
from swiftchain.audit.v1 import audit_service_pb2 as audit_pb
from swiftchain.audit.v1 import audit_service_pb2_grpc
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import chain_service_pb2_grpc
from tests.e2e.platform import Platform, wait_for

NEW = "hospital-d"
_LOGGED = re.compile(r"on the log at leaf (\d+) \(entry ([0-9a-f-]{36})\)")
_PROPOSAL = re.compile(r"proposal ([0-9a-f-]{36})")


def consortium(platform: Platform, *args: str) -> Result:
    return CliRunner().invoke(
        app,
        [
            "consortium",
            *args,
            "--node",
            platform.target("hospital-a"),
            "--tls-dir",
            str(platform.admin.tls_dir),
        ],
    )


class Votes:
    """The founders' and hospital-d's votes, each on the log before the next."""

    def __init__(self, platform: Platform, new_key: Path) -> None:
        self.platform = platform
        founders = ("hospital-a", "hospital-b", "hospital-c")
        self.keys = {n: platform.consortium.node_key_path(n) for n in founders}
        self.keys[NEW] = new_key

    def cast(self, voter: str, *args: str) -> tuple[str, str]:
        """(the proposal id, the vote's entry id)."""
        result = consortium(self.platform, *args, "--key", str(self.keys[voter]), "--wait", "60")
        assert result.exit_code == 0, result.output
        logged = _LOGGED.search(result.output)
        proposal = _PROPOSAL.search(result.output) or re.search(
            r"approval of ([0-9a-f-]{36})", result.output
        )
        assert logged is not None and proposal is not None, result.output
        return proposal.group(1), logged.group(2)

    def change(self, voters: list[str], *proposal: str) -> str:
        """Propose as the first voter, approve as the others; the last vote's entry id."""
        proposal_id, entry_id = self.cast(voters[0], "propose", *proposal)
        for voter in voters[1:]:
            _, entry_id = self.cast(voter, "approve", proposal_id)
        return entry_id


def start_node(platform: Platform, key: Path, tmp: Path) -> tuple[ManagedProcess, int]:
    """hospital-d's node, as the stack starts the others, with its own key and admitted by
    vote: a certificate from the platform CA and the chain nodes' Kafka grants first."""
    stack = platform.stack
    pki = ensure_pki(stack.root / "pki", [(NEW, "chain-node")])
    grant(stack.kafka.bootstrap, platform_grants(pki, nodes=[NEW]), security=stack.kafka.admin)
    port = free_port()
    env = {
        "SWIFTCHAIN_PORT": str(port),
        "SWIFTCHAIN_TLS_DIR": str(pki.tls_dir(NEW)),
        "SWIFTCHAIN_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
        "SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL": "SSL",
        "SWIFTCHAIN_KAFKA_TLS_DIR": str(pki.tls_dir(NEW)),
        "SWIFTCHAIN_MONGO_URI": stack.mongo.uri,
        "SWIFTCHAIN_NODE_NAME": NEW,
        "SWIFTCHAIN_CONSORTIUM_FILE": str(platform.consortium.config_path),
        "SWIFTCHAIN_SIGNING_KEY_FILE": str(key),
        "SWIFTCHAIN_DATA_DIR": str(tmp / "data"),
        "SWIFTCHAIN_ADMITTED_BY_VOTE": "true",
        "PYTHONUNBUFFERED": "1",
    }
    process = ManagedProcess(
        NEW,
        [sys.executable, "-m", "chain.node"],
        log_path=tmp / f"{NEW}.log",
        env=env,
        cwd=REPO_ROOT,
    ).start()
    wait_grpc_serving(process, port, 120, tls_dir=pki.tls_dir(ADMIN))
    return process, port


def prove(platform: Platform, entry_id: str) -> tuple[str, bool, int]:
    """The signers of the checkpoint a bundle proving ``entry_id`` carries, whether that bundle
    verifies against the genesis alone, and the quorum it was checked against."""
    with open_channel(platform.target("hospital-a"), platform.admin.tls_dir) as channel:
        stub = chain_service_pb2_grpc.ChainServiceStub(channel)
        genesis = stub.GetConsortium(pb.GetConsortiumRequest(), timeout=10).consortium
        bundle = evidence_bundle(genesis, prove_together(stub, [entry_id], wait=60))
    report = verify_against_consortium(bundle, platform.consortium.load())
    names = [s.name for s in parse_note(bundle.checkpoint.encode()).signatures]
    assert report.ok, report.failures
    return ",".join(names), report.ok, report.quorum


def test_a_fourth_hospital_is_voted_in_signs_is_needed_and_is_voted_out(
    platform: Platform, tmp_path: Path
) -> None:
    made = CliRunner().invoke(
        app, ["consortium", "keygen", "--member", NEW, "--out", str(tmp_path / "keys")]
    )
    assert made.exit_code == 0, made.output
    key, card = tmp_path / "keys" / f"{NEW}.key", tmp_path / "keys" / f"{NEW}.card.json"
    votes = Votes(platform, key)
    with open_channel(platform.target("hospital-a"), platform.admin.tls_dir) as channel:
        stub = chain_service_pb2_grpc.ChainServiceStub(channel)
        genesis = stub.GetConsortium(pb.GetConsortiumRequest(), timeout=10).consortium
        # The platform's first entries (its parties' keys), sealed before any vote.
        first_proof = stub.GetInclusionProof(
            pb.GetInclusionProofRequest(leaf_index=0, wait_until_sealed=True), timeout=60
        )
        first = first_proof.entry
        before = evidence_bundle(genesis, [prove_leaf(stub, "", 0, first_proof.tree_size)])
    assert first == before.entries[0].entry

    votes.change(["hospital-a", "hospital-b"], "--admit", NEW, "--card", str(card))
    votes.change(["hospital-a", NEW], "--quorum", "3")
    status = consortium(platform, "status")
    assert "quorum 3 of 4 node members" in status.output, status.output

    process, _ = start_node(platform, key, tmp_path)
    try:
        platform.process("hospital-c").stop(grace=15)
        # hospital-c is away: a checkpoint now needs a, b and the new member.
        proposal_id, entry_id = votes.cast("hospital-a", "propose", "--remove", NEW)
        assert prove(platform, entry_id) == ("hospital-a,hospital-b,hospital-d", True, 3)
        platform.restart("hospital-c")
        votes.cast("hospital-b", "approve", proposal_id)
        votes.cast(NEW, "approve", proposal_id)
        last = votes.change(["hospital-a", "hospital-b", "hospital-c"], "--quorum", "2")
        # The checkpoint holding the vote that lowered the quorum is the first checked with 2.
        signers, _, quorum = prove(platform, last)
        assert NEW not in signers and quorum == 2
        status = consortium(platform, "status")
        assert "quorum 2 of 3 node members" in status.output, status.output
        assert NEW not in status.output
    finally:
        process.stop(grace=15)
    assert verify_against_consortium(before, platform.consortium.load()).ok
    # The audit service, which checks every checkpoint it follows, found none bad.
    wait_for("the audit index to reach the log", lambda: platform.audit_backlog()[1] == 0, 120)
    audit = audit_service_pb2_grpc.AuditServiceStub(
        platform.channel(platform.parties["regulator"], "audit")
    )
    bad = audit.ListFlags(
        audit_pb.ListFlagsRequest(kinds=[audit_pb.FLAG_KIND_BAD_CHECKPOINT]), timeout=10
    )
    assert list(bad.flags) == []
