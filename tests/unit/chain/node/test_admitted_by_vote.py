"""A node admitted by a vote starts with a key the genesis does not list only when told it was
(SWIFTCHAIN_ADMITTED_BY_VOTE): the genesis must still be signed by every founder, and the key
must carry the node's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.node.main import NodeRefusedError, NodeSettings, load_genesis_and_key
from chain.note import generate_key
from services.platform.consortium_files import create_consortium


def test_a_node_not_in_the_genesis_starts_only_when_admitted_by_vote(tmp_path: Path) -> None:
    files = create_consortium(
        tmp_path / "consortium", ["hospital-a", "hospital-b"], quorum=2, origin="test/vote"
    )
    key = tmp_path / "hospital-d.key"
    key.write_text(generate_key("hospital-d")[0] + "\n")
    plain = NodeSettings(
        node_name="hospital-d", consortium_file=files.config_path, signing_key_file=key
    )
    with pytest.raises(NodeRefusedError, match="expected one of the members"):
        load_genesis_and_key(plain)
    voted = plain.model_copy(update={"admitted_by_vote": True})
    config, signer = load_genesis_and_key(voted)
    assert signer.name == "hospital-d" and config == files.load()
    misnamed = voted.model_copy(update={"node_name": "hospital-e"})
    with pytest.raises(NodeRefusedError, match="expected a key named 'hospital-e'"):
        load_genesis_and_key(misnamed)
