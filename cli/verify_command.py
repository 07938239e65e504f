"""``swiftchain verify``: check an evidence bundle offline and say what was checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chain.errors import InvalidInputError, PreconditionError, SwiftchainError
from chain.evidence import (
    SALT_SIZE,
    EvidenceBundle,
    VerificationReport,
    parse_bundle,
    verify_against_consortium,
    verify_bundle,
)
from cli import pinned_consortium
from cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREADABLE,
    STDIN,
    UnreadableInputError,
    examples,
    help_text,
    read_input,
    stderr,
    stdout,
)
from sdk.commitments import canonical_json

HELP = help_text(
    "Verify an evidence bundle (swiftchain-evidence/v1) offline.",
    "Checks that the checkpoint carries at least a quorum of valid member signatures, that its "
    "origin is the log's, that every entry's inclusion proof leads from the exact entry bytes "
    "to the checkpoint root, that every consistency proof leads from its older (itself "
    "quorum-signed) checkpoint to this one, and, with --document and --salt, that "
    "HMAC-SHA256(salt, document) is the commitment of one of the entries.",
    "The member keys, quorum and origin are those of a consortium file you hold: --consortium "
    "FILE, or the file pinned once with `swiftchain config pin FILE`. Never the bundle's own: "
    "anyone can sign a bundle with keys of their own making and list those keys in it. "
    "--trust-bundle-keys checks a bundle against its own keys anyway, with a warning; that "
    "proves only that the bundle is consistent with itself.",
    "Exit status: 0 if everything holds, 1 if any check fails, 2 if the input cannot be read "
    "(missing file, not JSON, not a swiftchain-evidence/v1 bundle, a malformed option) or no "
    "consortium is pinned.",
)

EPILOG = examples(
    "swiftchain verify receipt.json --consortium consortium.json",
    "swiftchain config pin consortium.json && swiftchain verify receipt.json",
    "swiftchain verify receipt.json --document scan.pdf --salt $(cat scan.salt.hex)",
    "swiftchain verify receipt.json --document obs.json --canonical-json --salt $(cat obs.salt)",
    "swiftchain verify receipt.json --json | jq .ok",
)


def _salt(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value.strip())
    except ValueError:
        raise UnreadableInputError(
            f"--salt: expected {SALT_SIZE} bytes as {2 * SALT_SIZE} hex digits, got {value!r}"
        ) from None
    if len(raw) != SALT_SIZE:
        raise UnreadableInputError(
            f"--salt: expected {SALT_SIZE} bytes as {2 * SALT_SIZE} hex digits, "
            f"got {len(raw)} bytes"
        )
    return raw


def _canonical(document: bytes, path: Path) -> bytes:
    try:
        return canonical_json(json.loads(document))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableInputError(f"--canonical-json: {path} is not JSON ({exc})") from None


def _time(ms: int | None) -> str:
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


TRUST_BUNDLE_KEYS_WARNING: Final = (
    "WARNING: --trust-bundle-keys: the member keys and quorum are the bundle's own, not a "
    "consortium's you pinned; anyone can sign a bundle with keys of their own making, so a pass "
    "proves only that the bundle is consistent with itself. Pin the consortium with "
    "--consortium FILE or `swiftchain config pin FILE`."
)


def render_report(
    report: VerificationReport, console: Console, *, source: str, pinned: str | None = None
) -> None:
    """The report for people: what the bundle says, then one row per check, then the verdict.
    ``pinned`` says where trusted member keys came from (e.g. the consortium file)."""
    console.print(Text(f"Evidence bundle {source}", style="bold"))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("origin", Text(report.origin))
    if report.tree_size is not None and report.root_hash is not None:
        facts.add_row(
            "checkpoint",
            Text(
                f"tree size {report.tree_size}, height {report.height}, "
                f"root {report.root_hash.hex()[:16]}…, cut {_time(report.cut_time_ms)}"
            ),
        )
    else:
        facts.add_row("checkpoint", Text("unreadable", style="red"))
    facts.add_row("signed by", Text(", ".join(report.signers) or "no valid member signature"))
    keys = (
        f"pinned: {pinned or 'the trusted consortium'}"
        if report.keys_source == "trusted"
        else "from the bundle itself — NOT pinned"
    )
    facts.add_row(
        "member keys", Text(keys, style="" if report.keys_source == "trusted" else "yellow")
    )
    facts.add_row("quorum", Text(f"{report.quorum} ({report.quorum_source})"))
    console.print(facts)

    if report.entries:
        entries = Table(title="Entries", title_justify="left", show_edge=False)
        entries.add_column("leaf", justify="right")
        entries.add_column("kind")
        entries.add_column("entry id", no_wrap=True, min_width=36)
        entries.add_column("submitter")
        entries.add_column("commitment", no_wrap=True)
        for e in report.entries:
            entries.add_row(
                str(e.leaf_index),
                Text(e.kind or "?"),
                Text(e.entry_id or "undecodable"),
                Text(e.submitter_id or ""),
                Text(e.commitment.hex()[:12] + "…" if e.commitment else ""),
            )
        console.print(entries)

    checks = Table(title="Checks", title_justify="left", show_edge=False)
    checks.add_column("result")
    checks.add_column("check", no_wrap=True)
    checks.add_column("what was found")
    for check in report.checks:
        checks.add_row(
            Text("PASS", style="bold green") if check.ok else Text("FAIL", style="bold red"),
            Text(check.name),
            Text(check.message),
        )
    console.print(checks)
    failed = len(report.failures)
    if report.ok:
        console.print(Text(f"VERIFIED: all {len(report.checks)} checks hold", style="bold green"))
    else:
        console.print(
            Text(
                f"NOT VERIFIED: {failed} of {len(report.checks)} checks failed",
                style="bold red",
            )
        )


def _unreadable(message: str, json_output: bool) -> typer.Exit:
    if json_output:
        typer.echo(json.dumps({"ok": False, "error": message}, indent=2))
    stderr().print(Text(f"swiftchain: {message}", style="bold red"), soft_wrap=True)
    return typer.Exit(EXIT_UNREADABLE)


def verify(
    bundle: Annotated[
        Path,
        typer.Argument(
            metavar="BUNDLE",
            help="The evidence bundle (JSON file; - reads standard input).",
            show_default=False,
        ),
    ],
    document: Annotated[
        Path | None,
        typer.Option(
            "--document",
            metavar="FILE",
            help="The committed document's exact bytes (or, with --canonical-json, a JSON "
            "document committed in its RFC 8785 canonical form); needs --salt.",
        ),
    ] = None,
    canonical_json_document: Annotated[
        bool,
        typer.Option(
            "--canonical-json",
            help="Canonicalize --document (JSON, e.g. FHIR) with RFC 8785 first, as "
            "`swiftchain anchor` and the SDK do for JSON documents.",
        ),
    ] = False,
    salt: Annotated[
        str | None,
        typer.Option(
            "--salt",
            metavar="HEX",
            help="The document's 32-byte salt as 64 hex digits; needs --document.",
        ),
    ] = None,
    consortium: Annotated[
        Path | None,
        typer.Option(
            "--consortium",
            metavar="FILE",
            help="A swiftchain-consortium/v1 file: the member keys, quorum and origin the "
            "bundle must match. Default: the file pinned with `swiftchain config pin`.",
        ),
    ] = None,
    trust_bundle_keys: Annotated[
        bool,
        typer.Option(
            "--trust-bundle-keys",
            help="With no consortium pinned: check the bundle against the keys it carries "
            "(prints a warning; proves only that the bundle is consistent with itself).",
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (for scripts).")
    ] = False,
) -> None:
    source = "standard input" if str(bundle) == STDIN else str(bundle)
    try:
        parsed = parse_bundle(read_input(bundle, "bundle"))
    except UnreadableInputError as exc:
        raise _unreadable(str(exc), json_output) from None
    except InvalidInputError as exc:
        raise _unreadable(
            f"{source} is not a swiftchain-evidence/v1 bundle: {exc}", json_output
        ) from None

    doc_bytes: bytes | None = None
    salt_bytes: bytes | None = None
    try:
        if (document is None) != (salt is None):
            raise UnreadableInputError(
                "--document and --salt go together: the commitment is HMAC-SHA256(salt, document)"
            )
        if document is not None and salt is not None:
            salt_bytes = _salt(salt)
            doc_bytes = read_input(document, "document")
            if canonical_json_document:
                doc_bytes = _canonical(doc_bytes, document)
        pinned = choose_consortium(consortium, trust_bundle_keys, "to check the bundle against")
    except UnreadableInputError as exc:
        raise _unreadable(str(exc), json_output) from None

    try:
        report = _verify(parsed, pinned, doc_bytes, salt_bytes)
    except InvalidInputError as exc:
        raise _unreadable(str(exc), json_output) from None

    if pinned is None:
        stderr().print(Text(TRUST_BUNDLE_KEYS_WARNING, style="bold yellow"), soft_wrap=True)
    if json_output:
        output = {
            "bundle": source,
            "consortium": None if pinned is None else pinned.to_dict(),
            **report.to_dict(),
        }
        typer.echo(json.dumps(output, indent=2))
    else:
        described = None if pinned is None else pinned.describe()
        render_report(report, stdout(), source=source, pinned=described)
    # --trust-bundle-keys only chooses the keys: the verdict is the report's, so a bundle that
    # fails its own checks still exits 1.
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


def choose_consortium(
    option: Path | None, trust_bundle_keys: bool, purpose: str
) -> pinned_consortium.PinnedConsortium | None:
    """The consortium to check evidence against (``--consortium``, else the pinned one), or
    ``None`` for the evidence's own keys (only with ``--trust-bundle-keys`` and nothing
    pinned); UnreadableInputError (exit 2) otherwise. ``purpose`` finishes "expected a pinned
    consortium file ..." (e.g. "to check the bundle against"). Shared by every command that
    checks evidence, so that none of them trusts what a node or a bundle hands it."""
    if option is not None and trust_bundle_keys:
        raise UnreadableInputError(
            "expected --consortium FILE or --trust-bundle-keys, got both: a pinned consortium "
            "is what the evidence's keys are checked against"
        )
    try:
        pinned = pinned_consortium.resolve(option, purpose)
    except PreconditionError as exc:
        if trust_bundle_keys:
            return None
        raise UnreadableInputError(
            f"{exc}; --trust-bundle-keys checks the evidence against its own keys instead, "
            "which proves only that it is consistent with itself"
        ) from None
    except SwiftchainError as exc:
        raise UnreadableInputError(str(exc)) from None
    if trust_bundle_keys:
        # A pin outranks the flag, so the flag can never pass a bundle the pin fails.
        stderr().print(
            Text(
                "swiftchain: --trust-bundle-keys ignored: the evidence is checked against the "
                f"pinned consortium file {pinned.describe()}",
                style="yellow",
            ),
            soft_wrap=True,
        )
    return pinned


def _verify(
    bundle: EvidenceBundle,
    pinned: pinned_consortium.PinnedConsortium | None,
    document: bytes | None,
    salt: bytes | None,
) -> VerificationReport:
    if pinned is None:
        return verify_bundle(bundle, document=document, salt=salt)
    return verify_against_consortium(bundle, pinned.config, document=document, salt=salt)
