"""Anchoring record versions: what a hospital may put on the log, and what it gets back.

A hospital sends, per record version, the RECORD entry it signed (forwarded to the log byte for
byte) with the same facts in clear (record id, version, action, commitment, ...). This module
checks that the two agree, that the entry is the caller's and signed by one of its current keys
(the chain's own validator, :mod:`services.platform.known_keys`), that versions follow each other
(version n names version n-1's commitment), and keeps anchoring idempotent on
(hospital, record id, version): the same entry again gets the first promise; another commitment
for an anchored version is refused. Nothing here does I/O; time is passed in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from chain.entry import parse_entry
from chain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    SwiftchainError,
)
from chain.hashing import HASH_SIZE, leaf_hash
from chain.tags import record_tag
from chain.validation import EntryRejectedError
from services.anchoring.domain.records import (
    DEFAULT_MAX_SEAL_DELAY,
    MAX_REASON_TEXT,
    MAX_RECORD_ID,
    MAX_STREAM_ITEMS,
    PRODUCER,
    AnchorRequest,
    AuthorCheck,
    KeyCheck,
    Outcome,
    RecordVersion,
    VersionStore,
    event_id,
)
from services.platform.caller import Caller, Role
from services.platform.events import envelope
from swiftchain.anchoring.v1 import anchoring_service_pb2
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2


def _reference(body: entry_pb2.EntryBody, kind: int) -> bytes:
    for reference in body.references:
        if reference.kind == kind:
            return bytes(reference.commitment)
    return b""


def _mismatch(what: str, sent: object, signed: object) -> InvalidInputError:
    return InvalidInputError(
        f"expected {what} to equal the signed entry's ({signed!r}), got {sent!r}"
    )


def _check_same_anchor(existing: RecordVersion, version: RecordVersion) -> None:
    """``version`` is stored already as ``existing``: a resend is fine, anything else conflicts."""
    if existing.commitment != version.commitment:
        raise ConflictError(
            f"version {version.version} of record {version.record_id!r} is "
            "anchored already with another commitment"
        )
    if existing.entry != version.entry:
        raise ConflictError(
            f"version {version.version} of record {version.record_id!r} is "
            f"anchored already by entry {existing.entry_id}; resend that entry"
        )


class RecordAnchoring:
    """Validates and records anchors; see the module docstring."""

    def __init__(
        self,
        store: VersionStore,
        keys: KeyCheck,
        tag_key: bytes,
        *,
        max_seal_delay: timedelta = DEFAULT_MAX_SEAL_DELAY,
        authors: AuthorCheck | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        #: Who may be named as a record's author; None checks the id's format only.
        self._authors = authors
        self._tag_key = tag_key
        self._max_seal_delay = max_seal_delay

    def anchor(
        self, organization_id: str, requests: Sequence[AnchorRequest], now: datetime, first: int = 0
    ) -> list[Outcome]:
        """Check and record ``requests`` of one hospital, in order; one outcome per item
        (numbered from ``first``). Items that fail do not stop the others."""
        if len(requests) > MAX_STREAM_ITEMS:
            raise InvalidInputError(
                f"expected at most {MAX_STREAM_ITEMS} record versions, got {len(requests)}"
            )
        # Only the previous versions are read first. The versions themselves are inserted
        # straight away: almost all are new, and the store reports the few that were there
        # already, which then count as resends (or conflicts). This saves a read of every key.
        stored = self._store.get_many(
            list({(organization_id, r.record_id, r.version - 1) for r in requests if r.version > 1})
        )
        outcomes: list[Outcome] = []
        fresh: list[RecordVersion] = []
        chunk_id = str(uuid.uuid4())
        # Versions of this request, so that version n may follow version n-1 sent just before.
        batch: dict[tuple[str, str, int], RecordVersion] = {}
        for offset, request in enumerate(requests):
            index = first + offset
            try:
                version = self._check(organization_id, request, now)
                key = version.key
                existing = stored.get(key) or batch.get(key)
                if existing is not None:
                    _check_same_anchor(existing, version)
                    outcomes.append(Outcome(index, request.record_id, request.version, existing))
                    continue
                self._check_sequence(version, stored, batch)
                version.chunk_id = chunk_id
                batch[key] = version
                fresh.append(version)
                outcomes.append(
                    Outcome(index, request.record_id, request.version, version, created=True)
                )
            except SwiftchainError as error:
                outcomes.append(Outcome(index, request.record_id, request.version, error=error))
        if fresh:
            raced = {v.key: v for v in self._store.insert_new(fresh)}
            if raced:
                outcomes = [self._after_race(o, raced) for o in outcomes]
        return outcomes

    def ordered(self, versions: Sequence[RecordVersion], now: datetime) -> None:
        """Record that Kafka ordered ``versions`` (their ``ordering_offset`` and
        ``ordered_time`` set), with a RecordAnchored event each."""
        self._store.set_ordered(versions, [self._anchored_event(v, now) for v in versions])

    def version_for(self, caller: Caller, entry_id: str) -> RecordVersion:
        """The version anchored by ``entry_id``, if ``caller`` may see it."""
        version = self._store.by_entry(entry_id)
        if version is None or not _may_see(caller, version.organization_id):
            # Another hospital's entry is reported as unknown: its existence is not theirs to know.
            raise NotFoundError(f"no record version was anchored with entry {entry_id}")
        return version

    def versions(self, caller: Caller, organization_id: str, record_id: str) -> list[RecordVersion]:
        """Every anchored version of a record, oldest first; NotFoundError if none."""
        if not _may_see(caller, organization_id):
            raise PermissionDeniedError(
                f"{caller.describe()} may read only its own records' provenance"
            )
        versions = self._store.of_record(organization_id, record_id)
        if not versions:
            raise NotFoundError(f"{organization_id} anchored no version of record {record_id!r}")
        return versions

    def verify(
        self, caller: Caller, organization_id: str, record_id: str, version: int, commitment: bytes
    ) -> tuple[int, RecordVersion | None]:
        """MATCH, MISMATCH or UNKNOWN for a claimed commitment, and the anchored version."""
        if len(commitment) != HASH_SIZE:
            raise InvalidInputError(f"expected a 32-byte commitment, got {len(commitment)} bytes")
        if not _may_see(caller, organization_id):
            raise PermissionDeniedError(f"{caller.describe()} may verify only its own records")
        found = self._store.get_many([(organization_id, record_id, version)])
        anchored = found.get((organization_id, record_id, version))
        if anchored is None:
            return anchoring_service_pb2.VERIFY_RESULT_UNKNOWN, None
        matched = anchored.commitment == commitment
        result = (
            anchoring_service_pb2.VERIFY_RESULT_MATCH
            if matched
            else anchoring_service_pb2.VERIFY_RESULT_MISMATCH
        )
        return result, anchored

    # --- internals ------------------------------------------------------------------------

    def _check(self, organization_id: str, request: AnchorRequest, now: datetime) -> RecordVersion:
        if not 1 <= len(request.record_id) <= MAX_RECORD_ID:
            raise InvalidInputError(
                f"expected a record id of 1-{MAX_RECORD_ID} characters, "
                f"got {len(request.record_id)}"
            )
        if len(request.reason_text) > MAX_REASON_TEXT:
            raise InvalidInputError(
                f"expected a reason text of at most {MAX_REASON_TEXT} characters, "
                f"got {len(request.reason_text)}"
            )
        if not request.signed_entry:
            raise InvalidInputError("expected the signed RECORD entry, got none")
        parsed = parse_entry(request.signed_entry)
        body = parsed.body
        if body.kind != common_pb2.ENTRY_KIND_RECORD:
            raise InvalidInputError(
                f"expected a RECORD entry, got {common_pb2.EntryKind.Name(body.kind)}"
            )
        if body.submitter_id != organization_id:
            raise PermissionDeniedError(
                f"expected an entry submitted by {organization_id!r} (the caller), "
                f"got one submitted by {body.submitter_id!r}"
            )
        detail = body.record
        expected = record_tag(self._tag_key, organization_id, request.record_id)
        checks: list[tuple[str, object, object]] = [
            ("version", request.version, detail.version),
            ("action", request.action, detail.action),
            ("commitment", request.commitment.hex(), body.commitment.hex()),
            ("subject_tag", request.subject_tag.hex(), body.subject_tag.hex()),
            ("author_practitioner_id", request.author_practitioner_id, detail.author_ref),
            ("reason_code", request.reason_code, detail.reason_code),
            (
                "previous_version_commitment",
                request.previous_version_commitment.hex(),
                _reference(body, entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION).hex(),
            ),
        ]
        for what, sent, signed in checks:
            if sent != signed:
                raise _mismatch(what, sent, signed)
        if detail.record_tag != expected:
            raise InvalidInputError(
                "expected the entry's record_tag to be HMAC(tag key, hospital || 0x00 || "
                f"record id) for record {request.record_id!r}, got another tag"
            )
        if detail.version == 1 and detail.action != common_pb2.RECORD_ACTION_CREATE:
            raise InvalidInputError(
                "expected action CREATE for version 1, got "
                + common_pb2.RecordAction.Name(detail.action)
            )
        if detail.version > 1 and detail.action == common_pb2.RECORD_ACTION_CREATE:
            raise InvalidInputError(
                f"expected CREATE only for version 1, got it for version {detail.version}"
            )
        if (detail.version == 1) != (not request.previous_version_commitment):
            raise InvalidInputError(
                "expected a previous-version commitment exactly for versions after the first"
            )
        if detail.author_ref and self._authors is not None:
            self._authors.check_author(organization_id, detail.author_ref)
        try:
            self._keys.check(parsed)
        except EntryRejectedError as error:
            if error.reason in ("UNKNOWN_KEY", "KEY_NOT_VALID", "KEY_NOT_ALLOWED"):
                raise PermissionDeniedError(str(error)) from None
            raise InvalidInputError(str(error)) from None
        return RecordVersion(
            organization_id=organization_id,
            record_id=request.record_id,
            version=detail.version,
            action=detail.action,
            commitment=bytes(body.commitment),
            subject_tag=bytes(body.subject_tag),
            previous_version_commitment=bytes(request.previous_version_commitment),
            author_practitioner_id=detail.author_ref,
            reason_code=detail.reason_code,
            reason_text=request.reason_text,
            entry_id=parsed.entry_id,
            entry=request.signed_entry,
            key_id=parsed.key_id,
            leaf_hash=leaf_hash(request.signed_entry),
            anchored_time=now,
            seal_due_time=now + self._max_seal_delay,
        )

    @staticmethod
    def _check_sequence(
        version: RecordVersion,
        stored: dict[tuple[str, str, int], RecordVersion],
        batch: dict[tuple[str, str, int], RecordVersion],
    ) -> None:
        if version.version == 1:
            return
        previous_key = (version.organization_id, version.record_id, version.version - 1)
        previous = batch.get(previous_key) or stored.get(previous_key)
        if previous is None:
            raise PreconditionError(
                f"version {version.version} of record {version.record_id!r} follows no anchored "
                f"version {version.version - 1}; anchor the versions in order"
            )
        if previous.commitment != version.previous_version_commitment:
            raise PreconditionError(
                f"expected version {version.version}'s previous-version commitment to be "
                f"version {version.version - 1}'s ({previous.commitment.hex()[:16]}…), "
                f"got {version.previous_version_commitment.hex()[:16]}…"
            )

    @staticmethod
    def _after_race(outcome: Outcome, raced: dict[tuple[str, str, int], RecordVersion]) -> Outcome:
        if outcome.anchored is None or not outcome.created:
            return outcome
        stored = raced.get(outcome.anchored.key)
        if stored is None:
            return outcome
        try:
            _check_same_anchor(stored, outcome.anchored)
        except ConflictError as error:
            return Outcome(outcome.index, outcome.record_id, outcome.version, error=error)
        return Outcome(outcome.index, outcome.record_id, outcome.version, stored)

    @staticmethod
    def _anchored_event(version: RecordVersion, now: datetime) -> events_pb2.EventEnvelope:
        event = events_pb2.RecordAnchored(
            organization_id=version.organization_id,
            record_id=version.record_id,
            version=version.version,
            action=version.action,  # type: ignore[arg-type]
            entry_id=version.entry_id,
            commitment=version.commitment,
            subject_tag=version.subject_tag,
            author_practitioner_id=version.author_practitioner_id,
            reason_code=version.reason_code,
            ordering_offset=version.ordering_offset or 0,
        )
        event.seal_due_time.FromDatetime(version.seal_due_time)
        event.anchored_time.FromDatetime(version.anchored_time)
        return envelope(
            event,
            producer=PRODUCER,
            subject=version.organization_id,
            now=now,
            event_id=event_id(version.entry_id, "anchored"),
        )


def _may_see(caller: Caller, organization_id: str) -> bool:
    return caller.role is Role.REGULATOR or caller.id == organization_id
