"""``swiftchain anchor FILE``: anchor one version of a document as a hospital, through the SDK.

The hospital is the organization folder of ``swiftchain identity register-org`` (``--org``): its
mTLS certificate says who calls, its ``signing-key.pem`` signs the RECORD entry. The document
never leaves the machine: only its salted commitment goes to the service. What the hospital
must keep (the salt, secret, beside the document) is written to ``FILE.anchor.json`` (mode 0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import grpc
import typer

from chain.errors import SwiftchainError, VerificationError
from cli import identity_files as files
from cli import pinned_consortium
from cli.common import (
    EXIT_UNREADABLE,
    UnreadableInputError,
    check_target,
    examples,
    fail,
    help_text,
    read_input,
    stdout,
    write_output,
)
from cli.defaults import local_consortium_dir
from cli.grpc_client import CALL_TIMEOUT, open_channel, rpc_code, rpc_error_message
from sdk.anchoring import HospitalClient, RecordVersionDraft
from sdk.commitments import canonical_json
from services.platform.consortium_files import ConsortiumFiles
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from swiftchain.common.v1 import common_pb2

DEFAULT_ANCHORING: Final = "127.0.0.1:50052"
TAG_KEY_ENV: Final = "SWIFTCHAIN_TAG_KEY"
RECEIPT_WAIT_SECONDS: Final = 60.0

ACTIONS: Final = {
    "create": common_pb2.RECORD_ACTION_CREATE,
    "amend": common_pb2.RECORD_ACTION_AMEND,
    "correct": common_pb2.RECORD_ACTION_CORRECT,
    "merge": common_pb2.RECORD_ACTION_MERGE,
    "erase": common_pb2.RECORD_ACTION_ERASE,
}

HELP = help_text(
    "Anchor one version of a document: its salted commitment goes on the consortium log, "
    "signed with your hospital's key. The document itself never leaves this machine.",
    "A .json file (a FHIR resource) is committed in its RFC 8785 canonical form, anything else "
    "byte for byte (--exact-bytes forces that for JSON too). The version defaults to the next "
    "one of the record; later versions are chained to the previous version's commitment.",
    "Writes FILE.anchor.json (mode 0600): the entry id, the commitment and its SALT, which is "
    "secret, must be kept with the document and is what later proves it. With --wait, also "
    "waits for the sealed receipt, checks it offline against the pinned consortium "
    "(--consortium FILE, or the file pinned with `swiftchain config pin`) and writes it to "
    "FILE.receipt.json for `swiftchain verify`.",
    "Exit status: 0 anchored, 1 refused or unreachable (the message says why), 2 unreadable "
    "input or no consortium pinned.",
)

EPILOG = examples(
    "swiftchain config pin consortium.json",
    "swiftchain anchor obs-1.json --org hospital-a/ --record obs-1 --subject pt-77 --wait",
    "swiftchain anchor obs-1.json --org hospital-a/ --record obs-1 --subject pt-77 "
    "--action correct --reason entered-in-error",
    "swiftchain verify obs-1.json.receipt.json --document obs-1.json --canonical-json "
    "--salt $(jq -r .salt obs-1.json.anchor.json)",
)


@dataclass(frozen=True)
class _Hospital:
    organization_id: str
    key_id: str
    folder: Path


def default_tag_key() -> Path:
    """``$SWIFTCHAIN_TAG_KEY``, else the local stack's consortium tag key."""
    configured = os.environ.get(TAG_KEY_ENV)
    if configured:
        return Path(configured)
    return ConsortiumFiles(local_consortium_dir()).tag_key_path


def document_bytes(path: Path, *, exact: bool) -> tuple[bytes, str]:
    """What is committed for ``path`` and its form: ``rfc8785`` for a .json file (unless
    ``exact``), else ``bytes``. UnreadableInputError if it cannot be read or parsed."""
    raw = read_input(path, "document")
    if exact or path.suffix.lower() != ".json":
        return raw, "bytes"
    try:
        return canonical_json(json.loads(raw)), "rfc8785"
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableInputError(
            f"{path} is not JSON ({exc}); pass --exact-bytes to commit its bytes as they are"
        ) from None


def _hospital(folder: Path) -> _Hospital:
    try:
        about = files.read_json(folder / files.ORGANIZATION_FILE)
        return _Hospital(str(about["organization_id"]), str(about["key_id"]), folder)
    except (OSError, ValueError, KeyError) as exc:
        raise UnreadableInputError(
            f"--org {folder}: expected an organization folder from `swiftchain identity "
            f"register-org` with {files.ORGANIZATION_FILE}, got: {exc}"
        ) from None


def _tag_key(path: Path) -> bytes:
    key = read_input(path, "consortium tag key")
    if len(key) != 32:
        raise UnreadableInputError(
            f"--tag-key {path}: expected the consortium's 32-byte tag key, got {len(key)} bytes"
        )
    return key


def _previous(client: HospitalClient, record_id: str, version: int | None) -> tuple[int, bytes]:
    """The version to anchor and the previous version's commitment (b"" for version 1)."""
    known: list[pb.RecordVersion] = []
    try:
        known = list(client.provenance(record_id).versions)
    except grpc.RpcError as error:
        if rpc_code(error) is not grpc.StatusCode.NOT_FOUND:
            raise
    chosen = version if version is not None else len(known) + 1
    if chosen == 1:
        return 1, b""
    by_version = {v.version: v for v in known}
    if chosen - 1 not in by_version:
        fail(
            f"record {record_id} has no version {chosen - 1} anchored yet "
            f"(it has {len(known)}); anchor versions in order"
        )
    return chosen, bytes(by_version[chosen - 1].commitment)


