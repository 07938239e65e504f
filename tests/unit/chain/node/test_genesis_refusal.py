"""A chain node starts only from a genesis every founder signed, and only with the key that
genesis lists for it: otherwise it says why and exits with status 2 before it connects to
anything. The consortium folder the ceremony makes (as ``make up`` and k8s do) is accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chain.node.main import (
    EXIT_REFUSED,
    NodeRefusedError,
    NodeSettings,
    load_genesis_and_key,
)
from services.platform.consortium_files import ConsortiumFiles, create_consortium

MEMBERS = ["hospital-a", "hospital-b", "hospital-c"]
ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture
def files(tmp_path: Path) -> ConsortiumFiles:
    return create_consortium(tmp_path / "consortium", MEMBERS, quorum=2, origin="test/refusal")


def settings(
    files: ConsortiumFiles, name: str = "hospital-a", key: str | None = None
) -> NodeSettings:
    return NodeSettings(
        node_name=name,
        consortium_file=files.config_path,
        signing_key_file=files.node_key_path(key or name),
    )


def rewrite(files: ConsortiumFiles, change: dict[str, object]) -> None:
    document = json.loads(files.config_path.read_text())
    document.update(change)
    files.config_path.write_text(json.dumps(document))


def test_the_ceremonys_genesis_is_accepted(files: ConsortiumFiles) -> None:
    for name in MEMBERS:
        config, signer = load_genesis_and_key(settings(files, name))
        assert config == files.load()
        assert signer.verifier().vkey == config.member(name).verifier_key


def test_a_genesis_missing_a_founders_signature_is_refused(files: ConsortiumFiles) -> None:
    signatures = json.loads(files.config_path.read_text())["founder_signatures"]
    rewrite(files, {"founder_signatures": signatures[:2]})
    with pytest.raises(NodeRefusedError) as refused:
        load_genesis_and_key(settings(files))
    assert "is not signed by every founder: expected a signature by founder 'hospital-c'" in str(
        refused.value
    )
    assert "got none" in str(refused.value)


def test_a_genesis_with_a_wrong_signature_is_refused(files: ConsortiumFiles) -> None:
    signatures = json.loads(files.config_path.read_text())["founder_signatures"]
    signatures[1]["signature"] = signatures[0]["signature"]
    rewrite(files, {"founder_signatures": signatures})
    with pytest.raises(NodeRefusedError) as refused:
        load_genesis_and_key(settings(files))
    assert "expected a signature by founder 'hospital-b' with key hospital-b+" in str(refused.value)
    assert "got one that does not verify" in str(refused.value)


def test_a_genesis_whose_members_changed_after_signing_is_refused(
    files: ConsortiumFiles,
) -> None:
    members = json.loads(files.config_path.read_text())["members"]
    rewrite(files, {"members": members[:2], "quorum": 1})
    with pytest.raises(NodeRefusedError) as refused:
        load_genesis_and_key(settings(files))
    message = str(refused.value)
    assert "got one by 'hospital-c', who is not a member of this genesis" in message
    assert "expected a signature by founder 'hospital-a' with key" in message


def test_a_node_with_another_members_key_is_refused(files: ConsortiumFiles) -> None:
    with pytest.raises(NodeRefusedError) as refused:
        load_genesis_and_key(settings(files, "hospital-a", key="hospital-b"))
    assert "expected the key hospital-a+" in str(refused.value)
    assert "got hospital-b+" in str(refused.value)


def test_the_node_process_exits_2_saying_why(files: ConsortiumFiles) -> None:
    rewrite(files, {"founder_signatures": []})
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SWIFTCHAIN_") and key != "PYTHONPATH"
    }
    env |= {
        "PYTHONPATH": str(ROOT),
        "SWIFTCHAIN_NODE_NAME": "hospital-a",
        "SWIFTCHAIN_CONSORTIUM_FILE": str(files.config_path),
        "SWIFTCHAIN_SIGNING_KEY_FILE": str(files.node_key_path("hospital-a")),
        # nothing listens there: the node must stop before it connects
        "SWIFTCHAIN_MONGO_URI": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100",
        "SWIFTCHAIN_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "chain.node"],
        env=env,
        cwd=files.folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_REFUSED == 2, done.stderr
    assert "refusing to start: chain node hospital-a:" in done.stderr
    assert "expected a signature by founder 'hospital-a'" in done.stderr
