"""Trails (DESIGN §4, audit): which items each caller may see (a patient its own trail, a
hospital its own accesses and records, a regulator everything), pages of them in a stable order,
and evidence bundles that prove the sealed ones against the log.

A page continues strictly after the last item of the page before, by its (time, entry id): the
order is total and neither changes once an item exists, so items added while a caller pages
are neither repeated nor skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from chain.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from services.audit.domain.events import EventTranslator
from services.audit.domain.ports import AuditStore, LogReader
from services.audit.domain.records import TrailQuery, TrailRecord, cursor, read_cursor
from services.platform import paging
from services.platform.caller import Caller, Role

#: Most entries one evidence export may select.
MAX_EXPORT_ENTRIES = 10_000


@dataclass(frozen=True)
class TrailFilterSpec:
    """A trail filter as the caller asked for it."""

    patient_subject_id: str = ""
    organization_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    kinds: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrailPage:
    """A page of trail items and the token of the next page ('' when no more follow)."""

    items: list[TrailRecord]
    next_page_token: str

    @property
    def more(self) -> bool:
        """True when more items follow."""
        return bool(self.next_page_token)


@dataclass(frozen=True)
class EvidenceExport:
    """An evidence bundle for a selection of entries, and what it could not prove yet."""

    bundle_json: str
    entry_count: int
    unsealed_entry_ids: list[str]
    rejected_entry_ids: list[str]


class Trails:
    """Answers trail queries and evidence exports over the store."""

    def __init__(self, store: AuditStore, translator: EventTranslator) -> None:
        self._store = store
        self._translator = translator

    def scope(self, caller: Caller, spec: TrailFilterSpec) -> TrailQuery:
        """The query ``caller`` may run for ``spec``: a patient sees only its own trail, a
        hospital only its own accesses and records; PermissionDeniedError when ``spec`` asks
        for someone else's."""
        patient = spec.patient_subject_id
        organization = spec.organization_id
        if spec.start_time and spec.end_time and spec.start_time >= spec.end_time:
            raise InvalidInputError(
                f"expected start_time before end_time, got {spec.start_time.isoformat()} and "
                f"{spec.end_time.isoformat()}"
            )
        if caller.role is Role.PATIENT:
            if patient and patient != caller.id:
                raise PermissionDeniedError(f"{caller.describe()} may see only its own trail")
            patient = caller.id
        elif caller.role is Role.HOSPITAL:
            if organization and organization != caller.id:
                raise PermissionDeniedError(
                    f"{caller.describe()} may see only its own accesses and records, "
                    f"not those of {organization!r}"
                )
            organization = caller.id
        elif caller.role is not Role.REGULATOR:
            raise PermissionDeniedError(f"{caller.describe()} may not read audit trails")
        return TrailQuery(
            subject_tag=self._translator.tag(patient) if patient else None,
            organization_id=organization,
            start_time=spec.start_time,
            end_time=spec.end_time,
            kinds=spec.kinds,
        )

    def trail(
        self, caller: Caller, spec: TrailFilterSpec, page_token: str, limit: int
    ) -> TrailPage:
        """A page of the trail ``caller`` may see, oldest first, after the item ``page_token``
        names (InvalidInputError for a token of another filter)."""
        query = self.scope(caller, spec)
        key = _listing(query)
        position = paging.page_after(page_token, key, 2)
        found = self._store.items(query, read_cursor(position) if position else None, limit + 1)
        items = self.shown_to(caller, spec, found[:limit])
        if len(found) <= limit or not items:
            return TrailPage(items, "")
        last = items[-1]
        return TrailPage(items, paging.page_token(cursor(last.time, last.entry_id), key))

    def shown_to(
        self, caller: Caller, spec: TrailFilterSpec, items: Sequence[TrailRecord]
    ) -> list[TrailRecord]:
        """``items`` of ``caller``'s trail for ``spec`` as ``caller`` sees them: patients'
        subject ids only to regulators, patients and those who asked by patient."""
        sees_patients = caller.role in (Role.REGULATOR, Role.PATIENT) or bool(
            spec.patient_subject_id
        )
        if not sees_patients:
            return [replace(item, patient_subject_id="") for item in items]
        unknown = {
            item.subject_tag for item in items if item.subject_tag and not item.patient_subject_id
        }
        names = self._store.patients(unknown) if unknown else {}
        return [
            replace(item, patient_subject_id=names.get(item.subject_tag, ""))
            if not item.patient_subject_id and item.subject_tag in names
            else item
            for item in items
        ]

    def _visible(self, caller: Caller, item: TrailRecord) -> bool:
        if caller.role is Role.REGULATOR:
            return True
        if caller.role is Role.PATIENT:
            return item.subject_tag == self._translator.tag(caller.id)
        if caller.role is Role.HOSPITAL:
            return caller.id in item.organizations
        return False

    def select(
        self, caller: Caller, spec: TrailFilterSpec | None, entry_ids: Sequence[str]
    ) -> list[TrailRecord]:
        """The items of a filter, or the named entries (each must be visible to ``caller``)."""
        if spec is not None:
            query = self.scope(caller, spec)
            items = self._store.items(query, None, MAX_EXPORT_ENTRIES + 1)
            if len(items) > MAX_EXPORT_ENTRIES:
                raise InvalidInputError(
                    f"expected a trail of at most {MAX_EXPORT_ENTRIES:,} entries to export, got "
                    "more: narrow the filter (a time range, kinds)"
                )
            return items
        if not entry_ids:
            raise InvalidInputError("expected a filter or entry ids to export, got neither")
        if len(entry_ids) > MAX_EXPORT_ENTRIES:
            raise InvalidInputError(
                f"expected at most {MAX_EXPORT_ENTRIES:,} entry ids, got {len(entry_ids):,}"
            )
        found = self._store.items_by_id(list(dict.fromkeys(entry_ids)))
        visible = {i: item for i, item in found.items() if self._visible(caller, item)}
        missing = [i for i in entry_ids if i not in visible]
        if missing:
            raise NotFoundError(
                f"no trail item {caller.describe()} may see for entry id "
                + ", ".join(repr(i) for i in missing[:5])
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )
        return [visible[i] for i in dict.fromkeys(entry_ids)]

    def export(
        self,
        caller: Caller,
        spec: TrailFilterSpec | None,
        entry_ids: Sequence[str],
        since_checkpoint: str,
        log: LogReader,
    ) -> EvidenceExport:
        """One evidence bundle for the sealed entries of a trail (or of named entries)."""
        items = self.select(caller, spec, entry_ids)
        view = log.sync()
        leaves = self._store.leaves_by_id([item.entry_id for item in items])
        sealed: list[tuple[str, int]] = []
        unsealed: list[str] = []
        rejected: list[str] = []
        for item in items:
            leaf = leaves.get(item.entry_id)
            if leaf is not None and leaf.leaf_index < view.tree_size:
                sealed.append((item.entry_id, leaf.leaf_index))
            elif item.rejected:
                rejected.append(item.entry_id)
            else:
                unsealed.append(item.entry_id)
        bundle = log.evidence(sealed, since_checkpoint) if sealed else ""
        return EvidenceExport(bundle, len(sealed), unsealed, rejected)


def _listing(query: TrailQuery) -> str:
    """The key of the trail listing ``query`` pages, for its page tokens."""
    return paging.filter_key(
        "trail",
        query.subject_tag.hex() if query.subject_tag is not None else None,
        query.organization_id,
        query.start_time.isoformat() if query.start_time else "",
        query.end_time.isoformat() if query.end_time else "",
        sorted(query.kinds),
    )
