"""Sealing against the members at a checkpoint's size: after a vote admits a member and raises
the quorum, a checkpoint of a larger tree needs the new quorum, counts the new member, and no
longer counts a removed member or a replaced key; a smaller one keeps the old rules."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.cosigning import Cosignature, CosignatureBook, read_cosignature
from chain.entry import ParsedEntry, parse_entry
from chain.membership import MemberSet, MembershipLog, membership_entry
from chain.note import Signer, generate_key, new_signer, signature_line
from swiftchain.chain.v1 import entry_pb2, ordering_pb2

ORIGIN = "swiftchain.test/log"
NAMES = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
SIGNERS: dict[str, Signer] = {n: new_signer(generate_key(n)[0]) for n in NAMES}
NEW_C = new_signer(generate_key("hospital-c")[0])
CONFIG = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(n, SIGNERS[n].verifier().vkey) for n in NAMES[:3]),
    genesis_keys=(),
)
TIME = Timestamp(seconds=1_767_225_600)


def text(size: int) -> str:
    return Checkpoint(
        origin=ORIGIN,
        size=size,
        root_hash=bytes([size]) * 32,
        height=size,
        previous_hash=GENESIS_PREVIOUS_HASH,
        cut_time_ms=1_767_225_600_000,
    ).to_text()


def vote(by: str, n: int, detail: entry_pb2.MembershipDetail) -> ParsedEntry:
    raw = membership_entry(
        SIGNERS[by], detail, entry_id=f"{n:08x}-0000-4000-8000-{n:012x}", time=TIME
    )
    return parse_entry(raw)


def proposal(pid: str, change: entry_pb2.MembershipChange) -> entry_pb2.MembershipDetail:
    return entry_pb2.MembershipDetail(
        proposal=entry_pb2.MembershipProposal(proposal_id=pid, change=change, lifetime_entries=99)
    )


def approval(pid: str) -> entry_pb2.MembershipDetail:
    return entry_pb2.MembershipDetail(approval=entry_pb2.MembershipApproval(proposal_id=pid))


P1, P2, P3 = (f"0000000{i}-0000-4000-8000-000000000000" for i in (1, 2, 3))


def voted_log() -> MembershipLog:
    """Leaves 2-3 admit hospital-d (quorum 2 of 4 from size 4); leaves 5-6 raise the quorum to 3
    (from size 7); leaves 8-10 replace hospital-c's key (from size 11)."""
    log = MembershipLog(MemberSet.from_consortium(CONFIG))
    admit = entry_pb2.MembershipChange(
        admit_member=entry_pb2.AdmitMember(
            name="hospital-d",
            verifier_key=SIGNERS["hospital-d"].verifier().vkey,
            role=entry_pb2.MEMBER_ROLE_NODE,
        )
    )
    quorum = entry_pb2.MembershipChange(change_quorum=entry_pb2.ChangeQuorum(quorum=3))
    rekey = entry_pb2.MembershipChange(
        replace_member_key=entry_pb2.ReplaceMemberKey(
            name="hospital-c", verifier_key=NEW_C.verifier().vkey
        )
    )
    log.replay(
        [
            (2, vote("hospital-a", 1, proposal(P1, admit))),
            (3, vote("hospital-b", 2, approval(P1))),
            (5, vote("hospital-d", 3, proposal(P2, quorum))),
            (6, vote("hospital-a", 4, approval(P2))),
            (8, vote("hospital-a", 5, proposal(P3, rekey))),
            (9, vote("hospital-b", 6, approval(P3))),
            (10, vote("hospital-d", 7, approval(P3))),
        ]
    )
    log.position = 12
    return log


def line(by: str, size: int, signer: Signer | None = None) -> bytes:
    return ordering_pb2.Cosignature(
        node=by,
        height=size,
        tree_size=size,
        checkpoint=text(size),
        signature_line=signature_line(signer or SIGNERS[by], text(size)),
    ).SerializeToString()


def seal(log: MembershipLog, size: int, lines: list[bytes]) -> tuple[str, ...] | None:
    book = CosignatureBook(CONFIG, "hospital-a", log)
    book.computed(size, size, text(size), size)
    sealed = None
    for value in lines:
        cosignature = read_cosignature(value, CONFIG, log)
        assert isinstance(cosignature, Cosignature), cosignature
        sealed = book.add(cosignature).sealed or sealed
    return None if sealed is None else sealed.signers


def test_an_admitted_member_counts_from_the_size_after_its_admission() -> None:
    log = voted_log()
    # Size 3: hospital-d's admission (leaf 3) is not in the tree; its line counts for nothing.
    assert seal(log, 3, [line("hospital-a", 3), line("hospital-d", 3)]) is None
    assert seal(log, 4, [line("hospital-a", 4), line("hospital-d", 4)]) == (
        "hospital-a",
        "hospital-d",
    )


def test_a_checkpoint_after_the_quorum_change_needs_the_new_quorum() -> None:
    log = voted_log()
    assert seal(log, 6, [line("hospital-a", 6), line("hospital-b", 6)]) == (
        "hospital-a",
        "hospital-b",
    )
    assert seal(log, 7, [line("hospital-a", 7), line("hospital-b", 7)]) is None
    assert seal(log, 7, [line("hospital-a", 7), line("hospital-d", 7), line("hospital-b", 7)]) == (
        "hospital-a",
        "hospital-b",
        "hospital-d",
    )


def test_a_replaced_key_counts_until_its_replacement_and_the_new_one_after() -> None:
    log = voted_log()
    old_c, new_c = SIGNERS["hospital-c"], NEW_C
    two = [line("hospital-a", 10), line("hospital-b", 10)]
    assert seal(log, 10, [*two, line("hospital-c", 10, old_c)]) is not None
    assert seal(log, 10, [*two, line("hospital-c", 10, new_c)]) is None
    two = [line("hospital-a", 11), line("hospital-b", 11)]
    assert seal(log, 11, [*two, line("hospital-c", 11, old_c)]) is None
    assert seal(log, 11, [*two, line("hospital-c", 11, new_c)]) is not None


def test_a_line_by_someone_never_a_member_is_refused() -> None:
    log = voted_log()
    outsider = new_signer(generate_key("hospital-x")[0])
    value = ordering_pb2.Cosignature(
        node="hospital-x",
        height=4,
        tree_size=4,
        checkpoint=text(4),
        signature_line=signature_line(outsider, text(4)),
    ).SerializeToString()
    assert not isinstance(read_cosignature(value, CONFIG, log), Cosignature)
