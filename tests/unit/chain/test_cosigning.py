"""Tests of chain.cosigning and chain.alarms: checking cosignature lines, sealing at a quorum of
distinct members, and the alarms a node raises (as values) for lines that do not verify, for
members that signed another checkpoint than ours, and for members that signed two."""

from __future__ import annotations

import pytest

from chain.alarms import (
    BAD_COSIGNATURE,
    CHECKPOINT_MISMATCH,
    COSIGNATURE_CONFLICT,
    STORE_MISMATCH,
    Alarm,
)
from chain.checkpoint import (
    GENESIS_PREVIOUS_HASH,
    Checkpoint,
    checkpoint_hash,
    verify_sealed_checkpoint,
)
from chain.consortium import ConsortiumConfig, Member
from chain.cosigning import (
    Cosignature,
    CosignatureBook,
    Outcome,
    SealedCheckpoint,
    read_cosignature,
)
from chain.errors import ConflictError, InvalidInputError
from chain.note import Signer, generate_key, new_signer, signature_line
from swiftchain.chain.v1 import ordering_pb2

ORIGIN = "swiftchain.test/log"
NAMES = ("hospital-a", "hospital-b", "hospital-c")
KEYS = {name: generate_key(name) for name in (*NAMES, "mallory")}
SIGNERS: dict[str, Signer] = {name: new_signer(skey) for name, (skey, _) in KEYS.items()}
CONFIG = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(name, KEYS[name][1]) for name in NAMES),
    genesis_keys=(),
)


def text(size: int = 4, root: int = 1, height: int = 1) -> str:
    return Checkpoint(
        origin=ORIGIN,
        size=size,
        root_hash=bytes([root]) * 32,
        height=height,
        previous_hash=GENESIS_PREVIOUS_HASH,
        cut_time_ms=1_767_225_600_000,
    ).to_text()


OURS = text()
THEIRS = text(root=2)


def message(node: str, checkpoint: str, *, signed: str | None = None, by: str = "") -> bytes:
    """A Cosignature message from ``node`` carrying ``checkpoint``, with the line ``by``'s key
    (``node``'s by default) made over ``signed`` (``checkpoint`` by default)."""
    line = signature_line(SIGNERS[by or node], checkpoint if signed is None else signed)
    return ordering_pb2.Cosignature(
        node=node, height=1, tree_size=4, checkpoint=checkpoint, signature_line=line
    ).SerializeToString()


def cosig(node: str, checkpoint: str = OURS) -> Cosignature:
    checked = read_cosignature(message(node, checkpoint), CONFIG)
    assert isinstance(checked, Cosignature)
    return checked


def book(computed: str | None = OURS) -> CosignatureBook:
    made = CosignatureBook(CONFIG, "hospital-a")
    if computed is not None:
        assert made.computed(1, 4, computed, 9) == Outcome()
    return made


# ------------------------------------------------------------------------------ reading lines


def test_a_members_line_over_the_text_it_carries_is_read() -> None:
    checked = read_cosignature(message("hospital-b", OURS), CONFIG)
    assert checked == Cosignature(
        "hospital-b", 4, OURS, signature_line(SIGNERS["hospital-b"], OURS)
    )


def test_a_line_that_does_not_verify_for_the_text_is_a_bad_cosignature_alarm() -> None:
    # hospital-b's key signed another text than the one the message carries
    value = message("hospital-b", OURS, signed=THEIRS)
    alarm = read_cosignature(value, CONFIG)
    assert isinstance(alarm, Alarm)
    assert alarm.kind == BAD_COSIGNATURE
    assert alarm.tree_size == 4
    assert alarm.checkpoints == (OURS,)
    assert alarm.lines == (signature_line(SIGNERS["hospital-b"], THEIRS),)
    assert "invalid signature by key" in alarm.detail


def test_a_forged_line_claiming_an_honest_member_blames_no_one() -> None:
    # mallory (anyone who can write to the topic) signs with her own key in hospital-b's name
    forged = ordering_pb2.Cosignature(
        node="hospital-b",
        height=1,
        tree_size=4,
        checkpoint=THEIRS,
        signature_line=signature_line(SIGNERS["mallory"], THEIRS).replace("mallory", "hospital-b"),
    ).SerializeToString()
    alarm = read_cosignature(forged, CONFIG)
    assert isinstance(alarm, Alarm)
    assert alarm.kind == BAD_COSIGNATURE
    assert alarm.member == "", "an unverifiable line is nobody's: hospital-b is not named"
    assert alarm.detail.startswith(
        "an unverifiable cosignature line claiming to be from 'hospital-b' for tree size 4"
    )
    assert "does not count for or against 'hospital-b'" in alarm.detail
    # and it is not counted against hospital-b: its real line, over ours, seals with no
    # conflict or mismatch alarm for a text hospital-b never signed
    cosignatures = book()
    assert cosignatures.add(cosig("hospital-a")) == Outcome()
    outcome = cosignatures.add(cosig("hospital-b"))
    assert outcome.alarms == ()
    assert outcome.sealed is not None and outcome.sealed.signers == ("hospital-a", "hospital-b")


