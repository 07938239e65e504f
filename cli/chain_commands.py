"""``swiftchain chain ...``: fetch evidence from a chain node.

* ``chain prove`` writes an evidence bundle for entries (inclusion proofs to one sealed
  checkpoint, the consortium's keys and quorum, optionally a consistency proof from a checkpoint
  saved earlier), after verifying it. With ``--mirror`` it needs no account: it reads a node's
  public mirror (HTTP, tlog-tiles) and builds every proof itself (``sdk/mirror.py``).
* ``chain checkpoint`` saves the latest sealed checkpoint, for a later ``--since-checkpoint``.

Both check what the node sends against the consortium the user pinned (``--consortium FILE`` or
``swiftchain config pin``), as ``swiftchain verify`` does, never against the keys the node
reports: a node that lies about the members would otherwise vouch for itself. With nothing
pinned they exit 2, unless ``--trust-bundle-keys`` accepts the node's keys with a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.text import Text

from chain.checkpoint import Checkpoint, parse_checkpoint, verify_sealed_checkpoint
from chain.errors import NotFoundError, SwiftchainError, UnavailableError
from chain.evidence import (
    ConsistencyEvidence,
    EvidenceBundle,
    VerificationReport,
    verify_against_consortium,
    verify_bundle,
)
from chain.note import parse_note, verify_note
from cli.common import (
    EXIT_UNREADABLE,
    NodeOption,
    UnreadableInputError,
    check_target,
    examples,
    fail,
    help_text,
    read_input,
    stderr,
    stdout,
    write_output,
)
from cli.grpc_client import CALL_TIMEOUT, TlsDirOption, chain_stub, rpc_code, rpc_error_message
from cli.pinned_consortium import PinnedConsortium
from cli.verify_command import TRUST_BUNDLE_KEYS_WARNING, choose_consortium, render_report
from sdk.mirror import MirrorClient, prove_from_mirror
from services.platform.chain_client import (
    consistency_since,
    evidence_bundle,
    prove_leaf,
    prove_together,
)
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import chain_service_pb2_grpc, consortium_pb2

app = typer.Typer(
    help="Fetch evidence from a chain node: inclusion and consistency proofs, checkpoints.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _read_checkpoint_file(path: Path) -> tuple[str, Checkpoint]:
    """A saved signed checkpoint note (exact bytes) and its parsed text; exit 2 if unreadable."""
    try:
        raw = read_input(path, "checkpoint file")
        parsed = parse_note(raw)
        return raw.decode("utf-8"), parse_checkpoint(parsed.text)
    except UnreadableInputError as exc:
        fail(str(exc), EXIT_UNREADABLE)
    except SwiftchainError as exc:
        fail(f"{path} is not a signed checkpoint: {exc}", EXIT_UNREADABLE)


def _consortium(stub: chain_service_pb2_grpc.ChainServiceStub) -> consortium_pb2.Consortium:
    return stub.GetConsortium(pb.GetConsortiumRequest(), timeout=CALL_TIMEOUT).consortium


def _optional_target(value: str | None) -> str | None:
    return None if value is None else check_target(value)


ConsortiumOption = Annotated[
    Path | None,
    typer.Option(
        "--consortium",
        metavar="FILE",
        help="A swiftchain-consortium/v1 file: the member keys, quorum and origin the node's "
        "checkpoint must match. Default: the file pinned with `swiftchain config pin`.",
        show_default=False,
    ),
]
TrustBundleKeysOption = Annotated[
    bool,
    typer.Option(
        "--trust-bundle-keys",
        help="With no consortium pinned: check against the member keys the node reports "
        "(prints a warning; proves only that the node is consistent with itself).",
    ),
]


def _pinned(option: Path | None, trust_bundle_keys: bool) -> PinnedConsortium | None:
    """The consortium to check the node's answers against (None: the node's own keys, only
    with --trust-bundle-keys); exit 2 with the reason when there is none."""
    try:
        pinned = choose_consortium(
            option, trust_bundle_keys, "to check the node's checkpoint against"
        )
    except UnreadableInputError as exc:
        fail(str(exc), EXIT_UNREADABLE)
    if pinned is None:
        stderr().print(Text(TRUST_BUNDLE_KEYS_WARNING, style="bold yellow"), soft_wrap=True)
    return pinned


def _checked(bundle: EvidenceBundle, pinned: PinnedConsortium | None) -> VerificationReport:
    """The bundle's report against the pinned consortium, or its own keys without one."""
    if pinned is None:
        return verify_bundle(bundle)
    return verify_against_consortium(bundle, pinned.config)


