"""``swiftchain verify``: check an evidence bundle offline and say what was checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chain.consortium import parse_consortium
from chain.errors import InvalidInputError
from chain.evidence import SALT_SIZE, VerificationReport, parse_bundle, verify_bundle
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
    "Pin the consortium with --consortium: without it the member keys and quorum are the "
    "bundle's own, which proves only that the bundle is consistent with itself.",
    "Exit status: 0 if everything holds, 1 if any check fails, 2 if the input cannot be read "
    "(missing file, not JSON, not a swiftchain-evidence/v1 bundle, a malformed option).",
)

EPILOG = examples(
    "swiftchain verify receipt.json --consortium consortium.json",
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


def render_report(report: VerificationReport, console: Console, *, source: str) -> None:
    """The report for people: what the bundle says, then one row per check, then the verdict."""
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
        "trusted (--consortium)"
        if report.keys_source == "trusted"
        else "from the bundle itself — not pinned; pass --consortium to pin them"
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
            help="A swiftchain-consortium/v1 file: pin the member keys, quorum and origin "
            "to it instead of trusting the bundle's own.",
        ),
    ] = None,
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
    trusted: dict[str, Any] = {}
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
        if consortium is not None:
            try:
                config = parse_consortium(read_input(consortium, "consortium file"))
            except InvalidInputError as exc:
                raise UnreadableInputError(f"{consortium}: {exc}") from None
            trusted = {
                "trusted_verifiers": [m.verifier_key for m in config.members],
                "trusted_quorum": config.quorum,
                "trusted_origin": config.origin,
            }
    except UnreadableInputError as exc:
        raise _unreadable(str(exc), json_output) from None

    try:
        report = verify_bundle(parsed, document=doc_bytes, salt=salt_bytes, **trusted)
    except InvalidInputError as exc:
        raise _unreadable(str(exc), json_output) from None

    if json_output:
        typer.echo(json.dumps({"bundle": source, **report.to_dict()}, indent=2))
    else:
        render_report(report, stdout(), source=source)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)
