"""``swiftchain verify``: exit 0 when everything holds against the pinned consortium, 1 when a
check fails, 2 for unreadable input or no pinned consortium, never a traceback; plus the --help
of every command and the input errors of the commands that talk to a node (which fail before, or
instead of, reaching one)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.evidence import EvidenceEntry, build_bundle, bundle_to_json, commitment
from chain.hashing import leaf_hash
from chain.note import Signer, sign
from chain.proof_build import inclusion_proof, tree_root
from chain.tiles import MemoryHashStore
from cli.main import app
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "test.swiftchain/cli"
SIGNERS = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "abc"]
DOCUMENT = b'{"resourceType":"Observation"}'
SALT = hashlib.sha256(b"cli salt").digest()
SIZE = 7
LEAF = 3


def _entry(i: int) -> bytes:
    body = entry_pb2.EntryBody(
        entry_id=f"00000000-0000-4000-8000-{i:012d}",
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id="hospital-x",
        commitment=commitment(SALT, DOCUMENT) if i == LEAF else bytes(32),
    )
    return entry_pb2.ChainEntry(
        body=body.SerializeToString(), key_id="hospital-x/key-1", signature=bytes(64)
    ).SerializeToString()


ENTRIES = [_entry(i) for i in range(SIZE)]
TREE = MemoryHashStore()
TREE.extend(leaf_hash(e) for e in ENTRIES)


def make_bundle(signers: list[Signer] = SIGNERS[:2]) -> dict[str, Any]:
    text = Checkpoint(ORIGIN, SIZE, tree_root(SIZE, TREE), 1, GENESIS_PREVIOUS_HASH, 0).to_text()
    return build_bundle(
        origin=ORIGIN,
        verifiers=[s.verifier() for s in signers],
        quorum=2,
        checkpoint=sign(text, signers),
        entries=[EvidenceEntry(LEAF, ENTRIES[LEAF], tuple(inclusion_proof(LEAF, SIZE, TREE)))],
    )


def consortium_file(tmp_path: Path) -> Path:
    config = ConsortiumConfig(
        origin=ORIGIN,
        quorum=2,
        members=tuple(Member(s.name, s.verifier().vkey) for s in SIGNERS),
        genesis_keys=(),
    )
    path = tmp_path / "consortium.json"
    path.write_text(config.to_json())
    return path


def write(tmp_path: Path, document: dict[str, Any], name: str = "bundle.json") -> Path:
    path = tmp_path / name
    path.write_text(bundle_to_json(document), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_pinned_consortium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty CLI config folder: nothing pinned, whatever the machine's own config says."""
    monkeypatch.setenv("SWIFTCHAIN_CONFIG_DIR", str(tmp_path / "swiftchain-config"))
    monkeypatch.setenv("COLUMNS", "400")  # a report row on one line, whatever the path