@app.command(
    "prove",
    help=help_text(
        "Write an evidence bundle proving that entries are in the log.",
        "With --node: fetches from one node each entry's exact bytes and its inclusion proof to "
        "the latest sealed checkpoint (waiting until the entry is sealed), the consortium's "
        "member keys and quorum. With --mirror (no account needed): reads a node's public "
        "mirror over HTTP and builds every proof from the tiles itself; entries are named by "
        "--leaf-index (a mirror has no index by entry id). With --since-checkpoint a "
        "consistency proof from that older checkpoint is added. The bundle is verified before "
        "it is written, against the consortium pinned with --consortium FILE or "
        "`swiftchain config pin`, never against the keys the node reports; anyone can check it "
        "again, offline, with 'swiftchain verify'.",
        "Exit status: 0 when the bundle is written, 1 if the node or mirror cannot answer or "
        "what it sends does not verify, 2 for unreadable input, options that do not fit, or no "
        "pinned consortium (unless --trust-bundle-keys).",
    ),
    epilog=examples(
        "swiftchain chain prove --node 127.0.0.1:50061 "
        "--entry-id 3f2b8c1e-0d4a-4c7e-9a51-6f0e2d9b7a10 --out receipt.json",
        "swiftchain chain prove --node 127.0.0.1:50061 --entry-id ID1 --entry-id ID2 "
        "--since-checkpoint last.note --out receipt.json --wait 60",
        "swiftchain chain prove --mirror http://127.0.0.1:8061 --consortium consortium.json "
        "--leaf-index 12 --out receipt.json",
        "swiftchain config pin consortium.json && swiftchain chain prove --node "
        "127.0.0.1:50061 --entry-id ID --out receipt.json",
    ),
    no_args_is_help=True,
)
def prove(
    out: Annotated[
        Path,
        typer.Option(
            "--out", metavar="FILE", help="Where to write the bundle (JSON).", show_default=False
        ),
    ],
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            metavar="HOST:PORT",
            help="A chain node's gRPC address (any member's node serves the same log).",
            callback=_optional_target,
            show_default=False,
        ),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            metavar="URL",
            help="A node's public mirror (http://host:port): no account, proofs built here.",
            show_default=False,
        ),
    ] = None,
    consortium_file: ConsortiumOption = None,
    trust_bundle_keys: TrustBundleKeysOption = False,
    entry_ids: Annotated[
        list[str] | None,
        typer.Option(
            "--entry-id",
            metavar="ID",
            help="With --node: the entry's id (UUID). Repeat for several entries in one bundle.",
            show_default=False,
        ),
    ] = None,
    leaf_indexes: Annotated[
        list[int] | None,
        typer.Option(
            "--leaf-index",
            metavar="N",
            min=0,
            help="With --mirror: the entry's leaf index (a receipt shows it). Repeatable.",
            show_default=False,
        ),
    ] = None,
    since_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--since-checkpoint",
            metavar="FILE",
            help="An older signed checkpoint (from 'swiftchain chain checkpoint'): add a "
            "consistency proof from it to the bundle's checkpoint.",
        ),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            metavar="SECONDS",
            min=0,
            help="With --node: how long to wait for the entry to be sealed (0: fail at once if "
            "it is not).",
        ),
    ] = 30.0,
    tls_dir: TlsDirOption = None,
) -> None:
    """Write an evidence bundle for entries (see ``help`` above)."""
    if (node is None) == (mirror is None):
        fail("expected either --node HOST:PORT or --mirror URL", EXIT_UNREADABLE)
    older: tuple[str, Checkpoint] | None = None
    if since_checkpoint is not None:
        older = _read_checkpoint_file(since_checkpoint)
    if mirror is not None:
        _check_mirror_options(entry_ids, leaf_indexes)
        pinned = _pinned(consortium_file, trust_bundle_keys)
        if pinned is None:
            fail(
                "--mirror needs a pinned consortium (--consortium FILE or `swiftchain config "
                "pin`): the mirror is trusted for nothing, and has no keys of its own to offer",
                EXIT_UNREADABLE,
            )
        bundle, leaves, source = _prove_from_mirror(mirror, pinned, leaf_indexes or [], older)
    else:
        assert node is not None  # one of the two, checked above
        _check_node_options(entry_ids, leaf_indexes)
        pinned = _pinned(consortium_file, trust_bundle_keys)
        bundle, leaves, source = _prove_from_node(node, entry_ids or [], older, wait, tls_dir)
    report = _checked(bundle, pinned)
    if not report.ok:
        render_report(report, stderr(), source=f"from {source} (not written)")
        fail(f"{source} served evidence that does not verify; nothing written to {out}")
    write_output(out, bundle.to_json().encode("utf-8"), "bundle")
    console = stdout()
    size = parse_checkpoint(parse_note(bundle.checkpoint.encode("utf-8")).text).size
    console.print(Text(f"wrote {out}", style="bold"), soft_wrap=True)
    console.print(Text(f"  entries     {leaves}"), soft_wrap=True)
    console.print(
        Text(
            f"  checkpoint  tree size {size}, signed by {', '.join(report.signers)} "
            f"(quorum {report.quorum})"
        ),
        soft_wrap=True,
    )
    checked = "the node's own keys" if pinned is None else pinned.describe()
    console.print(Text(f"  checked     against {checked}"), soft_wrap=True)
    if older is not None:
        console.print(Text(f"  consistency from tree size {older[1].size}"), soft_wrap=True)


