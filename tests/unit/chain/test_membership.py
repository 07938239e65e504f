"""Tests of chain.membership: member sets along the log, changed only by a quorum's votes.

A naive reference (:func:`naive_members`) recomputes the member set of every tree size from
scratch, entry by entry, with none of the log's bookkeeping; the property test compares it,
the node's path (check / apply / skip) and the offline path (replay) over random vote sequences.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp

from chain.entry import ParsedEntry, parse_entry
from chain.errors import InvalidInputError
from chain.membership import (
    MemberKey,
    MemberSet,
    MembershipLog,
    MembershipRejectedError,
    membership_entry,
)
from chain.note import Signer, new_signer, signer_key
from swiftchain.chain.v1 import entry_pb2

TIME = Timestamp(seconds=1_700_000_000)
NAMES = ("hospital-a", "hospital-b", "hospital-c", "hospital-d", "hospital-e")


def signer(name: str, seed: int = 0) -> Signer:
    """A deterministic note key for ``name`` (``seed`` picks another key for the same name)."""
    raw = bytes([NAMES.index(name) + 1 if name in NAMES else 99, seed]) * 16
    return new_signer(signer_key(name, Ed25519PrivateKey.from_private_bytes(raw)))


SIGNERS = {name: signer(name) for name in NAMES}
OUTSIDER = signer("outsider")


def genesis(count: int = 3, quorum: int = 2) -> MemberSet:
    return MemberSet(tuple(MemberKey(n, SIGNERS[n].verifier().vkey) for n in NAMES[:count]), quorum)


class Votes:
    """Builds MEMBERSHIP entries with fresh entry and proposal ids."""

    def __init__(self) -> None:
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"{self.n:08x}-0000-4000-8000-{self.n:012x}"

    def _entry(self, by: Signer, detail: entry_pb2.MembershipDetail) -> ParsedEntry:
        raw = membership_entry(
            by, detail, entry_id=self._id(), time=Timestamp(seconds=1_700_000_000)
        )
        return parse_entry(raw)

    def propose(
        self, by: Signer, change: entry_pb2.MembershipChange, lifetime: int = 100
    ) -> tuple[str, ParsedEntry]:
        proposal_id = self._id()
        detail = entry_pb2.MembershipDetail(
            proposal=entry_pb2.MembershipProposal(
                proposal_id=proposal_id, change=change, lifetime_entries=lifetime
            )
        )
        return proposal_id, self._entry(by, detail)

    def approve(self, by: Signer, proposal_id: str) -> ParsedEntry:
        detail = entry_pb2.MembershipDetail(
            approval=entry_pb2.MembershipApproval(proposal_id=proposal_id)
        )
        return self._entry(by, detail)


def admit(
    name: str, role: entry_pb2.MemberRole.ValueType = entry_pb2.MEMBER_ROLE_NODE
) -> entry_pb2.MembershipChange:
    return entry_pb2.MembershipChange(
        admit_member=entry_pb2.AdmitMember(
            name=name, verifier_key=SIGNERS[name].verifier().vkey, role=role
        )
    )


def remove(name: str) -> entry_pb2.MembershipChange:
    return entry_pb2.MembershipChange(remove_member=entry_pb2.RemoveMember(name=name))


def set_quorum(quorum: int) -> entry_pb2.MembershipChange:
    return entry_pb2.MembershipChange(change_quorum=entry_pb2.ChangeQuorum(quorum=quorum))


def replace_key(name: str, new: Signer) -> entry_pb2.MembershipChange:
    return entry_pb2.MembershipChange(
        replace_member_key=entry_pb2.ReplaceMemberKey(name=name, verifier_key=new.verifier().vkey)
    )


def accept(log: MembershipLog, parsed: ParsedEntry) -> MemberSet | None:
    log.check(parsed)
    return log.apply(parsed)


def rejected(log: MembershipLog, parsed: ParsedEntry) -> str:
    with pytest.raises(MembershipRejectedError) as caught:
        log.check(parsed)
    return caught.value.reason


def names(members: MemberSet) -> list[str]:
    return [m.name for m in members.members]


A, B, C, D = (SIGNERS[n] for n in NAMES[:4])


def test_change_takes_effect_exactly_at_the_approval_reaching_the_quorum() -> None:
    votes, log = Votes(), MembershipLog(genesis(), position=5)
    proposal_id, proposal = votes.propose(A, admit("hospital-d"))
    assert accept(log, proposal) is None  # one vote of two
    log.skip(3)
    changed = accept(log, votes.approve(B, proposal_id))  # at leaf 9
    assert changed is not None and names(changed) == [*NAMES[:4]]
    assert log.entry_indexes == [5, 9]
    assert names(log.members_at(9)) == list(NAMES[:3])  # leaf 9 is not in a tree of size 9
    assert names(log.members_at(10)) == list(NAMES[:4])
    assert log.members_at(10).quorum == 2
    assert log.proposal(proposal_id) is not None
    assert log.proposal(proposal_id).applied_at == 9  # type: ignore[union-attr]
    # The new member votes from then on; the closed proposal takes no more approvals.
    assert rejected(log, votes.approve(C, proposal_id)) == "MEMBERSHIP_PROPOSAL_CLOSED"
    _, by_d = votes.propose(D, set_quorum(3))
    assert accept(log, by_d) is None


def test_a_quorum_of_one_applies_the_proposal_itself() -> None:
    votes, log = Votes(), MembershipLog(genesis(quorum=1))
    _, proposal = votes.propose(B, remove("hospital-c"))
    changed = accept(log, proposal)
    assert changed is not None and names(changed) == ["hospital-a", "hospital-b"]
    assert names(log.members_at(1)) == ["hospital-a", "hospital-b"]


def test_an_approval_after_the_lifetime_is_rejected() -> None:
    votes, log = Votes(), MembershipLog(genesis(count=4, quorum=3))
    proposal_id, proposal = votes.propose(A, set_quorum(2), lifetime=3)
    accept(log, proposal)  # leaf 0: approvals count up to leaf 3
    log.skip(2)
    accept(log, votes.approve(B, proposal_id))  # leaf 3, the last
    late = votes.approve(C, proposal_id)
    assert rejected(log, late) == "MEMBERSHIP_PROPOSAL_EXPIRED"
    assert [p.proposal_id for p in log.open_proposals()] == []
    assert log.current.quorum == 3


def test_signers_that_are_not_voting_members_are_rejected() -> None:
    votes, log = Votes(), MembershipLog(genesis(quorum=1))
    accept(log, votes.propose(A, admit("hospital-e", entry_pb2.MEMBER_ROLE_REGULATOR))[1])
    assert log.current.get("hospital-e") is not None
    assert [m.name for m in log.current.nodes] == list(NAMES[:3])
    _, by_outsider = votes.propose(OUTSIDER, set_quorum(2))
    assert rejected(log, by_outsider) == "MEMBERSHIP_NOT_A_MEMBER"
    _, by_regulator = votes.propose(SIGNERS["hospital-e"], set_quorum(2))
    assert rejected(log, by_regulator) == "MEMBERSHIP_NOT_A_MEMBER"


def test_a_second_approval_by_one_member_is_rejected() -> None:
    votes, log = Votes(), MembershipLog(genesis(count=4, quorum=3))
    proposal_id, proposal = votes.propose(A, admit("hospital-e"))
    accept(log, proposal)
    assert rejected(log, votes.approve(A, proposal_id)) == "MEMBERSHIP_DUPLICATE_APPROVAL"
    accept(log, votes.approve(B, proposal_id))
    assert rejected(log, votes.approve(B, proposal_id)) == "MEMBERSHIP_DUPLICATE_APPROVAL"
    assert accept(log, votes.approve(C, proposal_id)) is not None


def test_unknown_proposals_reused_ids_and_changes_that_do_not_apply() -> None:
    votes, log = Votes(), MembershipLog(genesis())
    assert rejected(log, votes.approve(A, "00000000-0000-4000-8000-000000000000")) == (
        "MEMBERSHIP_UNKNOWN_PROPOSAL"
    )
    for change in (admit("hospital-b"), remove("hospital-e"), set_quorum(4), set_quorum(2)):
        assert rejected(log, votes.propose(A, change)[1]) == "MEMBERSHIP_CONFLICT"
    proposal_id, proposal = votes.propose(A, set_quorum(3))
    accept(log, proposal)
    again = entry_pb2.MembershipDetail(
        proposal=entry_pb2.MembershipProposal(
            proposal_id=proposal_id, change=set_quorum(1), lifetime_entries=5
        )
    )
    assert rejected(log, votes._entry(B, again)) == "MEMBERSHIP_CONFLICT"


def test_removal_shrinks_the_member_set_and_the_removed_member_stops_counting() -> None:
    votes, log = Votes(), MembershipLog(genesis(count=4, quorum=2))
    admit_e, proposal = votes.propose(C, admit("hospital-e"))
    accept(log, proposal)  # C's vote for admitting E
    removal, remove_c = votes.propose(A, remove("hospital-c"))
    accept(log, remove_c)
    changed = accept(log, votes.approve(B, removal))
    assert changed is not None and names(changed) == ["hospital-a", "hospital-b", "hospital-d"]
    # C's earlier vote no longer counts: D's approval is the first of two.
    assert accept(log, votes.approve(D, admit_e)) is None
    assert rejected(log, votes.approve(C, admit_e)) == "MEMBERSHIP_NOT_A_MEMBER"
    assert accept(log, votes.approve(A, admit_e)) is not None
    # Removing node members below the quorum is refused: lower the quorum first.
    log2 = MembershipLog(genesis(count=2, quorum=2))
    assert rejected(log2, votes.propose(A, remove("hospital-b"))[1]) == "MEMBERSHIP_CONFLICT"


def test_quorum_change_applies_to_later_votes_and_checkpoints() -> None:
    votes, log = Votes(), MembershipLog(genesis(count=4, quorum=2))
    raise_q, proposal = votes.propose(A, set_quorum(3))
    accept(log, proposal)
    assert accept(log, votes.approve(B, raise_q)) is not None  # leaf 1
    assert log.members_at(1).quorum == 2 and log.members_at(2).quorum == 3
    admit_e, proposal = votes.propose(A, admit("hospital-e"))
    accept(log, proposal)
    assert accept(log, votes.approve(B, admit_e)) is None  # 2 of 3 now
    assert accept(log, votes.approve(C, admit_e)) is not None


def test_a_replaced_key_signs_from_its_position_on_and_the_old_one_no_longer() -> None:
    votes, log = Votes(), MembershipLog(genesis(quorum=2))
    lost_b = B
    new_b = signer("hospital-b", seed=7)
    recovery, proposal = votes.propose(A, replace_key("hospital-b", new_b))
    accept(log, proposal)
    assert accept(log, votes.approve(C, recovery)) is not None
    assert log.current.get("hospital-b").verifier.vkey == new_b.verifier().vkey  # type: ignore[union-attr]
    _, by_old = votes.propose(lost_b, set_quorum(3))
    assert rejected(log, by_old) == "BAD_SIGNATURE"
    accept(log, votes.propose(new_b, set_quorum(3))[1])
    assert names(log.members_at(2)) == list(NAMES[:3])
    assert log.members_at(1).get("hospital-b").verifier.vkey == B.verifier().vkey  # type: ignore[union-attr]


def test_replay_refuses_entries_out_of_order() -> None:
    votes, log = Votes(), MembershipLog(genesis())
    first = votes.propose(A, set_quorum(3))[1]
    second = votes.propose(B, set_quorum(1))[1]
    with pytest.raises(InvalidInputError):
        log.replay([(4, first), (2, second)])


# ---------------------------------------------------------------- the naive reference


def naive_members(
    start: MemberSet, entries: list[tuple[int, ParsedEntry]], size: int
) -> tuple[tuple[str, str, int], ...]:
    """The members (name, key, role) and quorum at ``size``, from scratch: walk the accepted
    MEMBERSHIP entries below ``size``, count each open proposal's voters among the current node
    members after every vote, and apply a proposal when they reach the current quorum."""
    members = {m.name: (m.verifier_key, m.role) for m in start.members}
    order = [m.name for m in start.members]
    quorum = start.quorum
    votes: dict[str, list[str]] = {}
    changes: dict[str, entry_pb2.MembershipChange] = {}
    done: set[str] = set()
    for index, parsed in entries:
        if index >= size:
            break
        detail = parsed.body.membership
        if detail.HasField("proposal"):
            pid = detail.proposal.proposal_id
            changes[pid] = detail.proposal.change
            votes[pid] = [parsed.submitter_id]
        else:
            pid = detail.approval.proposal_id
            votes[pid].append(parsed.submitter_id)
        nodes = {n for n, (_, role) in members.items() if role == entry_pb2.MEMBER_ROLE_NODE}
        if pid in done or len([v for v in votes[pid] if v in nodes]) < quorum:
            continue
        done.add(pid)
        change = changes[pid]
        if change.HasField("admit_member"):
            a = change.admit_member
            members[a.name] = (a.verifier_key, a.role)
            order.append(a.name)
        elif change.HasField("remove_member"):
            del members[change.remove_member.name]
            order.remove(change.remove_member.name)
        elif change.HasField("change_quorum"):
            quorum = change.change_quorum.quorum
        else:
            r = change.replace_member_key
            members[r.name] = (r.verifier_key, members[r.name][1])
    return (*((n, *members[n]) for n in order), ("quorum", "", quorum))


def shape(members: MemberSet) -> tuple[tuple[str, str, int], ...]:
    listed = ((m.name, m.verifier_key, m.role) for m in members.members)
    return (*listed, ("quorum", "", members.quorum))


def random_votes(rng: random.Random) -> list[Callable[[Votes, list[str]], ParsedEntry | None]]:
    """Random steps, each building an entry from the proposal ids made so far."""
    # Mostly the genesis members, so that many votes count.
    everyone = [A, B, C] * 4 + [*SIGNERS.values(), OUTSIDER]

    def step(votes: Votes, proposals: list[str]) -> ParsedEntry | None:
        by = rng.choice(everyone)
        if proposals and rng.random() < 0.6:
            return votes.approve(by, rng.choice(proposals))
        renamed = rng.choice(NAMES)
        roles = [entry_pb2.MEMBER_ROLE_NODE] * 2 + [
            entry_pb2.MEMBER_ROLE_REGULATOR,
            entry_pb2.MEMBER_ROLE_WITNESS,
        ]
        change = rng.choice(
            [
                admit(rng.choice(NAMES), rng.choice(roles)),
                remove(rng.choice(NAMES)),
                set_quorum(rng.randint(1, 4)),
                replace_key(renamed, signer(renamed, seed=rng.randint(1, 3))),
            ]
        )
        proposal_id, parsed = votes.propose(by, change, lifetime=rng.randint(1, 12))
        proposals.append(proposal_id)
        return parsed

    return [step] * rng.randint(5, 60)


def run_random(seed: int) -> MembershipLog:
    """Random votes through a node's path; checks that a second node, the offline replay and
    the naive reference reach the same member set at every tree size, and returns the log."""
    rng = random.Random(seed)
    start = genesis(count=rng.randint(1, 3), quorum=1)
    if len(start.members) > 1:
        start = MemberSet(start.members, rng.randint(1, len(start.members)))
    votes, proposals = Votes(), list[str]()
    node = MembershipLog(start)
    accepted: list[tuple[int, ParsedEntry]] = []
    for step in random_votes(rng):
        parsed = step(votes, proposals)
        assert parsed is not None
        node.skip(rng.randint(0, 3))
        try:
            node.check(parsed)
        except MembershipRejectedError:
            continue
        accepted.append((node.position, parsed))
        node.apply(parsed)
    again = MembershipLog(start)
    again.replay(accepted)
    replayed = MembershipLog(start)
    replayed.replay(accepted)
    for size in range(node.position + 1):
        expected = naive_members(start, accepted, size)
        assert shape(node.members_at(size)) == expected
        assert shape(replayed.members_at(size)) == expected
        assert shape(again.members_at(size)) == expected
    assert replayed.entry_indexes == node.entry_indexes == [i for i, _ in accepted]
    return node


@pytest.mark.parametrize("seed", range(40))
def test_node_replay_and_naive_reference_agree(seed: int) -> None:
    run_random(seed)


def test_random_votes_do_change_the_member_set() -> None:
    """The agreement above is not vacuous: many sequences change members, keys or quorum."""
    changed = sum(len(run_random(seed).changes()) > 1 for seed in range(40))
    assert changed >= 10
