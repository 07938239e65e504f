"""``swiftchain consortium ...``: the genesis ceremony, in which nobody owns the genesis, and
membership by vote on the log afterwards (``propose``, ``approve``, ``status``).

Each founding member runs ``keygen`` on its own machine and shares only the key card it prints;
the identity and consent services make their genesis keys with ``keygen --role``; someone runs
``genesis propose`` on the cards; each founder runs ``genesis sign`` with its own key; anyone
runs ``genesis verify``. A chain node starts only from a genesis every founder signed. See
:mod:`services.platform.genesis_ceremony` and docs/security.md. After that, members change
only by votes on the log, each signed with the voting member's own node key (the key keygen
made): ``propose`` one change, ``approve`` it, ``status`` to see members and open proposals
(:mod:`chain.membership`).

Exit codes as every command's (:mod:`cli.common`): 0 done, 1 a check failed (a signature
missing or wrong, a key card its key did not sign, a key file that exists already), 2 input
that cannot be read or is not what it should be.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, NoReturn

import grpc
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.text import Text

from chain.consortium import ConsortiumConfig, parse_consortium
from chain.entry import new_entry_id, parse_entry
from chain.errors import (
    AlreadyExistsError,
    PermissionDeniedError,
    SwiftchainError,
    VerificationError,
)
from chain.genesis import genesis_hash, verify_genesis
from chain.membership import membership_entry, role_name
from chain.note import Signer, verifier_key
from cli.common import (
    EXIT_FAILED,
    EXIT_UNREADABLE,
    NodeOption,
    UnreadableInputError,
    examples,
    fail,
    help_text,
    read_input,
    stderr,
    stdout,
    write_output,
)
from cli.grpc_client import CALL_TIMEOUT, TlsDirOption, chain_stub, rpc_code, rpc_error_message
from services.platform.genesis_ceremony import (
    ROLE_MEMBER,
    ROLES,
    SERVICE_ROLES,
    GeneratedKey,
    KeyCard,
    founder_key_path,
    generate_tag_key,
    load_signer,
    member_keygen,
    parse_card,
    propose,
    service_keygen,
    sign_with_key,
)
from swiftchain.chain.v1 import chain_service_pb2 as chain_pb
from swiftchain.chain.v1 import chain_service_pb2_grpc, entry_pb2
from swiftchain.common.v1 import common_pb2

app = typer.Typer(
    help="The genesis ceremony: keys made by their holders, a genesis every founder signs.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
genesis_app = typer.Typer(
    help="Assemble the genesis consortium file from key cards, sign it, verify it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(genesis_app, name="genesis")


def _fail_on(error: SwiftchainError) -> NoReturn:
    """Exit 1 for a check that failed, 2 for input that is not what it should be."""
    if isinstance(error, VerificationError | AlreadyExistsError | PermissionDeniedError):
        fail(str(error), EXIT_FAILED)
    fail(str(error), EXIT_UNREADABLE)


def _read_genesis(path: Path) -> ConsortiumConfig:
    try:
        return parse_consortium(read_input(path, "genesis file"))
    except UnreadableInputError as error:
        fail(str(error), EXIT_UNREADABLE)
    except SwiftchainError as error:
        fail(f"{path}: {error}", EXIT_UNREADABLE)


def _summary(config: ConsortiumConfig) -> str:
    signed = {s.name for s in config.founder_signatures}
    return (
        f"genesis {genesis_hash(config).hex()}: origin {config.origin}, quorum {config.quorum}, "
        f"founders {', '.join(m.name for m in config.members)} "
        f"({sum(m.name in signed for m in config.members)} of {len(config.members)} signed), "
        f"genesis keys {', '.join(k.key_id for k in config.genesis_keys) or 'none'}"
    )


@app.command(
    "keygen",
    help=help_text(
        "Make a key on this machine, for its holder: a founding member's node key (--member) "
        "or a service's genesis key (--role registrar: the identity service; --role consent: "
        "the consent service).",
        "Writes the private key in DIR (NAME.key for a member, registrar.pem or consent.pem "
        "for a service; mode 0600; never printed, never overwritten) and the public key card "
        "beside it (NAME.card.json), and prints the card. Share the card, never the key.",
        "Exit status: 0 made, 1 if the key file exists already, 2 for a bad name or role.",
    ),
    epilog=examples(
        "swiftchain consortium keygen --member hospital-a --out ~/swiftchain-keys",
        "swiftchain consortium keygen --role registrar --out /etc/swiftchain/identity",
    ),
    no_args_is_help=True,
)
def keygen(
    out: Annotated[
        Path,
        typer.Option("--out", metavar="DIR", help="Folder for the key and card (kept private)."),
    ],
    member: Annotated[
        str | None,
        typer.Option("--member", metavar="NAME", help="The founding member whose node key it is."),
    ] = None,
    role: Annotated[
        str,
        typer.Option("--role", metavar="ROLE", help=f"One of {', '.join(ROLES)}."),
    ] = ROLE_MEMBER,
) -> None:
    """Make a key and its card (see ``help`` above)."""
    if role == ROLE_MEMBER and member is None:
        fail("expected --member NAME for a member's node key, got none", EXIT_UNREADABLE)
    if role != ROLE_MEMBER and member is not None:
        fail(
            f"expected no --member with --role {role} (the key is the "
            f"{SERVICE_ROLES[role].owner_id if role in SERVICE_ROLES else role} service's), "
            f"got --member {member}",
            EXIT_UNREADABLE,
        )
    try:
        made: GeneratedKey = (
            member_keygen(member, out) if member is not None else service_keygen(role, out)
        )
    except SwiftchainError as error:
        _fail_on(error)
    stderr().print(
        Text(f"private key {made.key_path} (mode 0600: keep it here); card {made.card_path}:"),
        soft_wrap=True,
    )
    typer.echo(made.card.to_json(), nl=False)


@app.command(
    "tag-key",
    help=help_text(
        "Make the consortium tag key (32 random bytes) in DIR/tag.key, mode 0600.",
        "It is a secret shared by the members and regulators, not a key pair: the one party "
        "the consortium trusts with it makes it once and hands it to each over an encrypted "
        "channel. It is never in the genesis.",
        "Exit status: 0 made, 1 if DIR/tag.key exists already.",
    ),
    epilog=examples("swiftchain consortium tag-key --out ~/swiftchain-keys"),
    no_args_is_help=True,
)
def tag_key(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for tag.key.")],
) -> None:
    """Make the tag key (see ``help`` above)."""
    try:
        path = generate_tag_key(out)
    except SwiftchainError as error:
        _fail_on(error)
    stdout().print(Text(f"tag key {path} (mode 0600)"), soft_wrap=True)


def _read_cards(paths: list[Path]) -> list[KeyCard]:
    cards = []
    for path in paths:
        try:
            cards.append(parse_card(read_input(path, "key card"), f"key card {path}"))
        except UnreadableInputError as error:
            fail(str(error), EXIT_UNREADABLE)
        except SwiftchainError as error:
            _fail_on(error)
    return cards


@genesis_app.command(
    "propose",
    help=help_text(
        "Assemble the genesis consortium file from public key cards: every --card of a member "
        "makes a founder (in the order given), a registrar or consent card a genesis key.",
        "Reads no private key. Each card must be signed by its own key. The file written has no "
        "signature yet: send it to every founder to check and sign (genesis sign).",
        "Exit status: 0 written, 1 if a card's key did not sign it, 2 if a card cannot be read "
        "or the genesis would break a rule (repeated names, a quorum out of range).",
    ),
    epilog=examples(
        "swiftchain consortium genesis propose --origin swiftchain.example/log --quorum 2 "
        "--card hospital-a.card.json --card hospital-b.card.json --card hospital-c.card.json "
        "--card registrar.card.json --card consent.card.json --out consortium.json",
    ),
    no_args_is_help=True,
)
def genesis_propose(
    cards: Annotated[
        list[Path],
        typer.Option("--card", metavar="FILE", help="A key card (repeat for each)."),
    ],
    quorum: Annotated[
        int, typer.Option("--quorum", help="Signatures a checkpoint needs to be sealed.")
    ],
    origin: Annotated[str, typer.Option("--origin", help="The log's origin line.")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="The genesis to write.")],
    batch_max: Annotated[int, typer.Option("--batch-max", help="Entries per block.")] = 500,
    batch_timeout_ms: Annotated[
        int, typer.Option("--batch-timeout-ms", help="Longest wait before a block is cut.")
    ] = 200,
) -> None:
    """Assemble the genesis (see ``help`` above)."""
    read = _read_cards(cards)
    try:
        genesis = propose(
            read,
            quorum=quorum,
            origin=origin,
            batch_max=batch_max,
            batch_timeout_ms=batch_timeout_ms,
        )
    except SwiftchainError as error:
        _fail_on(error)
    write_output(out, genesis.to_json().encode(), "genesis file")
    stdout().print(Text(f"wrote {out}: {_summary(genesis)}"), soft_wrap=True)


@genesis_app.command(
    "sign",
    help=help_text(
        "Sign the genesis as one founder, with the node key made by keygen, and write it back "
        "(or to --out). Check what you sign first: the members, their keys, the quorum, the "
        "genesis keys (genesis verify prints them).",
        "--key is the key file or the keygen folder; in a folder holding several founders' "
        "keys, --member says whose.",
        "Exit status: 0 signed, 1 if the key is not the one the genesis lists for that "
        "founder, 2 if a file cannot be read.",
    ),
    epilog=examples(
        "swiftchain consortium genesis sign --key ~/swiftchain-keys consortium.json",
    ),
    no_args_is_help=True,
)
def genesis_sign(
    genesis_file: Annotated[
        Path, typer.Argument(metavar="FILE", help="The genesis file.", show_default=False)
    ],
    key: Annotated[
        Path,
        typer.Option("--key", metavar="DIR|FILE", help="The founder's node key or its folder."),
    ],
    member: Annotated[
        str | None,
        typer.Option("--member", metavar="NAME", help="Whose key, in a folder of several."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write here instead of over FILE."),
    ] = None,
) -> None:
    """Sign the genesis (see ``help`` above)."""
    genesis = _read_genesis(genesis_file)
    try:
        key_path = founder_key_path(key, genesis, member)
        signed = sign_with_key(genesis, key_path)
    except SwiftchainError as error:
        _fail_on(error)
    target = out or genesis_file
    write_output(target, signed.to_json().encode(), "genesis file")
    stdout().print(Text(f"signed {target}: {_summary(signed)}"), soft_wrap=True)


@genesis_app.command(
    "verify",
    help=help_text(
        "Check that every founder the genesis lists signed it with the key it lists for "
        "itself, and print what it holds.",
        "Exit status: 0 if every founder signed, 1 if a signature is missing, wrong, or by "
        "someone who is not a founder, 2 if the file cannot be read or is not a consortium file.",
    ),
    epilog=examples("swiftchain consortium genesis verify consortium.json"),
    no_args_is_help=True,
)
def genesis_verify(
    genesis_file: Annotated[
        Path, typer.Argument(metavar="FILE", help="The genesis file.", show_default=False)
    ],
) -> None:
    """Verify the genesis (see ``help`` above)."""
    genesis = _read_genesis(genesis_file)
    try:
        verify_genesis(genesis)
    except VerificationError as error:
        fail(f"{genesis_file}: {error}", EXIT_FAILED)
    stdout().print(Text(f"OK {_summary(genesis)}"), soft_wrap=True)


# -------------------------------------------------------------------- membership by vote

_ROLES = {
    "node": entry_pb2.MEMBER_ROLE_NODE,
    "regulator": entry_pb2.MEMBER_ROLE_REGULATOR,
    "witness": entry_pb2.MEMBER_ROLE_WITNESS,
}
#: How long a proposal stays open by default, in log entries: days at the local stack's pace,
#: hours under a heavy anchoring load. A log position, so that every node decides alike.
DEFAULT_LIFETIME_ENTRIES = 1_000_000
_SETTLED = (common_pb2.ENTRY_STATE_SEQUENCED, common_pb2.ENTRY_STATE_SEALED)


def _load_member_key(path: Path) -> Signer:
    try:
        return load_signer(path)
    except SwiftchainError as error:
        _fail_on(error)


def _new_member_key(card: Path | None, key: str | None, name: str) -> str:
    """The verifier key of ``name`` from its key card (which its key signed) or as given."""
    if (card is None) == (key is None):
        fail("expected the new key as either --card FILE or --verifier-key KEY", EXIT_UNREADABLE)
    if key is not None:
        return key
    assert card is not None
    (read,) = _read_cards([card])
    if read.role != ROLE_MEMBER or read.name != name:
        fail(
            f"expected the card of member {name!r}'s node key, got the {read.role} card of "
            f"{read.name!r}",
            EXIT_UNREADABLE,
        )
    return verifier_key(read.name, read.public_key)


def _change(
    admit: str | None,
    remove: str | None,
    quorum: int | None,
    replace_key: str | None,
    role: str,
    card: Path | None,
    key: str | None,
) -> entry_pb2.MembershipChange:
    given = [x for x in (admit, remove, quorum, replace_key) if x is not None]
    if len(given) != 1:
        fail(
            "expected exactly one of --admit NAME, --remove NAME, --quorum N, --replace-key NAME",
            EXIT_UNREADABLE,
        )
    if admit is not None:
        if role not in _ROLES:
            fail(f"expected --role among {', '.join(_ROLES)}, got {role!r}", EXIT_UNREADABLE)
        return entry_pb2.MembershipChange(
            admit_member=entry_pb2.AdmitMember(
                name=admit, verifier_key=_new_member_key(card, key, admit), role=_ROLES[role]
            )
        )
    if remove is not None:
        return entry_pb2.MembershipChange(remove_member=entry_pb2.RemoveMember(name=remove))
    if quorum is not None:
        if quorum < 1:
            fail(f"expected a quorum >= 1, got {quorum}", EXIT_UNREADABLE)
        return entry_pb2.MembershipChange(change_quorum=entry_pb2.ChangeQuorum(quorum=quorum))
    assert replace_key is not None
    return entry_pb2.MembershipChange(
        replace_member_key=entry_pb2.ReplaceMemberKey(
            name=replace_key, verifier_key=_new_member_key(card, key, replace_key)
        )
    )


def _signed_vote(signer: Signer, detail: entry_pb2.MembershipDetail) -> bytes:
    now = Timestamp()
    now.GetCurrentTime()
    try:
        return membership_entry(signer, detail, entry_id=new_entry_id(), time=now)
    except SwiftchainError as error:
        _fail_on(error)


def _check_entry(raw: bytes) -> None:
    """Refuse here, with the log's own words, a vote the node would refuse as malformed."""
    try:
        parse_entry(raw)
    except SwiftchainError as error:
        fail(f"the vote is not a valid MEMBERSHIP entry: {error}", EXIT_UNREADABLE)


