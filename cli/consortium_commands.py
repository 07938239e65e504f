"""``swiftchain consortium ...``: the genesis ceremony, in which nobody owns the genesis.

Each founding member runs ``keygen`` on its own machine and shares only the key card it prints;
the identity and consent services make their genesis keys with ``keygen --role``; someone runs
``genesis propose`` on the cards; each founder runs ``genesis sign`` with its own key; anyone
runs ``genesis verify``. A chain node starts only from a genesis every founder signed. See
:mod:`services.platform.genesis_ceremony` and docs/security.md.

Exit codes as every command's (:mod:`cli.common`): 0 done, 1 a check failed (a signature
missing or wrong, a key card its key did not sign, a key file that exists already), 2 input
that cannot be read or is not what it should be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from chain.consortium import ConsortiumConfig, parse_consortium
from chain.errors import (
    AlreadyExistsError,
    PermissionDeniedError,
    SwiftchainError,
    VerificationError,
)
from chain.genesis import genesis_hash, verify_genesis
from cli.common import (
    EXIT_FAILED,
    EXIT_UNREADABLE,
    UnreadableInputError,
    examples,
    fail,
    help_text,
    read_input,
    stderr,
    stdout,
    write_output,
)
from services.platform.genesis_ceremony import (
    ROLE_MEMBER,
    ROLES,
    SERVICE_ROLES,
    GeneratedKey,
    KeyCard,
    founder_key_path,
    generate_tag_key,
    member_keygen,
    parse_card,
    propose,
    service_keygen,
    sign_with_key,
)

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


def _fail_on(error: SwiftchainError) -> None:
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
