"""The consent store (services/consent/store.py) alone on the real FerretDB: directive versions
and their conflicts, decisions with their group commit and retries, the outbox of decision
batches that a restart reads to send again what Kafka never acknowledged, and a ListConsents
page token that outlives a restart which reads the versions back from the store."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.entry import EntrySigner
from chain.errors import StaleVersionError
from services.consent.domain import AcceptedVersion, ConsentBook, Directory, StoredDecision
from services.consent.store import (
    ALIAS,
    BATCHES,
    NOTIFICATION_BUCKET,
    NOTIFICATION_BUCKETS_KEPT,
    NOTIFICATIONS,
    ConsentMongoStore,
)
from services.platform import mongo
from services.platform.caller import Caller, Role
from services.platform.consortium_files import CONSENT_KEY_ID
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import consent_service_pb2 as pb
from swiftchain.consent.v1 import directive_pb2

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_database(mongo_uri: str) -> Iterator[None]:
    mongo.connect(mongo_uri, f"consent_test_{uuid.uuid4().hex[:8]}", alias=ALIAS)
    yield
    mongo.disconnect(ALIAS)


def version(document_id: str, number: int, *, patient: str = "pt-1") -> AcceptedVersion:
    return AcceptedVersion(
        directive_type=entry_pb2.DIRECTIVE_TYPE_CONSENT,
        document_id=document_id,
        version=number,
        patient_subject_id=patient,
        signed=f"signed {number}".encode(),
        signer_subject_id=patient,
        signer_key_id="dk-1",
        signer_public_key=bytes(32),
        entry_id=str(uuid.uuid4()),
        entry=f"entry {number}".encode(),
        commitment=bytes([number]) * 32,
        salt=bytes(32),
        accept_time=NOW + timedelta(seconds=number),
    )


def decision(key: str, *, category: str = "laboratory") -> StoredDecision:
    return StoredDecision(
        key=key,
        patient_subject_id="pt-1",
        organization_id=key.split("/")[0],
        practitioner_id="",
        data_category=category,
        purpose="TREAT",
        decision=common_pb2.ACCESS_DECISION_PERMIT,
        reason=common_pb2.ACCESS_REASON_PERMITTED,
        deciding_directive_id="d-1",
        deciding_directive_version=2,
        deciding_log_index=17,
        break_glass=False,
        reason_code="",
        justification="",
        entry_id=str(uuid.uuid4()),
        entry=b"access entry",
        salt=bytes(range(32)),
        decide_time=NOW,
    )


def key() -> str:
    return f"hospital-a/{uuid.uuid4()}"


def batch_documents() -> list[dict[str, Any]]:
    return list(mongo.database(ALIAS)[BATCHES].find({}))


# --- directive versions ----------------------------------------------------------------------


def test_versions_come_back_in_order_with_logged_and_leaf_index() -> None:
    store = ConsentMongoStore()
    first, second = version("d-1", 1), version("d-1", 2)
    other = version("d-0", 1, patient="pt-2")
    for v in (first, other, second):
        store.add_version(v)
    store.mark_logged([first])
    second.leaf_index = 41
    store.set_leaf_index(second)
    loaded = store.load_versions()
    assert [(v.document_id, v.version) for v in loaded] == [("d-0", 1), ("d-1", 1), ("d-1", 2)]
    by_number = {(v.document_id, v.version): v for v in loaded}
    assert by_number[("d-1", 1)].logged and not by_number[("d-1", 2)].logged
    assert by_number[("d-1", 2)].leaf_index == 41 and by_number[("d-1", 1)].leaf_index is None
    assert by_number[("d-1", 2)].signed == second.signed
    assert by_number[("d-1", 2)].accept_time == second.accept_time


def test_a_version_number_is_taken_once_even_by_concurrent_writers() -> None:
    store = ConsentMongoStore()
    store.add_version(version("d-1", 1))
    with pytest.raises(StaleVersionError):
        store.add_version(version("d-1", 1))
    start = threading.Barrier(8)

    def write(_: int) -> str:
        start.wait()
        try:
            store.add_version(version("d-1", 2))
        except StaleVersionError:
            return "stale"
        return "stored"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(write, range(8)))
    assert sorted(outcomes) == ["stale"] * 7 + ["stored"]
    assert [v.version for v in store.load_versions()] == [1, 2]
    with pytest.raises(StaleVersionError, match="version 4"):
        store.add_version(version("d-1", 4))  # 3 is next: a gap is as stale as a collision


# --- decisions -------------------------------------------------------------------------------


def test_a_decision_round_trips_and_a_retry_gets_the_first_one() -> None:
    store = ConsentMongoStore()
    first = decision(key())
    assert store.add_decision(first) is first
    found = store.find_decision(first.key)
    assert found == first
    retry = decision(first.key)
    assert store.add_decision(retry) == first
    assert store.find_decision(key()) is None


def test_concurrent_decisions_store_one_per_key_and_agree_on_it() -> None:
    store = ConsentMongoStore()
    keys = [key() for _ in range(8)]
    start = threading.Barrier(32)

    def decide(index: int) -> tuple[str, str]:
        mine = decision(keys[index % len(keys)])
        start.wait()
        return mine.key, store.add_decision(mine).entry_id

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(decide, range(32)))
    for k in keys:
        entry_ids = {entry_id for answered_key, entry_id in answers if answered_key == k}
        stored = store.find_decision(k)
        assert stored is not None and entry_ids == {stored.entry_id}
    assert store.unsent_batches == len(batch_documents()) >= 1


def test_a_group_with_a_key_stored_before_stores_the_rest() -> None:
    store = ConsentMongoStore()
    earlier = decision(key())
    store.add_decision(earlier)
    fresh_a, again, fresh_b = decision(key()), decision(earlier.key), decision(key())
    twin = decision(fresh_a.key)
    answers = store.commit_decisions([fresh_a, again, fresh_b, twin])
    assert [a.entry_id for a in answers] == [
        fresh_a.entry_id,
        earlier.entry_id,
        fresh_b.entry_id,
        fresh_a.entry_id,
    ]
    assert store.find_decision(fresh_b.key) == fresh_b
    [listed] = [b for b in batch_documents() if len(b["decisions"]) == 3]
    assert {d["entry_id"] for d in listed["decisions"]} == {
        fresh_a.entry_id,
        again.entry_id,
        fresh_b.entry_id,
    }


# --- the outbox of batches and the restart ---------------------------------------------------


def test_a_restart_sends_again_what_kafka_did_not_acknowledge() -> None:
    store = ConsentMongoStore()
    acknowledged, waiting_a, waiting_b = decision(key()), decision(key()), decision(key())
    for d in (acknowledged, waiting_a, waiting_b):
        store.add_decision(d)
    store.archive_decisions([acknowledged])
    assert store.unsent_batches == 2

    restarted = ConsentMongoStore()
    pending = restarted.pending_decisions()
    assert sorted(d.entry_id for d in pending) == sorted([waiting_a.entry_id, waiting_b.entry_id])
    assert {d.key: d for d in pending}[waiting_a.key] == waiting_a
    restarted.archive_decisions(pending)
    assert batch_documents() == []
    assert ConsentMongoStore().pending_decisions() == []


def test_a_group_stays_until_all_of_it_is_acknowledged() -> None:
    store = ConsentMongoStore()
    one, two = decision(key()), decision(key())
    store.commit_decisions([one, two])
    store.archive_decisions([one])
    store.archive_decisions([one])  # acknowledged again after a resend: no effect
    assert len(batch_documents()) == 1
    # After a restart the whole group is sent again; the log skips the entry it has.
    assert sorted(d.entry_id for d in ConsentMongoStore().pending_decisions()) == sorted(
        [one.entry_id, two.entry_id]
    )
    store.archive_decisions([two])
    assert batch_documents() == []


def test_a_restart_drops_listed_decisions_that_nobody_was_answered() -> None:
    store = ConsentMongoStore()
    stored = decision(key())
    store.add_decision(stored)
    store.archive_decisions([stored])
    # A crash between the batch document and the decisions, and a listed decision whose key
    # turned out to be taken: neither was ever an answer, so neither is sent.
    mongo.database(ALIAS)[BATCHES].insert_one(
        {
            "_id": "crashed",
            "decisions": [
                {"key": key(), "entry_id": str(uuid.uuid4())},
                {"key": stored.key, "entry_id": str(uuid.uuid4())},
            ],
        }
    )
    restarted = ConsentMongoStore()
    assert restarted.pending_decisions() == []
    assert batch_documents() == [] and restarted.unsent_batches == 0


# --- notifications ---------------------------------------------------------------------------


def note(patient: str, index: int) -> pb.Notification:
    notification = pb.Notification(
        notification_id=f"n-{index}",
        kind=pb.NOTIFICATION_KIND_ACCESS_DECIDED,
        patient_subject_id=patient,
        entry_id=f"e-{index}",
    )
    notification.time.FromDatetime(NOW + timedelta(milliseconds=index))
    return notification


def test_notifications_are_kept_per_patient_in_order_and_survive_a_restart() -> None:
    store = ConsentMongoStore()
    store.append_notifications([note("pt-1", i) for i in range(150)])
    store.append_notifications([note("pt-2", 0)])
    # A restart continues the newest bucket instead of starting over.
    restarted = ConsentMongoStore()
    restarted.append_notifications([note("pt-1", i) for i in range(150, 260)])
    restarted.append_notifications([note("pt-1", 259)])  # appended again after a resend
    kept = ConsentMongoStore().recent_notifications("pt-1")
    assert [n.notification_id for n in kept] == [f"n-{i}" for i in range(260)]
    assert [n.entry_id for n in ConsentMongoStore().recent_notifications("pt-2")] == ["e-0"]
    assert ConsentMongoStore().recent_notifications("pt-nobody") == []


def test_only_the_newest_buckets_of_notifications_are_kept() -> None:
    store = ConsentMongoStore()
    total = NOTIFICATION_BUCKET * (NOTIFICATION_BUCKETS_KEPT + 1) + 50
    for start in range(0, total, 70):
        store.append_notifications([note("pt-1", i) for i in range(start, min(start + 70, total))])
    kept = store.recent_notifications("pt-1")
    first = total - 50 - NOTIFICATION_BUCKET * (NOTIFICATION_BUCKETS_KEPT - 1)
    assert [n.notification_id for n in kept] == [f"n-{i}" for i in range(first, total)]
    buckets = mongo.database(ALIAS)[NOTIFICATIONS].count_documents({})
    assert buckets == NOTIFICATION_BUCKETS_KEPT + 1  # and the head


# --- paging a listing across a restart ----------------------------------------------------


def directive_version(number: int, accepted: datetime, directive_id: str = "") -> AcceptedVersion:
    """Version ``number`` of a directive of pt-1 for hospital-a, as the domain reads it back
    (the patient's signature is not checked on reading)."""
    directive = directive_pb2.ConsentDirective(
        directive_id=directive_id or str(uuid.uuid4()),
        version=number,
        patient_subject_id="pt-1",
        grantee=directive_pb2.Grantee(organization_id="hospital-a"),
        status=entry_pb2.DIRECTIVE_STATUS_ACTIVE,
    )
    signed = directive_pb2.SignedDirective(directive=directive.SerializeToString())
    accepted_version = version(directive.directive_id, number)
    accepted_version.signed = signed.SerializeToString()
    accepted_version.accept_time = accepted
    return accepted_version


class WrittenThrough:
    """The real store, and the versions exactly as a running book accepted them (to the
    microsecond: the store keeps milliseconds)."""

    def __init__(self, store: ConsentMongoStore) -> None:
        self.store = store
        self.accepted: list[AcceptedVersion] = []

    def load_versions(self) -> list[AcceptedVersion]:
        return list(self.accepted)

    def add_version(self, version: AcceptedVersion) -> None:
        self.store.add_version(version)
        self.accepted.append(version)

    def add_decision(self, decision: StoredDecision) -> StoredDecision:
        return self.store.add_decision(decision)


def book_on(store: Any) -> ConsentBook:
    book = ConsentBook(
        store, Directory(), EntrySigner(CONSENT_KEY_ID, Ed25519PrivateKey.generate()), bytes(32)
    )
    book.load()
    return book


def test_a_page_token_continues_after_a_restart_each_directive_once() -> None:
    written = WrittenThrough(ConsentMongoStore())
    for n in range(5):
        written.add_version(directive_version(1, NOW + timedelta(seconds=n, microseconds=999)))
    running = book_on(written)
    regulator = Caller(Role.REGULATOR, "regulator-1")

    def page(book: ConsentBook, token: str) -> tuple[list[str], str]:
        listed = book.list_page(
            regulator,
            "pt-1",
            grantee=None,
            status=entry_pb2.DIRECTIVE_STATUS_UNSPECIFIED,
            size=2,
            token=token,
            now=NOW,
        )
        return [d[-1].document_id for d in listed.directives], listed.next_page_token

    first, token = page(running, "")
    # While the service is down, a directive is granted and an unlisted one amended.
    oldest = written.accepted[0]
    written.add_version(directive_version(1, NOW + timedelta(minutes=1)))
    written.add_version(directive_version(2, NOW + timedelta(minutes=1), oldest.document_id))
    restarted = book_on(ConsentMongoStore())
    listed = list(first)
    while token:
        more, token = page(restarted, token)
        listed.extend(more)
    assert listed == [v.document_id for v in reversed(written.accepted[:5])]
