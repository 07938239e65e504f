"""Cosignatures: from the lines members publish to sealed checkpoints (DESIGN §3.2).

Every node signs the checkpoint of each block it computed and publishes the signature line to
``chain.cosignatures.v1`` in a ``Cosignature`` message. :func:`read_cosignature` checks one such
message against the named member's verifier key. A :class:`CosignatureBook` keeps the verified
lines by tree size and member, next to the checkpoints this node computed itself, and seals a
checkpoint once ``quorum`` distinct members signed exactly the text this node computed: the
members and quorum *at that checkpoint's size*, when a :class:`~chain.membership.MembershipLog`
follows the votes on the log (else the genesis ones). What
should not have been signed comes back as :class:`~chain.alarms.Alarm` values for the caller to
store: a line that does not verify (blaming no one: its author is unknown), a member that signed
another text than ours, a member that signed two texts for one size. Nothing here stores, logs
or reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.alarms import BAD_COSIGNATURE, CHECKPOINT_MISMATCH, COSIGNATURE_CONFLICT, Alarm
from chain.checkpoint import parse_checkpoint
from chain.consortium import ConsortiumConfig
from chain.errors import ConflictError, InvalidInputError
from chain.membership import MemberSet, MembershipLog
from chain.note import Verifier, parse_signature_line, verify_signature_line
from swiftchain.chain.v1 import ordering_pb2

__all__ = [
    "Cosignature",
    "CosignatureBook",
    "Outcome",
    "SealedCheckpoint",
    "read_cosignature",
]


@dataclass(frozen=True)
class Cosignature:
    """A member's signature line over a checkpoint text, checked by :func:`read_cosignature`."""

    member: str
    #: The tree size the checkpoint text commits to.
    tree_size: int
    checkpoint: str
    line: str

    def __post_init__(self) -> None:
        if self.tree_size < 0:
            raise InvalidInputError(f"expected a tree size >= 0, got {self.tree_size}")


@dataclass(frozen=True)
class SealedCheckpoint:
    """A checkpoint signed by a quorum: the full note and what it says."""

    height: int
    tree_size: int
    text: str
    note: str
    signers: tuple[str, ...]
    #: The ordering offset of the record that cut the block: every entry ordered at or before
    #: it is in this tree or was rejected.
    cut_offset: int


@dataclass(frozen=True)
class Outcome:
    """What one event did: the new alarms, and the checkpoint it sealed, if any."""

    alarms: tuple[Alarm, ...] = ()
    sealed: SealedCheckpoint | None = None


def _member_keys(
    name: str, config: ConsortiumConfig, membership: MembershipLog | None
) -> list[Verifier]:
    """The keys ``name`` may have signed with: any it held as a member (which one counts at a
    size is the seal's business), or its genesis key without a membership log."""
    if membership is None:
        return [config.member(name).verifier]
    keys = membership.verifiers_of(name)
    if not keys:
        raise InvalidInputError(f"expected a member of the consortium, got {name!r}")
    return keys


def read_cosignature(
    value: bytes, config: ConsortiumConfig, membership: MembershipLog | None = None
) -> Cosignature | Alarm:
    """The cosignature in ``value`` (a ``Cosignature`` message's bytes) if its line verifies
    under the key of the member it names and its text is a checkpoint; else a
    ``BAD_COSIGNATURE`` alarm carrying the text and line it had.

    A member is blamed only for what its key signed: a line that does not verify under the
    named member's key (or names no member) may have been written by anyone who could write to
    the topic, so its alarm names nobody (``member`` is empty) and says which member the line
    *claimed* to be from. A line that verifies over a text that is no checkpoint is the named
    member's."""
    message = ordering_pb2.Cosignature()
    try:
        message.ParseFromString(value)
        keys = _member_keys(message.node, config, membership)
        verify_signature_line(message.checkpoint, message.signature_line, keys)
    except Exception as error:  # anyone can write to the topic: nothing it holds may stop us
        return Alarm(
            BAD_COSIGNATURE,
            "",
            message.tree_size,
            f"an unverifiable cosignature line claiming to be from {message.node!r} for tree "
            f"size {message.tree_size} was seen and set aside; it does not count for or against "
            f"{message.node!r}: {error}",
            (message.checkpoint,),
            (message.signature_line,),
        )
    try:
        checkpoint = parse_checkpoint(message.checkpoint)
    except Exception as error:
        return Alarm(
            BAD_COSIGNATURE,
            message.node,
            message.tree_size,
            f"{message.node} signed a text that is not a checkpoint: {error}",
            (message.checkpoint,),
            (message.signature_line,),
        )
    return Cosignature(message.node, checkpoint.size, message.checkpoint, message.signature_line)


@dataclass(frozen=True)
class _Computed:
    height: int
    text: str
    cut_offset: int


