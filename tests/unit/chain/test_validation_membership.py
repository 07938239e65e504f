"""MEMBERSHIP entries through the node's validator and sequencer: signed by members' own keys,
refused with their RejectionReason, and taking effect at the leaf index the sequencer gives the
approving entry (the validator's position follows every accepted entry of any kind)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp

from chain.consortium import ConsortiumConfig, GenesisKey, Member
from chain.entry import EntrySigner, parse_entry
from chain.membership import MemberSet, MembershipLog, membership_entry
from chain.note import Signer, new_signer, signer_key
from chain.sequencer import OrderedRecord, Sequencer, entry_record
from chain.tiles import MemoryHashStore
from chain.validation import EntryValidator, KeyRegistry
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

TIME = Timestamp(seconds=1_767_225_600)


def key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def member(name: str, seed: int) -> Signer:
    return new_signer(signer_key(name, key(seed)))


A, B, C, D = (
    member("hospital-a", 11),
    member("hospital-b", 12),
    member("hospital-c", 13),
    member("hospital-d", 14),
)
RECORD_KEY = key(2)
RECORDS = EntrySigner("hospital-a/1", RECORD_KEY)
CONFIG = ConsortiumConfig(
    origin="swiftchain.test/log",
    quorum=2,
    members=tuple(Member(s.name, s.verifier().vkey) for s in (A, B, C)),
    genesis_keys=(
        GenesisKey(
            RECORDS.key_id,
            "hospital-a",
            ("RECORD",),
            RECORD_KEY.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            ),
        ),
    ),
    batch_max=2,
)


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.n:08x}-0000-4000-8000-{self.n:012x}"


IDS = Ids()


def record() -> bytes:
    body = entry_pb2.EntryBody(
        entry_id=IDS(),
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id="hospital-a",
        commitment=bytes(32),
        subject_tag=bytes(32),
        record=entry_pb2.RecordDetail(
            record_tag=bytes(32), version=1, action=common_pb2.RECORD_ACTION_CREATE
        ),
    )
    body.time.CopyFrom(TIME)
    return RECORDS.sign_entry(body.SerializeToString())


def propose(by: Signer, proposal_id: str, change: entry_pb2.MembershipChange) -> bytes:
    detail = entry_pb2.MembershipDetail(
        proposal=entry_pb2.MembershipProposal(
            proposal_id=proposal_id, change=change, lifetime_entries=50
        )
    )
    return membership_entry(by, detail, entry_id=IDS(), time=TIME)


def approve(by: Signer, proposal_id: str, entry_id: str | None = None) -> bytes:
    detail = entry_pb2.MembershipDetail(
        approval=entry_pb2.MembershipApproval(proposal_id=proposal_id)
    )
    return membership_entry(by, detail, entry_id=entry_id or IDS(), time=TIME)


ADMIT_D = entry_pb2.MembershipChange(
    admit_member=entry_pb2.AdmitMember(
        name="hospital-d", verifier_key=D.verifier().vkey, role=entry_pb2.MEMBER_ROLE_NODE
    )
)
PROPOSAL = "0000abcd-0000-4000-8000-000000000001"


def sequencer() -> Sequencer:
    membership = MembershipLog(MemberSet.from_consortium(CONFIG))
    validator = EntryValidator(KeyRegistry(CONFIG.genesis_keys), membership=membership)
    return Sequencer(CONFIG, MemoryHashStore(), validator)


def run(seq: Sequencer, entries: list[bytes]) -> dict[int, str]:
    """Apply entries one record each; the rejection code by offset (the entry's place)."""
    records = [
        OrderedRecord(offset, 1_767_225_600_000 + offset, entry_record(raw))
        for offset, raw in enumerate(entries)
    ]
    output = seq.apply(records, lambda ids: set())
    return {r.offset: r.code for r in output.rejections}


def entry_id(raw: bytes) -> str:
    return parse_entry(raw).entry_id


def test_an_admission_takes_effect_at_the_approvals_leaf_in_the_sequenced_log() -> None:
    seq = sequencer()
    membership = seq.validator.membership
    assert membership is not None
    entries = [record(), propose(A, PROPOSAL, ADMIT_D), record(), record(), approve(B, PROPOSAL)]
    assert run(seq, entries) == {}
    assert membership.position == 5
    assert membership.entry_indexes == [1, 4]
    assert [m.name for m in membership.members_at(4).members] == [
        "hospital-a",
        "hospital-b",
        "hospital-c",
    ]
    assert [m.name for m in membership.members_at(5).members][-1] == "hospital-d"
    # The new member votes from there on.
    later = propose(
        D,
        "0000abcd-0000-4000-8000-000000000002",
        entry_pb2.MembershipChange(change_quorum=entry_pb2.ChangeQuorum(quorum=3)),
    )
    assert run(seq, [later]) == {}
    assert membership.entry_indexes == [1, 4, 5]


def test_refusals_carry_their_rejection_reason() -> None:
    seq = sequencer()
    outsider = member("hospital-x", 20)
    forged = member("hospital-b", 21)  # B's name, another key
    first = approve(C, PROPOSAL)
    proposal = propose(A, PROPOSAL, ADMIT_D)
    by_c = approve(C, PROPOSAL)
    entries = {
        "unknown": first,
        "proposal": proposal,
        "outsider": approve(outsider, PROPOSAL),
        "forged": approve(forged, PROPOSAL),
        "again": approve(A, PROPOSAL),
        "reused id": approve(B, PROPOSAL, entry_id=entry_id(proposal)),
        "by c": by_c,
        "closed": approve(B, PROPOSAL),
        "conflict": propose(B, PROPOSAL, ADMIT_D),
    }
    codes = run(seq, list(entries.values()))
    by_name = {name: codes.get(i, "accepted") for i, name in enumerate(entries)}
    assert by_name == {
        "unknown": "MEMBERSHIP_UNKNOWN_PROPOSAL",
        "proposal": "accepted",
        "outsider": "MEMBERSHIP_NOT_A_MEMBER",
        "forged": "BAD_SIGNATURE",
        "again": "MEMBERSHIP_DUPLICATE_APPROVAL",
        "reused id": "DUPLICATE_ENTRY_ID",
        "by c": "accepted",
        "closed": "MEMBERSHIP_PROPOSAL_CLOSED",
        "conflict": "MEMBERSHIP_CONFLICT",
    }


def test_membership_entries_are_single_signed_under_the_members_name() -> None:
    seq = sequencer()
    body = entry_pb2.EntryBody.FromString(
        entry_pb2.ChainEntry.FromString(propose(A, PROPOSAL, ADMIT_D)).body
    )
    batch = EntrySigner("hospital-a", A.private_key).sign_batch([body.SerializeToString()])[0]
    renamed = EntrySigner("hospital-a/1", A.private_key).sign_entry(body.SerializeToString())
    codes = run(seq, [batch, renamed])
    assert sorted(codes.values()) == ["MALFORMED", "MALFORMED"]


def test_a_validator_without_a_member_set_refuses_membership_entries() -> None:
    validator = EntryValidator(KeyRegistry(CONFIG.genesis_keys))
    try:
        validator.validate(propose(A, PROPOSAL, ADMIT_D), lambda _: False)
    except Exception as error:
        assert getattr(error, "reason", None) == "MEMBERSHIP_NOT_A_MEMBER"
    else:
        raise AssertionError("expected the MEMBERSHIP entry to be refused")
