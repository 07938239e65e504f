"""The audit service's domain (DESIGN §4, audit): read models built from every event topic, the
trails regulators, patients and hospitals may see, completeness against the log, and flags.

Two independent sources meet here. The *read model* is what the services said on Kafka: one
:class:`TrailRecord` per log entry, keyed by entry id, so that an event read twice (after a crash,
before its offset was committed) rewrites the same fields of the same item and never adds one.
The *log index* is what the log holds: every sealed leaf's entry id, kind and subject tag, read
from a chain node (:class:`LogReader`). Completeness compares the two.

Nothing here imports grpc or mongoengine; the store and the log reader are protocols, and time is
passed in. The modules, by concept:

* ``records``: what the domain and its store exchange (items, leaves, flags, filters, policy);
* ``ports``: the store and the log reader, as protocols;
* ``events``: event envelopes -> changes to the read model;
* ``trail``: trail queries scoped to the caller, their pages, evidence exports;
* ``flags``: break-glass, access without consent, denial bursts, alarms, review;
* ``completeness``: the read model of a patient against the log index;
* ``checkpoints``: the check of every sealed checkpoint the log follower is served (member
  signatures, consistency with the last one accepted);
* ``book``: :class:`AuditBook`, which ties them together under one lock.
"""

from services.audit.domain.book import AuditBook
from services.audit.domain.checkpoints import (
    AcceptedCheckpoint,
    CheckpointGate,
    CheckpointRejection,
    ConsistencyProver,
    VoteReader,
)
from services.audit.domain.completeness import Completeness
from services.audit.domain.events import EventEffects, EventTranslator
from services.audit.domain.flags import DECISIONS_KEPT, MAX_NOTE_CHARS, Flags
from services.audit.domain.ports import AuditStore, LogReader
from services.audit.domain.records import (
    DENY,
    KIND_ACCESS,
    KIND_CONSENT,
    KIND_KEY,
    KIND_RECORD,
    PERMIT,
    After,
    AuditPolicy,
    DirectiveVersion,
    FlagQuery,
    FlagRecord,
    FlagReviewRecord,
    ItemChange,
    LogLeaf,
    SealedView,
    TrailQuery,
    TrailRecord,
    cursor,
    flag_id,
    read_cursor,
)
from services.audit.domain.trail import (
    MAX_EXPORT_ENTRIES,
    EvidenceExport,
    TrailFilterSpec,
    TrailPage,
    Trails,
)

__all__ = [
    "DECISIONS_KEPT",
    "DENY",
    "KIND_ACCESS",
    "KIND_CONSENT",
    "KIND_KEY",
    "KIND_RECORD",
    "MAX_EXPORT_ENTRIES",
    "MAX_NOTE_CHARS",
    "PERMIT",
    "AcceptedCheckpoint",
    "After",
    "AuditBook",
    "AuditPolicy",
    "AuditStore",
    "CheckpointGate",
    "CheckpointRejection",
    "Completeness",
    "ConsistencyProver",
    "DirectiveVersion",
    "EventEffects",
    "EventTranslator",
    "EvidenceExport",
    "FlagQuery",
    "FlagRecord",
    "FlagReviewRecord",
    "Flags",
    "ItemChange",
    "LogLeaf",
    "LogReader",
    "SealedView",
    "TrailFilterSpec",
    "TrailPage",
    "TrailQuery",
    "TrailRecord",
    "Trails",
    "VoteReader",
    "cursor",
    "flag_id",
    "read_cursor",
]
