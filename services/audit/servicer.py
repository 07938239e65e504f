"""gRPC face of the audit service: translates protobuf <-> the domain (services/audit/domain/).
Roles are checked by the shared interceptor before a handler runs; which items a caller may see
is the domain's (:meth:`AuditBook.scope`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from chain.errors import InvalidInputError
from services.audit.domain import (
    AuditBook,
    FlagQuery,
    FlagRecord,
    TrailFilterSpec,
    TrailRecord,
)
from services.audit.fhir import audit_event_bundle
from services.audit.following import (
    FOLLOW_LOOKBACK,
    SentItems,
    TrailChanges,
    read_trail,
    recent,
)
from services.platform.aio import run_blocking
from services.platform.caller import current_caller
from services.platform.convert import aware, timestamp
from services.platform.fields import checked
from services.platform.paging import page_size
from swiftchain.audit.v1 import audit_service_pb2 as pb
from swiftchain.audit.v1 import audit_service_pb2_grpc
from swiftchain.common.v1 import common_pb2

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_FHIR_PAGE_SIZE = 500
MAX_FHIR_PAGE_SIZE = 5000
#: Seconds an idle followed stream waits before it checks whether the service is stopping.
_STOP_CHECK = 5.0
_log = logging.getLogger(__name__)
_DETAIL_FIELDS: dict[common_pb2.EntryKind.ValueType, tuple[str, type[Message]]] = {
    common_pb2.ENTRY_KIND_RECORD: ("record", pb.RecordItem),
    common_pb2.ENTRY_KIND_CONSENT: ("consent", pb.ConsentItem),
    common_pb2.ENTRY_KIND_ACCESS: ("access", pb.AccessItem),
    common_pb2.ENTRY_KIND_KEY: ("key", pb.KeyItem),
}


def filter_spec(message: pb.TrailFilter) -> TrailFilterSpec:
    """The domain's form of a TrailFilter; InvalidInputError for unknown kinds."""
    kinds = tuple(message.kinds)
    unknown = [k for k in kinds if k not in _DETAIL_FIELDS]
    if unknown:
        raise InvalidInputError(
            "expected entry kinds KEY, RECORD, CONSENT or ACCESS, got "
            + ", ".join(map(str, unknown))
        )
    return TrailFilterSpec(
        patient_subject_id=message.patient_subject_id,
        organization_id=message.organization_id,
        start_time=aware(message.start_time) if message.HasField("start_time") else None,
        end_time=aware(message.end_time) if message.HasField("end_time") else None,
        kinds=kinds,
    )


def trail_item(item: TrailRecord) -> pb.TrailItem:
    """The protobuf form of a trail item."""
    message = pb.TrailItem(
        entry_id=item.entry_id,
        kind=common_pb2.EntryKind.ValueType(item.kind),
        time=timestamp(item.time),
        actor_organization_id=item.actor_organization_id,
        patient_subject_id=item.patient_subject_id,
        proof=common_pb2.ProofRef(
            entry_id=item.entry_id, state=common_pb2.EntryState.ValueType(item.state)
        ),
        flag_ids=list(item.flag_ids),
    )
    if item.leaf_index is not None:
        message.proof.leaf_index = item.leaf_index
    if item.sealed_tree_size is not None:
        message.proof.sealed_tree_size = item.sealed_tree_size
    name, detail_type = _DETAIL_FIELDS[common_pb2.EntryKind.ValueType(item.kind)]
    known = {f.name for f in detail_type.DESCRIPTOR.fields}
    getattr(message, name).CopyFrom(
        detail_type(**{k: v for k, v in item.detail.items() if k in known})
    )
    return message


def flag_message(flag: FlagRecord) -> pb.Flag:
    """The protobuf form of a flag."""
    message = pb.Flag(
        flag_id=flag.flag_id,
        kind=pb.FlagKind.ValueType(flag.kind),
        status=pb.FlagStatus.ValueType(flag.status),
        organization_id=flag.organization_id,
        patient_subject_id=flag.patient_subject_id,
        entry_ids=list(flag.entry_ids),
        summary=flag.summary,
        create_time=timestamp(flag.create_time),
    )
    if flag.review is not None:
        message.review.CopyFrom(
            pb.FlagReview(
                reviewer_id=flag.review.reviewer_id,
                outcome=pb.ReviewOutcome.ValueType(flag.review.outcome),
                note=flag.review.note,
                review_time=timestamp(flag.review.review_time),
            )
        )
    return message


