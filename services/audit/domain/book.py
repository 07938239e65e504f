"""The audit book: the one object the service's loops and RPCs use. It applies batches of events
to the read model, indexes the log as the log follower reads it (remembering the last checkpoint
it accepted and flagging those it refused), and answers trails, evidence, completeness and flags,
holding one lock over everything that changes the read model, the log index or the flags'
in-memory state."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from chain.errors import InvalidInputError
from services.audit.domain.checkpoints import CheckpointRejection
from services.audit.domain.completeness import Completeness, compare, incomplete_trail_flag
from services.audit.domain.events import EventTranslator
from services.audit.domain.flags import Flags
from services.audit.domain.ports import AuditStore, LogReader
from services.audit.domain.records import (
    AuditPolicy,
    FlagQuery,
    FlagRecord,
    ItemChange,
    LogLeaf,
    TrailQuery,
    TrailRecord,
    flag_id,
)
from services.audit.domain.trail import EvidenceExport, TrailFilterSpec, TrailPage, Trails
from services.platform.caller import Caller
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.events.v1 import events_pb2


class AuditBook:
    """The audit service: applies events, follows the log, answers trails, flags, evidence."""

    def __init__(
        self,
        store: AuditStore,
        tag_key: bytes,
        policy: AuditPolicy | None = None,
    ) -> None:
        self._store = store
        self._translator = EventTranslator(tag_key)
        self._policy = policy or AuditPolicy()
        self._log: LogReader | None = None
        self._lock = threading.Lock()
        self._flags = Flags(store, self._policy)
        self._trails = Trails(store, self._translator)
        #: The bad-checkpoint flags raised by this process (each is raised once).
        self._checkpoint_flags: set[str] = set()

    def attach_log(self, log: LogReader) -> None:
        """The chain node the book reads the log from (set once at start)."""
        self._log = log

    def load(self, now: datetime) -> None:
        """Rebuild the in-memory windows from the store after a restart."""
        self._flags.load(now)

    # --- events ---------------------------------------------------------------------------

    def apply_events(self, events: Sequence[events_pb2.EventEnvelope]) -> None:
        """Apply a batch of events in order (idempotent: a replayed event changes nothing)."""
        with self._lock:
            effects = [self._translator.effects(event) for event in events]
            changes = [change for effect in effects for change in effect.changes]
            if changes:
                self._store.apply_changes(changes)
                # After the items exist: a leaf the log follower indexed before them is found
                # now, and one it indexes later finds the items (see services/audit/store.py).
                created = [c.entry_id for c in changes if "kind" in c.fields]
                self._seal_from_index(created)
            for effect in effects:
                if effect.directive is not None:
                    self._store.put_directive(effect.directive)
                if effect.patient is not None:
                    self._store.put_patient(*effect.patient)
                for flag in effect.flags:
                    self._flags.raise_flag(flag)
                if effect.denial is not None:
                    self._flags.denied(*effect.denial)
            self._flags.track(changes)

    def _seal_from_index(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        leaves = self._store.leaves_by_id(entry_ids)
        if leaves:
            self._store.apply_changes(
                [
                    ItemChange(
                        leaf.entry_id,
                        "",
                        {"leaf_index": leaf.leaf_index, "sealed_tree_size": leaf.sealed_tree_size},
                    )
                    for leaf in leaves.values()
                ]
            )

    def check_consents(self, now: datetime) -> int:
        """Run the consent check of every item older than the grace period; the number of
        flags raised."""
        with self._lock:
            return self._flags.check_consents(now)

    # --- the log --------------------------------------------------------------------------

    def index_leaves(self, leaves: Sequence[LogLeaf], tree_size: int) -> None:
        """Add sealed leaves to the log index and their seal to the items that exist."""
        with self._lock:
            if leaves:
                self._store.put_leaves(leaves)
                self._store.apply_changes(
                    [
                        ItemChange(
                            leaf.entry_id,
                            "",
                            {
                                "leaf_index": leaf.leaf_index,
                                "sealed_tree_size": leaf.sealed_tree_size,
                            },
                        )
                        for leaf in leaves
                    ],
                    only_existing=True,
                )
            self._store.store_log_position(tree_size)

    def checkpoint_accepted(self, note: str) -> None:
        """Remember the last checkpoint the log follower accepted (its signed note)."""
        with self._lock:
            self._store.store_log_checkpoint(note)

    def checkpoint_rejected(self, node: str, rejection: CheckpointRejection, now: datetime) -> bool:
        """A checkpoint ``node`` served failed the log follower's check: raise its flag, once
        (see :meth:`CheckpointRejection.flag_id`); whether it was raised now."""
        with self._lock:
            raised = rejection.flag_id(node)
            if raised in self._checkpoint_flags:
                return False
            self._flags.raise_flag(rejection.flag(node, now))
            self._checkpoint_flags.add(raised)
            return True

    def on_alarm(
        self,
        reporting_node: str,
        alarm_id: str,
        member: str,
        tree_size: int,
        detail: str,
        raised: datetime,
    ) -> None:
        """A chain node's cosignature alarm becomes a flag (once per alarm)."""
        with self._lock:
            self._flags.raise_flag(
                FlagRecord(
                    flag_id=flag_id("alarm", reporting_node, alarm_id),
                    kind=apb.FLAG_KIND_COSIGNATURE_CONFLICT,
                    organization_id=member,
                    summary=f"node {reporting_node} reports member {member} at tree size "
                    f"{tree_size}: {detail}",
                    create_time=raised,
                    entry_ids=(),
                )
            )

    def _reader(self) -> LogReader:
        if self._log is None:
            raise RuntimeError("the audit book has no log reader attached")
        return self._log

    # --- trails ---------------------------------------------------------------------------

    def scope(self, caller: Caller, spec: TrailFilterSpec) -> TrailQuery:
        """The query ``caller`` may run for ``spec`` (see :meth:`Trails.scope`)."""
        return self._trails.scope(caller, spec)

    def trail(
        self, caller: Caller, spec: TrailFilterSpec, page_token: str, limit: int
    ) -> TrailPage:
        """A page of the trail ``caller`` may see, oldest first, after the item ``page_token``
        names ('' for the first page)."""
        return self._trails.trail(caller, spec, page_token, limit)

    def shown_to(
        self, caller: Caller, spec: TrailFilterSpec, items: Sequence[TrailRecord]
    ) -> list[TrailRecord]:
        """``items`` of ``caller``'s trail for ``spec`` as :meth:`trail` shows them."""
        return self._trails.shown_to(caller, spec, items)

    def select(
        self, caller: Caller, spec: TrailFilterSpec | None, entry_ids: Sequence[str]
    ) -> list[TrailRecord]:
        """The items of a filter, or the named entries (each must be visible to ``caller``)."""
        return self._trails.select(caller, spec, entry_ids)

    def export(
        self,
        caller: Caller,
        spec: TrailFilterSpec | None,
        entry_ids: Sequence[str],
        since_checkpoint: str,
    ) -> EvidenceExport:
        """One evidence bundle for the sealed entries of a trail (or of named entries)."""
        return self._trails.export(caller, spec, entry_ids, since_checkpoint, self._reader())

    # --- completeness ---------------------------------------------------------------------

    def completeness(self, subject_id: str, now: datetime) -> Completeness:
        """Every entry on the log with the patient's subject tag against the read model; an
        incomplete trail is flagged."""
        if not subject_id:
            raise InvalidInputError("expected a patient subject id, got none")
        tag = self._translator.tag(subject_id)
        result = compare(self._store, tag, self._reader().sync(), self._policy)
        if not result.complete:
            with self._lock:
                self._flags.raise_flag(incomplete_trail_flag(subject_id, result, now))
        return result

    # --- flags ----------------------------------------------------------------------------

    def flags(self, query: FlagQuery, page_token: str, limit: int) -> tuple[list[FlagRecord], str]:
        """A page of flags, newest first, and the token of the next page ('' for none)."""
        return self._flags.page(query, page_token, limit)

    def review(
        self, caller: Caller, flag_id_: str, outcome: int, note: str, now: datetime
    ) -> FlagRecord:
        """Record a regulator's review of a flag."""
        return self._flags.review(caller, flag_id_, outcome, note, now)
