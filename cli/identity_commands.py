"""``swiftchain identity ...``: organizations, their keys and certificates, patient devices.

Organization commands speak mTLS to the identity service's main port as the consortium admin
(or as the organization itself, for its own keys and certificate): ``--tls-dir``. Patient
commands speak TLS without a client certificate to its public port, logging in with a device
key: ``--public``.

A patient's keys are born on its device: ``register-patient`` (the hospital or app) prints a
one-time enrollment code as text and as a QR code, and ``enroll`` (on the patient's device)
generates the device key there and enrolls it with the code.

A patient that lost every device recovers: a hospital that knows it runs ``recovery-code``,
the new device runs ``recover --code`` (and again after the waiting period, to complete), and
meanwhile any device still active sees it with ``recoveries`` and stops it with
``cancel-recovery``.

Changing keys takes more than who you are: ``rotate-key`` and ``revoke-key`` sign the request
with the organization's active signing key (its folder's ``signing-key.pem``), ``add-device`` and
``revoke-device`` with the device of ``--device-dir`` (sdk/identity.py builds the requests).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import grpc
import qrcode
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.table import Table

from chain.enrollment_codes import parse_enrollment_code
from chain.errors import InvalidInputError
from cli import identity_files as files
from cli.common import EXIT_UNREADABLE, check_target, examples, fail, help_text, stdout
from cli.grpc_client import (
    CALL_TIMEOUT,
    TlsDirOption,
    default_tls_dir,
    open_channel,
    open_public_channel,
)
from cli.grpc_client import rpc_error_message as _rpc_error_message
from sdk.consent import PatientDevice
from sdk.identity import (
    OrganizationSigningKey,
    add_device_request,
    cancel_recovery_request,
    enroll_device,
    recovery_request,
    register_patient_request,
    revoke_device_request,
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
DEFAULT_PUBLIC = "127.0.0.1:50151"
LOGIN_SIGNATURE_CONTEXT = b"swiftchain/login/v1\n"

IdentityOption = Annotated[
    str,
    typer.Option(
        "--identity",
        metavar="HOST:PORT",
        help="The identity service's mTLS address.",
        callback=check_target,
    ),
]
PublicOption = Annotated[
    str,
    typer.Option(
        "--public",
        metavar="HOST:PORT",
        help="The identity service's public (TLS, no client certificate) address, for patients.",
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
def _identity(
    target: str, tls_dir: Path | None
) -> Iterator[identity_service_pb2_grpc.IdentityServiceStub]:
    try:
        with open_channel(target, tls_dir) as channel:
            yield identity_service_pb2_grpc.IdentityServiceStub(channel)
    except grpc.RpcError as error:
        fail(_rpc_error_message(target, error).replace("node ", "identity ", 1))


@contextmanager
def _public(target: str, ca_file: Path) -> Iterator[identity_service_pb2_grpc.IdentityServiceStub]:
    try:
        with open_public_channel(target, ca_file) as channel:
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
    with _identity(identity, tls_dir) as stub:
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
    with _identity(identity, tls_dir) as stub:
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
    with _identity(identity, tls_dir) as stub:
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
    with _identity(identity, tls_dir) as stub:
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
    with _identity(identity, tls_dir) as stub:
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
    with _identity(identity, tls_dir) as stub:
        revoked = stub.RevokeCertificate(
            pb.RevokeCertificateRequest(serial_number=serial, reason=reason_value),  # type: ignore[arg-type]
            timeout=CALL_TIMEOUT,
        )
    stdout().print(f"certificate {revoked.serial_number} of {revoked.organization_id} revoked")


# --- patients -------------------------------------------------------------------------------


@app.command(
    "register-patient",
    help=help_text(
        "Register a patient, as a hospital or app operator, and print its one-time enrollment "
        "code as text and as a QR code.",
        "You are given a code, never the patient's key: the patient's device generates its key "
        "and enrolls it with the code (`swiftchain identity enroll` on the device). The code is "
        "good once, for a short time (an hour unless the service is set otherwise), and is "
        "shown only now. Registering the same --reference again before the device has enrolled "
        "gives a new code and voids the old one; once a device has enrolled it is refused.",
    ),
    epilog=examples(
        "swiftchain identity register-patient --reference mrn-7 --tls-dir ./hospital-d",
    ),
)
def register_patient(
    reference: Annotated[
        str, typer.Option("--reference", help="Your opaque reference to the patient.")
    ] = "",
    qr: Annotated[
        bool, typer.Option("--qr/--no-qr", help="Also draw the code as a QR code.")
    ] = True,
    identity: IdentityOption = DEFAULT_IDENTITY,
    tls_dir: TlsDirOption = None,
) -> None:
    """Register a patient (see ``help`` above)."""
    with _identity(identity, tls_dir) as stub:
        registered = stub.RegisterPatient(register_patient_request(reference), timeout=CALL_TIMEOUT)
    code = registered.enrollment_code
    console = stdout()
    console.print(
        f"patient {registered.patient.subject_id}"
        + (f" (your reference {reference})" if reference else "")
        + ("" if registered.created else ", registered before: its previous code is void")
    )
    console.print(f"enrollment code: {code}")
    console.print(
        f"single use, until {registered.enrollment_code_expire_time.ToJsonString()}; shown only now"
    )
    # Not wrapped, so that the command can be copied whole.
    console.print(
        f"on the patient's device: swiftchain identity enroll --code {code} --device-out DIR",
        soft_wrap=True,
    )
    if qr:
        typer.echo(qr_text(code), nl=False)


def qr_text(text: str) -> str:
    """``text`` as a QR code drawn with block characters, light on a dark terminal."""
    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(text)
    code.make(fit=True)
    drawn = io.StringIO()
    code.print_ascii(out=drawn, invert=True)
    return drawn.getvalue()


def _ca_file(ca: Path | None) -> Path:
    """The CA certificate that checks the identity service: ``--ca``, else the ``ca.pem`` of
    the default TLS folder (``$SWIFTCHAIN_TLS_DIR`` or the local stack's)."""
    if ca is not None:
        return ca
    tls_dir = default_tls_dir()
    if tls_dir is None or not (tls_dir / files.CA_FILE).exists():
        fail(
            "expected --ca FILE: the platform CA certificate (ca.pem) that checks the identity "
            "service, as the registrar hands it out",
            2,
        )
    return tls_dir / files.CA_FILE


@app.command(
    "enroll",
    help=help_text(
        "Enroll this device as a patient's first device, with the code its registrar gave.",
        "Run it on the patient's device: it generates the device key here, enrolls it with the "
        "code and a proof of possession bound to the code, and writes the device folder (key, "
        "subject id, device key id, CA certificate) that `login`, `add-device`, "
        "`revoke-device` and the consent commands use. The key never leaves the folder. A code "
        "works once: if it was used already and not by you, someone else enrolled as the "
        "patient; tell the registrar.",
    ),
    epilog=examples(
        "swiftchain identity enroll --code 7ZQ4-K9M2-XW8D-3HJT-PC5V-R1NB-6YAF --device-out ./phone",
    ),
    no_args_is_help=True,
)
def enroll(
    code: Annotated[str, typer.Option("--code", help="The enrollment code, as shown.")],
    device_out: Annotated[
        Path, typer.Option("--device-out", help="Folder for the device's key and files.")
    ],
    label: Annotated[str, typer.Option("--label", help="A label for the device.")] = "phone",
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            metavar="FILE",
            help="The platform CA certificate. Default: ca.pem of $SWIFTCHAIN_TLS_DIR or of the "
            "local stack.",
            show_default=False,
        ),
    ] = None,
    public: PublicOption = DEFAULT_PUBLIC,
) -> None:
    """Enroll a device (see ``help`` above)."""
    key_file = device_out / files.DEVICE_KEY_FILE
    if (device_out / files.DEVICE_FILE).exists():
        fail(f"{device_out} holds an enrolled device already; choose another --device-out", 2)
    try:
        parse_enrollment_code(code)
    except InvalidInputError as error:
        fail(str(error), 2)
    ca_file = _ca_file(ca)
    # The key is saved before it is enrolled, and a retry into the same folder enrolls the same
    # key again, so an enrollment whose answer was lost is finished by running the command again.
    if key_file.exists():
        key = files.load_ed25519(key_file)
    else:
        key = Ed25519PrivateKey.generate()
        files.write_secret(key_file, files.private_pem(key))
    with _public(public, ca_file) as stub:
        device = enroll_device(stub, code, label, key=key, timeout=CALL_TIMEOUT)
    files.write_device_folder(device_out, device, ca_file.read_bytes())
    console = stdout()
    console.print(
        f"device {device.key_id} enrolled for patient {device.subject_id}", soft_wrap=True
    )
    console.print(f"its key is in {device_out} and nowhere else", soft_wrap=True)