def _summary(
    hospital: _Hospital,
    draft: RecordVersionDraft,
    receipt: pb.PromiseReceipt,
    form: str,
    document: Path,
) -> dict[str, Any]:
    return {
        "organization_id": hospital.organization_id,
        "record_id": draft.record_id,
        "version": draft.version,
        "action": common_pb2.RecordAction.Name(draft.action),  # type: ignore[arg-type]
        "document": str(document),
        "document_form": form,
        "commitment": draft.commitment.value.hex(),
        "salt": draft.commitment.salt.hex(),
        "entry_id": receipt.entry_id,
        "leaf_hash": receipt.leaf_hash.hex(),
        "ordering_offset": receipt.ordering_offset,
        "seal_due_time": receipt.seal_due_time.ToJsonString(),
    }


def anchor(
    document: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="The document version to anchor.", show_default=False),
    ],
    org: Annotated[
        Path,
        typer.Option(
            "--org",
            metavar="DIR",
            help="Your hospital's folder (swiftchain identity register-org --out DIR): its "
            "certificate, signing key and organization.json.",
        ),
    ],
    record_id: Annotated[
        str, typer.Option("--record", metavar="ID", help="Your record id (kept off the log).")
    ],
    subject_id: Annotated[
        str,
        typer.Option(
            "--subject",
            metavar="ID",
            help="The patient's subject id (only its blinded tag goes on the log).",
        ),
    ],
    version: Annotated[
        int | None,
        typer.Option("--version", min=1, help="The version number (default: the next one)."),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help="create, amend, correct, merge or erase (default: create for version 1, "
            "amend after).",
        ),
    ] = None,
    author: Annotated[
        str, typer.Option("--author", metavar="ID", help="The authoring practitioner's id.")
    ] = "",
    reason: Annotated[
        str, typer.Option("--reason", metavar="CODE", help="The reason code (on the log).")
    ] = "clinical-update",
    reason_text: Annotated[
        str,
        typer.Option("--reason-text", metavar="TEXT", help="Free text (kept off the log)."),
    ] = "",
    exact_bytes: Annotated[
        bool,
        typer.Option("--exact-bytes", help="Commit a .json file's bytes as they are."),
    ] = False,
    tag_key: Annotated[
        Path | None,
        typer.Option(
            "--tag-key",
            metavar="FILE",
            help=f"The consortium's 32-byte tag key. Default: ${TAG_KEY_ENV}, else the local "
            "stack's.",
            show_default=False,
        ),
    ] = None,
    consortium: Annotated[
        Path | None,
        typer.Option(
            "--consortium",
            metavar="FILE",
            help="The swiftchain-consortium/v1 file receipts are checked against. Default: the "
            "file pinned with `swiftchain config pin`.",
            show_default=False,
        ),
    ] = None,
    anchoring: Annotated[
        str,
        typer.Option(
            "--anchoring",
            metavar="HOST:PORT",
            help="The anchoring service's mTLS address.",
            callback=check_target,
        ),
    ] = DEFAULT_ANCHORING,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait for the sealed receipt, verify it and write it to FILE.receipt.json.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Where to write the anchor record (default: FILE.anchor.json).",
            show_default=False,
        ),
    ] = None,
) -> None:
    action_value: int | None = None
    if action is not None:
        if action not in ACTIONS:
            raise typer.BadParameter(
                f"expected an action among {', '.join(ACTIONS)}, got {action!r}",
                param_hint="--action",
            )
        action_value = ACTIONS[action]
    try:
        hospital = _hospital(org)
        signing_key = files.load_ed25519(org / files.SIGNING_KEY_FILE)
        key = _tag_key(tag_key or default_tag_key())
        raw, form = document_bytes(document, exact=exact_bytes)
        pinned = pinned_consortium.resolve(consortium, "to check receipts against")
    except (UnreadableInputError, SwiftchainError, OSError, ValueError) as exc:
        fail(str(exc), EXIT_UNREADABLE)
    anchor_file = out or document.with_name(document.name + ".anchor.json")
    try:
        with open_channel(anchoring, org) as channel:
            client = HospitalClient(
                channel,
                hospital.organization_id,
                hospital.key_id,
                signing_key,
                key,
                consortium=pinned.config,
            )
            chosen, previous = _previous(client, record_id, version)
            draft = client.record_version(
                record_id,
                chosen,
                raw,
                subject_id=subject_id,
                action=action_value,
                previous_commitment=previous,
                author_practitioner_id=author,
                reason_code=reason,
                reason_text=reason_text,
            )
            promise = client.anchor_one(draft, timeout=CALL_TIMEOUT)
            summary = _summary(hospital, draft, promise, form, document)
            files.write_secret(anchor_file, (json.dumps(summary, indent=2) + "\n").encode())
            console = stdout()
            console.print(
                f"anchored {record_id} v{chosen} as entry {promise.entry_id} "
                f"(ordering offset {promise.ordering_offset}, sealed by "
                f"{promise.seal_due_time.ToJsonString()})"
            )
            console.print(f"salt and commitment in {anchor_file} (keep it secret, with the file)")
            if wait:
                bundle = client.receipt(promise.entry_id, wait=True, timeout=RECEIPT_WAIT_SECONDS)
                if not bundle:
                    fail(f"entry {promise.entry_id} was not sealed (see GetReceipt for why)")
                receipt_file = document.with_name(document.name + ".receipt.json")
                write_output(receipt_file, bundle.encode(), "receipt")
                console.print(
                    f"sealed; receipt verified against {pinned.describe()} and written to "
                    f"{receipt_file}",
                    soft_wrap=True,
                )
    except grpc.RpcError as error:
        fail(rpc_error_message(anchoring, error).replace("node ", "anchoring ", 1))
    except VerificationError as exc:
        fail(str(exc))