def _await_settled(
    stub: chain_service_pb2_grpc.ChainServiceStub, node: str, entry_id: str, wait: float
) -> None:
    """Wait up to ``wait`` seconds for the node to sequence or reject the entry; say which."""
    deadline = time.monotonic() + wait
    while True:
        try:
            status = stub.GetEntryStatus(
                chain_pb.GetEntryStatusRequest(entry_id=entry_id), timeout=CALL_TIMEOUT
            )
        except grpc.RpcError as error:
            if rpc_code(error) is not grpc.StatusCode.NOT_FOUND:
                fail(rpc_error_message(node, error))
        else:
            if status.state == common_pb2.ENTRY_STATE_REJECTED:
                reason = entry_pb2.RejectionReason.Name(status.rejection_reason)
                fail(f"the log rejected entry {entry_id}: {reason}: {status.rejection_detail}")
            if status.state in _SETTLED:
                stdout().print(
                    Text(f"on the log at leaf {status.leaf_index} (entry {entry_id})"),
                    soft_wrap=True,
                )
                return
        if time.monotonic() >= deadline:
            stdout().print(
                Text(f"entry {entry_id} not sequenced yet; check: swiftchain consortium status"),
                soft_wrap=True,
            )
            return
        time.sleep(0.2)


_KeyOption = Annotated[
    Path,
    typer.Option("--key", metavar="FILE", help="Your member node key (NAME.key, made by keygen)."),
]
_WaitOption = Annotated[
    float,
    typer.Option("--wait", metavar="SECONDS", help="How long to wait for the log (0: do not)."),
]