class CosignatureBook:
    """The cosignatures read so far and the checkpoints ``node_name`` computed; see the module
    docstring. Not thread-safe: the caller serializes calls. Each alarm is returned once."""

    def __init__(
        self, config: ConsortiumConfig, node_name: str, membership: MembershipLog | None = None
    ) -> None:
        if membership is None:
            config.member(node_name)
        self._config = config
        self._node = node_name
        self._membership = membership
        self._genesis = MemberSet.from_consortium(config)
        self._computed: dict[int, _Computed] = {}
        # tree size -> member -> checkpoint text -> signature line, in the order read.
        self._lines: dict[int, dict[str, dict[str, str]]] = {}
        self._sealed: dict[int, SealedCheckpoint] = {}
        self._latest: SealedCheckpoint | None = None
        self._raised: set[str] = set()

    # ------------------------------------------------------------------ events

    def computed(self, height: int, tree_size: int, text: str, cut_offset: int) -> Outcome:
        """This node computed (and persisted) ``text`` for block ``height`` of ``tree_size``
        leaves, cut by the ordering record at ``cut_offset``; the lines read before it may seal
        it now."""
        self._record_computed(_Computed(height, text, cut_offset), tree_size)
        return self._outcome([], tree_size)

    def restore(self, sealed: SealedCheckpoint) -> None:
        """A checkpoint this node computed and sealed before it restarted."""
        self._record_computed(
            _Computed(sealed.height, sealed.text, sealed.cut_offset), sealed.tree_size
        )
        self._remember(sealed)

    def add(self, cosignature: Cosignature) -> Outcome:
        """Record a checked cosignature (see :func:`read_cosignature`). The same text signed
        again by the same member changes nothing."""
        member, size = cosignature.member, cosignature.tree_size
        _member_keys(member, self._config, self._membership)
        by_text = self._lines.setdefault(size, {}).setdefault(member, {})
        if cosignature.checkpoint in by_text:
            return Outcome()  # the same line again (a producer retry, or read after a restart)
        earlier = list(by_text.items())
        by_text[cosignature.checkpoint] = cosignature.line
        alarms: list[Alarm] = []
        ours = self._computed.get(size)
        if ours is not None and ours.text != cosignature.checkpoint:
            alarms.append(self._mismatch(member, size, ours.text, cosignature))
        alarms.extend(
            Alarm(
                COSIGNATURE_CONFLICT,
                member,
                size,
                f"{member} signed two different checkpoints for size {size}",
                (earlier_text, cosignature.checkpoint),
                (earlier_line, cosignature.line),
            )
            for earlier_text, earlier_line in earlier
        )
        return self._outcome(alarms, size)

    # ------------------------------------------------------------------ reads

    @property
    def latest(self) -> SealedCheckpoint | None:
        """The sealed checkpoint of the largest tree, if any."""
        return self._latest

    def sealed_at(self, tree_size: int) -> SealedCheckpoint | None:
        """The sealed checkpoint of exactly ``tree_size`` leaves, if there is one."""
        return self._sealed.get(tree_size)

    def sealed_from(self, from_size: int) -> list[SealedCheckpoint]:
        """Sealed checkpoints with tree size >= ``from_size``, oldest first."""
        return sorted(
            (s for s in self._sealed.values() if s.tree_size >= from_size),
            key=lambda s: s.tree_size,
        )

    # ------------------------------------------------------------------ inside

    def _record_computed(self, computed: _Computed, tree_size: int) -> None:
        known = self._computed.get(tree_size)
        if known is not None and known.text != computed.text:
            raise ConflictError(
                f"expected the checkpoint computed before for size {tree_size}, got another text"
            )
        self._computed[tree_size] = computed

    def _outcome(self, alarms: list[Alarm], tree_size: int) -> Outcome:
        sealed = self._try_seal(tree_size, alarms)
        new: list[Alarm] = []
        for alarm in alarms:
            if alarm.alarm_id not in self._raised:
                self._raised.add(alarm.alarm_id)
                new.append(alarm)
        return Outcome(tuple(new), sealed)

    def _try_seal(self, tree_size: int, alarms: list[Alarm]) -> SealedCheckpoint | None:
        """Seal ``tree_size`` if a quorum of members signed our text; every line signing
        another text for it adds a mismatch alarm."""
        ours = self._computed.get(tree_size)
        if ours is None or tree_size in self._sealed:
            return None
        agreeing: dict[str, str] = {}
        for member, by_text in self._lines.get(tree_size, {}).items():
            for text, line in by_text.items():
                if text == ours.text:
                    agreeing[member] = line
                else:
                    theirs = Cosignature(member, tree_size, text, line)
                    alarms.append(self._mismatch(member, tree_size, ours.text, theirs))
        members = self._members_at(tree_size)
        counted = {m: line for m, line in agreeing.items() if _signs_at(members, m, line)}
        if len(counted) < members.quorum:
            return None
        # Lines in member order, so every node's sealed note has the same bytes.
        order = {m.name: i for i, m in enumerate(members.nodes)}
        signers = tuple(sorted(counted, key=order.__getitem__))
        note = ours.text + "\n" + "".join(counted[name].rstrip("\n") + "\n" for name in signers)
        sealed = SealedCheckpoint(ours.height, tree_size, ours.text, note, signers, ours.cut_offset)
        self._remember(sealed)
        return sealed

    def _members_at(self, tree_size: int) -> MemberSet:
        """Who seals a checkpoint of ``tree_size`` leaves: known once this node computed it,
        since the membership log moves past every entry before the block is persisted."""
        if self._membership is None:
            return self._genesis
        return self._membership.members_at(tree_size)

    def _remember(self, sealed: SealedCheckpoint) -> None:
        self._sealed[sealed.tree_size] = sealed
        if self._latest is None or sealed.tree_size > self._latest.tree_size:
            self._latest = sealed

    def _mismatch(self, member: str, tree_size: int, ours: str, theirs: Cosignature) -> Alarm:
        return Alarm(
            CHECKPOINT_MISMATCH,
            member,
            tree_size,
            f"{member} signed a checkpoint for size {tree_size} that differs "
            f"from the one {self._node} computed",
            (ours, theirs.checkpoint),
            (theirs.line,),
        )


def _signs_at(members: MemberSet, name: str, line: str) -> bool:
    """True if ``line`` (verified already under one of ``name``'s keys) is by a node member of
    ``members`` under the key it holds there: a removed member, or a replaced key, no longer
    counts."""
    member = members.get(name)
    return (
        member is not None
        and member.votes
        and parse_signature_line(line).key_hash == member.verifier.key_hash
    )
