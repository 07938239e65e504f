"""The consent service's storage on MongoDB/FerretDB (connection alias ``consent``).

* ``versions``: one document per accepted version of a directive or delegation, by
  ``<document id>#<version>``. The unique ``_id`` is what stops two concurrent changes from
  both becoming version n: an insert is atomic on FerretDB v1, a conditional update is not
  (tests/integration/test_consent_store.py once saw two of eight concurrent ``update_one``
  calls conditioned on the same version count both succeed).
* ``decisions``: every decision, by ``<organization>/<request id>``. The unique ``_id`` is what
  makes a retry find the first decision: an insert that collides is a retry.
* ``decision_batches``: the outbox of decisions. Decisions are written in groups (one group
  commit shared by the requests that arrive while the previous one is being written, see
  groupcommit.py): first one batch document listing the group's keys and entry ids, then the
  decisions themselves in one ``insert_many``; only then are the requests answered. Once Kafka
  has every decision of a batch, the batch document is deleted (by ``_id``). After a crash, the
  decisions of the batches still there are sent again; a listed decision that is not in
  ``decisions`` under that entry id was never answered (the crash came between the two writes,
  or it collided with an earlier one) and is dropped. Writing the batch first is what makes a
  decision that a retry can find always one that will reach Kafka.
* ``notifications``: what patients' apps were told, kept so that a watcher can resume after a
  restart: per patient, buckets of :data:`NOTIFICATION_BUCKET` serialized notifications
  (``<patient>#<n>``, appended with ``$push``) and a head (``<patient>#head``) naming the
  newest bucket; the newest :data:`NOTIFICATION_BUCKETS_KEPT` buckets are kept. FerretDB v1
  ignores ``$slice``, hence buckets rather than one capped list.

Only lookups by ``_id`` are used (FerretDB v1 scans for anything else, and a scan
holds SQLite's single writer back for everyone).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from pymongo import DeleteOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from chain.errors import StaleVersionError
from services.consent.domain import AcceptedVersion, StoredDecision
from services.consent.groupcommit import GroupCommit
from services.platform import mongo
from swiftchain.consent.v1 import consent_service_pb2 as pb

ALIAS = "consent"
VERSIONS = "versions"
#: The outbox of decisions (see the module docstring).
BATCHES = "decision_batches"
NOTIFICATIONS = "notifications"
#: Notifications per bucket document, and buckets kept per patient.
NOTIFICATION_BUCKET = 100
NOTIFICATION_BUCKETS_KEPT = 10
_log = logging.getLogger(__name__)
_DUPLICATE_KEY = 11000


def _collection(name: str) -> Collection[dict[str, Any]]:
    collection: Collection[dict[str, Any]] = mongo.database(ALIAS)[name]
    return collection


def _version_id(document_id: str, number: int) -> str:
    return f"{document_id}#{number}"


def _version_doc(version: AcceptedVersion) -> dict[str, Any]:
    return {
        "_id": _version_id(version.document_id, version.version),
        "document_id": version.document_id,
        "patient": version.patient_subject_id,
        "directive_type": int(version.directive_type),
        "version": version.version,
        "signed": version.signed,
        "signer_subject_id": version.signer_subject_id,
        "signer_key_id": version.signer_key_id,
        "signer_public_key": version.signer_public_key,
        "entry_id": version.entry_id,
        "entry": version.entry,
        "commitment": version.commitment,
        "salt": version.salt,
        "accept_time": version.accept_time,
        "logged": version.logged,
        "leaf_index": version.leaf_index,
    }


def _decision_doc(decision: StoredDecision) -> dict[str, Any]:
    return {
        "_id": decision.key,
        "patient": decision.patient_subject_id,
        "organization": decision.organization_id,
        "practitioner": decision.practitioner_id,
        "category": decision.data_category,
        "purpose": decision.purpose,
        "decision": int(decision.decision),
        "reason": int(decision.reason),
        "directive_id": decision.deciding_directive_id,
        "directive_version": decision.deciding_directive_version,
        "log_index": decision.deciding_log_index,
        "break_glass": decision.break_glass,
        "reason_code": decision.reason_code,
        "justification": decision.justification,
        "entry_id": decision.entry_id,
        "entry": decision.entry,
        "salt": decision.salt,
        "time": decision.decide_time,
    }


def _decision(doc: dict[str, Any]) -> StoredDecision:
    return StoredDecision(
        key=doc["_id"],
        patient_subject_id=doc["patient"],
        organization_id=doc["organization"],
        practitioner_id=doc["practitioner"],
        data_category=doc["category"],
        purpose=doc["purpose"],
        decision=doc["decision"],
        reason=doc["reason"],
        deciding_directive_id=doc["directive_id"],
        deciding_directive_version=doc["directive_version"],
        deciding_log_index=doc["log_index"],
        break_glass=doc["break_glass"],
        reason_code=doc["reason_code"],
        justification=doc["justification"],
        entry_id=doc["entry_id"],
        entry=bytes(doc["entry"]),
        salt=bytes(doc["salt"]),
        decide_time=mongo.as_utc(doc["time"]),
    )


class ConsentMongoStore:
    """The domain's ConsentStore on pymongo (connection alias ``consent``). One process owns a
    database: which stored batch each unsent decision belongs to is kept in memory."""

    def __init__(self, max_group: int = 500) -> None:
        self._commits: GroupCommit[StoredDecision, StoredDecision] = GroupCommit(
            self.commit_decisions, max_batch=max_group
        )
        self._lock = threading.Lock()
        #: batch id -> how many of its decisions Kafka has not acknowledged yet.
        self._unsent: dict[str, int] = {}
        #: entry id of an unsent decision -> its batch id.
        self._batch_of: dict[str, str] = {}
        #: Batches with everything acknowledged whose document is not deleted yet.
        self._finished: set[str] = set()
        #: patient -> (newest notification bucket, notifications in it), once read or written.
        self._heads: dict[str, tuple[int, int]] = {}

    def load_versions(self) -> list[AcceptedVersion]:
        """Every accepted version, oldest first within each directive or delegation."""
        versions = [
            AcceptedVersion(
                directive_type=doc["directive_type"],
                document_id=doc["document_id"],
                version=doc["version"],
                patient_subject_id=doc["patient"],
                signed=bytes(doc["signed"]),
                signer_subject_id=doc["signer_subject_id"],
                signer_key_id=doc["signer_key_id"],
                signer_public_key=bytes(doc["signer_public_key"]),
                entry_id=doc["entry_id"],
                entry=bytes(doc["entry"]),
                commitment=bytes(doc["commitment"]),
                salt=bytes(doc["salt"]),
                accept_time=mongo.as_utc(doc["accept_time"]),
                leaf_index=doc.get("leaf_index"),
                logged=bool(doc.get("logged")),
            )
            for doc in _collection(VERSIONS).find({})
        ]
        versions.sort(key=lambda v: (v.document_id, v.version))
        return versions

    def add_version(self, version: AcceptedVersion) -> None:
        """Store a new version; :class:`StaleVersionError` when another one took its number
        or the previous number is not stored."""
        if (
            version.version > 1
            and _collection(VERSIONS).find_one(
                {"_id": _version_id(version.document_id, version.version - 1)}, {"_id": 1}
            )
            is None
        ):
            raise StaleVersionError(
                f"version {version.version} of {version.document_id} does not follow a stored "
                "version; re-read it and sign the next version"
            )
        try:
            _collection(VERSIONS).insert_one(_version_doc(version))
        except DuplicateKeyError:
            raise StaleVersionError(
                f"version {version.version} of {version.document_id} was stored by another "
                "request; re-read it and sign the next version"
            ) from None

    def mark_logged(self, versions: Sequence[AcceptedVersion]) -> None:
        """Kafka acknowledged these versions' entries and events."""
        for version in versions:
            _collection(VERSIONS).update_one(
                {"_id": _version_id(version.document_id, version.version)},
                {"$set": {"logged": True}},
            )

    def set_leaf_index(self, version: AcceptedVersion) -> None:
        """Store where the version's entry landed on the log."""
        _collection(VERSIONS).update_one(
            {"_id": _version_id(version.document_id, version.version)},
            {"$set": {"leaf_index": version.leaf_index}},
        )

    def find_decision(self, key: str) -> StoredDecision | None:
        """The decision stored under ``key``, if any."""
        doc = _collection("decisions").find_one({"_id": key})
        return None if doc is None else _decision(doc)

    def add_decision(self, decision: StoredDecision) -> StoredDecision:
        """Store a decision durably (together with those of concurrent callers); return the
        one stored first under the same key (``decision`` itself unless this is a retry)."""
        return self._commits.submit(decision)

    def commit_decisions(self, batch: Sequence[StoredDecision]) -> list[StoredDecision]:
        """One group commit (what :meth:`add_decision` runs for the callers of a group): the
        batch document, then the decisions; for each decision the first one stored under its key
        (for a key used twice in the batch or stored before, the earlier one)."""
        first_in_batch: dict[str, StoredDecision] = {}
        for decision in batch:
            first_in_batch.setdefault(decision.key, decision)
        fresh = list(first_in_batch.values())
        batch_id = uuid.uuid4().hex
        _collection(BATCHES).insert_one(
            {"_id": batch_id, "decisions": [{"key": d.key, "entry_id": d.entry_id} for d in fresh]}
        )
        try:
            stored_before = self._insert_decisions(fresh)
        except Exception:
            self._withdraw(batch_id, fresh)
            raise
        ours = [d for d in fresh if d.key not in stored_before]
        self._track(batch_id, ours)
        return [stored_before.get(d.key, first_in_batch[d.key]) for d in batch]

    def _insert_decisions(self, fresh: Sequence[StoredDecision]) -> dict[str, StoredDecision]:
        """Insert ``fresh``; key -> the earlier decision for those whose key was stored."""
        stored_before: dict[str, StoredDecision] = {}
        try:
            _collection("decisions").insert_many([_decision_doc(d) for d in fresh], ordered=False)
        except BulkWriteError as error:
            for failure in error.details["writeErrors"]:
                if failure.get("code") != _DUPLICATE_KEY:
                    raise
                key = fresh[failure["index"]].key
                earlier = self.find_decision(key)
                if earlier is None:
                    raise
                stored_before[key] = earlier
        return stored_before

    @staticmethod
    def _withdraw(batch_id: str, fresh: Sequence[StoredDecision]) -> None:
        """After a failed commit nobody is answered: take back what may have been written, so
        that a retry cannot find a decision that nothing will send. If the database is away
        for this too, the next start finds the batch and sends what it lists."""
        try:
            mongo.bulk_write(
                _collection("decisions"),
                [DeleteOne({"_id": d.key, "entry_id": d.entry_id}) for d in fresh],
                ordered=False,
            )
            _collection(BATCHES).delete_one({"_id": batch_id})
        except PyMongoError:
            _log.warning("could not take back a failed group of decisions", exc_info=True)

    def _track(self, batch_id: str, decisions: Sequence[StoredDecision]) -> None:
        if not decisions:
            _collection(BATCHES).delete_one({"_id": batch_id})
            return
        with self._lock:
            self._unsent[batch_id] = len(decisions)
            for decision in decisions:
                self._batch_of[decision.entry_id] = batch_id

    def pending_decisions(self) -> list[StoredDecision]:
        """Decisions stored whose entry and events Kafka may not have (at start, to send them
        again); batches with nothing left to send are deleted."""
        pending: list[StoredDecision] = []
        for batch in list(_collection(BATCHES).find({})):
            ours = []
            for listed in batch["decisions"]:
                decision = self.find_decision(listed["key"])
                if decision is not None and decision.entry_id == listed["entry_id"]:
                    ours.append(decision)
            self._track(batch["_id"], ours)
            pending.extend(ours)
        return pending

    def archive_decisions(self, decisions: Sequence[StoredDecision]) -> None:
        """Kafka acknowledged these decisions' entries and events: delete the batches that have
        nothing left to send."""
        with self._lock:
            for decision in decisions:
                batch_id = self._batch_of.pop(decision.entry_id, None)
                if batch_id is None:
                    continue  # acknowledged twice (sent again after a failed batch)
                self._unsent[batch_id] -= 1
                if self._unsent[batch_id] == 0:
                    del self._unsent[batch_id]
                    self._finished.add(batch_id)
            done = sorted(self._finished)
        if done:  # if this fails, they are deleted with the next acknowledgement (or at start)
            mongo.bulk_write(
                _collection(BATCHES), [DeleteOne({"_id": b}) for b in done], ordered=False
            )
            with self._lock:
                self._finished.difference_update(done)

    @property
    def unsent_batches(self) -> int:
        """Batch documents whose decisions Kafka has not all acknowledged yet."""
        with self._lock:
            return len(self._unsent)

    # --- notifications -----------------------------------------------------------------

    def append_notifications(self, notifications: Sequence[pb.Notification]) -> None:
        """Keep ``notifications`` (oldest first) in their patients' buckets. Called from one
        thread (the sender's), after Kafka acknowledged what they announce."""
        by_patient: dict[str, list[bytes]] = {}
        for notification in notifications:
            by_patient.setdefault(notification.patient_subject_id, []).append(
                notification.SerializeToString()
            )
        for patient, items in by_patient.items():
            bucket, count = self._head(patient)
            while items:
                if count == NOTIFICATION_BUCKET:
                    bucket, count = bucket + 1, 0
                    # The head moves first: a bucket that a crash left empty reads as empty.
                    _collection(NOTIFICATIONS).update_one(
                        {"_id": f"{patient}#head"}, {"$set": {"bucket": bucket}}, upsert=True
                    )
                    _collection(NOTIFICATIONS).delete_one(
                        {"_id": f"{patient}#{bucket - NOTIFICATION_BUCKETS_KEPT}"}
                    )
                part, items = (
                    items[: NOTIFICATION_BUCKET - count],
                    items[NOTIFICATION_BUCKET - count :],
                )
                _collection(NOTIFICATIONS).update_one(
                    {"_id": f"{patient}#{bucket}"},
                    {"$push": {"items": {"$each": part}}},
                    upsert=True,
                )
                count += len(part)
                self._heads[patient] = (bucket, count)

    def _head(self, patient: str) -> tuple[int, int]:
        head = self._heads.get(patient)
        if head is None:
            doc = _collection(NOTIFICATIONS).find_one({"_id": f"{patient}#head"})
            bucket = doc["bucket"] if doc is not None else 0
            newest = _collection(NOTIFICATIONS).find_one({"_id": f"{patient}#{bucket}"})
            head = (bucket, len(newest["items"]) if newest is not None else 0)
            self._heads[patient] = head
        return head

    def recent_notifications(self, patient: str) -> list[pb.Notification]:
        """The kept notifications of ``patient``, oldest first, each once."""
        doc = _collection(NOTIFICATIONS).find_one({"_id": f"{patient}#head"})
        newest = doc["bucket"] if doc is not None else 0
        kept: dict[str, pb.Notification] = {}
        for bucket in range(max(0, newest - NOTIFICATION_BUCKETS_KEPT + 1), newest + 1):
            found = _collection(NOTIFICATIONS).find_one({"_id": f"{patient}#{bucket}"})
            for raw in found["items"] if found is not None else ():
                notification = pb.Notification.FromString(bytes(raw))
                kept.setdefault(notification.notification_id, notification)
        return list(kept.values())