def test_a_line_by_another_members_key_names_no_one() -> None:
    alarm = read_cosignature(message("hospital-b", OURS, by="hospital-c"), CONFIG)
    assert isinstance(alarm, Alarm)
    assert alarm.kind == BAD_COSIGNATURE
    assert alarm.member == ""
    assert "claiming to be from 'hospital-b'" in alarm.detail
    assert "expected a signature by a known key" in alarm.detail


def test_an_unknown_signer_is_a_bad_cosignature_alarm_naming_no_member() -> None:
    alarm = read_cosignature(message("mallory", OURS), CONFIG)
    assert isinstance(alarm, Alarm)
    assert alarm.kind == BAD_COSIGNATURE
    assert alarm.member == ""
    assert "claiming to be from 'mallory'" in alarm.detail
    assert "expected one of the members" in alarm.detail


def test_a_members_signed_text_that_is_no_checkpoint_is_that_members() -> None:
    alarm = read_cosignature(message("hospital-b", "not a checkpoint\n"), CONFIG)
    assert isinstance(alarm, Alarm)
    assert (alarm.kind, alarm.member) == (BAD_COSIGNATURE, "hospital-b")
    assert alarm.detail.startswith("hospital-b signed a text that is not a checkpoint")


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xff not a message",
        message("hospital-b", "not a checkpoint\n"),  # signed, but no checkpoint
    ],
    ids=["garbage", "not-a-checkpoint"],
)
def test_a_message_that_is_not_a_checkpoint_cosignature_is_a_bad_cosignature_alarm(
    value: bytes,
) -> None:
    alarm = read_cosignature(value, CONFIG)
    assert isinstance(alarm, Alarm)
    assert alarm.kind == BAD_COSIGNATURE


# ------------------------------------------------------------------------------ sealing


def test_a_checkpoint_is_sealed_at_exactly_quorum_distinct_members() -> None:
    cosignatures = book()
    first = cosignatures.add(cosig("hospital-c"))
    assert first == Outcome()
    assert cosignatures.sealed_from(0) == []
    outcome = cosignatures.add(cosig("hospital-a"))
    assert outcome.alarms == ()
    sealed = outcome.sealed
    assert sealed is not None
    # lines in member order, whatever the order read
    assert sealed.signers == ("hospital-a", "hospital-c")
    assert sealed.note == (
        OURS
        + "\n"
        + signature_line(SIGNERS["hospital-a"], OURS)
        + signature_line(SIGNERS["hospital-c"], OURS)
    )
    assert (sealed.height, sealed.tree_size, sealed.text, sealed.cut_offset) == (1, 4, OURS, 9)
    verify_sealed_checkpoint(sealed.note.encode(), CONFIG.verifiers, 2, ORIGIN)
    assert cosignatures.latest == sealed
    assert cosignatures.sealed_at(4) == sealed
    assert cosignatures.sealed_from(5) == []


def test_a_duplicate_line_from_one_member_counts_once() -> None:
    cosignatures = book()
    assert cosignatures.add(cosig("hospital-b")) == Outcome()
    assert cosignatures.add(cosig("hospital-b")) == Outcome()
    assert cosignatures.latest is None


def test_lines_read_before_the_node_computed_the_checkpoint_seal_it_then() -> None:
    cosignatures = book(computed=None)
    assert cosignatures.add(cosig("hospital-b")) == Outcome()
    assert cosignatures.add(cosig("hospital-c")) == Outcome()
    outcome = cosignatures.computed(1, 4, OURS, 9)
    assert outcome.sealed is not None
    assert outcome.sealed.signers == ("hospital-b", "hospital-c")


def test_lines_after_the_seal_change_nothing() -> None:
    cosignatures = book()
    cosignatures.add(cosig("hospital-a"))
    sealed = cosignatures.add(cosig("hospital-b")).sealed
    assert cosignatures.add(cosig("hospital-c")) == Outcome()
    assert cosignatures.sealed_at(4) == sealed


def test_lines_over_another_text_do_not_count_towards_the_quorum() -> None:
    cosignatures = book()
    cosignatures.add(cosig("hospital-a"))
    outcome = cosignatures.add(cosig("hospital-b", THEIRS))
    assert outcome.sealed is None
    assert [a.kind for a in outcome.alarms] == [CHECKPOINT_MISMATCH]