def _check_node_options(entry_ids: list[str] | None, leaf_indexes: list[int] | None) -> None:
    """Exit 2 unless the options fit --node: entries by --entry-id."""
    if leaf_indexes:
        fail("--leaf-index goes with --mirror; with --node use --entry-id", EXIT_UNREADABLE)
    ids = [i.strip() for i in entry_ids or []]
    if not ids or not all(ids):
        fail("--entry-id: expected an entry id, got none or an empty one", EXIT_UNREADABLE)


def _prove_from_node(
    node: str,
    entry_ids: list[str],
    older: tuple[str, Checkpoint] | None,
    wait: float,
    tls_dir: Path | None,
) -> tuple[EvidenceBundle, str, str]:
    """The bundle from a node's ChainService, what it proves, and where it came from."""
    ids = [i.strip() for i in entry_ids]
    try:
        with chain_stub(node, tls_dir) as stub:
            consortium = _consortium(stub)
            proved = prove_together(stub, ids, wait)
            size = proved[0].tree_size
            consistency: list[ConsistencyEvidence] = []
            if older is not None:
                old_note, old_checkpoint = older
                if old_checkpoint.size > size:
                    fail(
                        f"the --since-checkpoint (tree size {old_checkpoint.size}) is newer than "
                        f"the checkpoint node {node} proves against (tree size {size}); "
                        "ask a node that is up to date"
                    )
                consistency.append(consistency_since(stub, old_note, size))
    except grpc.RpcError as error:
        if rpc_code(error) is grpc.StatusCode.DEADLINE_EXCEEDED:
            fail(f"node {node}: the entry was not sealed within {wait:g} s (DEADLINE_EXCEEDED)")
        fail(rpc_error_message(node, error))
    try:
        bundle = evidence_bundle(consortium, proved, consistency)
    except SwiftchainError as exc:
        fail(f"node {node} sent something that is not evidence: {exc}")
    leaves = ", ".join(f"{p.entry_id} at leaf {p.leaf_index}" for p in proved)
    return bundle, leaves, f"node {node}"


def _check_mirror_options(entry_ids: list[str] | None, leaf_indexes: list[int] | None) -> None:
    """Exit 2 unless the options fit --mirror: entries by --leaf-index."""
    if entry_ids:
        fail(
            "--entry-id needs --node: a mirror serves tiles, not an index by entry id; "
            "give --leaf-index (a receipt shows it)",
            EXIT_UNREADABLE,
        )
    if not leaf_indexes:
        fail("--mirror: expected at least one --leaf-index", EXIT_UNREADABLE)


def _prove_from_mirror(
    url: str,
    pinned: PinnedConsortium,
    leaf_indexes: list[int],
    older: tuple[str, Checkpoint] | None,
) -> tuple[EvidenceBundle, str, str]:
    """The bundle built from a mirror's tiles, what it proves, and where it came from."""
    try:
        client = MirrorClient(url)
    except SwiftchainError as exc:
        fail(f"--mirror: {exc}", EXIT_UNREADABLE)
    since = older[0].encode("utf-8") if older is not None else None
    try:
        bundle = prove_from_mirror(client, pinned.config, leaf_indexes, since)
    except (UnavailableError, NotFoundError) as exc:
        fail(str(exc))
    except SwiftchainError as exc:
        fail(f"mirror {url}: {exc}")
    finally:
        client.close()
    leaves = ", ".join(f"leaf {i}" for i in leaf_indexes)
    return bundle, leaves, f"mirror {url}"


