"""Completeness (DESIGN §4, audit): one patient's read model against the log index.

The read model is what the services said on Kafka; the log index is what the log holds (every
sealed leaf's entry id and subject tag, read from a chain node). An entry on the log that the
read model lacks means an event was lost or not yet consumed; an item the log lacks means a
service recorded something it never logged. Either way the trail is flagged as incomplete.
A patient's device keys are KEY entries under its subject tag too, but no trail items (they
record who holds the patient's keys, not what was done with its data), so they are left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from services.audit.domain.ports import AuditStore
from services.audit.domain.records import (
    KIND_KEY,
    AuditPolicy,
    FlagRecord,
    SealedView,
    TrailQuery,
    flag_id,
)
from swiftchain.audit.v1 import audit_service_pb2 as apb


@dataclass(frozen=True)
class Completeness:
    """The read model of one patient compared with the log."""

    missing_in_read_model: list[str]
    missing_in_log: list[str]
    checked_tree_size: int

    @property
    def complete(self) -> bool:
        """True when neither side lacks anything."""
        return not self.missing_in_read_model and not self.missing_in_log


def compare(store: AuditStore, tag: bytes, view: SealedView, policy: AuditPolicy) -> Completeness:
    """Every entry on the log (up to ``view``) with subject tag ``tag`` against the read model."""
    on_log = {
        leaf.entry_id
        for leaf in store.leaves_with_tag(tag)
        if leaf.leaf_index < view.tree_size and leaf.kind != KIND_KEY
    }
    known = store.items(TrailQuery(subject_tag=tag), None, 10**9)
    in_model = {item.entry_id for item in known}
    due_before = view.cut_time - policy.completeness_grace
    return Completeness(
        missing_in_read_model=sorted(on_log - in_model),
        missing_in_log=sorted(
            item.entry_id
            for item in known
            if item.entry_id not in on_log and (item.rejected or item.time < due_before)
        ),
        checked_tree_size=view.tree_size,
    )


def incomplete_trail_flag(subject_id: str, result: Completeness, now: datetime) -> FlagRecord:
    """The flag of an incomplete trail; the same gaps raise the same flag again."""
    gaps = [*result.missing_in_read_model, *result.missing_in_log]
    digest = hashlib.sha256("\n".join(gaps).encode()).hexdigest()[:16]
    return FlagRecord(
        flag_id=flag_id("incomplete", subject_id, digest),
        kind=apb.FLAG_KIND_INCOMPLETE_TRAIL,
        organization_id="",
        patient_subject_id=subject_id,
        summary=(
            f"the trail of a patient at tree size {result.checked_tree_size}: "
            f"{len(result.missing_in_read_model)} entries on the log missing "
            f"from the read model, {len(result.missing_in_log)} items missing "
            "from the log"
        ),
        create_time=now,
        entry_ids=tuple(gaps),
    )