def _device(folder: Path) -> tuple[str, str]:
    try:
        document = files.read_json(folder / files.DEVICE_FILE)
        return str(document["subject_id"]), str(document["key_id"])
    except (OSError, ValueError, KeyError) as error:
        fail(f"{folder} is not a device folder: {error}", 2)


def _signing_device(folder: Path) -> PatientDevice:
    try:
        return PatientDevice.from_folder(folder)
    except (OSError, ValueError, KeyError) as error:
        fail(f"{folder} is not a device folder: {error}", 2)


def login_token(stub: identity_service_pb2_grpc.IdentityServiceStub, folder: Path) -> str:
    """Log in with the device in ``folder`` (challenge, signature) and return the token."""
    subject_id, key_id = _device(folder)
    key = files.load_ed25519(folder / files.DEVICE_KEY_FILE)
    challenge = stub.BeginLogin(
        pb.BeginLoginRequest(subject_id=subject_id, device_key_id=key_id), timeout=CALL_TIMEOUT
    )
    signed = LOGIN_SIGNATURE_CONTEXT + challenge.challenge_id.encode() + b"\n" + challenge.nonce
    completed = stub.CompleteLogin(
        pb.CompleteLoginRequest(challenge_id=challenge.challenge_id, signature=key.sign(signed)),
        timeout=CALL_TIMEOUT,
    )
    return completed.access_token


