"""``swiftchain identity ...``: organizations, their keys and certificates.

These commands speak mTLS to the identity service's main port as the consortium admin (or as
the organization itself, for its own keys and certificate): ``--tls-dir``. An organization's
keys are made on its own machine (``org-keygen``) and registered from a request holding their
public parts only (``register-org --request``).

Changing keys takes more than who you are: ``rotate-key`` and ``revoke-key`` sign the request
with the organization's active signing key (its folder's ``signing-key.pem``; sdk/identity.py
builds the requests). The patients' commands of the same group are in cli/patient_commands.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.table import Table

from cli import identity_files as files
from cli.common import EXIT_UNREADABLE, check_target, examples, fail, help_text, stdout
from cli.grpc_client import (
    CALL_TIMEOUT,
    TlsDirOption,
    open_channel,
)
from cli.grpc_client import rpc_error_message as _rpc_error_message
from sdk.identity import (
    OrganizationSigningKey,
)
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.identity.v1 import identity_pb2, identity_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as pb

app = typer.Typer(
    help="Organizations, their signing keys and certificates; patients and their devices.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DEFAULT_IDENTITY = "127.0.0.1:50051"

IdentityOption = Annotated[
    str,
    typer.Option(
        "--identity",
        metavar="HOST:PORT",
        help="The identity service's mTLS address.",
        callback=check_target,
    ),
]
_ROLES = {
    "hospital": common_pb2.ORGANIZATION_ROLE_HOSPITAL,
    "regulator": common_pb2.ORGANIZATION_ROLE_REGULATOR,
    "app": common_pb2.ORGANIZATION_ROLE_APP_OPERATOR,
    "admin": common_pb2.ORGANIZATION_ROLE_CONSORTIUM_ADMIN,
}
_KEY_REASONS = {
    "routine": entry_pb2.KEY_REASON_ROUTINE_ROTATION,
    "compromise": entry_pb2.KEY_REASON_KEY_COMPROMISE,
    "superseded": entry_pb2.KEY_REASON_SUPERSEDED,
    "cessation": entry_pb2.KEY_REASON_CESSATION_OF_OPERATION,
}
_CERT_REASONS = {
    "compromise": identity_pb2.CERTIFICATE_REVOCATION_REASON_KEY_COMPROMISE,
    "affiliation": identity_pb2.CERTIFICATE_REVOCATION_REASON_AFFILIATION_CHANGED,
    "superseded": identity_pb2.CERTIFICATE_REVOCATION_REASON_SUPERSEDED,
    "cessation": identity_pb2.CERTIFICATE_REVOCATION_REASON_CESSATION_OF_OPERATION,
}


def _choice(value: str, choices: Mapping[str, int], what: str) -> int:
    if value not in choices:
        raise typer.BadParameter(f"expected a {what} among {', '.join(choices)}, got {value!r}")
    return choices[value]


@contextmanager
def identity_service(
    target: str, tls_dir: Path | None
) -> Iterator[identity_service_pb2_grpc.IdentityServiceStub]:
    try:
        with open_channel(target, tls_dir) as channel:
            yield identity_service_pb2_grpc.IdentityServiceStub(channel)
    except grpc.RpcError as error:
        fail(_rpc_error_message(target, error).replace("node ", "identity ", 1))


def _issue_certificate(
    stub: identity_service_pb2_grpc.IdentityServiceStub,
    organization_id: str,
    csr_pem: str,
    out: Path,
) -> pb.IssueCertificateResponse:
    """Have the CA sign ``csr_pem`` and write the certificate and the CA root into ``out``."""
    issued = stub.IssueCertificate(
        pb.IssueCertificateRequest(organization_id=organization_id, csr_pem=csr_pem),
        timeout=CALL_TIMEOUT,
    )
    (out / files.CERT_FILE).write_text(issued.certificate_pem)
    (out / files.CA_FILE).write_text(files.root_of(issued.certificate_chain_pem))
    return issued


@app.command(
    "org-keygen",
    help=help_text(
        "Make an organization's keys on its own machine, and the request that registers them.",
        "Writes the Ed25519 signing key (its KEY entry goes on the log; a hospital's signs "
        "RECORD entries) and the mTLS key into --out, mode 0600, and ORG.request.json beside "
        "them: the public key with its proof of possession and a certificate signing request. "
        "Only the request leaves the machine: the consortium admin registers it with "
        "register-org --request and hands back cert.pem, ca.pem and organization.json, which "
        "go into the same folder.",
    ),
    epilog=examples("swiftchain identity org-keygen hospital-d --out ./hospital-d"),
    no_args_is_help=True,
)
def org_keygen(
    organization_id: Annotated[str, typer.Argument(help="The organization's id (a slug).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for its keys (kept on this machine).")],
) -> None:
    """Make an organization's keys (see ``help`` above)."""
    if (out / files.KEY_FILE).exists() or (out / files.SIGNING_KEY_FILE).exists():
        fail(f"{out} holds an organization's keys already; choose another --out")
    signing = files.NewSigningKey.for_owner(organization_id)
    tls_key, csr = files.new_csr(organization_id)
    files.write_secret(out / files.SIGNING_KEY_FILE, files.private_pem(signing.private_key))
    files.write_secret(out / files.KEY_FILE, files.private_pem(tls_key))
    request = files.OrganizationRequest(organization_id, signing.public_key, signing.proof, csr)
    request_path = out / f"{organization_id}.request.json"
    files.write_json(request_path, request.to_json())
    console = stdout()
    console.print(f"keys of {organization_id} in {out} (they stay on this machine)")
    console.print(f"send {request_path} to the consortium admin (register-org --request)")