def test_a_restored_seal_is_served_and_not_sealed_again() -> None:
    cosignatures = CosignatureBook(CONFIG, "hospital-a")
    restored = SealedCheckpoint(1, 4, OURS, OURS + "\n", ("hospital-a", "hospital-b"), 9)
    cosignatures.restore(restored)
    assert cosignatures.latest == restored
    assert cosignatures.sealed_from(0) == [restored]
    assert cosignatures.add(cosig("hospital-a")) == Outcome()
    assert cosignatures.add(cosig("hospital-c")) == Outcome()
    assert cosignatures.sealed_at(4) == restored


# ------------------------------------------------------------------------------ alarms


def test_a_member_signing_another_checkpoint_than_ours_is_a_mismatch_alarm() -> None:
    cosignatures = book()
    outcome = cosignatures.add(cosig("hospital-b", THEIRS))
    (alarm,) = outcome.alarms
    assert alarm == Alarm(
        CHECKPOINT_MISMATCH,
        "hospital-b",
        4,
        "hospital-b signed a checkpoint for size 4 that differs from the one hospital-a computed",
        (OURS, THEIRS),
        (signature_line(SIGNERS["hospital-b"], THEIRS),),
    )


def test_a_mismatch_read_before_our_checkpoint_is_raised_when_we_compute_it() -> None:
    cosignatures = book(computed=None)
    assert cosignatures.add(cosig("hospital-b", THEIRS)) == Outcome()
    outcome = cosignatures.computed(1, 4, OURS, 9)
    assert [(a.kind, a.member) for a in outcome.alarms] == [(CHECKPOINT_MISMATCH, "hospital-b")]


def test_two_checkpoints_signed_by_one_member_for_one_size_raise_a_conflict_with_both() -> None:
    cosignatures = book()
    assert cosignatures.add(cosig("hospital-c", OURS)) == Outcome()
    outcome = cosignatures.add(cosig("hospital-c", THEIRS))
    kinds = {a.kind: a for a in outcome.alarms}
    assert set(kinds) == {CHECKPOINT_MISMATCH, COSIGNATURE_CONFLICT}
    conflict = kinds[COSIGNATURE_CONFLICT]
    assert (conflict.member, conflict.tree_size) == ("hospital-c", 4)
    assert conflict.checkpoints == (OURS, THEIRS)
    assert conflict.lines == (
        signature_line(SIGNERS["hospital-c"], OURS),
        signature_line(SIGNERS["hospital-c"], THEIRS),
    )
    assert conflict.detail == "hospital-c signed two different checkpoints for size 4"


def test_a_conflict_is_seen_without_a_checkpoint_of_ours() -> None:
    cosignatures = book(computed=None)
    cosignatures.add(cosig("hospital-c", OURS))
    outcome = cosignatures.add(cosig("hospital-c", THEIRS))
    assert [a.kind for a in outcome.alarms] == [COSIGNATURE_CONFLICT]


def test_each_alarm_is_returned_once() -> None:
    cosignatures = book()
    assert len(cosignatures.add(cosig("hospital-b", THEIRS)).alarms) == 1
    # a later line for the size looks at every line again: the mismatch is not repeated
    assert cosignatures.add(cosig("hospital-c")) == Outcome()


def test_a_cosignature_of_a_non_member_is_refused() -> None:
    stray = Cosignature("mallory", 4, OURS, signature_line(SIGNERS["mallory"], OURS))
    with pytest.raises(InvalidInputError, match="expected one of the members"):
        book().add(stray)


def test_another_text_computed_for_a_size_is_refused() -> None:
    with pytest.raises(ConflictError, match="expected the checkpoint computed before for size 4"):
        book().computed(1, 4, THEIRS, 9)


def test_a_book_is_for_a_member() -> None:
    with pytest.raises(InvalidInputError, match="expected one of the members"):
        CosignatureBook(CONFIG, "mallory")


def test_alarm_ids_are_those_the_store_has_always_used() -> None:
    mismatch = Alarm(CHECKPOINT_MISMATCH, "hospital-b", 4, "x", (OURS, THEIRS), ("l",))
    assert mismatch.alarm_id == (
        f"CHECKPOINT_MISMATCH/hospital-b/4/{checkpoint_hash(OURS).hex()[:16]}"
        f"/{checkpoint_hash(THEIRS).hex()[:16]}"
    )
    assert Alarm(STORE_MISMATCH, "hospital-a", 7, "x").alarm_id == "store-mismatch/hospital-a/7"


@pytest.mark.parametrize(
    ("kind", "size", "message_part"),
    [("FIRE", 1, "expected an alarm kind"), (BAD_COSIGNATURE, -1, "expected a tree size >= 0")],
)
def test_an_alarm_must_be_of_a_known_kind_and_size(kind: str, size: int, message_part: str) -> None:
    with pytest.raises(InvalidInputError, match=message_part):
        Alarm(kind, "hospital-a", size, "x")