@app.command(
    "checkpoint",
    help=help_text(
        "Fetch the latest sealed checkpoint (a signed note) and check its quorum.",
        "The note is checked against the consortium pinned with --consortium FILE or "
        "`swiftchain config pin` (member signatures, quorum, origin), with the members as of "
        "its tree size: the node proves the log's MEMBERSHIP entries to it along with the "
        "first leaf. Keep it: a bundle made later with --since-checkpoint proves that the log "
        "as it is then extends the log you saw now.",
        "Exit status: 0 when the checkpoint verifies, 1 if the node cannot answer or its "
        "checkpoint does not verify, 2 for no pinned consortium (unless --trust-bundle-keys, "
        "which checks it against the keys the node reports, with a warning).",
    ),
    epilog=examples(
        "swiftchain chain checkpoint --node 127.0.0.1:50061 --consortium consortium.json "
        "--out last.note",
        "swiftchain chain prove --node 127.0.0.1:50061 --entry-id ID "
        "--since-checkpoint last.note --out receipt.json",
    ),
    no_args_is_help=True,
)
def checkpoint(
    node: NodeOption,
    tls_dir: TlsDirOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Save the signed note to FILE (exact bytes). Without it the note is printed.",
        ),
    ] = None,
    consortium_file: ConsortiumOption = None,
    trust_bundle_keys: TrustBundleKeysOption = False,
) -> None:
    """Save or print the latest sealed checkpoint (see ``help`` above)."""
    pinned = _pinned(consortium_file, trust_bundle_keys)
    try:
        with chain_stub(node, tls_dir) as stub:
            consortium = _consortium(stub)
            request = pb.GetCheckpointRequest()
            note = stub.GetCheckpoint(request, timeout=CALL_TIMEOUT).checkpoint.note
            if pinned is not None:
                checked = _checkpoint_against(stub, node, consortium, note, pinned)
    except grpc.RpcError as error:
        fail(rpc_error_message(node, error))
    if pinned is None:
        checked = _checkpoint_by_node_keys(node, consortium, note)
    parsed, signers, quorum = checked
    if out is None:
        typer.echo(note, nl=False)
        return
    write_output(out, note.encode("utf-8"), "checkpoint")
    stdout().print(
        Text(
            f"wrote {out}: tree size {parsed.size}, height {parsed.height}, "
            f"root {parsed.root_hash.hex()[:16]}…, signed by {', '.join(signers)} "
            f"(quorum {quorum}), checked against "
            + ("the node's own keys" if pinned is None else pinned.describe())
        ),
        soft_wrap=True,
    )


def _checkpoint_against(
    stub: chain_service_pb2_grpc.ChainServiceStub,
    node: str,
    consortium: consortium_pb2.Consortium,
    note: str,
    pinned: PinnedConsortium,
) -> tuple[Checkpoint, list[str], int]:
    """The checkpoint ``note``, verified against the pinned consortium with the members as of
    its size: the node proves its first leaf to it, with the MEMBERSHIP entries below it, and
    that evidence is verified as ``swiftchain verify`` would. Exit 1 if it fails."""
    try:
        parsed = parse_checkpoint(parse_note(note.encode("utf-8")).text)
        bundle = evidence_bundle(consortium, [prove_leaf(stub, "", 0, parsed.size)])
    except SwiftchainError as exc:
        fail(f"node {node} served a checkpoint that is not one: {exc}")
    if bundle.checkpoint != note:
        fail(f"node {node} proved its first leaf to another checkpoint than the one it served")
    report = verify_against_consortium(bundle, pinned.config)
    if not report.ok:
        failed = "; ".join(f"{c.name}: {c.message}" for c in report.failures)
        fail(
            f"node {node} served a checkpoint that does not verify against the pinned "
            f"consortium {pinned.describe()}: {failed}"
        )
    return parsed, list(report.signers), report.quorum


def _checkpoint_by_node_keys(
    node: str, consortium: consortium_pb2.Consortium, note: str
) -> tuple[Checkpoint, list[str], int]:
    """The checkpoint ``note`` checked against the keys the node reports (--trust-bundle-keys
    with nothing pinned); exit 1 if even that fails."""
    keys = [m.verifier_key for m in consortium.members]
    try:
        parsed = verify_sealed_checkpoint(
            note.encode("utf-8"), keys, consortium.quorum, consortium.origin
        )
        signers = [s.name for s in verify_note(parse_note(note.encode("utf-8")), keys).signatures]
    except SwiftchainError as exc:
        fail(f"node {node} served a checkpoint that does not verify: {exc}")
    return parsed, signers, consortium.quorum