DeviceDirOption = Annotated[Path, typer.Option("--device-dir", help="The patient's device folder.")]


@app.command(
    "login", help="Log in with a device key and print a bearer token.", no_args_is_help=True
)
def login(device_dir: DeviceDirOption, public: PublicOption = DEFAULT_PUBLIC) -> None:
    """Log in (see ``help`` above)."""
    with _public(public, device_dir / files.CA_FILE) as stub:
        typer.echo(login_token(stub, device_dir))


@app.command(
    "add-device",
    help=help_text(
        "Add a new device key to the patient of --device-dir.",
        "Logs in with that device and signs the request with it: the token alone adds nothing.",
    ),
    no_args_is_help=True,
)
def add_device(
    device_dir: DeviceDirOption,
    new_device_out: Annotated[
        Path, typer.Option("--new-device-out", help="Folder for the new device.")
    ],
    label: Annotated[str, typer.Option("--label", help="A label for the new device.")] = "device",
    public: PublicOption = DEFAULT_PUBLIC,
) -> None:
    """Add a device (see ``help`` above)."""
    signer = _signing_device(device_dir)
    subject_id = signer.subject_id
    device = files.NewSigningKey.for_owner(subject_id)
    with _public(public, device_dir / files.CA_FILE) as stub:
        token = login_token(stub, device_dir)
        added = stub.AddPatientDevice(
            add_device_request(signer, device.private_key, label),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=CALL_TIMEOUT,
        )
    files.write_device_folder(
        new_device_out,
        PatientDevice(subject_id, added.device.key_id, device.private_key),
        (device_dir / files.CA_FILE).read_bytes(),
    )
    stdout().print(f"device {added.device.key_id} added to {subject_id}")


