"""swiftchain consortium propose | approve | status against a chain node served by the platform's
server factory over in-memory fakes: votes are signed with the member key files keygen makes,
the node refuses a vote the log would reject (exit 1, saying why), and the status shows the
member set the votes lead to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chain.node.service import ChainServicer
from chain.note import signer_key
from cli.main import app
from services.platform.genesis_ceremony import member_keygen
from services.platform.server import Server, ServiceRegistration, build_server
from services.platform.settings import ProcessSettings
from swiftchain.chain.v1 import chain_service_pb2_grpc as pb_grpc
from tests.unit.chain.node.test_node_membership import NAMES, SIGNERS, Cluster
from tests.unit.chain.node.test_node_membership import cluster as cluster


@pytest.fixture
def node(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """hospital-a's node served in plaintext (the CLI uses no TLS folder here), the others
    running to seal; yields its address."""
    monkeypatch.setattr("cli.grpc_client.default_tls_dir", lambda: None)
    for name in NAMES[:3]:
        cluster.start(name)
    servicer = ChainServicer(cluster.nodes["hospital-a"])
    server: Server = build_server(
        ProcessSettings(process_name="hospital-a", max_workers=4),
        [
            ServiceRegistration(
                "swiftchain.chain.v1.ChainService",
                lambda s: pb_grpc.add_ChainServiceServicer_to_server(servicer, s),
            )
        ],
    )
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop(0)


def key_file(folder: Path, name: str) -> Path:
    path = folder / f"{name}.key"
    path.write_text(signer_key(name, SIGNERS[name].private_key) + "\n")
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["consortium", *args])


def test_a_member_is_proposed_refused_to_an_outsider_approved_and_shown(
    node: str, tmp_path: Path
) -> None:
    card = member_keygen("hospital-d", tmp_path / "d").card_path
    a, b, c = (key_file(tmp_path, n) for n in NAMES[:3])
    outsider = member_keygen("hospital-x", tmp_path / "x").key_path

    proposed = run(
        "propose", "--node", node, "--key", str(a), "--admit", "hospital-d", "--card", str(card)
    )
    assert proposed.exit_code == 0, proposed.output
    found = re.search(r"proposal ([0-9a-f-]{36}) by hospital-a submitted", proposed.output)
    assert found is not None, proposed.output
    proposal_id = found.group(1)
    assert "on the log at leaf 0" in proposed.output

    status = run("status", "--node", node)
    assert status.exit_code == 0, status.output
    assert "quorum 2 of 3 node members" in status.output
    assert f"proposal {proposal_id} by hospital-a at leaf 0" in status.output
    assert "admit hospital-d (node" in status.output

    refused = run("approve", proposal_id, "--node", node, "--key", str(outsider))
    assert refused.exit_code == 1
    assert "FAILED_PRECONDITION" in refused.output
    assert "MEMBERSHIP_NOT_A_MEMBER" in refused.output

    approved = run("approve", proposal_id, "--node", node, "--key", str(b))
    assert approved.exit_code == 0, approved.output
    assert "on the log at leaf 1" in approved.output

    status = run("status", "--node", node)
    assert "quorum 2 of 4 node members" in status.output
    assert "hospital-d (node)" in status.output
    assert "no open proposals" in status.output

    closed = run("approve", proposal_id, "--node", node, "--key", str(c))
    assert closed.exit_code == 1
    assert "MEMBERSHIP_PROPOSAL_CLOSED" in closed.output


def test_a_proposal_needs_exactly_one_change(node: str, tmp_path: Path) -> None:
    a = key_file(tmp_path, "hospital-a")
    both = run("propose", "--node", node, "--key", str(a), "--quorum", "3", "--remove", "x")
    assert both.exit_code == 2
    assert "exactly one of" in both.output
    no_key = run("propose", "--node", node, "--key", str(a), "--admit", "hospital-d")
    assert no_key.exit_code == 2
    assert "--card FILE or --verifier-key KEY" in no_key.output
