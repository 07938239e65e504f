"""The consent service's storage on MongoDB/FerretDB (connection alias ``consent``).

* ``directives``: one document per directive or delegation, with every accepted version in a
  list; a new version is one conditional update (``count`` = previous version), so two
  concurrent changes cannot both become version n.
* ``pending_decisions``: every decision is inserted here before its response is sent (one write,
  the only one on the request's path); the sender moves it to ``decisions`` once Kafka has its
  entry and events. After a crash the pending ones are sent again. The collection stays small, so
  reading all of it is cheap.
* ``decisions``: every decision, by ``<organization>/<request id>``.

Only lookups by ``_id`` are used on the request path (FerretDB v1 scans for anything else).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from chain.errors import StaleVersionError
from services.common import mongo
from services.consent.domain import AcceptedVersion, StoredDecision

ALIAS = "consent"
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
        "events": decision.events,
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
        events=[bytes(e) for e in doc.get("events", [])],
    )


class ConsentMongoStore:
    """The domain's ConsentStore on pymongo (connection alias ``consent``)."""

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
        """The decision stored under ``key``, if any (pending or archived)."""
        for name in ("pending_decisions", "decisions"):
            doc = _collection(name).find_one({"_id": key})
            if doc is not None:
                return _decision(doc)
        return None

    def add_decision(self, decision: StoredDecision) -> StoredDecision:
        """Store a decision durably; return the one stored first under the same key."""
        try:
            _collection("pending_decisions").insert_one(_decision_doc(decision))
        except DuplicateKeyError:
            first = self.find_decision(decision.key)
            if first is None:  # archived and gone from pending meanwhile: theirs is in decisions
                raise
            return first
        return decision

    def pending_decisions(self) -> list[StoredDecision]:
        """Decisions whose entry and events Kafka has not acknowledged (yet)."""
        return [_decision(doc) for doc in _collection("pending_decisions").find({})]

    def archive_decisions(self, decisions: Sequence[StoredDecision]) -> None:
        """Move decisions that Kafka acknowledged from pending to the archive."""
        if not decisions:
            return
        try:
            _collection("decisions").insert_many(
                [_decision_doc(d) for d in decisions], ordered=False
            )
        except BulkWriteError as error:  # archived before a crash: keep the first copy
            if any(f.get("code") != _DUPLICATE_KEY for f in error.details["writeErrors"]):
                raise
        _collection("pending_decisions").delete_many({"_id": {"$in": [d.key for d in decisions]}})