def _read_request(path: Path, organization_id: str) -> files.OrganizationRequest:
    try:
        request = files.OrganizationRequest.from_json(files.read_json(path))
    except (OSError, ValueError) as error:
        fail(f"cannot read the request {path}: {error}", EXIT_UNREADABLE)
    if request.organization_id != organization_id:
        fail(
            f"expected a request for {organization_id!r} in {path}, "
            f"got one for {request.organization_id!r}"
        )
    return request


@app.command(
    "register-org",
    help=help_text(
        "Register an organization and write the files it needs to act.",
        "With --request (made by org-keygen on the organization's machine) it sends the "
        "organization's public signing key with its proof of possession and has the platform "
        "CA sign its CSR; --out then gets cert.pem, ca.pem and organization.json only, to hand "
        "back (no private key ever reaches this machine). Without --request it makes the keys "
        "here, for a local stack or an organization that runs this itself; the folder then "
        "works as --tls-dir for the organization's own calls. Needs the consortium admin's "
        "--tls-dir.",
    ),
    epilog=examples(
        "swiftchain identity register-org hospital-d --name 'Hospital D' --role hospital "
        "--request hospital-d.request.json --out ./for-hospital-d",
    ),
    no_args_is_help=True,
)
def register_org(
    organization_id: Annotated[str, typer.Argument(help="The new organization's id (a slug).")],
    name: Annotated[str, typer.Option("--name", help="Its human-readable name.")],
    role: Annotated[str, typer.Option("--role", help="hospital, regulator, app or admin.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the files it needs.")],
    request_file: Annotated[
        Path | None,
        typer.Option("--request", help="The organization's request, from org-keygen."),
    ] = None,
    identity: IdentityOption = DEFAULT_IDENTITY,
    tls_dir: TlsDirOption = None,
) -> None:
    """Register an organization (see ``help`` above)."""
    role_value = _choice(role, _ROLES, "role")
    if (out / files.KEY_FILE).exists() or (out / files.CERT_FILE).exists():
        fail(f"{out} holds an organization's files already; choose another --out")
    signing: files.NewSigningKey | None = None
    if request_file is not None:
        request = _read_request(request_file, organization_id)
    else:
        signing = files.NewSigningKey.for_owner(organization_id)
        tls_key, csr = files.new_csr(organization_id)
        request = files.OrganizationRequest(organization_id, signing.public_key, signing.proof, csr)
    with identity_service(identity, tls_dir) as stub:
        registered = stub.RegisterOrganization(
            pb.RegisterOrganizationRequest(
                organization_id=organization_id,
                display_name=name,
                role=role_value,  # type: ignore[arg-type]
                public_key=request.public_key,
                proof_of_possession=request.proof_of_possession,
            ),
            timeout=CALL_TIMEOUT,
        )
        out.mkdir(parents=True, exist_ok=True)
        key_id = registered.organization.keys[0].key_id if registered.organization.keys else ""
        if signing is not None:
            files.write_secret(out / files.SIGNING_KEY_FILE, files.private_pem(signing.private_key))
            files.write_secret(out / files.KEY_FILE, files.private_pem(tls_key))
        files.write_json(
            out / files.ORGANIZATION_FILE, {"organization_id": organization_id, "key_id": key_id}
        )
        issued = _issue_certificate(stub, organization_id, request.csr_pem, out)
    console = stdout()
    console.print(f"registered {organization_id} ({role})")
    if key_id:
        console.print(f"signing key {key_id}: KEY entry {registered.key_entry_id} (pending)")
    console.print(
        f"certificate {issued.serial_number} until {issued.not_after_time.ToJsonString()}"
    )
    if signing is None:
        console.print(
            f"hand {out}/{{{files.CERT_FILE},{files.CA_FILE},{files.ORGANIZATION_FILE}}} to "
            f"{organization_id}: they go next to its keys"
        )
    else:
        console.print(f"files in {out}")