@app.command(
    "propose",
    help=help_text(
        "Propose a change of the consortium, signed with your member key: admit a member "
        "(--admit NAME with its --card, --role node, regulator or witness), remove one "
        "(--remove NAME), change the quorum (--quorum N), or replace a member's key "
        "(--replace-key NAME with the new --card: a rotation by the member itself, or the "
        "recovery of a lost key by the others).",
        "The proposal counts as your vote. It takes effect at the log position of the approval "
        "that brings the votes of the node members there to the quorum there (swiftchain "
        "consortium approve), if that happens within --lifetime-entries log entries.",
        "Exit status: 0 submitted (and on the log, with --wait), 1 if the node or the log "
        "refused it (saying why), 2 for input that cannot be read.",
    ),
    epilog=examples(
        "swiftchain consortium propose --node 127.0.0.1:50061 --key keys/hospital-a.key "
        "--admit hospital-d --card hospital-d.card.json",
        "swiftchain consortium propose --node 127.0.0.1:50061 --key keys/hospital-a.key --quorum 3",
    ),
    no_args_is_help=True,
)
def membership_propose(
    node: NodeOption,
    key: _KeyOption,
    admit: Annotated[
        str | None, typer.Option("--admit", metavar="NAME", help="Admit this member.")
    ] = None,
    remove: Annotated[
        str | None, typer.Option("--remove", metavar="NAME", help="Remove this member.")
    ] = None,
    quorum: Annotated[int | None, typer.Option("--quorum", help="Set the quorum.")] = None,
    replace_key: Annotated[
        str | None,
        typer.Option("--replace-key", metavar="NAME", help="Replace this member's key."),
    ] = None,
    card: Annotated[
        Path | None,
        typer.Option("--card", metavar="FILE", help="The new key's card (made by keygen)."),
    ] = None,
    new_key: Annotated[
        str | None,
        typer.Option("--verifier-key", metavar="KEY", help="The new key, instead of --card."),
    ] = None,
    role: Annotated[str, typer.Option("--role", help="node, regulator or witness.")] = "node",
    lifetime_entries: Annotated[
        int, typer.Option("--lifetime-entries", help="How long the proposal stays open.")
    ] = DEFAULT_LIFETIME_ENTRIES,
    wait: _WaitOption = 10.0,
    tls_dir: TlsDirOption = None,
) -> None:
    """Propose a membership change (see ``help`` above)."""
    change = _change(admit, remove, quorum, replace_key, role, card, new_key)
    signer = _load_member_key(key)
    proposal_id = str(uuid.uuid4())
    detail = entry_pb2.MembershipDetail(
        proposal=entry_pb2.MembershipProposal(
            proposal_id=proposal_id, change=change, lifetime_entries=lifetime_entries
        )
    )
    raw = _signed_vote(signer, detail)
    _check_entry(raw)
    try:
        with chain_stub(node, tls_dir) as stub:
            response = stub.ProposeMembership(
                chain_pb.ProposeMembershipRequest(entry=raw), timeout=CALL_TIMEOUT
            )
            stdout().print(
                Text(f"proposal {response.proposal_id} by {signer.name} submitted"),
                soft_wrap=True,
            )
            if wait > 0:
                _await_settled(stub, node, response.entry_id, wait)
    except grpc.RpcError as error:
        fail(rpc_error_message(node, error))