@app.command(
    "revoke-device",
    help=help_text(
        "Revoke one of the patient's device keys.",
        "Logs in with the device of --device-dir and signs the request with it (it may revoke "
        "itself): the token alone revokes nothing.",
    ),
    no_args_is_help=True,
)
def revoke_device(
    device_dir: DeviceDirOption,
    key_id: Annotated[str, typer.Argument(help="The device key id to revoke.")],
    public: PublicOption = DEFAULT_PUBLIC,
) -> None:
    """Revoke a device (see ``help`` above)."""
    signer = _signing_device(device_dir)
    with _public(public, device_dir / files.CA_FILE) as stub:
        token = login_token(stub, device_dir)
        revoked = stub.RevokePatientDevice(
            revoke_device_request(signer, key_id),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=CALL_TIMEOUT,
        )
    stdout().print(json.dumps({"key_id": revoked.device.key_id, "status": "revoked"}))


# --- recovery of a patient that lost every device --------------------------------------------

RECOVERY_FILE = "recovery.json"


@app.command(
    "recovery-code",
    help=help_text(
        "Issue a one-time recovery code for a patient that lost every device, as a hospital "
        "that registered it or holds a reference to it.",
        "The patient's new device begins a recovery with it (`swiftchain identity recover`), "
        "which waits (24 h unless the service is set otherwise) while the patient's devices "
        "can see and cancel it. Like an enrollment code it is good once, for a short time, "
        "and shown only now.",
    ),
    epilog=examples("swiftchain identity recovery-code pt-… --tls-dir ./hospital-d"),
    no_args_is_help=True,
)
def recovery_code(
    subject_id: Annotated[str, typer.Argument(help="The patient's subject id.")],
    qr: Annotated[
        bool, typer.Option("--qr/--no-qr", help="Also draw the code as a QR code.")
    ] = True,
    identity: IdentityOption = DEFAULT_IDENTITY,
    tls_dir: TlsDirOption = None,
) -> None:
    """Issue a recovery code (see ``help`` above)."""
    with _identity(identity, tls_dir) as stub:
        issued = stub.IssueRecoveryCode(
            pb.IssueRecoveryCodeRequest(subject_id=subject_id), timeout=CALL_TIMEOUT
        )
    code = issued.recovery_code
    console = stdout()
    console.print(f"recovery code: {code}")
    console.print(
        f"single use, until {issued.recovery_code_expire_time.ToJsonString()}; shown only now"
    )
    console.print(
        f"on the patient's new device: swiftchain identity recover --code {code} --device-out DIR",
        soft_wrap=True,
    )
    if qr:
        typer.echo(qr_text(code), nl=False)


