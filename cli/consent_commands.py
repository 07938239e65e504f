"""``swiftchain consent ...``: a patient's directives, signed with the device key of a device
folder (``swiftchain identity register-patient``), and a hospital's access check.

Patient commands log in through the identity service's public port and speak TLS without a
client certificate to the consent service's public port. ``check`` speaks mTLS as a hospital.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from rich.table import Table

from cli import identity_files as files
from cli.common import check_target, examples, fail, help_text, stdout
from cli.grpc_client import CALL_TIMEOUT, TlsDirOption, open_channel, open_public_channel
from cli.grpc_client import rpc_error_message as _rpc_error_message
from cli.patient_commands import DEFAULT_PUBLIC, login_token
from sdk.consent import DENY, PERMIT, PatientDevice, bearer, organization, practitioner, provision
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import consent_service_pb2 as pb
from swiftchain.consent.v1 import consent_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2_grpc

app = typer.Typer(
    help="Consent directives signed on a patient's device; access checks for hospitals.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DEFAULT_CONSENT = "127.0.0.1:50053"
DEFAULT_CONSENT_PUBLIC = "127.0.0.1:50153"

DeviceDirOption = Annotated[
    Path, typer.Option("--device-dir", help="The patient's device folder (key, ids, ca.pem).")
]
ConsentPublicOption = Annotated[
    str,
    typer.Option(
        "--consent-public",
        metavar="HOST:PORT",
        help="The consent service's public (TLS) address.",
        callback=check_target,
    ),
]
IdentityPublicOption = Annotated[
    str,
    typer.Option(
        "--identity-public",
        metavar="HOST:PORT",
        help="The identity service's public address, to log in.",
        callback=check_target,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@contextmanager
def _as_patient(
    device_dir: Path, identity_public: str, consent_public: str
) -> Iterator[
    tuple[PatientDevice, consent_service_pb2_grpc.ConsentServiceStub, tuple[tuple[str, str], ...]]
]:
    ca_file = device_dir / files.CA_FILE
    if not (device_dir / files.DEVICE_FILE).exists():
        fail(f"expected a device folder with {files.DEVICE_FILE}, got {device_dir}")
    target = identity_public
    try:
        with open_public_channel(identity_public, ca_file) as channel:
            token = login_token(identity_service_pb2_grpc.IdentityServiceStub(channel), device_dir)
        target = consent_public
        with open_public_channel(consent_public, ca_file) as channel:
            yield (
                PatientDevice.from_folder(device_dir),
                consent_service_pb2_grpc.ConsentServiceStub(channel),
                bearer(token),
            )
    except grpc.RpcError as error:
        fail(_rpc_error_message(target, error).replace("node ", "service ", 1))


def _print_version(version: pb.ConsentVersion, as_json: bool) -> None:
    if as_json:
        stdout().print_json(json.dumps(MessageToDict(version)))
        return
    directive = version.directive
    stdout().print(
        f"directive {directive.directive_id} version {directive.version} accepted; "
        f"CONSENT entry {version.proof.entry_id}"
    )


@app.command(
    "grant",
    help=help_text(
        "Grant a hospital (or one practitioner) access to categories of your data for purposes, "
        "signed with your device key. --except-category carves out categories (a nested deny).",
        examples(
            "swiftchain consent grant --device-dir ./me --to hospital-b --purpose TREAT "
            "--category laboratory --except-category mental-health --until 2027-06-30",
        ),
    ),
    no_args_is_help=True,
)
def grant(
    device_dir: DeviceDirOption,
    to: Annotated[str, typer.Option("--to", metavar="ORG", help="The grantee hospital.")] = "",
    to_practitioner: Annotated[
        str, typer.Option("--to-practitioner", metavar="ID", help="Or one practitioner.")
    ] = "",
    purposes: Annotated[
        list[str] | None, typer.Option("--purpose", help="HL7 PurposeOfUse code (repeat).")
    ] = None,
    categories: Annotated[
        list[str] | None, typer.Option("--category", help="Data category (repeat); none: all.")
    ] = None,
    except_categories: Annotated[
        list[str] | None,
        typer.Option("--except-category", help="Category denied inside the grant (repeat)."),
    ] = None,
    deny: Annotated[bool, typer.Option("--deny", help="An explicit deny instead.")] = False,
    until: Annotated[
        datetime | None, typer.Option("--until", help="End of the period (UTC).")
    ] = None,
    identity_public: IdentityPublicOption = DEFAULT_PUBLIC,
    consent_public: ConsentPublicOption = DEFAULT_CONSENT_PUBLIC,
    as_json: JsonOption = False,
) -> None:
    """Grant (see ``help`` above)."""
    if bool(to) == bool(to_practitioner):
        fail("expected exactly one of --to and --to-practitioner")
    rule = provision(
        DENY if deny else PERMIT,
        purposes=purposes or (),
        categories=categories or (),
        end=until.replace(tzinfo=UTC) if until else None,
        nested=[provision(DENY, categories=[c]) for c in except_categories or ()],
    )
    grantee = organization(to) if to else practitioner(to_practitioner)
    with _as_patient(device_dir, identity_public, consent_public) as (device, stub, metadata):
        signed = device.sign_directive(device.directive(grantee=grantee, provision=rule))
        response = stub.GrantConsent(
            pb.GrantConsentRequest(signed_directive=signed), metadata=metadata, timeout=CALL_TIMEOUT
        )
    _print_version(response.consent_version, as_json)


@app.command(
    "revoke",
    help=help_text(
        "Revoke one of your directives (a new signed version).",
        examples("swiftchain consent revoke --device-dir ./me 0b6c…"),
    ),
    no_args_is_help=True,
)
def revoke(
    directive_id: Annotated[str, typer.Argument(metavar="DIRECTIVE_ID")],
    device_dir: DeviceDirOption,
    identity_public: IdentityPublicOption = DEFAULT_PUBLIC,
    consent_public: ConsentPublicOption = DEFAULT_CONSENT_PUBLIC,
    as_json: JsonOption = False,
) -> None:
    """Revoke (see ``help`` above)."""
    with _as_patient(device_dir, identity_public, consent_public) as (device, stub, metadata):
        current = stub.GetConsent(
            pb.GetConsentRequest(directive_id=directive_id), metadata=metadata, timeout=CALL_TIMEOUT
        ).consent.current
        signed = device.sign_directive(device.next_version(current, revoke=True))
        response = stub.RevokeConsent(
            pb.RevokeConsentRequest(signed_directive=signed),
            metadata=metadata,
            timeout=CALL_TIMEOUT,
        )
    _print_version(response.consent_version, as_json)


@app.command(
    "list",
    help=help_text(
        "List your directives (all pages).",
        examples("swiftchain consent list --device-dir ./me"),
    ),
    no_args_is_help=True,
)
def list_consents(
    device_dir: DeviceDirOption,
    identity_public: IdentityPublicOption = DEFAULT_PUBLIC,
    consent_public: ConsentPublicOption = DEFAULT_CONSENT_PUBLIC,
    as_json: JsonOption = False,
) -> None:
    """List (see ``help`` above)."""
    response = pb.ListConsentsResponse()
    with _as_patient(device_dir, identity_public, consent_public) as (device, stub, metadata):
        request = pb.ListConsentsRequest(
            patient_subject_id=device.subject_id, include_delegations=True
        )
        while True:
            page = stub.ListConsents(request, metadata=metadata, timeout=CALL_TIMEOUT)
            response.consents.extend(page.consents)
            response.delegations.extend(page.delegations)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    if as_json:
        stdout().print_json(json.dumps(MessageToDict(response)))
        return
    table = Table("directive", "version", "grantee", "status", "entry")
    for consent in response.consents:
        grantee = (
            consent.grantee.organization_id or f"practitioner {consent.grantee.practitioner_id}"
        )
        table.add_row(
            consent.directive_id,
            str(consent.current.directive.version),
            grantee,
            "revoked" if consent.status == entry_pb2.DIRECTIVE_STATUS_REVOKED else "active",
            consent.current.proof.entry_id,
        )
    stdout().print(table)


@app.command(
    "export",
    help=help_text(
        "Print a directive as a FHIR R4 Consent resource.",
        examples("swiftchain consent export --device-dir ./me 0b6c… > consent.json"),
    ),
    no_args_is_help=True,
)
def export(
    directive_id: Annotated[str, typer.Argument(metavar="DIRECTIVE_ID")],
    device_dir: DeviceDirOption,
    identity_public: IdentityPublicOption = DEFAULT_PUBLIC,
    consent_public: ConsentPublicOption = DEFAULT_CONSENT_PUBLIC,
) -> None:
    """Export (see ``help`` above)."""
    with _as_patient(device_dir, identity_public, consent_public) as (_, stub, metadata):
        response = stub.ExportConsent(
            pb.ExportConsentRequest(directive_id=directive_id),
            metadata=metadata,
            timeout=CALL_TIMEOUT,
        )
    typer.echo(response.fhir_json)


@app.command(
    "check",
    help=help_text(
        "As a hospital (mTLS), ask whether you may access a category of a patient's data for a "
        "purpose. The decision is recorded on the log.",
        examples(
            "swiftchain consent check --tls-dir ./hospital-b --patient pt-… --category laboratory "
            "--purpose TREAT"
        ),
    ),
    no_args_is_help=True,
)
def check(
    patient: Annotated[str, typer.Option("--patient", metavar="SUBJECT_ID")],
    category: Annotated[str, typer.Option("--category")],
    purpose: Annotated[str, typer.Option("--purpose")] = "TREAT",
    practitioner_id: Annotated[str, typer.Option("--practitioner", metavar="ID")] = "",
    tls_dir: TlsDirOption = None,
    consent: Annotated[
        str, typer.Option("--consent", metavar="HOST:PORT", callback=check_target)
    ] = DEFAULT_CONSENT,
    as_json: JsonOption = False,
) -> None:
    """Check (see ``help`` above)."""
    try:
        with open_channel(consent, tls_dir) as channel:
            response = consent_service_pb2_grpc.ConsentServiceStub(channel).CheckAccess(
                pb.CheckAccessRequest(
                    patient_subject_id=patient,
                    data_category=category,
                    purpose=purpose,
                    practitioner_id=practitioner_id,
                    request_id=str(uuid.uuid4()),
                ),
                timeout=CALL_TIMEOUT,
            )
    except grpc.RpcError as error:
        fail(_rpc_error_message(consent, error).replace("node ", "consent ", 1))
    if as_json:
        stdout().print_json(json.dumps(MessageToDict(response)))
        return
    decision = common_pb2.AccessDecision.Name(response.decision).removeprefix("ACCESS_DECISION_")
    reason = common_pb2.AccessReason.Name(response.reason).removeprefix("ACCESS_REASON_")
    decided_by = (
        f" by directive {response.deciding_directive_id} v{response.deciding_directive_version}"
        if response.deciding_directive_id
        else ""
    )
    stdout().print(
        f"{decision} ({reason.lower()}){decided_by}; ACCESS entry {response.access_entry_id}"
    )
