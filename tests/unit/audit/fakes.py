"""Shared pieces of the audit unit tests: the AuditStore protocol in memory (with the semantics
of services/audit/store.py: upserts of fields, ``$addToSet`` merges, the (time, id) order and
pages that start strictly after a position), a LogReader that serves a fixed view, builders
of the events the audit reads (made with services/platform/events.py ``envelope()``, as the
services make them), and a chain node serving a real Merkle tree and checkpoints signed by a
test consortium's member keys (or others)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from chain.checkpoint import Checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.hashing import leaf_hash
from chain.membership import membership_entry
from chain.note import Signer, sign
from chain.proof_build import consistency_proof, inclusion_proof, tree_root
from chain.tags import subject_tag
from chain.tiles import MemoryHashStore
from services.audit.domain import (
    KIND_ACCESS,
    After,
    DirectiveVersion,
    FlagQuery,
    FlagRecord,
    FlagReviewRecord,
    ItemChange,
    LogLeaf,
    SealedView,
    TrailQuery,
    TrailRecord,
)
from services.platform.events import envelope
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TAG_KEY = bytes(range(32))
HOSPITAL = "hospital-a"
OTHER_HOSPITAL = "hospital-b"
PATIENT = "pt-alice"
OTHER_PATIENT = "pt-bob"


def tag(subject_id: str) -> bytes:
    """The subject tag the services compute for ``subject_id`` with :data:`TAG_KEY`."""
    return subject_tag(TAG_KEY, subject_id)


def _record(doc: dict[str, Any]) -> TrailRecord:
    return TrailRecord(
        entry_id=doc["_id"],
        kind=int(doc.get("kind", 0)),
        time=doc["time"],
        actor_organization_id=doc.get("actor_organization_id", ""),
        organizations=tuple(doc.get("organizations", ())),
        subject_tag=bytes(doc.get("subject_tag", b"")),
        patient_subject_id=doc.get("patient_subject_id", ""),
        detail=copy.deepcopy(dict(doc.get("detail", {}))),
        leaf_index=doc.get("leaf_index"),
        sealed_tree_size=doc.get("sealed_tree_size"),
        rejected=bool(doc.get("rejected", False)),
        rejection_detail=doc.get("rejection_detail", ""),
        flag_ids=tuple(doc.get("flag_ids", ())),
    )


def _in_range(value: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or value >= start) and (end is None or value < end)


class FakeAuditStore:
    """The AuditStore protocol (services/audit/domain/ports.py) in memory."""

    def __init__(self) -> None:
        self.items_doc: dict[str, dict[str, Any]] = {}
        self.leaves: dict[str, LogLeaf] = {}
        self.position = 0
        #: The signed note of the last checkpoint the log follower accepted.
        self.checkpoint = ""
        self.directives: dict[tuple[str, int], DirectiveVersion] = {}
        self.patient_names: dict[bytes, str] = {}
        self.flag_records: dict[str, FlagRecord] = {}
        #: Every review of each flag, oldest first.
        self.flag_history: dict[str, list[FlagReviewRecord]] = {}

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, for before/after comparisons."""
        return copy.deepcopy(
            {
                "items": self.items_doc,
                "leaves": self.leaves,
                "position": self.position,
                "checkpoint": self.checkpoint,
                "directives": self.directives,
                "patients": self.patient_names,
                "flags": self.flag_records,
                "flag_history": self.flag_history,
            }
        )

    # --- items ----------------------------------------------------------------------------

    def apply_changes(self, changes: Sequence[ItemChange], *, only_existing: bool = False) -> None:
        for change in changes:
            if only_existing and change.entry_id not in self.items_doc:
                continue
            doc = self.items_doc.setdefault(change.entry_id, {"_id": change.entry_id})
            doc.update(copy.deepcopy(dict(change.fields)))
            if change.event_id and change.event_id not in doc.setdefault("event_ids", []):
                doc["event_ids"].append(change.event_id)

    def _matches(self, doc: dict[str, Any], query: TrailQuery) -> bool:
        kind = int(doc.get("kind", 0))
        if (query.kinds and kind not in query.kinds) or (not query.kinds and kind <= 0):
            return False
        if query.subject_tag is not None and doc.get("subject_tag") != query.subject_tag:
            return False
        if query.organization_id and query.organization_id not in doc.get("organizations", ()):
            return False
        return _in_range(doc["time"], query.start_time, query.end_time)

    def items(self, query: TrailQuery, after: After | None, limit: int) -> list[TrailRecord]:
        found = [
            doc
            for doc in self.items_doc.values()
            if self._matches(doc, query) and (after is None or (doc["time"], doc["_id"]) > after)
        ]
        found.sort(key=lambda d: (d["time"], d["_id"]))
        return [_record(doc) for doc in found[:limit]]

    def items_by_id(self, entry_ids: Sequence[str]) -> dict[str, TrailRecord]:
        return {
            i: _record(self.items_doc[i])
            for i in entry_ids
            if i in self.items_doc and self.items_doc[i].get("kind")
        }

    def add_flag_to_items(self, entry_ids: Sequence[str], flag_id: str) -> None:
        for entry_id in entry_ids:
            doc = self.items_doc.get(entry_id)
            if doc is not None and flag_id not in doc.setdefault("flag_ids", []):
                doc["flag_ids"].append(flag_id)

    def recent_access(self, since: datetime) -> list[TrailRecord]:
        found = [
            d
            for d in self.items_doc.values()
            if d.get("kind") == KIND_ACCESS and d["time"] >= since
        ]
        return [_record(d) for d in sorted(found, key=lambda d: d["time"])]

    def unchecked_items(self) -> list[TrailRecord]:
        return [_record(d) for d in self.items_doc.values() if d.get("consent_check_due")]

    def mark_checked(self, entry_ids: Sequence[str]) -> None:
        for entry_id in entry_ids:
            if entry_id in self.items_doc:
                self.items_doc[entry_id]["consent_check_due"] = False

    # --- the log index --------------------------------------------------------------------

    def put_leaves(self, leaves: Sequence[LogLeaf]) -> None:
        for leaf in leaves:
            self.leaves[leaf.entry_id] = leaf

    def leaves_with_tag(self, tag: bytes) -> list[LogLeaf]:
        return sorted(
            (leaf for leaf in self.leaves.values() if leaf.subject_tag == tag),
            key=lambda leaf: leaf.leaf_index,
        )

    def leaves_by_id(self, entry_ids: Sequence[str]) -> dict[str, LogLeaf]:
        return {i: self.leaves[i] for i in entry_ids if i in self.leaves}

    def log_position(self) -> int:
        return self.position

    def store_log_position(self, tree_size: int) -> None:
        self.position = tree_size

    def log_checkpoint(self) -> str:
        return self.checkpoint

    def store_log_checkpoint(self, note: str) -> None:
        self.checkpoint = note

    # --- directives and patients ----------------------------------------------------------

    def put_directive(self, version: DirectiveVersion) -> None:
        self.directives[(version.directive_id, version.version)] = version

    def directive(self, directive_id: str, version: int) -> DirectiveVersion | None:
        return self.directives.get((directive_id, version))

    def put_patient(self, tag: bytes, subject_id: str) -> None:
        self.patient_names[tag] = subject_id

    def patients(self, tags: Iterable[bytes]) -> dict[bytes, str]:
        return {t: self.patient_names[t] for t in tags if t in self.patient_names}

    # --- flags ----------------------------------------------------------------------------

    def raise_flag(self, flag: FlagRecord) -> None:
        old = self.flag_records.get(flag.flag_id)
        if old is None:
            old = replace(flag, entry_ids=(), status=apb.FLAG_STATUS_OPEN, review=None)
            self.flag_history[flag.flag_id] = []
        added = tuple(e for e in dict.fromkeys(flag.entry_ids) if e not in old.entry_ids)
        self.flag_records[flag.flag_id] = replace(
            old, summary=flag.summary, entry_ids=old.entry_ids + added
        )

    def flag(self, flag_id: str) -> FlagRecord | None:
        return self.flag_records.get(flag_id)

    def flags(self, query: FlagQuery, after: After | None, limit: int) -> list[FlagRecord]:
        found = [
            f
            for f in self.flag_records.values()
            if (not query.status or f.status == query.status)
            and (not query.kinds or f.kind in query.kinds)
            and (not query.organization_id or f.organization_id == query.organization_id)
            and (not query.patient_subject_id or f.patient_subject_id == query.patient_subject_id)
            and _in_range(f.create_time, query.start_time, query.end_time)
            and (
                after is None
                or f.create_time < after[0]
                or (f.create_time == after[0] and f.flag_id > after[1])
            )
        ]
        found.sort(key=lambda f: f.flag_id)
        found.sort(key=lambda f: f.create_time, reverse=True)
        return found[:limit]

    def review_flag(self, flag_id: str, review: FlagReviewRecord) -> FlagRecord | None:
        old = self.flag_records.get(flag_id)
        if old is None:
            return None
        self.flag_history[flag_id].append(review)
        reviewed = replace(old, status=apb.FLAG_STATUS_REVIEWED, review=review)
        self.flag_records[flag_id] = reviewed
        return reviewed


