"""``swiftchain consortium keygen|tag-key|genesis propose|sign|verify``: the genesis ceremony
as each party runs it, every founder in a folder of its own, ending in a file a chain node
accepts; and the exit codes (1 a check failed, 2 unreadable input) with what was expected and
what was found."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chain.node.main import NodeSettings, load_genesis_and_key
from cli.main import app

MEMBERS = ("hospital-a", "hospital-b", "hospital-c")


def run(*args: str | Path) -> Result:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")


def keygen(tmp_path: Path, *args: str) -> Path:
    """Run keygen into a folder named after the holder, share the printed card; its path."""
    holder = args[-1]
    result = run("consortium", "keygen", *args, "--out", tmp_path / holder)
    assert result.exit_code == 0, result.output
    card = tmp_path / f"{holder}.shared-card.json"
    card.write_text(result.stdout)
    return card


def proposed(tmp_path: Path) -> Path:
    cards = [keygen(tmp_path, "--member", name) for name in MEMBERS]
    cards += [keygen(tmp_path, "--role", role) for role in ("registrar", "consent")]
    genesis = tmp_path / "consortium.json"
    options = [item for card in cards for item in ("--card", str(card))]
    result = run(
        "consortium", "genesis", "propose", "--origin", "test/cli", "--quorum", "2",
        *options, "--out", genesis,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "founders hospital-a, hospital-b, hospital-c (0 of 3 signed)" in result.stdout
    return genesis


def test_keygen_writes_a_private_key_0600_and_prints_only_the_card(tmp_path: Path) -> None:
    result = run("consortium", "keygen", "--member", "hospital-a", "--out", tmp_path / "a")
    assert result.exit_code == 0
    key = tmp_path / "a" / "hospital-a.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    card = json.loads(result.stdout)
    assert card["role"] == "member" and card["name"] == "hospital-a"
    assert card == json.loads((tmp_path / "a" / "hospital-a.card.json").read_text())
    secret = key.read_text().strip().rsplit("+", 1)[1]
    assert secret not in result.output and "PRIVATE" not in result.output
    again = run("consortium", "keygen", "--member", "hospital-a", "--out", tmp_path / "a")
    assert again.exit_code == 1
    assert "a private key is never overwritten" in again.stderr


def test_keygen_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("consortium", "keygen", "--out", tmp_path).exit_code == 2
    with_both = run(
        "consortium", "keygen", "--role", "registrar", "--member", "x", "--out", tmp_path
    )
    assert with_both.exit_code == 2
    assert "expected no --member with --role registrar" in with_both.stderr
    bad = run("consortium", "keygen", "--role", "tag", "--out", tmp_path)
    assert bad.exit_code == 2 and "expected a service role among" in bad.stderr


def test_the_whole_ceremony_gives_a_genesis_the_node_accepts(tmp_path: Path) -> None:
    genesis = proposed(tmp_path)
    unsigned = run("consortium", "genesis", "verify", genesis)
    assert unsigned.exit_code == 1
    assert "expected a signature by founder 'hospital-a' (key hospital-a+" in unsigned.stderr
    for name in MEMBERS:
        signed = run("consortium", "genesis", "sign", "--key", tmp_path / name, genesis)
        assert signed.exit_code == 0, signed.output
    verified = run("consortium", "genesis", "verify", genesis)
    assert verified.exit_code == 0, verified.output
    assert "(3 of 3 signed), genesis keys registrar, consent" in verified.stdout
    assert run("consortium", "tag-key", "--out", tmp_path / "hospital-a").exit_code == 0
    config, _ = load_genesis_and_key(
        NodeSettings(
            node_name="hospital-b",
            consortium_file=genesis,
            signing_key_file=tmp_path / "hospital-b" / "hospital-b.key",
        )
    )
    assert [s.name for s in config.founder_signatures] == list(MEMBERS)


def test_verify_names_a_missing_or_wrong_signature_and_a_tampered_member_list(
    tmp_path: Path,
) -> None:
    genesis = proposed(tmp_path)
    for name in MEMBERS[:2]:
        assert (
            run("consortium", "genesis", "sign", "--key", tmp_path / name, genesis).exit_code == 0
        )
    missing = run("consortium", "genesis", "verify", genesis)
    assert missing.exit_code == 1
    assert "expected a signature by founder 'hospital-c' (key hospital-c+" in missing.stderr
    assert "got none" in missing.stderr
    assert (
        run("consortium", "genesis", "sign", "--key", tmp_path / "hospital-c", genesis).exit_code
        == 0
    )
    document = json.loads(genesis.read_text())
    wrong = dict(document)
    wrong["founder_signatures"] = [
        {**s, "signature": document["founder_signatures"][0]["signature"]}
        for s in document["founder_signatures"]
    ]
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    result = run("consortium", "genesis", "verify", tmp_path / "wrong.json")
    assert result.exit_code == 1
    assert "expected a signature by founder 'hospital-b' with key hospital-b+" in result.stderr
    assert "got one that does not verify" in result.stderr
    tampered = {**document, "members": document["members"][:2], "quorum": 1}
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    result = run("consortium", "genesis", "verify", tmp_path / "tampered.json")
    assert result.exit_code == 1
    assert "got one by 'hospital-c', who is not a member of this genesis" in result.stderr


def test_a_founder_cannot_sign_with_a_key_the_genesis_does_not_list(tmp_path: Path) -> None:
    genesis = proposed(tmp_path)
    run("consortium", "keygen", "--member", "hospital-a", "--out", tmp_path / "impostor")
    result = run("consortium", "genesis", "sign", "--key", tmp_path / "impostor", genesis)
    assert result.exit_code == 1
    assert "expected the key of founder 'hospital-a' listed in the genesis" in result.stderr
    assert json.loads(genesis.read_text())["founder_signatures"] == []


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    result = run("consortium", "genesis", "verify", tmp_path / "nope.json")
    assert result.exit_code == 2 and "no such file" in result.stderr
    (tmp_path / "card.json").write_text("{}")
    result = run(
        "consortium", "genesis", "propose", "--origin", "o", "--quorum", "1",
        "--card", tmp_path / "card.json", "--out", tmp_path / "g.json",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "expected format 'swiftchain-consortium-key-card/v1', got None" in result.stderr
    assert not (tmp_path / "g.json").exists()