@app.command(
    "renew-cert",
    help=help_text(
        "Issue a fresh client certificate for an organization into its folder.",
        "Call it as the organization itself (--tls-dir its folder) or as the admin.",
    ),
    no_args_is_help=True,
)
def renew_cert(
    organization_id: Annotated[str, typer.Argument(help="The organization.")],
    out: Annotated[Path, typer.Option("--out", help="The organization's folder.")],
    identity: IdentityOption = DEFAULT_IDENTITY,
    tls_dir: TlsDirOption = None,
) -> None:
    """Renew a certificate (see ``help`` above)."""
    key, csr = files.new_csr(organization_id)
    with identity_service(identity, tls_dir) as stub:
        issued = _issue_certificate(stub, organization_id, csr, out)
        files.write_secret(out / files.KEY_FILE, files.private_pem(key))
    stdout().print(
        f"certificate {issued.serial_number} until {issued.not_after_time.ToJsonString()}"
    )


@app.command("show", help="Show an organization and its keys.", no_args_is_help=True)
def show(
    organization_id: Annotated[str, typer.Argument(help="The organization.")],
    identity: IdentityOption = DEFAULT_IDENTITY,
    tls_dir: TlsDirOption = None,
) -> None:
    """Show an organization (see ``help`` above)."""
    with identity_service(identity, tls_dir) as stub:
        organization = stub.GetOrganization(
            pb.GetOrganizationRequest(organization_id=organization_id), timeout=CALL_TIMEOUT
        ).organization
    table = Table(title=f"{organization.organization_id}: {organization.display_name}")
    for column in ("key id", "status", "registered at", "ended at"):
        table.add_column(column)
    for key in organization.keys:
        table.add_row(
            key.key_id,
            identity_pb2.KeyStatus.Name(key.status).removeprefix("KEY_STATUS_"),
            str(key.registered_at_log_index) if key.HasField("registered_at_log_index") else "-",
            str(key.ended_at_log_index) if key.HasField("ended_at_log_index") else "-",
        )
    stdout().print(table)


def _signing_key(folder: Path) -> OrganizationSigningKey:
    try:
        return OrganizationSigningKey.from_folder(folder)
    except (OSError, ValueError, KeyError) as error:
        fail(
            f"{folder} holds no organization signing key (organization.json and "
            f"signing-key.pem): {error}; a key change must be signed by the organization's "
            "active key",
            2,
        )


