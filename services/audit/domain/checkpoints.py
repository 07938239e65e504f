"""The audit service's own check of every sealed checkpoint it follows (issue #25): a chain node
is one member, so what it serves is believed only as far as the consortium's pinned keys and the
log's own history allow.

A checkpoint passes when

* it is a signed note whose text is a checkpoint of the consortium's origin;
* at least ``quorum`` distinct members signed it with the keys the consortium file pins (a line
  by a member's key that does not verify fails it; lines by other keys count for nothing). The
  members and quorum are those at the checkpoint's size: the consortium file is the genesis, and
  the MEMBERSHIP entries the node serves below that size (each proved in the checkpoint) are
  replayed from it as every node and offline verifier does
  (:class:`chain.membership.MembershipLog`), so a member admitted by vote counts and a member
  voted out does not;
* its tree is consistent with the last checkpoint the audit service accepted: an RFC 9162
  consistency proof, asked of the node, leads from the older root to the newer (equal sizes need
  equal roots). The first checkpoint, with none accepted before, is believed on its signatures.

A checkpoint that fails is a :class:`CheckpointRejection`: the log follower indexes nothing past
the last accepted checkpoint from it and keeps following; the book turns the rejection into one
``FLAG_KIND_BAD_CHECKPOINT`` flag. :class:`CheckpointGate` holds the last accepted checkpoint
(restored from the store after a restart, so consistency holds across restarts too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from chain.checkpoint import Checkpoint, parse_checkpoint
from chain.consortium import ConsortiumConfig
from chain.entry import parse_entry
from chain.errors import InvalidInputError, SwiftchainError, VerificationError
from chain.evidence import EvidenceEntry
from chain.hashing import leaf_hash
from chain.membership import MemberSet, MembershipLog
from chain.note import ParsedNote, parse_note, verify_note
from chain.proof_verify import verify_consistency, verify_inclusion
from services.audit.domain.records import FlagRecord, flag_id
from swiftchain.audit.v1 import audit_service_pb2 as apb

#: Asks the node for the RFC 9162 consistency proof from tree size ``first`` to ``second``.
ConsistencyProver = Callable[[int, int], Sequence[bytes]]

#: Asks the node for every MEMBERSHIP entry below a tree size, in log order, each with its
#: inclusion proof to the sealed checkpoint of that size.
VoteReader = Callable[[int], Sequence[EvidenceEntry]]


def no_votes(_tree_size: int) -> Sequence[EvidenceEntry]:
    """The votes of a log that carries none: every checkpoint is checked against the genesis."""
    return ()


#: What a rejected checkpoint failed: its signatures (or its form, or its origin) ...
SIGNED = "signed"
#: ... or its consistency with the last accepted checkpoint.
CONSISTENT = "consistent"


@dataclass(frozen=True)
class AcceptedCheckpoint:
    """A checkpoint that passed: its whole signed note as served, and what the note says."""

    note: str
    checkpoint: Checkpoint


@dataclass(frozen=True)
class CheckpointRejection:
    """Why the audit service refused a sealed checkpoint a chain node served."""

    #: The tree size of the refused checkpoint (as its note says, or the node if unreadable).
    tree_size: int
    #: The tree size of the last checkpoint the audit service accepted (0 for none).
    accepted_size: int
    #: :data:`SIGNED` or :data:`CONSISTENT`.
    check: str
    #: What failed, in words a regulator reads.
    reason: str

    def flag_id(self, node: str) -> str:
        """One flag per node, check and last accepted checkpoint: a node that goes on serving
        bad checkpoints (a fork: every later one fails too) raises it once, not per block."""
        return flag_id("bad-checkpoint", node, self.check, str(self.accepted_size))

    def flag(self, node: str, now: datetime) -> FlagRecord:
        """The flag that tells a regulator which node served what, and what failed."""
        kept = (
            f"tree size {self.accepted_size}"
            if self.accepted_size
            else "none (no checkpoint accepted yet)"
        )
        return FlagRecord(
            flag_id=self.flag_id(node),
            kind=apb.FLAG_KIND_BAD_CHECKPOINT,
            organization_id=node,
            summary=f"chain node {node} served a sealed checkpoint of tree size "
            f"{self.tree_size} that the audit service refused: {self.reason}. The log index "
            f"holds nothing past the last accepted checkpoint ({kept}) from it.",
            create_time=now,
            entry_ids=(),
        )


class CheckpointGate:
    """The last accepted checkpoint, and the checks each new one must pass (module docstring).
    Not thread-safe: the log follower calls it under its lock."""

    def __init__(self, consortium: ConsortiumConfig, accepted_note: str = "") -> None:
        """``accepted_note``: the last checkpoint accepted before a restart ('' for none); it
        passed when it was accepted, so it is read, not checked again."""
        self._consortium = consortium
        self._genesis = MemberSet.from_consortium(consortium)
        self._accepted: AcceptedCheckpoint | None = None
        if accepted_note:
            text = parse_note(accepted_note.encode("utf-8")).text
            self._accepted = AcceptedCheckpoint(accepted_note, parse_checkpoint(text))

    @property
    def accepted(self) -> AcceptedCheckpoint | None:
        """The last checkpoint accepted (the largest), if any."""
        return self._accepted

    def check(
        self,
        note: str,
        served_size: int,
        prove: ConsistencyProver,
        votes: VoteReader = no_votes,
    ) -> Checkpoint | CheckpointRejection:
        """What the signed ``note`` says, if it passes; else why not. ``served_size`` is the
        size the node said the note has (named when the note is unreadable); ``votes`` is
        asked for the MEMBERSHIP entries below the note's size once its form and origin pass,
        ``prove`` for a consistency proof only once the signatures passed. Errors of either
        (the node away) propagate: they reject nothing."""
        held = self._accepted.checkpoint.size if self._accepted else 0
        opened = self._open(note, votes)
        if isinstance(opened, str):
            return CheckpointRejection(_size_in(note, served_size), held, SIGNED, opened)
        inconsistency = self._inconsistency(opened, prove)
        if inconsistency is not None:
            return CheckpointRejection(opened.size, held, CONSISTENT, inconsistency)
        return opened

    def accept(self, note: str, checkpoint: Checkpoint) -> bool:
        """Hold ``checkpoint`` (which passed :meth:`check`) as the last accepted one if it is
        larger than the one held; whether it is (and so should be stored)."""
        if self._accepted is not None and checkpoint.size <= self._accepted.checkpoint.size:
            return False
        self._accepted = AcceptedCheckpoint(note, checkpoint)
        return True

    def _open(self, note: str, votes: VoteReader) -> Checkpoint | str:
        """The checkpoint if ``note`` is one of the consortium's origin signed by a quorum of
        the members at its size; else what is wrong with it."""
        try:
            parsed = parse_note(note.encode("utf-8"))
            checkpoint = parse_checkpoint(parsed.text)
        except InvalidInputError as error:
            return f"it is not a signed checkpoint ({error})"
        if checkpoint.origin != self._consortium.origin:
            return (
                f"expected the consortium's origin {self._consortium.origin!r}, "
                f"got {checkpoint.origin!r}"
            )
        members = self._members_at(checkpoint, votes)
        if isinstance(members, str):
            return members
        shortfall = self._quorum_shortfall(parsed, members)
        return checkpoint if shortfall is None else shortfall

    def _members_at(self, checkpoint: Checkpoint, votes: VoteReader) -> MemberSet | str:
        """The members and quorum at ``checkpoint``'s size: the genesis changed by the votes
        below it, each proved in ``checkpoint`` before it is replayed; else why the votes the
        node served prove nothing."""
        if checkpoint.size == 0:
            return self._genesis
        log = MembershipLog(self._genesis)
        proved = votes(checkpoint.size)
        try:
            for vote in proved:
                verify_inclusion(
                    leaf_hash(vote.entry),
                    vote.leaf_index,
                    checkpoint.size,
                    vote.inclusion_proof,
                    checkpoint.root_hash,
                )
            log.replay((vote.leaf_index, parse_entry(vote.entry)) for vote in proved)
        except SwiftchainError as error:
            return f"the membership votes the node served with it do not hold ({error})"
        return log.members_at(checkpoint.size)

    def _quorum_shortfall(self, parsed: ParsedNote, members: MemberSet) -> str | None:
        try:
            verified = verify_note(parsed, members.verifiers)
        except (VerificationError, InvalidInputError) as error:
            return f"a signature by a member's pinned key does not verify ({error})"
        signers = sorted({signature.name for signature in verified.signatures})
        quorum = members.quorum
        if len(signers) >= quorum:
            return None
        reason = f"expected a quorum of {quorum} member signatures, got {len(signers)}"
        if signers:
            reason += f" (by {', '.join(signers)})"
        foreign = [signature.key_id for signature in verified.unverified_signatures]
        if foreign:
            reason += (
                "; signatures by keys of no member at this size count for nothing: "
                + ", ".join(foreign)
            )
        return reason

    def _inconsistency(self, checkpoint: Checkpoint, prove: ConsistencyProver) -> str | None:
        """Why ``checkpoint`` is not consistent with the last accepted one, or None."""
        if self._accepted is None:
            return None
        held = self._accepted.checkpoint
        older, newer = sorted((held, checkpoint), key=lambda c: c.size)
        if older.size == 0:  # every tree extends the empty one
            return None
        proof = prove(older.size, newer.size) if older.size < newer.size else ()
        try:
            verify_consistency(older.size, newer.size, proof, older.root_hash, newer.root_hash)
        except (VerificationError, InvalidInputError) as error:
            return (
                f"not consistent with tree size {held.size}, the last checkpoint the audit "
                f"service accepted ({error})"
            )
        return None


def _size_in(note: str, served_size: int) -> int:
    """The tree size ``note`` says it has if it can be read, else the one the node said."""
    try:
        return parse_checkpoint(parse_note(note.encode("utf-8")).text).size
    except InvalidInputError:
        return served_size
