"""The consortium a ``swiftchain`` user has pinned: evidence is checked against a consortium file
the user holds, never against the keys the evidence carries (anyone can sign a bundle with keys
of their own making and list those keys in it).

``--consortium FILE`` pins it for one command; ``swiftchain config pin FILE`` pins it once, in
the CLI's config file: ``config.json`` in ``$SWIFTCHAIN_CONFIG_DIR``, else in
``$XDG_CONFIG_HOME/swiftchain``, else in ``~/.config/swiftchain``. The config records the file's
absolute path and SHA-256, and a pinned file whose bytes changed afterwards is refused until it
is pinned again: a consortium file swapped behind the user's back does not quietly become what
evidence is checked against.

Failures are :mod:`chain.errors`: :class:`PreconditionError` when nothing is pinned,
:class:`VerificationError` when the pinned file changed, :class:`InvalidInputError` when a file
cannot be read or is not what it should be. The commands exit 2 for each.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from chain.consortium import ConsortiumConfig, parse_consortium
from chain.errors import InvalidInputError, PreconditionError, VerificationError
from cli.common import STDIN, UnreadableInputError, read_input

CONFIG_DIR_ENV: Final = "SWIFTCHAIN_CONFIG_DIR"
"""Environment variable naming the folder of the CLI's config file."""

CONFIG_FILE: Final = "config.json"
CONFIG_FORMAT: Final = "swiftchain-cli-config/v1"

PIN_COMMAND: Final = "swiftchain config pin FILE"

PinnedBy = Literal["--consortium", "swiftchain config pin"]


def config_dir() -> Path:
    """``$SWIFTCHAIN_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/swiftchain``, else
    ``~/.config/swiftchain``."""
    configured = os.environ.get(CONFIG_DIR_ENV)
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "swiftchain"


def config_path() -> Path:
    """The CLI's config file."""
    return config_dir() / CONFIG_FILE


@dataclass(frozen=True)
class Pin:
    """What the config file records: the consortium file's absolute path and SHA-256 (hex)."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class PinnedConsortium:
    """A consortium file that was read, checked and parsed, and how it was pinned."""

    config: ConsortiumConfig
    path: Path
    sha256: str
    pinned_by: PinnedBy

    def describe(self) -> str:
        """``consortium.json (--consortium)``: for reports."""
        return f"{self.path} ({self.pinned_by})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "pinned_by": self.pinned_by,
            "origin": self.config.origin,
        }


def _read(path: Path, what: str) -> bytes:
    try:
        return read_input(path, what)
    except UnreadableInputError as exc:
        raise InvalidInputError(str(exc)) from None


def _parse(raw: bytes, path: Path) -> ConsortiumConfig:
    try:
        return parse_consortium(raw)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None


def load_consortium_file(path: Path, pinned_by: PinnedBy = "--consortium") -> PinnedConsortium:
    """The consortium file at ``path``, read and parsed (:class:`InvalidInputError` if it cannot
    be read or is not a ``swiftchain-consortium/v1`` file)."""
    raw = _read(path, "consortium file")
    return PinnedConsortium(_parse(raw, path), path, hashlib.sha256(raw).hexdigest(), pinned_by)


def _config_document() -> dict[str, Any]:
    """The config file's JSON object ({} if there is no config file)."""
    path = config_path()
    if not path.exists():
        return {}
    try:
        document = json.loads(_read(path, "swiftchain config"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"{path}: expected a JSON object, got invalid JSON ({exc})"
        ) from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"{path}: expected a JSON object, got {type(document).__name__}")
    if document.get("format") != CONFIG_FORMAT:
        raise InvalidInputError(
            f"{path}: expected format {CONFIG_FORMAT!r}, got {document.get('format')!r}"
        )
    return document


def read_pin() -> Pin | None:
    """The pin the config file records, or ``None`` if it records none."""
    value = _config_document().get("consortium")
    if value is None:
        return None
    where = f"{config_path()}: consortium"
    if not isinstance(value, dict) or set(value) != {"path", "sha256"}:
        raise InvalidInputError(
            f"{where}: expected an object with 'path' and 'sha256', got {value!r}"
        )
    path, digest = value["path"], value["sha256"]
    if not isinstance(path, str) or not Path(path).is_absolute():
        raise InvalidInputError(f"{where}: expected an absolute path, got {path!r}")
    if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
        raise InvalidInputError(f"{where}: expected a SHA-256 as 64 hex digits, got {digest!r}")
    return Pin(Path(path), digest.lower())


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _write_config(document: dict[str, Any]) -> None:
    """Write the config file whole, through a temporary file, so a reader never sees half."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def pin(path: Path) -> PinnedConsortium:
    """Pin the consortium file at ``path``: check that it is one, record its absolute path and
    SHA-256 in the config file, and return it as read."""
    if str(path) == STDIN:
        raise InvalidInputError(f"expected a consortium file to pin, got {STDIN!r}")
    pinned = load_consortium_file(path.resolve(), "swiftchain config pin")
    document = _config_document() | {"format": CONFIG_FORMAT}
    document["consortium"] = {"path": str(pinned.path), "sha256": pinned.sha256}
    _write_config(document)
    return pinned


def unpin() -> Pin | None:
    """Forget the pinned consortium; the pin that was recorded, if any."""
    was = read_pin()
    if was is not None:
        document = _config_document()
        del document["consortium"]
        _write_config(document)
    return was


def load_pin(recorded: Pin) -> PinnedConsortium:
    """The pinned consortium file, if its bytes are still those pinned
    (:class:`VerificationError` if they changed)."""
    repin = f"check it, then pin it again with `swiftchain config pin {recorded.path}`"
    try:
        raw = _read(recorded.path, "pinned consortium file")
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc} (pinned in {config_path()}); {repin}") from None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != recorded.sha256:
        raise VerificationError(
            f"expected the pinned consortium file {recorded.path} to have SHA-256 "
            f"{recorded.sha256}, got {actual}: it changed since it was pinned; {repin}"
        )
    return PinnedConsortium(
        _parse(raw, recorded.path), recorded.path, actual, "swiftchain config pin"
    )


def resolve(option: Path | None, purpose: str) -> PinnedConsortium:
    """The consortium to check evidence against: ``--consortium`` if given, else the pinned one.

    ``purpose`` finishes "expected a pinned consortium file ..." in the error raised when there
    is neither (:class:`PreconditionError`), e.g. "to check the bundle against".
    """
    if option is not None:
        return load_consortium_file(option)
    recorded = read_pin()
    if recorded is None:
        raise PreconditionError(
            f"expected a pinned consortium file {purpose}, got none: pass --consortium FILE, "
            f"or pin one once with `{PIN_COMMAND}` (recorded in {config_path()})"
        )
    return load_pin(recorded)
