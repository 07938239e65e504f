"""``swiftchain config pin|show|unpin``: the consortium file pinned once in the CLI's config, by
absolute path and SHA-256, and refused once its bytes change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from chain.consortium import ConsortiumConfig, Member
from chain.errors import InvalidInputError, PreconditionError, VerificationError
from chain.note import Signer
from cli import pinned_consortium
from cli.main import app

ORIGIN = "test.swiftchain/config"


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "swiftchain-config"
    monkeypatch.setenv(pinned_consortium.CONFIG_DIR_ENV, str(folder))
    monkeypatch.setenv("COLUMNS", "400")
    return folder


@pytest.fixture
def consortium(tmp_path: Path) -> Path:
    members = tuple(
        Member(name, Signer(name, Ed25519PrivateKey.generate()).verifier().vkey)
        for name in ("node-a", "node-b")
    )
    path = tmp_path / "consortium.json"
    path.write_text(ConsortiumConfig(ORIGIN, 2, members, ()).to_json())
    return path


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_pin_records_the_absolute_path_and_sha256(
    config_dir: Path, consortium: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(consortium.parent)
    result = run("config", "pin", consortium.name)
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(consortium.read_bytes()).hexdigest()
    assert json.loads((config_dir / "config.json").read_text()) == {
        "format": "swiftchain-cli-config/v1",
        "consortium": {"path": str(consortium.resolve()), "sha256": digest},
    }
    assert f"origin {ORIGIN}, members node-a, node-b, quorum 2; SHA-256 {digest}" in result.output
    pinned = pinned_consortium.resolve(None, "to check against")
    assert (pinned.config.origin, pinned.pinned_by) == (ORIGIN, "swiftchain config pin")


def test_show_exits_0_while_the_file_is_unchanged_then_1(
    config_dir: Path, consortium: Path
) -> None:
    assert run("config", "pin", str(consortium)).exit_code == 0
    shown = run("config", "show")
    assert shown.exit_code == 0
    assert f"pinned {consortium.resolve()}" in shown.output
    before = hashlib.sha256(consortium.read_bytes()).hexdigest()
    consortium.write_text(consortium.read_text().replace('"quorum": 2', '"quorum": 1'))
    after = hashlib.sha256(consortium.read_bytes()).hexdigest()
    changed = run("config", "show")
    assert changed.exit_code == 1
    assert (
        f"expected the pinned consortium file {consortium.resolve()} to have SHA-256 {before}, "
        f"got {after}: it changed since it was pinned"
    ) in changed.stderr
    with pytest.raises(VerificationError, match="it changed since it was pinned"):
        pinned_consortium.resolve(None, "to check against")
    assert run("config", "pin", str(consortium)).exit_code == 0  # checked, pinned again
    assert pinned_consortium.resolve(None, "to check against").config.quorum == 1


def test_a_removed_pinned_file_is_refused(config_dir: Path, consortium: Path) -> None:
    assert run("config", "pin", str(consortium)).exit_code == 0
    consortium.unlink()
    result = run("config", "show")
    assert result.exit_code == 2
    assert "cannot read pinned consortium file" in result.stderr
    assert "no such file" in result.stderr


def test_unpin_forgets_it(config_dir: Path, consortium: Path) -> None:
    assert run("config", "pin", str(consortium)).exit_code == 0
    result = run("config", "unpin")
    assert (result.exit_code, result.output.strip()) == (0, f"unpinned {consortium.resolve()}")
    assert run("config", "unpin").output.strip() == "no consortium file was pinned"
    shown = run("config", "show")
    assert shown.exit_code == 2
    assert "no consortium file is pinned" in shown.stderr
    with pytest.raises(PreconditionError, match="expected a pinned consortium file to check"):
        pinned_consortium.resolve(None, "to check against")


def test_only_a_consortium_file_can_be_pinned(
    config_dir: Path, consortium: Path, tmp_path: Path
) -> None:
    not_consortium = tmp_path / "bundle.json"
    not_consortium.write_text('{"format": "swiftchain-evidence/v1"}')
    for args, fragment in (
        ([str(not_consortium)], "consortium config: expected format 'swiftchain-consortium/v1'"),
        ([str(tmp_path / "missing.json")], "cannot read consortium file"),
        (["-"], "expected a consortium file to pin, got '-'"),
    ):
        result = run("config", "pin", *args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr, (args, result.stderr)
    assert not (config_dir / "config.json").exists()


def test_a_malformed_config_is_refused_not_ignored(config_dir: Path, consortium: Path) -> None:
    config_dir.mkdir()
    config = config_dir / "config.json"

    def pin(path: str, digest: str) -> str:
        consortium = {"path": path, "sha256": digest}
        return json.dumps({"format": "swiftchain-cli-config/v1", "consortium": consortium})

    for text, fragment in (
        ("not json", "expected a JSON object, got invalid JSON"),
        ('{"format": "other"}', "expected format 'swiftchain-cli-config/v1', got 'other'"),
        (pin("relative.json", "0" * 64), "expected an absolute path, got 'relative.json'"),
        (pin("/c.json", "abc"), "expected a SHA-256 as 64 hex digits, got 'abc'"),
    ):
        config.write_text(text)
        with pytest.raises(InvalidInputError, match="expected"):
            pinned_consortium.resolve(None, "to check against")
        result = run("config", "show")
        assert result.exit_code == 2
        assert fragment in result.stderr, (text, result.stderr)


def test_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pinned_consortium.CONFIG_DIR_ENV, str(tmp_path / "own"))
    assert pinned_consortium.config_path() == tmp_path / "own" / "config.json"
    monkeypatch.delenv(pinned_consortium.CONFIG_DIR_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert pinned_consortium.config_path() == tmp_path / "xdg" / "swiftchain" / "config.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pinned_consortium.config_path() == (
        tmp_path / "home" / ".config" / "swiftchain" / "config.json"
    )


def test_an_explicit_consortium_outranks_the_pin(
    config_dir: Path, consortium: Path, tmp_path: Path
) -> None:
    assert run("config", "pin", str(consortium)).exit_code == 0
    other = tmp_path / "other.json"
    other.write_text(consortium.read_text().replace(ORIGIN, "another/log"))
    chosen = pinned_consortium.resolve(other, "to check against")
    assert (chosen.config.origin, chosen.pinned_by, chosen.path) == (
        "another/log",
        "--consortium",
        other,
    )