@app.command(
    "recover",
    help=help_text(
        "Recover a patient that lost every device, on its new device, with a hospital's "
        "recovery code.",
        "The first run generates the device key here, begins the recovery and notes it in "
        f"--device-out ({RECOVERY_FILE}); the recovery then waits for the patient's devices to "
        "cancel it. Run the same command again once the wait is over: it completes the "
        "recovery and writes the device folder.",
    ),
    epilog=examples(
        "swiftchain identity recover --code 7ZQ4-K9M2-XW8D-3HJT-PC5V-R1NB-6YAF --device-out ./phone"
    ),
    no_args_is_help=True,
)
def recover(
    code: Annotated[str, typer.Option("--code", help="The recovery code, as shown.")],
    device_out: Annotated[
        Path, typer.Option("--device-out", help="Folder for the device's key and files.")
    ],
    label: Annotated[str, typer.Option("--label", help="A label for the device.")] = "phone",
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            metavar="FILE",
            help="The platform CA certificate. Default: ca.pem of $SWIFTCHAIN_TLS_DIR or of the "
            "local stack.",
            show_default=False,
        ),
    ] = None,
    public: PublicOption = DEFAULT_PUBLIC,
) -> None:
    """Begin or complete a recovery (see ``help`` above)."""
    if (device_out / files.DEVICE_FILE).exists():
        fail(f"{device_out} holds an enrolled device already; choose another --device-out", 2)
    try:
        parse_enrollment_code(code)
    except InvalidInputError as error:
        fail(str(error), 2)
    ca_file = _ca_file(ca)
    key_file = device_out / files.DEVICE_KEY_FILE
    if key_file.exists():
        key = files.load_ed25519(key_file)
    else:
        key = Ed25519PrivateKey.generate()
        files.write_secret(key_file, files.private_pem(key))
    console = stdout()
    with _public(public, ca_file) as stub:
        if not (device_out / RECOVERY_FILE).exists():
            begun = stub.BeginRecovery(recovery_request(code, key, label), timeout=CALL_TIMEOUT)
            pending = {
                "subject_id": begun.subject_id,
                "recovery_id": begun.recovery.recovery_id,
                "key_id": begun.recovery.key_id,
            }
            files.write_json(device_out / RECOVERY_FILE, pending)
            console.print(
                f"recovery {begun.recovery.recovery_id} of patient {begun.subject_id} begun; "
                "the patient's devices can cancel it until "
                f"{begun.recovery.earliest_complete_time.ToJsonString()}: run this command "
                "again after that to complete it",
                soft_wrap=True,
            )
            return
        noted = files.read_json(device_out / RECOVERY_FILE)
        completed = stub.CompleteRecovery(
            pb.CompleteRecoveryRequest(
                subject_id=str(noted["subject_id"]), recovery_id=str(noted["recovery_id"])
            ),
            timeout=CALL_TIMEOUT,
        )
    device = PatientDevice(str(noted["subject_id"]), completed.device.key_id, key)
    files.write_device_folder(device_out, device, ca_file.read_bytes())
    console.print(
        f"device {device.key_id} recovered for patient {device.subject_id}; revoke the lost "
        "devices with `swiftchain identity revoke-device`",
        soft_wrap=True,
    )


@app.command(
    "recoveries",
    help=help_text(
        "List the recoveries of the patient of --device-dir, newest first.",
        "A PENDING recovery that is not yours means someone is taking over the patient: "
        "cancel it with `swiftchain identity cancel-recovery`.",
    ),
    no_args_is_help=True,
)
def recoveries(device_dir: DeviceDirOption, public: PublicOption = DEFAULT_PUBLIC) -> None:
    """List recoveries (see ``help`` above)."""
    subject_id, _ = _device(device_dir)
    with _public(public, device_dir / files.CA_FILE) as stub:
        token = login_token(stub, device_dir)
        listed = stub.ListRecoveries(
            pb.ListRecoveriesRequest(subject_id=subject_id),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=CALL_TIMEOUT,
        )
    table = Table("recovery", "status", "device", "asked", "completes after")
    for item in listed.recoveries:
        table.add_row(
            item.recovery_id,
            pb.RecoveryStatus.Name(item.status).removeprefix("RECOVERY_STATUS_"),
            f"{item.key_id} ({item.label})",
            item.request_time.ToJsonString(),
            item.earliest_complete_time.ToJsonString(),
        )
    stdout().print(table)


@app.command(
    "cancel-recovery",
    help=help_text(
        "Cancel a pending recovery of the patient of --device-dir.",
        "Logs in with that device and signs the request with it: the token alone cancels nothing.",
    ),
    no_args_is_help=True,
)
def cancel_recovery(
    device_dir: DeviceDirOption,
    recovery_id: Annotated[str, typer.Argument(help="The recovery to cancel.")],
    public: PublicOption = DEFAULT_PUBLIC,
) -> None:
    """Cancel a recovery (see ``help`` above)."""
    signer = _signing_device(device_dir)
    with _public(public, device_dir / files.CA_FILE) as stub:
        token = login_token(stub, device_dir)
        cancelled = stub.CancelRecovery(
            cancel_recovery_request(signer, recovery_id),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=CALL_TIMEOUT,
        )
    status = pb.RecoveryStatus.Name(cancelled.recovery.status).removeprefix("RECOVERY_STATUS_")
    stdout().print(json.dumps({"recovery_id": recovery_id, "status": status.lower()}))