@app.command(
    "rotate-key",
    help=help_text(
        "Replace an organization's active signing key with a new one.",
        "The request is signed by the active key in the folder (signing-key.pem, its id in "
        "organization.json): a client certificate alone, or the admin alone, rotates nothing. "
        "Writes the new key to the folder's signing-key.pem and keeps the old one as "
        "signing-key.<old key id>.pem (entries it signed before the rotation stay valid).",
    ),
    no_args_is_help=True,
)
def rotate_key(
    organization_id: Annotated[str, typer.Argument(help="The organization.")],
    out: Annotated[Path, typer.Option("--out", help="The organization's folder.")],
    reason: Annotated[str, typer.Option("--reason", help="routine, compromise or superseded.")] = (
        "routine"
    ),
    identity: IdentityOption = DEFAULT_IDENTITY,
    tls_dir: TlsDirOption = None,
) -> None:
    """Rotate a key (see ``help`` above)."""
    reason_value = _choice(
        reason, {k: _KEY_REASONS[k] for k in ("routine", "compromise", "superseded")}, "reason"
    )
    current = _signing_key(out)
    if current.organization_id != organization_id:
        fail(f"{out} is the folder of {current.organization_id}, not of {organization_id}", 2)
    signing = files.NewSigningKey.for_owner(organization_id)
    with identity_service(identity, tls_dir) as stub:
        rotated = stub.RotateOrganizationKey(
            current.rotate_request(signing.private_key, reason_value),  # type: ignore[arg-type]
            timeout=CALL_TIMEOUT,
        )
    current_file = out / files.SIGNING_KEY_FILE
    current_file.rename(out / f"signing-key.{current.key_id.replace('#', '-')}.pem")
    files.write_secret(current_file, files.private_pem(signing.private_key))
    files.write_json(
        out / files.ORGANIZATION_FILE,
        {"organization_id": organization_id, "key_id": rotated.key.key_id},
    )
    stdout().print(
        f"{current.key_id} -> {rotated.key.key_id}: KEY entry {rotated.key_entry_id} (pending)"
    )


@app.command(
    "revoke-key",
    help=help_text(
        "Revoke an organization's signing key.",
        "The request is signed by the active key in --org-dir (which may be the key revoked). "
        "Once the organization's only key is revoked, nothing can sign for it: recovery of a "
        "lost key is by a consortium vote, which does not exist yet.",
    ),
    no_args_is_help=True,
)
def revoke_key(
    organization_id: Annotated[str, typer.Argument(help="The organization.")],
    key_id: Annotated[str, typer.Argument(help="The key to revoke, e.g. hospital-a#1.")],
    org_dir: Annotated[
        Path,
        typer.Option("--org-dir", help="The organization's folder; its signing key signs."),
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="compromise, superseded or cessation.")
    ] = "compromise",
    identity: IdentityOption = DEFAULT_IDENTITY,
    tls_dir: TlsDirOption = None,
) -> None:
    """Revoke a key (see ``help`` above)."""
    reason_value = _choice(
        reason, {k: _KEY_REASONS[k] for k in ("compromise", "superseded", "cessation")}, "reason"
    )
    signer = _signing_key(org_dir)
    if signer.organization_id != organization_id:
        fail(f"{org_dir} is the folder of {signer.organization_id}, not of {organization_id}", 2)
    with identity_service(identity, tls_dir) as stub:
        revoked = stub.RevokeOrganizationKey(
            signer.revoke_request(key_id, reason_value),  # type: ignore[arg-type]
            timeout=CALL_TIMEOUT,
        )
    stdout().print(f"{key_id} revoked by KEY entry {revoked.key_entry_id} (pending)")


@app.command(
    "revoke-cert", help="Revoke a client certificate by serial number.", no_args_is_help=True
)
def revoke_cert(
    serial: Annotated[str, typer.Argument(help="The serial number, lower-case hex.")],
    reason: Annotated[
        str, typer.Option("--reason", help="compromise, affiliation, superseded or cessation.")
    ] = "compromise",
    identity: IdentityOption = DEFAULT_IDENTITY,
    tls_dir: TlsDirOption = None,
) -> None:
    """Revoke a certificate (see ``help`` above)."""
    reason_value = _choice(reason, _CERT_REASONS, "reason")
    with identity_service(identity, tls_dir) as stub:
        revoked = stub.RevokeCertificate(
            pb.RevokeCertificateRequest(serial_number=serial, reason=reason_value),  # type: ignore[arg-type]
            timeout=CALL_TIMEOUT,
        )
    stdout().print(f"certificate {revoked.serial_number} of {revoked.organization_id} revoked")


# --- patients -------------------------------------------------------------------------------