@app.command(
    "approve",
    help=help_text(
        "Approve an open proposal (see swiftchain consortium status), signed with your member "
        "key. The approval that brings the votes to the quorum makes the change take effect "
        "at its log position.",
        "Exit status: 0 submitted (and on the log, with --wait), 1 if the node or the log "
        "refused it (expired, approved already, not a member: saying which), 2 for input that "
        "cannot be read.",
    ),
    epilog=examples(
        "swiftchain consortium approve 6f1c...-... --node 127.0.0.1:50062 "
        "--key keys/hospital-b.key",
    ),
    no_args_is_help=True,
)
def membership_approve(
    proposal_id: Annotated[
        str, typer.Argument(metavar="PROPOSAL_ID", help="The proposal.", show_default=False)
    ],
    node: NodeOption,
    key: _KeyOption,
    wait: _WaitOption = 10.0,
    tls_dir: TlsDirOption = None,
) -> None:
    """Approve a proposal (see ``help`` above)."""
    signer = _load_member_key(key)
    detail = entry_pb2.MembershipDetail(
        approval=entry_pb2.MembershipApproval(proposal_id=proposal_id)
    )
    raw = _signed_vote(signer, detail)
    _check_entry(raw)
    try:
        with chain_stub(node, tls_dir) as stub:
            response = stub.ApproveMembership(
                chain_pb.ApproveMembershipRequest(entry=raw), timeout=CALL_TIMEOUT
            )
            stdout().print(
                Text(f"approval of {response.proposal_id} by {signer.name} submitted"),
                soft_wrap=True,
            )
            if wait > 0:
                _await_settled(stub, node, response.entry_id, wait)
    except grpc.RpcError as error:
        fail(rpc_error_message(node, error))