class FakeLogReader:
    """A chain node that has sealed ``view``; evidence is a JSON list of what was asked."""

    def __init__(self, view: SealedView) -> None:
        self.view = view
        self.syncs = 0
        self.evidence_asked: list[tuple[list[tuple[str, int]], str]] = []

    def sync(self) -> SealedView:
        self.syncs += 1
        return self.view

    def evidence(self, leaves: Sequence[tuple[str, int]], since_checkpoint: str) -> str:
        self.evidence_asked.append((list(leaves), since_checkpoint))
        return json.dumps({"entries": [{"entry_id": e, "leaf_index": i} for e, i in leaves]})


# --- events -------------------------------------------------------------------------------


def event(
    payload: Message, *, when: datetime = NOW, event_id: str | None = None, producer: str = ""
) -> events_pb2.EventEnvelope:
    """An envelope as a service would publish it."""
    return envelope(payload, producer=producer or "test", subject="", now=when, event_id=event_id)


def record_anchored(
    entry_id: str,
    *,
    organization: str = HOSPITAL,
    patient: str = PATIENT,
    record_id: str = "rec-1",
    version: int = 1,
    action: int = common_pb2.RECORD_ACTION_CREATE,
    when: datetime = NOW,
    practitioner: str = "pr-1",
) -> events_pb2.EventEnvelope:
    payload = events_pb2.RecordAnchored(
        organization_id=organization,
        record_id=record_id,
        version=version,
        action=common_pb2.RecordAction.ValueType(action),
        entry_id=entry_id,
        commitment=bytes(32),
        subject_tag=tag(patient),
        author_practitioner_id=practitioner,
        reason_code="TREAT",
    )
    payload.anchored_time.FromDatetime(when)
    return event(payload, when=when, producer="anchoring")


