"""``swiftchain audit ...``: the regulator's tools, over mTLS to the audit service.

``trail`` lists who did what about a patient (or by an organization), each item with its entry
id and proof state; ``export`` writes an evidence bundle that ``swiftchain verify`` checks
offline; ``completeness`` scans the log for a patient's blinded tag; ``flags`` and ``review``
work through what needs a person's judgement; ``fhir`` writes IHE BALP AuditEvent resources.
Hospitals and patients may use ``trail`` for what they are allowed to see.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import (
    check_target,
    examples,
    fail,
    help_text,
    read_input,
    stderr,
    stdout,
    write_output,
)
from cli.grpc_client import TlsDirOption, open_channel, rpc_error_message
from sdk.audit import enum_word, item_detail, proof_state
from swiftchain.audit.v1 import audit_service_pb2 as pb
from swiftchain.audit.v1 import audit_service_pb2_grpc
from swiftchain.common.v1 import common_pb2

app = typer.Typer(
    help="The regulator's tools: trails with proofs, evidence, completeness, flags, FHIR.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DEFAULT_AUDIT: Final = "127.0.0.1:50054"
EXPORT_TIMEOUT: Final = 300.0
"""Seconds allowed for an export: the service reads every proof of the trail from a node."""
QUERY_TIMEOUT: Final = 60.0


class Kind(StrEnum):
    """Entry kinds a trail can be narrowed to."""

    record = "record"
    consent = "consent"
    access = "access"
    key = "key"


class FlagKindChoice(StrEnum):
    """Flag kinds, as ``--kind`` takes them."""

    break_glass = "break-glass"
    access_without_consent = "access-without-consent"
    denial_burst = "denial-burst"
    incomplete_trail = "incomplete-trail"
    seal_deadline_missed = "seal-deadline-missed"
    cosignature_conflict = "cosignature-conflict"
    bad_checkpoint = "bad-checkpoint"


class FlagStatusChoice(StrEnum):
    """Flag states, as ``--status`` takes them."""

    open = "open"
    reviewed = "reviewed"
    all = "all"


class Outcome(StrEnum):
    """A review's outcome."""

    justified = "justified"
    unjustified = "unjustified"
    false_positive = "false-positive"
    escalated = "escalated"


def _enum_value(enum: Any, prefix: str, choice: StrEnum) -> Any:
    return enum.Value(prefix + str(choice.value).upper().replace("-", "_"))