def describe_change(change: entry_pb2.MembershipChange) -> str:
    """One line saying what a change does."""
    which = change.WhichOneof("change")
    if which == "admit_member":
        admit = change.admit_member
        return f"admit {admit.name} ({role_name(admit.role)}, key {admit.verifier_key})"
    if which == "remove_member":
        return f"remove {change.remove_member.name}"
    if which == "change_quorum":
        return f"set the quorum to {change.change_quorum.quorum}"
    if which == "replace_member_key":
        replace = change.replace_member_key
        return f"replace {replace.name}'s key with {replace.verifier_key}"
    return "no change"


@app.command(
    "status",
    help=help_text(
        "Print the consortium's members, their keys and roles, the quorum and the open "
        "proposals, as the node has them at its position in the log.",
        "Exit status: 0 printed, 1 if the node cannot be reached or refuses.",
    ),
    epilog=examples("swiftchain consortium status --node 127.0.0.1:50061"),
    no_args_is_help=True,
)
def membership_status(node: NodeOption, tls_dir: TlsDirOption = None) -> None:
    """Print the member set (see ``help`` above)."""
    try:
        with chain_stub(node, tls_dir) as stub:
            status = stub.GetMembership(chain_pb.GetMembershipRequest(), timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        fail(rpc_error_message(node, error))
    out = stdout()
    voters = sum(m.role == entry_pb2.MEMBER_ROLE_NODE for m in status.members)
    out.print(
        Text(f"at leaf {status.position}: quorum {status.quorum} of {voters} node members"),
        soft_wrap=True,
    )
    for member in status.members:
        out.print(
            Text(f"  {member.name} ({role_name(member.role)}) {member.verifier_key}"),
            soft_wrap=True,
        )
    if not status.proposals:
        out.print(Text("no open proposals"))
    for proposal in status.proposals:
        out.print(
            Text(
                f"proposal {proposal.proposal_id} by {proposal.proposer} at leaf "
                f"{proposal.leaf_index}, open until leaf {proposal.last_leaf_index}: "
                f"{describe_change(proposal.change)}; approved by "
                f"{', '.join(proposal.approvals)}"
            ),
            soft_wrap=True,
        )
