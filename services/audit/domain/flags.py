"""Flags for review (DESIGN §4, audit): break-glass access (raised by its event), bursts of
denials for one requester, access or records without a permitting consent (checked once the
events of other topics had time to arrive); the raising of every flag, whatever its cause; and a
regulator's review of each.

:class:`Flags` keeps the in-memory state these checks need (recent denials, the decisions per
requester and patient, the items whose consent check is due) and rebuilds it from the store
after a restart. It is not thread-safe: the book calls it under its lock.
"""

from __future__ import annotations

import bisect
import collections
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from chain.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from services.audit.domain.ports import AuditStore
from services.audit.domain.records import (
    DENY,
    KIND_ACCESS,
    AuditPolicy,
    FlagQuery,
    FlagRecord,
    FlagReviewRecord,
    ItemChange,
    TrailRecord,
    cursor,
    flag_id,
    read_cursor,
)
from services.platform import paging
from services.platform.caller import Caller, Role
from swiftchain.audit.v1 import audit_service_pb2 as apb

_log = logging.getLogger(__name__)

#: Longest review note.
MAX_NOTE_CHARS = 4000
#: Decisions remembered per (requester, patient) for the consent check of records; a record
#: older than all of them is judged as if no decision preceded it.
DECISIONS_KEPT = 32


class _DenialWindows:
    """Recent DENY decisions per requester, and the burst each requester is in, if any."""

    def __init__(self, policy: AuditPolicy) -> None:
        self._policy = policy
        self._recent: dict[str, collections.deque[tuple[datetime, str]]] = {}
        self._seen: set[str] = set()
        self._open: dict[str, tuple[str, datetime]] = {}

    def add(self, requester: str, when: datetime, entry_id: str) -> FlagRecord | None:
        """Count a denial; the flag to raise or extend when it makes or continues a burst."""
        if entry_id in self._seen:
            return None
        self._seen.add(entry_id)
        window = self._policy.denial_burst_window
        recent = self._recent.setdefault(requester, collections.deque())
        recent.append((when, entry_id))
        while recent and recent[0][0] < when - window:
            self._seen.discard(recent.popleft()[1])
        burst = self._open.get(requester)
        if burst is not None and when - burst[1] <= window:
            self._open[requester] = (burst[0], when)
            return self._flag(burst[0], requester, when, (entry_id,), len(recent))
        if len(recent) < self._policy.denial_burst_count:
            return None
        new_id = flag_id("denial-burst", requester, recent[0][1])
        self._open[requester] = (new_id, when)
        return self._flag(new_id, requester, when, tuple(e for _, e in recent), len(recent))

    def _flag(
        self, id_: str, requester: str, when: datetime, entries: tuple[str, ...], count: int
    ) -> FlagRecord:
        seconds = self._policy.denial_burst_window.total_seconds()
        return FlagRecord(
            flag_id=id_,
            kind=apb.FLAG_KIND_DENIAL_BURST,
            organization_id=requester,
            summary=f"{requester} was denied access {count} times within {seconds:.0f} s",
            create_time=when,
            entry_ids=entries,
        )


