"""Anchoring's edge: an author is a practitioner the hospital registered, an entry is at most
64 KiB, nothing is stored for a refused item, and one entry Kafka refuses never holds back the
resend of the others."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from chain.errors import InvalidInputError, UnavailableError
from chain.limits import MAX_ENTRY_BYTES
from services.anchoring.domain import Practitioners, RecordAnchoring, RecordVersion
from services.anchoring.servicer import AnchoringServicer
from services.platform.events import envelope
from services.platform.log_writer import Ordered, entry_id_of
from swiftchain.events.v1 import events_pb2
from tests.unit.anchoring.fakes import (
    NOW,
    SUBJECT,
    TAG_KEY,
    FakeStore,
    known_keys,
    request,
    sdk,
    servicer_on,
)

DOCTOR_A = "pr-" + "doctorA".ljust(22, "0")
DOCTOR_B = "pr-" + "doctorB".ljust(22, "0")


def registered(practitioner_id: str, hospital: str) -> events_pb2.EventEnvelope:
    event = events_pb2.PractitionerRegistered(
        practitioner_id=practitioner_id, organization_id=hospital, role_code="doctor"
    )
    return envelope(event, producer="identity", subject=hospital, now=NOW)


def practitioners() -> Practitioners:
    known = Practitioners(grace=0.0)
    known.apply(registered(DOCTOR_A, "hospital-a"))
    known.apply(registered(DOCTOR_B, "hospital-b"))
    return known


def anchor_by(author: str, store: FakeStore) -> Exception | None:
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY, authors=practitioners())
    draft = sdk().record_version(
        "rec-1", 1, b"v1", subject_id=SUBJECT, author_practitioner_id=author
    )
    [outcome] = anchoring.anchor("hospital-a", [request(sdk().sign([draft])[0])], NOW)
    return outcome.error


def test_two_megabytes_of_free_text_as_author_are_refused_and_nothing_is_stored() -> None:
    store = FakeStore()
    error = anchor_by("Jane Doe, diagnosis: " + "x" * 2_000_000, store)
    assert isinstance(error, InvalidInputError)
    assert str(error).startswith(f"expected an entry of at most {MAX_ENTRY_BYTES:,} bytes, got ")
    assert store.versions == {}


def test_a_name_as_author_is_refused_by_format() -> None:
    store = FakeStore()
    error = anchor_by("Dr. Jane Doe", store)
    assert isinstance(error, InvalidInputError)
    assert "expected author_ref to be empty or a practitioner id" in str(error)
    assert store.versions == {}


@pytest.mark.parametrize(
    ("author", "message"),
    [
        ("pr-" + "X" * 22, "which identity never registered"),
        (DOCTOR_B, "of hospital-b"),
    ],
)
def test_an_author_the_hospital_did_not_register_is_refused(author: str, message: str) -> None:
    store = FakeStore()
    error = anchor_by(author, store)
    assert isinstance(error, InvalidInputError)
    assert str(error).startswith("expected the author to be a practitioner hospital-a registered")
    assert message in str(error)
    assert store.versions == {}


def test_the_hospitals_own_practitioner_and_no_author_are_accepted() -> None:
    store = FakeStore()
    assert anchor_by(DOCTOR_A, store) is None
    assert anchor_by("", FakeStore()) is None
    [version] = store.versions.values()
    assert version.author_practitioner_id == DOCTOR_A


def test_an_unknown_practitioner_is_waited_for_once() -> None:
    known = Practitioners(grace=0.0)
    with pytest.raises(InvalidInputError):
        known.check_author("hospital-a", DOCTOR_A)
    known.apply(registered(DOCTOR_A, "hospital-a"))
    known.check_author("hospital-a", DOCTOR_A)  # announced since: accepted


# --- the resend loop ------------------------------------------------------------------------


class PickyKafka:
    """The log writer over a Kafka that refuses some entries for good (kafka-python's
    MessageSizeTooLargeError is not retriable), or is away altogether."""

    def __init__(self, refused: frozenset[str] = frozenset(), away: bool = False) -> None:
        self.refused = refused
        self.away = away
        self.sent: list[str] = []

    def write(
        self,
        entries: Sequence[bytes],
        *,
        on_ordered: Callable[[Sequence[Ordered]], None],
        timeout: float = 30.0,
    ) -> list[Ordered]:
        ids = [entry_id_of(e) for e in entries]
        if self.away:
            raise UnavailableError("could not hand entries to Kafka: KafkaTimeoutError")
        if self.refused & set(ids):
            raise RefusedError("MessageSizeTooLargeError: the message is too large")
        placed = [Ordered(i, len(self.sent) + n, NOW) for n, i in enumerate(ids)]
        self.sent.extend(ids)
        on_ordered(placed)
        return placed


class RefusedError(Exception):
    retriable = False


def servicer(store: FakeStore, kafka: PickyKafka) -> AnchoringServicer:
    return servicer_on(store, kafka)


def stored_chunks(store: FakeStore, hospitals: int, per_chunk: int) -> list[RecordVersion]:
    """``hospitals`` anchoring calls (one chunk each) of ``per_chunk`` versions, unordered."""
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    versions: list[RecordVersion] = []
    for call in range(hospitals):
        drafts = [
            sdk().record_version(f"rec-{call}-{i}", 1, b"v1", subject_id=SUBJECT)
            for i in range(per_chunk)
        ]
        signed = [request(r) for r in sdk().sign(drafts)]
        versions += [o.anchored for o in anchoring.anchor("hospital-a", signed, NOW) if o.anchored]
    return versions


def test_an_entry_kafka_refuses_does_not_hold_back_the_others() -> None:
    store = FakeStore()
    versions = stored_chunks(store, hospitals=3, per_chunk=3)
    bad = versions[4]  # in the middle of the second chunk
    kafka = PickyKafka(refused=frozenset({bad.entry_id}))

    failures = servicer(store, kafka).resend(lambda: versions)

    assert [f.version.entry_id for f in failures] == [bad.entry_id]
    assert "MessageSizeTooLargeError" in failures[0].reason
    assert sorted(kafka.sent) == sorted(v.entry_id for v in versions if v is not bad)
    assert all(v.ordering_offset is not None for v in versions if v is not bad)


def test_a_stored_entry_over_the_limit_is_reported_and_never_sent() -> None:
    store = FakeStore()
    versions = stored_chunks(store, hospitals=2, per_chunk=2)
    big = versions[0]
    big.entry = big.entry + bytes(MAX_ENTRY_BYTES)  # stored before entries were limited
    kafka = PickyKafka()

    failures = servicer(store, kafka).resend(lambda: versions)

    assert [f.version for f in failures] == [big]
    assert failures[0].reason.startswith(f"expected an entry of at most {MAX_ENTRY_BYTES:,} bytes")
    assert sorted(kafka.sent) == sorted(v.entry_id for v in versions[1:])


def test_kafka_away_stops_the_cycle_at_the_first_chunk() -> None:
    store = FakeStore()
    versions = stored_chunks(store, hospitals=3, per_chunk=2)
    kafka = PickyKafka(away=True)
    with pytest.raises(UnavailableError):
        servicer(store, kafka).resend(lambda: versions)
    assert kafka.sent == []
