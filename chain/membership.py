"""Membership by vote, on the log (DESIGN §3.1, §3.2; ``MembershipDetail`` in entry.proto).

The consortium's members, their verifier keys and the quorum start as the genesis says and
change only through MEMBERSHIP entries: a proposal by a node member, approvals by others, and the
change takes effect at the leaf index of the entry that brings the approvals of the members
voting *there* to the quorum *there*. :class:`MembershipLog` replays accepted entries in log order
and keeps every member set with the tree sizes it governs, so a node seals and a verifier checks
the checkpoint of any size against the members at that size. Every verdict follows from the
MEMBERSHIP entries and their leaf indexes alone: the same on every node and in an offline
verifier holding only those entries.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from google.protobuf.timestamp_pb2 import Timestamp

from chain.consortium import ConsortiumConfig
from chain.entry import EntrySigner, ParsedEntry, entry_signing_input
from chain.errors import InvalidInputError, VerificationError
from chain.note import Signer, Verifier, new_verifier
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

__all__ = [
    "MemberKey",
    "MemberSet",
    "MembershipLog",
    "MembershipRejectedError",
    "Proposal",
    "membership_entry",
    "role_name",
]

ROLE_NODE = entry_pb2.MEMBER_ROLE_NODE


def role_name(role: int) -> str:
    """``node``, ``regulator`` or ``witness``."""
    return (
        entry_pb2.MemberRole.Name(entry_pb2.MemberRole.ValueType(role))
        .removeprefix("MEMBER_ROLE_")
        .lower()
    )


class MembershipRejectedError(VerificationError):
    """A MEMBERSHIP entry that is not valid at its position; ``reason`` is its
    ``RejectionReason`` name without the prefix (e.g. ``"MEMBERSHIP_NOT_A_MEMBER"``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MemberKey:
    """A member: its name, its signed-note verifier key, and its role."""

    name: str
    verifier_key: str
    role: int = ROLE_NODE
    verifier: Verifier = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        verifier = new_verifier(self.verifier_key)
        if verifier.name != self.name:
            raise InvalidInputError(
                f"expected member {self.name!r}'s verifier key to be named {self.name!r}, "
                f"got {verifier.name!r}"
            )
        object.__setattr__(self, "verifier", verifier)

    @property
    def votes(self) -> bool:
        """True for node members: they cosign checkpoints and vote."""
        return self.role == ROLE_NODE


@dataclass(frozen=True)
class MemberSet:
    """The members and the quorum at one log position. ``members`` keep their admission order
    (the genesis order first): the order of signature lines in a sealed note."""

    members: tuple[MemberKey, ...]
    quorum: int

    @classmethod
    def from_consortium(cls, config: ConsortiumConfig) -> MemberSet:
        """The genesis member set: every member of the consortium file is a node member."""
        return cls(tuple(MemberKey(m.name, m.verifier_key) for m in config.members), config.quorum)

    @property
    def nodes(self) -> tuple[MemberKey, ...]:
        """The node members: who cosigns checkpoints and votes."""
        return tuple(m for m in self.members if m.votes)

    @property
    def verifiers(self) -> list[Verifier]:
        """The node members' verifiers: the keys a checkpoint's quorum is counted under."""
        return [m.verifier for m in self.members if m.votes]

    def get(self, name: str) -> MemberKey | None:
        """The member called ``name``, if there is one."""
        for member in self.members:
            if member.name == name:
                return member
        return None

    def changed(self, change: entry_pb2.MembershipChange) -> MemberSet:
        """This set with ``change`` made; :class:`MembershipRejectedError` (CONFLICT) if it does
        not apply here."""
        which = change.WhichOneof("change")
        if which == "admit_member":
            return self._admit(change.admit_member)
        if which == "remove_member":
            return self._remove(change.remove_member.name)
        if which == "change_quorum":
            return self._with_quorum(change.change_quorum.quorum)
        if which == "replace_member_key":
            return self._replace_key(change.replace_member_key)
        raise _conflict("expected a membership change, got none")

    def _admit(self, admit: entry_pb2.AdmitMember) -> MemberSet:
        if self.get(admit.name) is not None:
            raise _conflict(f"expected a new member name, got {admit.name!r}, a member already")
        member = MemberKey(admit.name, admit.verifier_key, admit.role)
        self._check_key_unused(member)
        return replace(self, members=(*self.members, member))

    def _remove(self, name: str) -> MemberSet:
        member = self.get(name)
        if member is None:
            raise _conflict(f"expected a member to remove, got {name!r}, not a member")
        if member.votes and len(self.nodes) - 1 < self.quorum:
            raise _conflict(
                f"removing {name!r} would leave {len(self.nodes) - 1} node members for a quorum "
                f"of {self.quorum}: lower the quorum first"
            )
        return replace(self, members=tuple(m for m in self.members if m.name != name))

    def _with_quorum(self, quorum: int) -> MemberSet:
        if not 1 <= quorum <= len(self.nodes):
            raise _conflict(
                f"expected a quorum between 1 and {len(self.nodes)} (the node members), "
                f"got {quorum}"
            )
        if quorum == self.quorum:
            raise _conflict(f"expected a new quorum, got {quorum}, the quorum already")
        return replace(self, quorum=quorum)

    def _replace_key(self, change: entry_pb2.ReplaceMemberKey) -> MemberSet:
        current = self.get(change.name)
        if current is None:
            raise _conflict(f"expected a member whose key to replace, got {change.name!r}")
        member = MemberKey(current.name, change.verifier_key, current.role)
        if member.verifier.public_key == current.verifier.public_key:
            raise _conflict(f"expected a new key for {change.name!r}, got its current key")
        self._check_key_unused(member, besides=current.name)
        members = tuple(member if m.name == current.name else m for m in self.members)
        return replace(self, members=members)

    def _check_key_unused(self, member: MemberKey, besides: str = "") -> None:
        for other in self.members:
            if other.name != besides and other.verifier.public_key == member.verifier.public_key:
                raise _conflict(
                    f"expected a key for {member.name!r} that no other member holds, "
                    f"got {other.name!r}'s key"
                )


def _conflict(message: str) -> MembershipRejectedError:
    return MembershipRejectedError("MEMBERSHIP_CONFLICT", message)


@dataclass
class Proposal:
    """A proposal on the log and the votes it gathered."""

    proposal_id: str
    proposer: str
    change: entry_pb2.MembershipChange
    #: The proposal's own leaf index.
    leaf_index: int
    #: The last leaf index at which an approval counts.
    last_index: int
    #: The members who approved, the proposer first, in log order.
    approvals: list[str]
    #: The leaf index at which the change took effect, once it did.
    applied_at: int | None = None


class MembershipLog:
    """The member sets along the log; see the module docstring.

    ``position`` is the leaf index the next accepted entry gets. A node calls :meth:`check` and
    :meth:`apply` for a MEMBERSHIP entry and :meth:`skip` for any other accepted entry; an
    offline verifier calls :meth:`replay` with the MEMBERSHIP entries and their leaf indexes.
    """

    def __init__(self, genesis: MemberSet, *, position: int = 0) -> None:
        self.position = position
        # (first tree size it governs, member set), by size; the genesis governs from size 0.
        self._sets: list[tuple[int, MemberSet]] = [(0, genesis)]
        self._proposals: dict[str, Proposal] = {}
        #: Leaf indexes of the MEMBERSHIP entries accepted so far, in log order.
        self.entry_indexes: list[int] = []

    @property
    def current(self) -> MemberSet:
        """The member set at ``position``."""
        return self._sets[-1][1]

    def members_at(self, tree_size: int) -> MemberSet:
        """The member set a checkpoint of ``tree_size`` leaves is sealed and checked against:
        every change at a leaf index below ``tree_size`` made."""
        sizes = [size for size, _ in self._sets]
        return self._sets[bisect.bisect_right(sizes, tree_size) - 1][1]

    def changes(self) -> list[tuple[int, MemberSet]]:
        """Each member set with the first tree size it governs, oldest (the genesis, 0) first."""
        return list(self._sets)

    def verifiers_of(self, name: str) -> list[Verifier]:
        """Every key ``name`` held as a member, oldest first (none if it never was one): a
        cosignature line is checked under these before the seal counts it at its size."""
        keys: list[Verifier] = []
        for _, members in self._sets:
            member = members.get(name)
            if member is not None and member.verifier not in keys:
                keys.append(member.verifier)
        return keys

    def proposal(self, proposal_id: str) -> Proposal | None:
        """The proposal ``proposal_id``, if one is on the log."""
        return self._proposals.get(proposal_id)

    def open_proposals(self) -> list[Proposal]:
        """Proposals neither applied nor expired at ``position``, oldest first."""
        return [
            p
            for p in self._proposals.values()
            if p.applied_at is None and self.position <= p.last_index
        ]

    def skip(self, count: int = 1) -> None:
        """Advance past ``count`` accepted entries of other kinds."""
        self.position += count

    def check(self, parsed: ParsedEntry) -> None:
        """Raise :class:`MembershipRejectedError` if the MEMBERSHIP entry ``parsed`` (well formed,
        see :func:`chain.entry.parse_entry`) is not valid at ``position``."""
        self._verdict(parsed)

    def apply(self, parsed: ParsedEntry) -> MemberSet | None:
        """Accept ``parsed`` (checked with :meth:`check`) at ``position`` and advance; the new
        member set if the entry made a change take effect."""
        proposal, reaches = self._verdict(parsed)
        index = self.position
        self.position += 1
        self.entry_indexes.append(index)
        if proposal.proposal_id not in self._proposals:
            self._proposals[proposal.proposal_id] = proposal
        else:
            proposal.approvals.append(parsed.submitter_id)
        if reaches is None:
            return None
        proposal.applied_at = index
        self._sets.append((index + 1, reaches))
        return reaches

    def replay(self, entries: Iterable[tuple[int, ParsedEntry]]) -> None:
        """Apply MEMBERSHIP entries given with their leaf indexes, in increasing order (an
        offline verifier's view: the other entries only move the position)."""
        for leaf_index, parsed in entries:
            if leaf_index < self.position:
                raise InvalidInputError(
                    f"expected MEMBERSHIP entries in log order, got leaf {leaf_index} after "
                    f"leaf {self.position - 1}"
                )
            self.position = leaf_index
            self.apply(parsed)

    # ------------------------------------------------------------------ inside

    def _verdict(self, parsed: ParsedEntry) -> tuple[Proposal, MemberSet | None]:
        """The proposal the entry makes or approves (a new one, not stored yet, for a proposal)
        and the member set it makes take effect, if any; raises if the entry is not valid."""
        if parsed.kind != common_pb2.ENTRY_KIND_MEMBERSHIP:
            raise InvalidInputError(f"expected a MEMBERSHIP entry, got a {parsed.kind_name} entry")
        current = self.current
        signer = current.get(parsed.submitter_id)
        if signer is None or not signer.votes:
            raise MembershipRejectedError(
                "MEMBERSHIP_NOT_A_MEMBER",
                f"expected a node member to sign, got {parsed.submitter_id!r}, "
                + ("not a member" if signer is None else f"a {role_name(signer.role)}")
                + f" at leaf {self.position}",
            )
        if not signer.verifier.verify(entry_signing_input(parsed.body_bytes), parsed.signature):
            raise MembershipRejectedError(
                "BAD_SIGNATURE",
                f"the signature does not verify under {signer.name!r}'s member key "
                f"{signer.verifier.name}+{signer.verifier.key_hash:08x}",
            )
        detail = parsed.body.membership
        if detail.WhichOneof("action") == "proposal":
            proposal = self._new_proposal(detail.proposal, signer.name)
            ballots = proposal.approvals  # the proposer's, which the proposal is
        else:
            proposal = self._approved(detail.approval.proposal_id, signer.name)
            ballots = [*proposal.approvals, signer.name]
        # Only members voting here count: an approver removed since is no longer one.
        voters = {m.name for m in current.nodes}
        if sum(1 for name in ballots if name in voters) < current.quorum:
            return proposal, None
        return proposal, current.changed(proposal.change)

    def _new_proposal(self, message: entry_pb2.MembershipProposal, proposer: str) -> Proposal:
        if message.proposal_id in self._proposals:
            raise _conflict(f"expected a new proposal id, got {message.proposal_id} again")
        self.current.changed(message.change)  # raises if the change cannot apply here
        return Proposal(
            proposal_id=message.proposal_id,
            proposer=proposer,
            change=message.change,
            leaf_index=self.position,
            last_index=self.position + message.lifetime_entries,
            approvals=[proposer],
        )

    def _approved(self, proposal_id: str, approver: str) -> Proposal:
        proposal = self._proposals.get(proposal_id)
        if proposal is None:
            raise MembershipRejectedError(
                "MEMBERSHIP_UNKNOWN_PROPOSAL",
                f"expected a proposal on the log, got an approval of {proposal_id}",
            )
        if proposal.applied_at is not None:
            raise MembershipRejectedError(
                "MEMBERSHIP_PROPOSAL_CLOSED",
                f"proposal {proposal_id} took effect at leaf {proposal.applied_at} already",
            )
        if self.position > proposal.last_index:
            raise MembershipRejectedError(
                "MEMBERSHIP_PROPOSAL_EXPIRED",
                f"proposal {proposal_id} (leaf {proposal.leaf_index}) took approvals up to leaf "
                f"{proposal.last_index}, got one at leaf {self.position}",
            )
        if approver in proposal.approvals:
            raise MembershipRejectedError(
                "MEMBERSHIP_DUPLICATE_APPROVAL",
                f"{approver!r} approved proposal {proposal_id} already",
            )
        return proposal


def membership_entry(
    signer: Signer,
    detail: entry_pb2.MembershipDetail,
    *,
    entry_id: str,
    time: Timestamp,
    commitment: bytes = bytes(32),
) -> bytes:
    """A MEMBERSHIP entry (exact ``ChainEntry`` bytes) carrying ``detail``, submitted and signed
    by the member whose note key ``signer`` is (its name is the submitter and the key id)."""
    body = entry_pb2.EntryBody(
        entry_id=entry_id,
        kind=common_pb2.ENTRY_KIND_MEMBERSHIP,
        submitter_id=signer.name,
        commitment=commitment,
        membership=detail,
    )
    body.time.CopyFrom(time)
    return EntrySigner(signer.name, signer.private_key).sign_entry(body.SerializeToString())