def run(*args: str, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write(tmp_path, make_bundle())


@pytest.fixture
def consortium(tmp_path: Path) -> Path:
    return consortium_file(tmp_path)


@pytest.fixture
def resigned(tmp_path: Path) -> Path:
    """The genuine bundle re-signed with keys someone else made under the members' names, and
    listing those keys: consistent with itself, not with the consortium."""
    forgers = [Signer(s.name, Ed25519PrivateKey.generate()) for s in SIGNERS[:2]]
    return write(tmp_path, make_bundle(forgers), "resigned.json")


@pytest.fixture
def tampered(tmp_path: Path) -> Path:
    document = make_bundle()
    raw = bytearray(base64.b64decode(document["entries"][0]["entry"]))
    raw[-1] ^= 0x01
    document["entries"][0]["entry"] = base64.b64encode(bytes(raw)).decode()
    return write(tmp_path, document, "tampered.json")


# ------------------------------------------------------------------------------- exit 0 / 1


def test_valid_bundle_exits_0_and_says_what_it_checked(bundle: Path, consortium: Path) -> None:
    result = run("verify", str(bundle), "--consortium", str(consortium))
    assert result.exit_code == 0, result.output
    for fragment in ("checkpoint.signatures", "checkpoint.origin", "entries[0].inclusion"):
        assert fragment in result.output
    assert "VERIFIED: all 3 checks hold" in result.output
    assert f"pinned: {consortium} (--consortium)" in result.output
    assert "WARNING" not in result.stderr


def test_json_report_for_scripts(bundle: Path, consortium: Path) -> None:
    result = run("verify", str(bundle), "--json", "--consortium", str(consortium))
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["bundle"] == str(bundle)
    assert report["keys_source"] == "trusted"
    assert report["consortium"] == {
        "path": str(consortium),
        "sha256": hashlib.sha256(consortium.read_bytes()).hexdigest(),
        "pinned_by": "--consortium",
        "origin": ORIGIN,
    }
    assert [c["name"] for c in report["checks"]] == [
        "checkpoint.signatures",
        "checkpoint.origin",
        "entries[0].inclusion",
    ]


def test_failed_check_exits_1(tampered: Path, consortium: Path) -> None:
    result = run("verify", str(tampered), "--consortium", str(consortium))
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    assert "NOT VERIFIED: 1 of 3 checks failed" in result.output


def test_failed_check_in_json(tampered: Path, consortium: Path) -> None:
    result = run("verify", str(tampered), "--json", "--consortium", str(consortium))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["entries[0].inclusion"]


# ------------------------------------------------------------------------------- pinning


def test_a_bundle_resigned_with_foreign_keys_fails_pinned_with_exit_1(
    resigned: Path, consortium: Path
) -> None:
    result = run("verify", str(resigned), "--consortium", str(consortium), "--json")
    assert result.exit_code == 1, result.output
    failed = [c for c in json.loads(result.stdout)["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["checkpoint.signatures"]
    message = failed[0]["message"]
    assert "has 0 valid member signatures, quorum is 2" in message
    pinned = ", ".join(f"{s.name}+{s.key_hash:08x}" for s in SIGNERS)
    assert f"expected signatures by the pinned consortium's keys {pinned}, got signatures by " in (
        message
    )
    human = run("verify", str(resigned), "--consortium", str(consortium))
    assert human.exit_code == 1
    assert "NOT VERIFIED" in human.output


def test_no_pinned_consortium_exits_2_and_says_what_to_do(resigned: Path, bundle: Path) -> None:
    for path in (resigned, bundle):  # the genuine bundle too: nothing to check it against
        result = run("verify", str(path))
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(
            "swiftchain: expected a pinned consortium file to check the bundle against, got none: "
            "pass --consortium FILE, or pin one once with `swiftchain config pin FILE`"
        ), result.stderr
        assert "VERIFIED" not in result.output
    result = run("verify", str(resigned), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["ok"] is False


def test_trust_bundle_keys_warns_and_passes_only_what_holds(bundle: Path, tampered: Path) -> None:
    genuine = run("verify", str(bundle), "--trust-bundle-keys")
    assert genuine.exit_code == 0, genuine.output
    assert genuine.stderr.startswith("WARNING: --trust-bundle-keys: the member keys and quorum")
    assert "from the bundle itself — NOT pinned" in genuine.output
    report = json.loads(run("verify", str(bundle), "--trust-bundle-keys", "--json").stdout)
    assert (report["ok"], report["keys_source"], report["consortium"]) == (True, "bundle", None)

    failing = run("verify", str(tampered), "--trust-bundle-keys")
    assert failing.exit_code == 1, failing.output
    assert "WARNING: --trust-bundle-keys" in failing.stderr
    assert "NOT VERIFIED: 1 of 3 checks failed" in failing.output
    one_signature = write(tampered.parent, make_bundle(SIGNERS[:1]) | {"quorum": 2}, "one.json")
    assert run("verify", str(one_signature), "--trust-bundle-keys").exit_code == 1


def test_trust_bundle_keys_cannot_override_a_pin(
    resigned: Path, consortium: Path, bundle: Path
) -> None:
    both = run("verify", str(resigned), "--consortium", str(consortium), "--trust-bundle-keys")
    assert both.exit_code == 2
    assert "expected --consortium FILE or --trust-bundle-keys, got both" in both.stderr
    assert run("config", "pin", str(consortium)).exit_code == 0
    result = run("verify", str(resigned), "--trust-bundle-keys")
    assert result.exit_code == 1, result.output
    assert "--trust-bundle-keys ignored" in result.stderr
    assert run("verify", str(bundle), "--trust-bundle-keys").exit_code == 0


def test_the_consortium_pinned_in_the_config(
    resigned: Path, consortium: Path, bundle: Path
) -> None:
    assert run("config", "pin", str(consortium)).exit_code == 0
    genuine = run("verify", str(bundle))
    assert genuine.exit_code == 0, genuine.output
    assert f"pinned: {consortium.resolve()} (swiftchain config pin)" in genuine.output
    assert run("verify", str(resigned)).exit_code == 1
    consortium.write_text(consortium.read_text() + "\n")  # the pinned file changes
    changed = run("verify", str(bundle))
    assert changed.exit_code == 2
    assert f"expected the pinned consortium file {consortium.resolve()} to have SHA-256 " in (
        changed.stderr
    )


def test_one_signature_exits_1(tmp_path: Path, consortium: Path) -> None:
    path = write(tmp_path, make_bundle(SIGNERS[:1]) | {"quorum": 2})
    result = run("verify", str(path), "--consortium", str(consortium))
    assert result.exit_code == 1
    assert "quorum is 2" in result.output


def test_document_and_salt(tmp_path: Path, bundle: Path, consortium: Path) -> None:
    document = tmp_path / "record.json"
    document.write_bytes(DOCUMENT)
    pin = ("--consortium", str(consortium))
    ok = run("verify", str(bundle), "--document", str(document), "--salt", SALT.hex(), *pin)
    assert ok.exit_code == 0, ok.output
    assert "commitment" in ok.output
    document.write_bytes(DOCUMENT + b"\n")
    changed = run("verify", str(bundle), "--document", str(document), "--salt", SALT.hex(), *pin)
    assert changed.exit_code == 1
    document.write_bytes(DOCUMENT)
    wrong_salt = run("verify", str(bundle), "--document", str(document), "--salt", "00" * 32, *pin)
    assert wrong_salt.exit_code == 1


def test_bundle_from_standard_input(bundle: Path, consortium: Path) -> None:
    result = run("verify", "-", "--json", "--consortium", str(consortium), stdin=bundle.read_text())
    assert result.exit_code == 0
    assert json.loads(result.stdout)["bundle"] == "standard input"


# ------------------------------------------------------------------------------- exit 2


def _unreadable_cases(tmp_path: Path, bundle: Path) -> list[tuple[list[str], str]]:
    not_json = tmp_path / "not.json"
    not_json.write_text("this is not JSON")
    wrong_format = tmp_path / "wrong.json"
    wrong_format.write_text(json.dumps(make_bundle() | {"format": "swiftchain-evidence/v0"}))
    bad_consortium = tmp_path / "bad-consortium.json"
    bad_consortium.write_text("{}")
    document = tmp_path / "doc"
    document.write_bytes(DOCUMENT)
    return [
        ([str(tmp_path / "missing.json")], "no such file"),
        ([str(tmp_path)], "it is a directory"),
        ([str(not_json)], "expected a JSON document, got invalid JSON"),
        ([str(wrong_format)], "format: expected 'swiftchain-evidence/v1'"),
        ([str(bundle), "--document", str(document)], "--document and --salt go together"),
        ([str(bundle), "--salt", SALT.hex()], "--document and --salt go together"),
        ([str(bundle), "--document", str(document), "--salt", "xyz"], "64 hex digits, got 'xyz'"),
        ([str(bundle), "--document", str(document), "--salt", "00" * 31], "got 31 bytes"),
        (
            [str(bundle), "--document", str(tmp_path / "nope"), "--salt", SALT.hex()],
            "cannot read document",
        ),
        ([str(bundle), "--consortium", str(bad_consortium)], "consortium config: expected"),
        ([str(bundle), "--consortium", str(tmp_path / "nope")], "cannot read consortium file"),
        ([str(bundle)], "expected a pinned consortium file to check the bundle against"),
    ]


def test_unreadable_input_exits_2(tmp_path: Path, bundle: Path) -> None:
    for args, fragment in _unreadable_cases(tmp_path, bundle):
        result = run("verify", *args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr, (args, result.stderr)
        assert result.stderr.startswith("swiftchain: ")


def test_unreadable_input_with_json_still_prints_json(tmp_path: Path) -> None:
    result = run("verify", str(tmp_path / "missing.json"), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": f"cannot read bundle {tmp_path / 'missing.json'}: no such file",
    }


def test_usage_errors_exit_2() -> None:
    assert run("verify").exit_code == 2  # no BUNDLE: shows help
    assert run("verify", "a.json", "--no-such-option").exit_code == 2


# ------------------------------------------------------------------------------- module runs


@pytest.mark.parametrize("module", ["cli", "cli.main"])
def test_python_dash_m(
    module: str, tmp_path: Path, bundle: Path, tampered: Path, consortium: Path
) -> None:
    def code(*args: str) -> int:
        completed = subprocess.run(
            [sys.executable, "-m", module, "verify", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "Traceback" not in completed.stderr
        return completed.returncode

    pin = ("--consortium", str(consortium))
    assert code(str(bundle), *pin) == 0
    assert code(str(tampered), *pin) == 1
    assert code(str(bundle)) == 2  # nothing pinned (the config folder is empty)
    assert code(str(tmp_path / "missing.json"), *pin) == 2


# ------------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["verify"],
        ["chain"],
        ["chain", "prove"],
        ["chain", "checkpoint"],
        ["node", "status"],
        ["config", "pin"],
    ],
    ids=lambda c: " ".join(c) or "swiftchain",
)
def test_help_explains_with_an_example(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output
    if len(command) == 2 or command == ["verify"]:
        assert "Examples:" in result.output
        assert "$ swiftchain " in result.output


# ------------------------------------------------------------------------------- node commands


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_node_commands_reject_a_malformed_address() -> None:
    result = run("node", "status", "--node", "localhost")
    assert result.exit_code == 2
    assert "expected HOST:PORT" in result.output


def test_unreachable_node_exits_1() -> None:
    node = f"127.0.0.1:{_closed_port()}"
    prove = ["chain", "prove", "--node", node, "--entry-id", "x", "--out", "/dev/null"]
    for args in (
        ["node", "status", "--node", node],
        ["chain", "checkpoint", "--node", node, "--trust-bundle-keys"],
        [*prove, "--wait", "0", "--trust-bundle-keys"],
    ):
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert f"cannot reach node {node} (UNAVAILABLE)" in result.stderr


def test_chain_commands_exit_2_with_no_pinned_consortium_before_asking_the_node() -> None:
    node = f"127.0.0.1:{_closed_port()}"
    for args in (
        ["chain", "checkpoint", "--node", node],
        ["chain", "prove", "--node", node, "--entry-id", "x", "--out", "/dev/null"],
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        expected = (
            "expected a pinned consortium file to check the node's checkpoint against, got "
            "none: pass --consortium FILE, or pin one once"
        )
        assert expected in " ".join(result.stderr.split()), result.stderr
        assert "cannot reach node" not in result.stderr


def test_prove_with_an_unreadable_since_checkpoint_exits_2(tmp_path: Path) -> None:
    note = tmp_path / "old.note"
    note.write_text("not a note\n")
    node = f"127.0.0.1:{_closed_port()}"
    args = ["chain", "prove", "--node", node, "--entry-id", "x", "--out", str(tmp_path / "b")]
    args.append("--trust-bundle-keys")
    result = run(*args, "--since-checkpoint", str(note))
    assert result.exit_code == 2
    assert "is not a signed checkpoint: expected a blank line" in result.stderr
    result = run(*args, "--since-checkpoint", str(tmp_path / "missing.note"))
    assert result.exit_code == 2
    assert "cannot read checkpoint file" in result.stderr