@checked
class AuditServicer(audit_service_pb2_grpc.AuditServiceServicer):
    """The audit service's RPCs."""

    def __init__(
        self,
        book: AuditBook,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stopping: threading.Event | None = None,
    ) -> None:
        self._book = book
        self._clock = clock
        self._stopping = stopping or threading.Event()
        self._changes = TrailChanges(book, clock, self._stopping)

    def QueryTrail(
        self, request: pb.QueryTrailRequest, context: grpc.ServicerContext
    ) -> pb.QueryTrailResponse:
        """A page of a trail."""
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page = self._book.trail(
            current_caller(), filter_spec(request.filter), request.page_token, size
        )
        return pb.QueryTrailResponse(
            items=[trail_item(item) for item in page.items], next_page_token=page.next_page_token
        )

    async def StreamTrail(
        self, request: pb.StreamTrailRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.StreamTrailResponse]:
        """The stored items of a trail, then (with ``follow``) new items and state changes;
        a follow that has nothing to send holds no thread and queries nothing."""
        caller = current_caller()
        spec = filter_spec(request.filter)
        query = await run_blocking(self._book.scope, caller, spec)
        # Registered first: an item stored while the pages are read comes in a later look.
        follower = self._changes.follow(query) if request.follow else None
        try:
            sent = SentItems()
            token = ""
            while True:
                page = await run_blocking(self._book.trail, caller, spec, token, MAX_PAGE_SIZE)
                for item in page.items:
                    sent.add(item)
                    yield pb.StreamTrailResponse(item=trail_item(item))
                token = page.next_page_token
                if not token:
                    break
            while follower is not None and not self._stopping.is_set():
                handed = await follower.next(_STOP_CHECK)
                # A look reads from its clock less the look-back; twice that covers any look
                # whose items were dropped, and anything a look may still hand again.
                since = self._clock() - 2 * FOLLOW_LOOKBACK
                if handed.fell_behind:
                    items = await run_blocking(read_trail, self._book, caller, recent(spec, since))
                elif handed.items:
                    items = await run_blocking(self._book.shown_to, caller, spec, handed.items)
                else:
                    continue
                for item in items:
                    if sent.add(item):
                        yield pb.StreamTrailResponse(item=trail_item(item))
                sent.forget_before(since)
        finally:
            if follower is not None:
                self._changes.unfollow(follower)

    def ExportEvidence(
        self, request: pb.ExportEvidenceRequest, context: grpc.ServicerContext
    ) -> pb.ExportEvidenceResponse:
        """One evidence bundle for a trail or for named entries."""
        which = request.WhichOneof("selection")
        if which is None:
            raise InvalidInputError("expected a filter or entry ids to export, got neither")
        exported = self._book.export(
            current_caller(),
            filter_spec(request.filter) if which == "filter" else None,
            list(request.entry_ids.entry_ids) if which == "entry_ids" else [],
            request.since_checkpoint,
        )
        response = pb.ExportEvidenceResponse(
            entry_count=exported.entry_count,
            unsealed_entry_ids=exported.unsealed_entry_ids,
            rejected_entry_ids=exported.rejected_entry_ids,
        )
        if exported.bundle_json:
            response.evidence.json = exported.bundle_json
        return response

    def CheckCompleteness(
        self, request: pb.CheckCompletenessRequest, context: grpc.ServicerContext
    ) -> pb.CheckCompletenessResponse:
        """The read model of one patient against the log."""
        result = self._book.completeness(request.patient_subject_id, self._clock())
        return pb.CheckCompletenessResponse(
            missing_in_read_model=result.missing_in_read_model,
            missing_in_log=result.missing_in_log,
            checked_tree_size=result.checked_tree_size,
            complete=result.complete,
        )

    def ListFlags(
        self, request: pb.ListFlagsRequest, context: grpc.ServicerContext
    ) -> pb.ListFlagsResponse:
        """A page of flags, newest first."""
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        unknown = [k for k in request.kinds if k not in pb.FlagKind.values() or k == 0]
        if unknown:
            raise InvalidInputError(f"expected known flag kinds, got {unknown}")
        flags, next_page_token = self._book.flags(
            FlagQuery(
                status=request.status,
                kinds=tuple(request.kinds),
                organization_id=request.organization_id,
                patient_subject_id=request.patient_subject_id,
                start_time=aware(request.start_time) if request.HasField("start_time") else None,
                end_time=aware(request.end_time) if request.HasField("end_time") else None,
            ),
            request.page_token,
            size,
        )
        return pb.ListFlagsResponse(
            flags=[flag_message(flag) for flag in flags], next_page_token=next_page_token
        )

    def ReviewFlag(
        self, request: pb.ReviewFlagRequest, context: grpc.ServicerContext
    ) -> pb.ReviewFlagResponse:
        """Record a review."""
        flag = self._book.review(
            current_caller(), request.flag_id, request.outcome, request.note, self._clock()
        )
        return pb.ReviewFlagResponse(flag=flag_message(flag))

    def ExportAuditEvents(
        self, request: pb.ExportAuditEventsRequest, context: grpc.ServicerContext
    ) -> pb.ExportAuditEventsResponse:
        """A page of the trail as a FHIR Bundle of AuditEvents."""
        size = page_size(request.page_size, DEFAULT_FHIR_PAGE_SIZE, MAX_FHIR_PAGE_SIZE)
        page = self._book.trail(
            current_caller(), filter_spec(request.filter), request.page_token, size
        )
        return pb.ExportAuditEventsResponse(
            fhir_json=audit_event_bundle(page.items), next_page_token=page.next_page_token
        )