AuditOption = Annotated[
    str,
    typer.Option(
        "--audit", metavar="HOST:PORT", help="The audit service's address.", callback=check_target
    ),
]
PatientOption = Annotated[
    str, typer.Option("--patient", metavar="SUBJECT", help="The patient's subject id.")
]
OrganizationOption = Annotated[
    str, typer.Option("--organization", metavar="ORG", help="Only what this organization did.")
]
KindOption = Annotated[
    list[Kind] | None, typer.Option("--kind", help="Only entries of this kind (repeat).")
]
SinceOption = Annotated[
    datetime | None, typer.Option("--since", help="Only entries at or after this time (UTC).")
]
UntilOption = Annotated[
    datetime | None, typer.Option("--until", help="Only entries before this time (UTC).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@contextmanager
def _audit(target: str, tls_dir: Path | None) -> Iterator[audit_service_pb2_grpc.AuditServiceStub]:
    try:
        with open_channel(target, tls_dir) as channel:
            yield audit_service_pb2_grpc.AuditServiceStub(channel)
    except grpc.RpcError as error:
        fail(rpc_error_message(target, error).replace("node ", "audit service ", 1))


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return stamp


def _filter(
    patient: str,
    organization: str,
    kinds: list[Kind] | None,
    since: datetime | None,
    until: datetime | None,
) -> pb.TrailFilter:
    if not patient and not organization:
        fail("expected --patient or --organization (or both), got neither", 2)
    return pb.TrailFilter(
        patient_subject_id=patient,
        organization_id=organization,
        kinds=[_enum_value(common_pb2.EntryKind, "ENTRY_KIND_", k) for k in kinds or ()],
        start_time=_timestamp(since),
        end_time=_timestamp(until),
    )


def _print_json(message: Any) -> None:
    stdout().print_json(json.dumps(MessageToDict(message)))


def _item_row(item: pb.TrailItem) -> tuple[str, ...]:
    return (
        item.time.ToDatetime(UTC).isoformat(timespec="seconds"),
        enum_word(item.kind, common_pb2.EntryKind),
        item.actor_organization_id or "(patient)",
        item_detail(item),
        proof_state(item.proof),
        item.entry_id,
        ",".join(item.flag_ids),
    )


_ITEM_COLUMNS: Final = ("time", "kind", "actor", "what", "proof", "entry", "flags")


@app.command(
    "trail",
    help=help_text(
        "Who did what about a patient, or by an organization: every record version, consent "
        "and access decision, oldest first, each with its entry id and proof state. A "
        "regulator sees every trail, a hospital its own accesses and records, a patient their "
        "own. --follow keeps listening for new entries; --json prints one JSON object a line.",
        examples(
            "swiftchain audit trail --patient pt-abc --tls-dir ./regulator",
            "swiftchain audit trail --organization hospital-c --kind access --since 2026-12-01",
            "swiftchain audit trail --patient pt-abc --follow --json",
        ),
    ),
    no_args_is_help=True,
)
def trail(
    patient: PatientOption = "",
    organization: OrganizationOption = "",
    kinds: KindOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep the stream open for new entries.")
    ] = False,
    audit: AuditOption = DEFAULT_AUDIT,
    tls_dir: TlsDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Trail (see ``help`` above)."""
    request = pb.StreamTrailRequest(
        filter=_filter(patient, organization, kinds, since, until), follow=follow
    )
    out = stdout()
    table = Table(*_ITEM_COLUMNS, show_edge=False)
    count = 0
    with _audit(audit, tls_dir) as stub:
        try:
            for message in stub.StreamTrail(request, timeout=None if follow else QUERY_TIMEOUT):
                count += 1
                if as_json:
                    out.print(json.dumps(MessageToDict(message.item)), soft_wrap=True)
                elif follow:
                    out.print("  ".join(_item_row(message.item)), soft_wrap=True)
                else:
                    table.add_row(*_item_row(message.item))
        except KeyboardInterrupt:
            return
    if not as_json and not follow:
        out.print(table)
        out.print(f"{count} item{'s' if count != 1 else ''}")


@app.command(
    "export",
    help=help_text(
        "Write an evidence bundle (swiftchain-evidence/v1) for a trail, or for named entries: "
        "one sealed checkpoint, every entry's bytes and inclusion proof, and with "
        "--since-checkpoint a consistency proof from a checkpoint you already hold. Check it "
        "offline with `swiftchain verify FILE --consortium CONSORTIUM` (or with the consortium "
        "file pinned by `swiftchain config pin`). Entries not yet sealed are listed, not "
        "exported.",
        examples(
            "swiftchain audit export --patient pt-abc --out evidence.json",
            "swiftchain audit export --entry-id 7f0c... --since-checkpoint old.note --out e.json",
        ),
    ),
    no_args_is_help=True,
)
def export(
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Where to write the bundle.")],
    patient: PatientOption = "",
    organization: OrganizationOption = "",
    kinds: KindOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    entry_ids: Annotated[
        list[str] | None,
        typer.Option("--entry-id", metavar="ID", help="An entry to prove (repeat)."),
    ] = None,
    since_checkpoint: Annotated[
        Path | None,
        typer.Option("--since-checkpoint", metavar="FILE", help="A sealed checkpoint you hold."),
    ] = None,
    audit: AuditOption = DEFAULT_AUDIT,
    tls_dir: TlsDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export (see ``help`` above)."""
    request = pb.ExportEvidenceRequest()
    if entry_ids:
        if patient or organization:
            fail("expected --entry-id or a trail filter (--patient/--organization), got both", 2)
        request.entry_ids.entry_ids.extend(entry_ids)
    else:
        request.filter.CopyFrom(_filter(patient, organization, kinds, since, until))
    if since_checkpoint is not None:
        request.since_checkpoint = read_input(since_checkpoint, "checkpoint").decode(
            "utf-8", errors="replace"
        )
    with _audit(audit, tls_dir) as stub, _progress() as progress:
        progress.add_task("the audit service is gathering every proof", total=None)
        response = stub.ExportEvidence(request, timeout=EXPORT_TIMEOUT)
    if response.entry_count == 0:
        waiting = len(response.unsealed_entry_ids)
        fail(
            "nothing to export: no sealed entry matches"
            + (f" ({waiting} not sealed yet)" if waiting else "")
        )
    write_output(out, response.evidence.json.encode(), "evidence bundle")
    if as_json:
        summary = MessageToDict(response)
        summary.pop("evidence", None)
        summary["path"] = str(out)
        stdout().print_json(json.dumps(summary))
        return
    console = stdout()
    console.print(f"wrote evidence for {response.entry_count} entries to {out}", soft_wrap=True)
    for label, ids in (
        ("not sealed yet (ask again later)", response.unsealed_entry_ids),
        ("rejected by the log (never provable)", response.rejected_entry_ids),
    ):
        if ids:
            console.print(f"{len(ids)} {label}: {', '.join(ids)}", soft_wrap=True)
    console.print(
        f"check it offline against the consortium file you hold: swiftchain verify {out} "
        "--consortium CONSORTIUM (or pin it once: swiftchain config pin CONSORTIUM)",
        soft_wrap=True,
    )


@contextmanager
def _progress() -> Iterator[Progress]:
    # On standard error, so that --json output stays clean; only when that is a terminal.
    console = stderr()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        yield progress


@app.command(
    "completeness",
    help=help_text(
        "Scan the log for every entry carrying the patient's blinded subject tag and compare "
        "it with the audit service's trail. Exits 0 when both agree, 1 when anything is "
        "missing on either side (and lists it).",
        examples("swiftchain audit completeness --patient pt-abc"),
    ),
    no_args_is_help=True,
)
def completeness(
    patient: Annotated[
        str, typer.Option("--patient", metavar="SUBJECT", help="The patient's subject id.")
    ],
    audit: AuditOption = DEFAULT_AUDIT,
    tls_dir: TlsDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Completeness (see ``help`` above)."""
    with _audit(audit, tls_dir) as stub, _progress() as progress:
        progress.add_task("scanning the log for the patient's tag", total=None)
        answer = stub.CheckCompleteness(
            pb.CheckCompletenessRequest(patient_subject_id=patient), timeout=EXPORT_TIMEOUT
        )
    if as_json:
        _print_json(answer)
    else:
        console = stdout()
        if answer.complete:
            console.print(
                f"complete: the trail of {patient} holds every entry with its tag in the log "
                f"up to size {answer.checked_tree_size}",
                soft_wrap=True,
            )
        for label, ids in (
            ("in the log but missing from the trail", answer.missing_in_read_model),
            ("in the trail but not in the log", answer.missing_in_log),
        ):
            if ids:
                console.print(f"INCOMPLETE: {len(ids)} {label}: {', '.join(ids)}", soft_wrap=True)
    if not answer.complete:
        raise typer.Exit(1)


@app.command(
    "flags",
    help=help_text(
        "What needs review: break-glass accesses, accesses without a permitting consent, "
        "bursts of denials, entries that missed their merge delay, cosignature conflicts. "
        "Open flags by default.",
        examples(
            "swiftchain audit flags",
            "swiftchain audit flags --kind break-glass --patient pt-abc --status all --json",
        ),
    ),
)
def flags(
    status: Annotated[
        FlagStatusChoice, typer.Option("--status", help="Which flags.")
    ] = FlagStatusChoice.open,
    kinds: Annotated[
        list[FlagKindChoice] | None, typer.Option("--kind", help="Only this kind (repeat).")
    ] = None,
    patient: PatientOption = "",
    organization: OrganizationOption = "",
    audit: AuditOption = DEFAULT_AUDIT,
    tls_dir: TlsDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Flags (see ``help`` above)."""
    request = pb.ListFlagsRequest(
        status=(
            pb.FLAG_STATUS_UNSPECIFIED
            if status is FlagStatusChoice.all
            else _enum_value(pb.FlagStatus, "FLAG_STATUS_", status)
        ),
        kinds=[_enum_value(pb.FlagKind, "FLAG_KIND_", k) for k in kinds or ()],
        organization_id=organization,
        patient_subject_id=patient,
        page_size=500,
    )
    found: list[pb.Flag] = []
    with _audit(audit, tls_dir) as stub:
        while True:
            page = stub.ListFlags(request, timeout=QUERY_TIMEOUT)
            found.extend(page.flags)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    if as_json:
        stdout().print_json(json.dumps({"flags": [MessageToDict(f) for f in found]}))
        return
    table = Table("flag", "kind", "status", "organization", "patient", "entries", "summary")
    for flag in found:
        table.add_row(
            flag.flag_id,
            enum_word(flag.kind, pb.FlagKind),
            enum_word(flag.status, pb.FlagStatus)
            + (
                f" ({enum_word(flag.review.outcome, pb.ReviewOutcome)})"
                if flag.HasField("review")
                else ""
            ),
            flag.organization_id,
            flag.patient_subject_id,
            str(len(flag.entry_ids)),
            flag.summary,
        )
    console = stdout()
    console.print(table)
    console.print(f"{len(found)} flag{'s' if len(found) != 1 else ''}")


@app.command(
    "review",
    help=help_text(
        "Record your review of a flag: its outcome and a note saying why. The review is kept by "
        "the audit service (it changes nothing on the log).",
        examples(
            "swiftchain audit review 3f2a... --outcome justified --note 'ER admission, verified'"
        ),
    ),
    no_args_is_help=True,
)
def review(
    flag_id: Annotated[str, typer.Argument(metavar="FLAG_ID", help="The flag to review.")],
    outcome: Annotated[Outcome, typer.Option("--outcome", help="Your finding.")],
    note: Annotated[str, typer.Option("--note", help="Why (required).")],
    audit: AuditOption = DEFAULT_AUDIT,
    tls_dir: TlsDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Review (see ``help`` above)."""
    request = pb.ReviewFlagRequest(
        flag_id=flag_id,
        outcome=_enum_value(pb.ReviewOutcome, "REVIEW_OUTCOME_", outcome),
        note=note,
    )
    with _audit(audit, tls_dir) as stub:
        flag = stub.ReviewFlag(request, timeout=QUERY_TIMEOUT).flag
    if as_json:
        _print_json(flag)
        return
    stdout().print(
        f"flag {flag.flag_id} reviewed: {enum_word(flag.review.outcome, pb.ReviewOutcome)} by "
        f"{flag.review.reviewer_id}",
        soft_wrap=True,
    )


@app.command(
    "fhir",
    help=help_text(
        "Write the trail as FHIR R4 AuditEvent resources (IHE BALP) in one collection Bundle.",
        examples("swiftchain audit fhir --patient pt-abc --out audit-events.json"),
    ),
    no_args_is_help=True,
)
def fhir(
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Where to write the Bundle.")],
    patient: PatientOption = "",
    organization: OrganizationOption = "",
    kinds: KindOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    audit: AuditOption = DEFAULT_AUDIT,
    tls_dir: TlsDirOption = None,
) -> None:
    """FHIR (see ``help`` above)."""
    request = pb.ExportAuditEventsRequest(
        filter=_filter(patient, organization, kinds, since, until), page_size=500
    )
    entries: list[Any] = []
    bundle: dict[str, Any] = {}
    with _audit(audit, tls_dir) as stub, _progress() as progress:
        task = progress.add_task("AuditEvent resources: 0", total=None)
        while True:
            page = stub.ExportAuditEvents(request, timeout=EXPORT_TIMEOUT)
            bundle = json.loads(page.fhir_json)
            entries.extend(bundle.get("entry", []))
            progress.update(task, description=f"AuditEvent resources: {len(entries):,}")
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    bundle["entry"] = entries  # one collection Bundle of every page's resources
    write_output(out, json.dumps(bundle, indent=2).encode(), "FHIR bundle")
    stdout().print(f"wrote {len(entries)} AuditEvent resources to {out}", soft_wrap=True)