def record_sealed(entry_id: str, leaf_index: int, tree_size: int) -> events_pb2.EventEnvelope:
    return event(
        events_pb2.RecordSealed(
            organization_id=HOSPITAL,
            record_id="rec-1",
            version=1,
            entry_id=entry_id,
            leaf_index=leaf_index,
            tree_size=tree_size,
        ),
        producer="anchoring",
    )


def record_rejected(entry_id: str, detail: str) -> events_pb2.EventEnvelope:
    return event(
        events_pb2.RecordRejected(
            organization_id=HOSPITAL, entry_id=entry_id, rejection_detail=detail
        ),
        producer="anchoring",
    )


def consent_change(
    entry_id: str,
    *,
    directive_id: str = "d-1",
    version: int = 1,
    grantee: str = HOSPITAL,
    patient: str = PATIENT,
) -> events_pb2.ConsentChange:
    return events_pb2.ConsentChange(
        patient_subject_id=patient,
        directive_id=directive_id,
        version=version,
        grantee_organization_id=grantee,
        signer_subject_id=patient,
        entry_id=entry_id,
    )


def consent_granted(
    entry_id: str, *, when: datetime = NOW, revoked: bool = False, **change: Any
) -> events_pb2.EventEnvelope:
    kind = events_pb2.ConsentRevoked if revoked else events_pb2.ConsentGranted
    return event(kind(change=consent_change(entry_id, **change)), when=when, producer="consent")


