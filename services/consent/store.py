"""The consent service's storage on MongoDB/FerretDB (connection alias ``consent``).

* ``directives``: one document per directive or delegation, with every accepted version in a
  list; a new version is one conditional update (``count`` = previous version), so two
  concurrent changes cannot both become version n.
* ``decisions``: every decision, by ``<organization>/<request id>``. The unique ``_id`` is what
  makes a retry find the first decision: an insert that collides is a retry.
* ``decision_batches``: the outbox of decisions. Decisions are written in groups (one group
  commit shared by the requests that arrive while the previous one is being written, see
  groupcommit.py): first one batch document listing the group's keys and entry ids, then the
  decisions themselves in one ``insert_many``; only then are the requests answered. Once Kafka
  has every decision of a batch, the batch document is deleted (by ``_id``). After a crash, the
  decisions of the batches still there are sent again; a listed decision that is not in
  ``decisions`` under that entry id was never answered (the crash came between the two writes,
  or it collided with an earlier one) and is dropped.

Writing the batch first is what makes a decision that a retry can find always one that will
reach Kafka. Only lookups by ``_id`` are used (FerretDB v1 scans for anything else, and a scan
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
from services.common import mongo
from services.consent.domain import AcceptedVersion, StoredDecision
from services.consent.groupcommit import GroupCommit

ALIAS = "consent"
#: The outbox of decisions (see the module docstring).
BATCHES = "decision_batches"
_log = logging.getLogger(__name__)
_DUPLICATE_KEY = 11000


def _collection(name: str) -> Collection[dict[str, Any]]:
    collection: Collection[dict[str, Any]] = mongo.database(ALIAS)[name]
    return collection


def _version_doc(version: AcceptedVersion) -> dict[str, Any]:
    return {
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

    def load_versions(self) -> list[AcceptedVersion]:
        """Every accepted version, oldest first within each directive or delegation."""
        versions: list[AcceptedVersion] = []
        for doc in _collection("directives").find({}):
            logged = doc.get("logged") or {}
            leaves = doc.get("leaves") or {}
            for raw in doc["versions"]:
                number = raw["version"]
                versions.append(
                    AcceptedVersion(
                        directive_type=raw["directive_type"],
                        document_id=doc["_id"],
                        version=number,
                        patient_subject_id=doc["patient"],
                        signed=bytes(raw["signed"]),
                        signer_subject_id=raw["signer_subject_id"],
                        signer_key_id=raw["signer_key_id"],
                        signer_public_key=bytes(raw["signer_public_key"]),
                        entry_id=raw["entry_id"],
                        entry=bytes(raw["entry"]),
                        commitment=bytes(raw["commitment"]),
                        salt=bytes(raw["salt"]),
                        accept_time=mongo.as_utc(raw["accept_time"]),
                        leaf_index=leaves.get(str(number)),
                        logged=bool(logged.get(str(number))),
                    )
                )
        versions.sort(key=lambda v: (v.document_id, v.version))
        return versions

    def add_version(self, version: AcceptedVersion) -> None:
        """Store a new version; :class:`StaleVersionError` when another one took its number."""
        directives = _collection("directives")
        if version.version == 1:
            try:
                directives.insert_one(
                    {
                        "_id": version.document_id,
                        "patient": version.patient_subject_id,
                        "count": 1,
                        "versions": [_version_doc(version)],
                        "logged": {},
                        "leaves": {},
                    }
                )
            except DuplicateKeyError:
                raise StaleVersionError(
                    f"version 1 of {version.document_id} was stored by another request"
                ) from None
            return
        result = directives.update_one(
            {"_id": version.document_id, "count": version.version - 1},
            {"$push": {"versions": _version_doc(version)}, "$set": {"count": version.version}},
        )
        if result.matched_count == 0:
            raise StaleVersionError(
                f"version {version.version} of {version.document_id} was stored by another "
                "request; re-read it and sign the next version"
            )

    def mark_logged(self, versions: Sequence[AcceptedVersion]) -> None:
        """Kafka acknowledged these versions' entries and events."""
        for version in versions:
            _collection("directives").update_one(
                {"_id": version.document_id}, {"$set": {f"logged.{version.version}": True}}
            )

    def set_leaf_index(self, version: AcceptedVersion) -> None:
        """Store where the version's entry landed on the log."""
        _collection("directives").update_one(
            {"_id": version.document_id},
            {"$set": {f"leaves.{version.version}": version.leaf_index}},
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
            _collection("decisions").bulk_write(
                [DeleteOne({"_id": d.key, "entry_id": d.entry_id}) for d in fresh], ordered=False
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
            _collection(BATCHES).bulk_write([DeleteOne({"_id": b}) for b in done], ordered=False)
            with self._lock:
                self._finished.difference_update(done)

    @property
    def unsent_batches(self) -> int:
        """Batch documents whose decisions Kafka has not all acknowledged yet."""
        with self._lock:
            return len(self._unsent)
