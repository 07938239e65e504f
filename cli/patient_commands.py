"""``swiftchain identity ...`` for patients and their devices (the same command group as
cli/identity_commands.py, which cli/main.py loads with this module).

They speak TLS without a client certificate to the identity service's public port, logging in
with a device key: ``--public``; ``register-patient`` and ``recovery-code`` are a hospital's and
speak mTLS (``--tls-dir``).

A patient's keys are born on its device: ``register-patient`` (the hospital or app) prints a
one-time enrollment code as text and as a QR code, and ``enroll`` (on the patient's device)
generates the device key there and enrolls it with the code.

A patient that lost every device recovers: a hospital that knows it runs ``recovery-code``,
the new device runs ``recover --code`` (and again after the waiting period, to complete), and
meanwhile any device still active sees it with ``recoveries`` and stops it with
``cancel-recovery``. ``add-device`` and ``revoke-device`` sign with the device of
``--device-dir`` (sdk/identity.py builds the requests).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
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
from cli.common import check_target, examples, fail, help_text, stdout
from cli.grpc_client import (
    CALL_TIMEOUT,
    TlsDirOption,
    default_tls_dir,
    open_public_channel,
)
from cli.grpc_client import rpc_error_message as _rpc_error_message
from cli.identity_commands import (
    DEFAULT_IDENTITY,
    IdentityOption,
    app,
    identity_service,
)
from sdk.consent import PatientDevice
from sdk.identity import (
    add_device_request,
    cancel_recovery_request,
    enroll_device,
    recovery_request,
    register_patient_request,
    revoke_device_request,
)
from swiftchain.identity.v1 import identity_service_pb2 as pb
from swiftchain.identity.v1 import identity_service_pb2_grpc

DEFAULT_PUBLIC = "127.0.0.1:50151"
LOGIN_SIGNATURE_CONTEXT = b"swiftchain/login/v1\n"

DeviceOutOption = Annotated[
    Path, typer.Option("--device-out", help="Folder for the device's key and files.")
]
LabelOption = Annotated[str, typer.Option("--label", help="A label for the device.")]
CaOption = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        metavar="FILE",
        help="The platform CA certificate. Default: ca.pem of $SWIFTCHAIN_TLS_DIR or of the "
        "local stack.",
        show_default=False,
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


@contextmanager
def _public(target: str, ca_file: Path) -> Iterator[identity_service_pb2_grpc.IdentityServiceStub]:
    try:
        with open_public_channel(target, ca_file) as channel:
            yield identity_service_pb2_grpc.IdentityServiceStub(channel)
    except grpc.RpcError as error:
        fail(_rpc_error_message(target, error).replace("node ", "identity ", 1))


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
    with identity_service(identity, tls_dir) as stub:
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
    device_out: DeviceOutOption,
    label: LabelOption = "phone",
    ca: CaOption = None,
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
    with identity_service(identity, tls_dir) as stub:
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
    device_out: DeviceOutOption,
    label: LabelOption = "phone",
    ca: CaOption = None,
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