class Flags:
    """Raises, checks, lists and reviews flags over the store (see the module docstring)."""

    def __init__(self, store: AuditStore, policy: AuditPolicy) -> None:
        self._store = store
        self._policy = policy
        self._denials = _DenialWindows(policy)
        #: Items whose consent check is due, by entry id.
        self._unchecked: dict[str, TrailRecord] = {}
        #: The latest decisions per (requester, subject tag), oldest first: (time, entry id,
        #: decision), break-glass excluded. A record is judged by the latest decision at or
        #: before its time, and a later decision may be read before the record is checked.
        self._decisions: dict[tuple[str, bytes], list[tuple[datetime, str, int]]] = {}

    def load(self, now: datetime) -> None:
        """Rebuild the in-memory windows from the store after a restart."""
        for item in self._store.recent_access(datetime.min.replace(tzinfo=UTC)):
            self._remember_decision(item)
            denied = item.detail.get("decision") == DENY and not item.detail.get("break_glass")
            if denied and item.time >= now - self._policy.denial_burst_window:
                self._denials.add(item.actor_organization_id, item.time, item.entry_id)
        for item in self._store.unchecked_items():
            self._unchecked[item.entry_id] = item

    def denied(self, requester: str, when: datetime, entry_id: str) -> None:
        """Count a DENY decision, and raise or extend the burst it makes or continues."""
        burst = self._denials.add(requester, when, entry_id)
        if burst is not None:
            self.raise_flag(burst)

    def track(self, changes: Sequence[ItemChange]) -> None:
        """Remember the decisions and the due consent checks of items just written."""
        due = [c.entry_id for c in changes if c.fields.get("consent_check_due")]
        accesses = [c.entry_id for c in changes if c.fields.get("kind") == KIND_ACCESS]
        if not due and not accesses:
            return
        items = self._store.items_by_id(sorted({*due, *accesses}))
        for entry_id in accesses:
            if entry_id in items:
                self._remember_decision(items[entry_id])
        for entry_id in due:
            if entry_id in items:
                self._unchecked[entry_id] = items[entry_id]

    def _remember_decision(self, item: TrailRecord) -> None:
        if item.detail.get("break_glass"):
            return
        known = self._decisions.setdefault((item.actor_organization_id, item.subject_tag), [])
        if any(entry_id == item.entry_id for _, entry_id, _ in known):
            return
        bisect.insort(known, (item.time, item.entry_id, int(item.detail.get("decision", 0))))
        if len(known) > DECISIONS_KEPT:
            del known[0]

    def _decision_before(self, organization: str, tag: bytes, when: datetime) -> int | None:
        """The latest decision for ``organization`` about ``tag`` at or before ``when``."""
        known = self._decisions.get((organization, tag), [])
        at = bisect.bisect_right(known, when, key=lambda decision: decision[0])
        return known[at - 1][2] if at else None

    def raise_flag(self, flag: FlagRecord) -> None:
        """Store ``flag`` (or extend the one it repeats) and note it on its items."""
        self._store.raise_flag(flag)
        self._store.add_flag_to_items(flag.entry_ids, flag.flag_id)
        _log.info(
            "flag %s (%s): %s",
            flag.flag_id,
            apb.FlagKind.Name(apb.FlagKind.ValueType(flag.kind)),
            flag.summary,
        )

    def check_consents(self, now: datetime) -> int:
        """Run the consent check of every item older than the grace period; the number of
        flags raised."""
        due = [
            item
            for item in self._unchecked.values()
            if item.time <= now - self._policy.consent_check_grace
        ]
        raised = 0
        for item in due:
            flag = self._consent_violation(item)
            if flag is not None:
                self.raise_flag(flag)
                raised += 1
        if due:
            self._store.mark_checked([item.entry_id for item in due])
            for item in due:
                del self._unchecked[item.entry_id]
        return raised

    def _consent_violation(self, item: TrailRecord) -> FlagRecord | None:
        organization = item.actor_organization_id
        if item.kind == KIND_ACCESS:
            directive_id = str(item.detail.get("deciding_directive_id", ""))
            version = int(item.detail.get("deciding_directive_version", 0))
            known = self._store.directive(directive_id, version) if directive_id else None
            if known is not None and known.active and known.grantee_organization_id == organization:
                return None
            why = (
                "names no deciding consent"
                if not directive_id
                else f"names consent {directive_id} version {version}, which "
                + (
                    "no consent event announced"
                    if known is None
                    else "is not active"
                    if not known.active
                    else f"grants to {known.grantee_organization_id}, not {organization}"
                )
            )
            summary = f"a PERMIT for {organization} {why}"
        else:
            if self._decision_before(organization, item.subject_tag, item.time) != DENY:
                return None
            summary = (
                f"{organization} anchored record {item.detail.get('record_id', '')!r} version "
                f"{item.detail.get('version', 0)} about a patient after being denied access"
            )
        return FlagRecord(
            flag_id=flag_id("without-consent", item.entry_id),
            kind=apb.FLAG_KIND_ACCESS_WITHOUT_CONSENT,
            organization_id=organization,
            patient_subject_id=item.patient_subject_id,
            summary=summary,
            create_time=item.time,
            entry_ids=(item.entry_id,),
        )

    def page(self, query: FlagQuery, page_token: str, limit: int) -> tuple[list[FlagRecord], str]:
        """A page of flags, newest first, after the flag ``page_token`` names; and the token of
        the next page ('' when no more follow)."""
        key = _listing(query)
        position = paging.page_after(page_token, key, 2)
        found = self._store.flags(query, read_cursor(position) if position else None, limit + 1)
        page = found[:limit]
        if len(found) <= limit or not page:
            return page, ""
        last = page[-1]
        return page, paging.page_token(cursor(last.create_time, last.flag_id), key)

    def review(
        self, caller: Caller, flag_id_: str, outcome: int, note: str, now: datetime
    ) -> FlagRecord:
        """Record a regulator's review of a flag."""
        if caller.role is not Role.REGULATOR:
            raise PermissionDeniedError(f"{caller.describe()} may not review flags")
        if not flag_id_:
            raise InvalidInputError("expected a flag id, got none")
        if outcome == apb.REVIEW_OUTCOME_UNSPECIFIED or outcome not in apb.ReviewOutcome.values():
            raise InvalidInputError(
                "expected an outcome (JUSTIFIED, UNJUSTIFIED, FALSE_POSITIVE or ESCALATED), got "
                + ("none" if outcome == 0 else str(outcome))
            )
        if not note.strip():
            raise InvalidInputError("expected a note saying why, got none")
        if len(note) > MAX_NOTE_CHARS:
            raise InvalidInputError(
                f"expected a note of at most {MAX_NOTE_CHARS:,} characters, got {len(note):,}"
            )
        reviewed = self._store.review_flag(
            flag_id_, FlagReviewRecord(caller.id, outcome, note, now)
        )
        if reviewed is None:
            raise NotFoundError(f"no flag {flag_id_!r}")
        return reviewed


def _listing(query: FlagQuery) -> str:
    """The key of the flag listing ``query`` pages, for its page tokens."""
    return paging.filter_key(
        "flags",
        query.status,
        sorted(query.kinds),
        query.organization_id,
        query.patient_subject_id,
        query.start_time.isoformat() if query.start_time else "",
        query.end_time.isoformat() if query.end_time else "",
    )