def consent_revoked(entry_id: str, **kwargs: Any) -> events_pb2.EventEnvelope:
    return consent_granted(entry_id, revoked=True, **kwargs)


def access_decided(
    entry_id: str,
    *,
    decision: int = common_pb2.ACCESS_DECISION_PERMIT,
    organization: str = HOSPITAL,
    patient: str = PATIENT,
    when: datetime = NOW,
    break_glass: bool = False,
    directive: tuple[str, int] = ("", 0),
    category: str = "laboratory",
) -> events_pb2.EventEnvelope:
    reason = (
        common_pb2.ACCESS_REASON_PERMITTED
        if decision == common_pb2.ACCESS_DECISION_PERMIT
        else common_pb2.ACCESS_REASON_NO_CONSENT
    )
    return event(
        events_pb2.AccessDecided(
            patient_subject_id=patient,
            requester_organization_id=organization,
            practitioner_id="pr-1",
            data_category=category,
            purpose="TREAT",
            decision=common_pb2.AccessDecision.ValueType(decision),
            reason=reason,
            break_glass=break_glass,
            deciding_directive_id=directive[0],
            deciding_directive_version=directive[1],
            access_entry_id=entry_id,
            request_id=f"req-{entry_id}",
        ),
        when=when,
        producer="consent",
    )


def key_registered(entry_id: str, *, owner: str = HOSPITAL) -> events_pb2.EventEnvelope:
    return event(
        events_pb2.KeyRegistered(owner_id=owner, key_id="k-1", entry_id=entry_id),
        producer="identity",
    )


def patient_registered(subject_id: str) -> events_pb2.EventEnvelope:
    return event(
        events_pb2.PatientRegistered(subject_id=subject_id, registered_by=HOSPITAL),
        producer="identity",
    )


# --- a chain node's log, signed by the consortium -----------------------------------------

ORIGIN = "test.swiftchain/audit"
#: The members' note keys, and a key the consortium does not pin that claims a member's name.
MEMBER_SIGNERS = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "abc"]
IMPOSTOR = Signer("hospital-b", Ed25519PrivateKey.generate())
CONSORTIUM = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(s.name, s.verifier().vkey) for s in MEMBER_SIGNERS),
    genesis_keys=(),
)
NODE_NAME = "hospital-c"
#: A fourth hospital's note key: no member of the genesis, admitted only by a vote on the log.
NEWCOMER = Signer("hospital-d", Ed25519PrivateKey.generate())


def membership_vote(by: Signer, n: int, detail: entry_pb2.MembershipDetail) -> bytes:
    """A MEMBERSHIP entry signed by ``by``, the ``n``-th vote of a test."""
    entry_id = f"{n:08x}-0000-4000-8000-00000000f00d"
    time = Timestamp()
    time.FromDatetime(NOW)
    return membership_entry(by, detail, entry_id=entry_id, time=time)


def propose(by: Signer, n: int, proposal_id: str, change: entry_pb2.MembershipChange) -> bytes:
    """``by`` proposes ``change`` (its own vote for it), open for ten entries."""
    proposal = entry_pb2.MembershipProposal(
        proposal_id=proposal_id, change=change, lifetime_entries=10
    )
    return membership_vote(by, n, entry_pb2.MembershipDetail(proposal=proposal))


def approve(by: Signer, n: int, proposal_id: str) -> bytes:
    """``by`` approves proposal ``proposal_id``."""
    approval = entry_pb2.MembershipApproval(proposal_id=proposal_id)
    return membership_vote(by, n, entry_pb2.MembershipDetail(approval=approval))


def admit(signer: Signer) -> entry_pb2.MembershipChange:
    """The change admitting ``signer``'s holder as a node member."""
    return entry_pb2.MembershipChange(
        admit_member=entry_pb2.AdmitMember(
            name=signer.name, verifier_key=signer.verifier().vkey, role=entry_pb2.MEMBER_ROLE_NODE
        )
    )


