"""Alarms: what a node raises when a member signed what it should not, its store disagrees
with itself (DESIGN §3.2, §3.4), or a topic it reads carried a record it had to set aside.

An :class:`Alarm` is a value: the code that detects one returns it, and the running node stores
it once (by :attr:`Alarm.alarm_id`), counts it and logs it. The kinds are those of the
``AlarmKind`` enum of ``chain_service.proto`` without their ``ALARM_KIND_`` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.checkpoint import checkpoint_hash
from chain.errors import InvalidInputError

__all__ = [
    "BAD_COSIGNATURE",
    "CHECKPOINT_MISMATCH",
    "COSIGNATURE_CONFLICT",
    "KINDS",
    "POISON_RECORD",
    "STORE_MISMATCH",
    "Alarm",
]

COSIGNATURE_CONFLICT = "COSIGNATURE_CONFLICT"
"""One member signed two different checkpoints for the same tree size (equivocation)."""

CHECKPOINT_MISMATCH = "CHECKPOINT_MISMATCH"
"""A member signed a checkpoint that differs from the one this node computed for that size."""

STORE_MISMATCH = "STORE_MISMATCH"
"""At start, the node's stored tree did not match its stored checkpoints."""

BAD_COSIGNATURE = "BAD_COSIGNATURE"
"""A cosignature that does not verify under the named member's key (or names no member)."""

POISON_RECORD = "POISON_RECORD"
"""A record on a topic the node reads was not a message it could use (a null value, no bytes,
junk, another message): it was set aside. Nobody is blamed: anyone who can write to the topic
could have sent it."""

KINDS = (COSIGNATURE_CONFLICT, CHECKPOINT_MISMATCH, STORE_MISMATCH, BAD_COSIGNATURE, POISON_RECORD)


@dataclass(frozen=True)
class Alarm:
    """One alarm: its kind, the member it is about, the tree size, a sentence for people, and
    the evidence (the checkpoint texts and the signature lines involved)."""

    kind: str
    member: str
    tree_size: int
    detail: str
    checkpoints: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    #: For ``POISON_RECORD``: where the record was, ``<topic>/<partition>/<offset>``.
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"expected an alarm kind among {KINDS}, got {self.kind!r}")
        if self.tree_size < 0:
            raise InvalidInputError(f"expected a tree size >= 0, got {self.tree_size}")
        if self.kind == POISON_RECORD and not self.source:
            raise InvalidInputError("expected the record's place for a POISON_RECORD alarm")

    @property
    def alarm_id(self) -> str:
        """The id the alarm is stored under: the same evidence gives the same id, so an alarm
        seen again (after a restart, or by another path) is stored once."""
        if self.kind == STORE_MISMATCH:
            return f"store-mismatch/{self.member}/{self.tree_size}"
        if self.kind == POISON_RECORD:
            return f"poison-record/{self.source}"
        return f"{self.kind}/{self.member}/{self.tree_size}/" + "/".join(
            checkpoint_hash(c).hex()[:16] for c in self.checkpoints
        )