def remove(name: str) -> entry_pb2.MembershipChange:
    """The change removing member ``name``."""
    return entry_pb2.MembershipChange(remove_member=entry_pb2.RemoveMember(name=name))


def _is_vote(raw: bytes) -> bool:
    try:
        body = entry_pb2.EntryBody.FromString(entry_pb2.ChainEntry.FromString(raw).body)
    except DecodeError:
        return False
    return body.kind == common_pb2.ENTRY_KIND_MEMBERSHIP


class FakeChainNode:
    """A chain node's ChainService as the log follower calls it, over a real Merkle tree of
    ``entries``: sealed checkpoints signed by whom a test says, GetEntries in pages of at most
    ``page``, consistency proofs from the node's own tree (which :meth:`fork` rewrites)."""

    def __init__(self, entries: list[bytes], page: int = 1000) -> None:
        self.entries = list(entries)
        self.page = page
        self.sealed: list[pb.SealedCheckpoint] = []
        self.proofs_asked: list[tuple[int, int]] = []
        self.served_from: list[int] = []
        self._tree = self._hashes()

    def _hashes(self) -> MemoryHashStore:
        tree = MemoryHashStore()
        tree.extend(leaf_hash(entry) for entry in self.entries)
        return tree

    def fork(self, leaf_index: int, entry: bytes) -> None:
        """Rewrite history: the leaf at ``leaf_index`` is now ``entry``."""
        self.entries[leaf_index] = entry
        self._tree = self._hashes()

    def seal(
        self,
        size: int,
        signers: Sequence[Signer] = tuple(MEMBER_SIGNERS[:2]),
        *,
        origin: str = ORIGIN,
    ) -> pb.SealedCheckpoint:
        """Seal a checkpoint of ``size`` leaves signed by ``signers`` and serve it."""
        cut_ms = int(NOW.timestamp() * 1000) + size
        text = Checkpoint(
            origin, size, tree_root(size, self._tree), len(self.sealed) + 1, bytes(32), cut_ms
        ).to_text()
        sealed = pb.SealedCheckpoint(note=sign(text, signers).decode(), tree_size=size)
        sealed.cut_time.FromMilliseconds(cut_ms)
        self.sealed.append(sealed)
        return sealed

    def GetEntries(self, request: pb.GetEntriesRequest, timeout: float) -> pb.GetEntriesResponse:
        end = min(request.end, request.start + self.page)
        return pb.GetEntriesResponse(start=request.start, entries=self.entries[request.start : end])

    def WatchCheckpoints(
        self, request: pb.WatchCheckpointsRequest
    ) -> Iterator[pb.WatchCheckpointsResponse]:
        self.served_from.append(request.from_tree_size)
        return iter(
            [
                pb.WatchCheckpointsResponse(checkpoint=sealed)
                for sealed in self.sealed
                if sealed.tree_size >= request.from_tree_size
            ]
        )

    def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, timeout: float
    ) -> pb.GetCheckpointResponse:
        return pb.GetCheckpointResponse(checkpoint=self.sealed[-1])

    def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, timeout: float
    ) -> pb.GetConsistencyProofResponse:
        self.proofs_asked.append((request.first_size, request.second_size))
        proof = consistency_proof(request.first_size, request.second_size, self._tree)
        return pb.GetConsistencyProofResponse(
            first_size=request.first_size, second_size=request.second_size, proof=proof
        )

    def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, timeout: float
    ) -> pb.GetInclusionProofResponse:
        size, index = request.tree_size, request.leaf_index
        votes = [
            pb.ProvedEntry(leaf_index=i, entry=raw, proof=inclusion_proof(i, size, self._tree))
            for i, raw in enumerate(self.entries[:size])
            if _is_vote(raw)
        ]
        return pb.GetInclusionProofResponse(
            leaf_index=index,
            entry=self.entries[index],
            tree_size=size,
            proof=inclusion_proof(index, size, self._tree),
            membership=votes,
        )

    def GetNodeStatus(
        self, request: pb.GetNodeStatusRequest, timeout: float
    ) -> pb.GetNodeStatusResponse:
        return pb.GetNodeStatusResponse(node=NODE_NAME)
