"""gRPC face of the anchoring service: protobuf <-> the domain, the platform's log writer for
ordering, a chain node for receipts.

Accepting an anchor means: the domain checks and stores the versions, the log writer hands the
entries to the ordering topic (acks=all) and the promise names their offsets; a receipt is the
node's inclusion proof to a sealed checkpoint, checked here and handed out as an evidence
bundle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import grpc

from chain.consortium import ConsortiumConfig, consortium_message
from chain.errors import InvalidInputError, UnavailableError, VerificationError
from chain.evidence import verify_bundle
from chain.limits import MAX_ENTRY_BYTES
from services.anchoring.domain import (
    MAX_CHUNK_ITEMS,
    AnchorRequest,
    Outcome,
    RecordAnchoring,
    RecordVersion,
)
from services.anchoring.domain.provenance import provenance_bundle
from services.anchoring.domain.tracking import SealTracker
from services.anchoring.observability import SealObserver, count_outcomes
from services.platform.caller import current_caller
from services.platform.chain_client import evidence_bundle, prove_entry, prove_together
from services.platform.convert import timestamp
from services.platform.errors import error_reason, status_code_for
from services.platform.fields import checked
from services.platform.log_writer import LogWriter, Ordered
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc
from swiftchain.chain.v1 import chain_service_pb2_grpc, entry_pb2
from swiftchain.common.v1 import common_pb2

#: The longest an anchoring call waits for Kafka's acknowledgement.
KAFKA_WAIT = 30.0
#: Left of a caller's deadline for the answer once Kafka has acknowledged (or not).
_ANSWER_MARGIN = 0.5


def _kafka_wait(context: grpc.ServicerContext) -> float:
    """How long this call may wait for Kafka: what its deadline leaves (less a moment to
    answer), at most :data:`KAFKA_WAIT`, so a caller hears UNAVAILABLE before its deadline."""
    # grpc types it as a float; it is None for a call without a deadline
    remaining = cast("float | None", context.time_remaining())
    if remaining is None:
        return KAFKA_WAIT
    return min(KAFKA_WAIT, max(remaining - _ANSWER_MARGIN, 0.1))


#: The longest a GetReceipt with ``wait`` waits for the seal.
MAX_RECEIPT_WAIT = 30.0


def _request(message: pb.AnchorRecordRequest) -> AnchorRequest:
    return AnchorRequest(
        signed_entry=message.signed_entry,
        record_id=message.record_id,
        version=message.version,
        action=message.action,
        commitment=message.commitment,
        subject_tag=message.subject_tag,
        previous_version_commitment=message.previous_version_commitment,
        author_practitioner_id=message.author_practitioner_id,
        reason_code=message.reason_code,
        reason_text=message.reason_text,
    )


@dataclass(frozen=True)
class ResendFailure:
    """A stored version whose entry could not be sent again, and why."""

    version: RecordVersion
    reason: str


def _too_large(version: RecordVersion) -> str:
    return (
        f"expected an entry of at most {MAX_ENTRY_BYTES:,} bytes, got {len(version.entry):,}: "
        "Kafka would refuse it"
    )


def _reason(error: Exception) -> str:
    return str(error) or type(error).__name__


def _kafka_away(error: BaseException) -> bool:
    """True when Kafka did not answer (worth trying again later), False when it refused what
    was sent (kafka-python marks its errors ``retriable``; the log writer wraps them)."""
    cause = error.__cause__ if isinstance(error, UnavailableError) else error
    if isinstance(error, UnavailableError) and cause is None:
        return True
    return bool(getattr(cause, "retriable", False))


def promise(version: RecordVersion) -> pb.PromiseReceipt:
    """The promise receipt of an ordered version."""
    receipt = pb.PromiseReceipt(
        entry_id=version.entry_id,
        leaf_hash=version.leaf_hash,
        ordering_offset=version.ordering_offset or 0,
        seal_due_time=timestamp(version.seal_due_time),
    )
    if version.ordered_time is not None:
        receipt.ordered_time.CopyFrom(timestamp(version.ordered_time))
    return receipt


def proof_ref(version: RecordVersion) -> common_pb2.ProofRef:
    """Where a version's entry stands on the log."""
    ref = common_pb2.ProofRef(entry_id=version.entry_id, state=version.state)  # type: ignore[arg-type]
    if version.leaf_index is not None:
        ref.leaf_index = version.leaf_index
    if version.sealed_tree_size is not None:
        ref.sealed_tree_size = version.sealed_tree_size
    return ref


@checked
class AnchoringServicer(anchoring_service_pb2_grpc.AnchoringServiceServicer):
    """The anchoring service's RPCs."""

    def __init__(
        self,
        *,
        anchoring: RecordAnchoring,
        tracker: SealTracker,
        writer: LogWriter,
        chain: grpc.Channel,
        consortium: ConsortiumConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_write: Callable[[], None] = lambda: None,
        observer: SealObserver | None = None,
    ) -> None:
        self._anchoring = anchoring
        self._observer = observer or SealObserver()
        self._tracker = tracker
        self._writer = writer
        self._chain = chain_service_pb2_grpc.ChainServiceStub(chain)
        self._consortium = consortium_message(consortium)
        self._clock = clock
        self._on_write = on_write
        self._ordering_lock = threading.Lock()
        self._ordering_chunks: set[str] = set()
        #: Chunks ordered while a resend reads the store (None when no resend runs).
        self._ordered_meanwhile: set[str] | None = None

    # --- anchoring ------------------------------------------------------------------------

    def _anchor(
        self,
        requests: Sequence[pb.AnchorRecordRequest],
        first: int,
        context: grpc.ServicerContext,
    ) -> list[Outcome]:
        now = self._clock()
        outcomes = self._anchoring.anchor(
            current_caller().id, [_request(r) for r in requests], now, first
        )
        created = [o.anchored for o in outcomes if o.created and o.anchored]
        self._tracker.watch(created)
        self._observer.accepted(created)
        count_outcomes(outcomes)
        self.order([o.anchored for o in outcomes if o.anchored is not None], _kafka_wait(context))
        return outcomes

    def order(self, versions: Sequence[RecordVersion], timeout: float = KAFKA_WAIT) -> None:
        """Hand the entries not yet ordered to Kafka and record their offsets, waiting up to
        ``timeout`` seconds for Kafka (UnavailableError after that: the versions stay stored,
        and the resend loop sends them)."""
        pending = [v for v in versions if v.ordering_offset is None]
        if not pending:
            return
        chunks = {v.chunk_id for v in pending}
        with self._ordering_lock:
            self._ordering_chunks.update(chunks)

        def record(placed: Sequence[Ordered]) -> None:
            for version, item in zip(pending, placed, strict=True):
                version.ordering_offset = item.offset
                version.ordered_time = item.time
            self._anchoring.ordered(pending, self._clock())

        try:
            self._writer.write([v.entry for v in pending], on_ordered=record, timeout=timeout)
        finally:
            with self._ordering_lock:
                self._ordering_chunks.difference_update(chunks)
                if self._ordered_meanwhile is not None:
                    self._ordered_meanwhile.update(chunks)
        self._on_write()

    def chunks_being_ordered(self) -> frozenset[str]:
        """The chunks whose versions are in Kafka's hands now (:meth:`order`): a resend leaves
        them out, so ``unordered()`` need not even read their versions."""
        with self._ordering_lock:
            return frozenset(self._ordering_chunks)

    def resend(self, unordered: Callable[[], Sequence[RecordVersion]]) -> list[ResendFailure]:
        """Order again the stored versions that Kafka never acknowledged (a crash, or Kafka
        away), as ``unordered()`` reads them from the store, except those of chunks that are
        being ordered, or were ordered while the store was read: resending those would only put
        duplicates in the ordering topic, which every node must then look up and skip.
        (``unordered()`` may itself leave out the :meth:`chunks_being_ordered` when it is
        called: they are among those skipped.)

        One chunk (one anchoring call) is sent at a time, and a chunk Kafka refuses is sent
        again entry by entry, so that an entry that cannot be sent (one stored before entries
        were limited in size, say) never holds back the others: it is returned, with why, for
        the caller to report, and the others go on. When Kafka itself is away, the cycle stops
        at the first chunk with :class:`UnavailableError`; the entries wait in the store for
        the next one."""
        with self._ordering_lock:
            self._ordered_meanwhile = set()
        try:
            stored = unordered()
        finally:
            with self._ordering_lock:
                skip = self._ordering_chunks | (self._ordered_meanwhile or set())
                self._ordered_meanwhile = None
        chunks: dict[str, list[RecordVersion]] = {}
        for version in stored:
            if version.chunk_id not in skip:
                chunks.setdefault(version.chunk_id, []).append(version)
        failures: list[ResendFailure] = []
        for versions in chunks.values():
            sendable: list[RecordVersion] = []
            for version in versions:
                if len(version.entry) > MAX_ENTRY_BYTES:
                    failures.append(ResendFailure(version, _too_large(version)))
                else:
                    sendable.append(version)
            if not sendable:
                continue
            try:
                self.order(sendable)
                continue
            except Exception as error:
                if _kafka_away(error):
                    raise
                if len(sendable) == 1:
                    failures.append(ResendFailure(sendable[0], _reason(error)))
                    continue
            for version in sendable:  # which of them does Kafka refuse?
                try:
                    self.order([version])
                except Exception as error:
                    if _kafka_away(error):
                        raise
                    failures.append(ResendFailure(version, _reason(error)))
        return failures

    def AnchorRecord(
        self, request: pb.AnchorRecordRequest, context: grpc.ServicerContext
    ) -> pb.AnchorRecordResponse:
        [outcome] = self._anchor([request], 0, context)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.anchored is not None
        return pb.AnchorRecordResponse(receipt=promise(outcome.anchored))

    def AnchorRecords(
        self, request_iterator: Iterator[pb.AnchorRecordsRequest], context: grpc.ServicerContext
    ) -> pb.AnchorRecordsResponse:
        response = pb.AnchorRecordsResponse()
        first = 0
        for chunk in request_iterator:
            if len(chunk.records) > MAX_CHUNK_ITEMS:
                raise InvalidInputError(
                    f"expected at most {MAX_CHUNK_ITEMS} records per message, "
                    f"got {len(chunk.records)} in message starting at item {first}"
                )
            for outcome in self._anchor(list(chunk.records), first, context):
                result = pb.AnchorRecordResult(
                    index=outcome.index, record_id=outcome.record_id, version=outcome.version
                )
                if outcome.error is not None:
                    result.error.code = status_code_for(outcome.error).value[0]
                    result.error.message = str(outcome.error)
                    result.error.reason = error_reason(outcome.error)
                    response.failed_count += 1
                else:
                    assert outcome.anchored is not None
                    result.receipt.CopyFrom(promise(outcome.anchored))
                    response.accepted_count += 1
                response.results.append(result)
            first += len(chunk.records)
        return response

    # --- receipts and verification -------------------------------------------------------

    def _seal(self, version: RecordVersion, wait: float) -> tuple[RecordVersion, str]:
        """The version marked with its seal, and its evidence bundle ('' if not sealed)."""
        try:
            proved = prove_entry(self._chain, version.entry_id, wait)
        except grpc.RpcError as error:
            if error.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.FAILED_PRECONDITION,
            ):
                return version, ""
            raise UnavailableError(
                f"the chain node did not answer for entry {version.entry_id} "
                f"({error.code().name}); ask again shortly"
            ) from None
        bundle = evidence_bundle(self._consortium, [proved])
        report = verify_bundle(bundle)
        if not report.ok:
            raise VerificationError(
                f"the chain node served evidence for entry {version.entry_id} that does not "
                "verify; ask another node"
            )
        version = self._tracker.seal(version, proved.leaf_index, proved.tree_size, self._clock())
        return version, bundle.to_json()

    def GetReceipt(
        self, request: pb.GetReceiptRequest, context: grpc.ServicerContext
    ) -> pb.GetReceiptResponse:
        version = self._anchoring.version_for(current_caller(), request.entry_id)
        if version.ordering_offset is None:
            self.order([version], _kafka_wait(context))
        wait = 0.0
        if request.wait:
            remaining = context.time_remaining()
            wait = min(MAX_RECEIPT_WAIT, max((remaining or MAX_RECEIPT_WAIT) - 1.0, 0.0))
        version, bundle = self._seal(version, wait)
        response = pb.GetReceiptResponse(proof=proof_ref(version), promise=promise(version))
        if bundle:
            response.evidence.json = bundle
            return response
        if version.rejection_reason:
            response.rejection_reason = entry_pb2.RejectionReason.Value(version.rejection_reason)
            response.rejection_detail = version.rejection_detail
        return response

    def VerifyRecord(
        self, request: pb.VerifyRecordRequest, context: grpc.ServicerContext
    ) -> pb.VerifyRecordResponse:
        result, anchored = self._anchoring.verify(
            current_caller(),
            request.organization_id,
            request.record_id,
            request.version,
            request.commitment,
        )
        response = pb.VerifyRecordResponse(result=result)  # type: ignore[arg-type]
        if anchored is not None:
            anchored, bundle = self._seal(anchored, 0.0)
            response.proof.CopyFrom(proof_ref(anchored))
            response.anchored_time.CopyFrom(timestamp(anchored.anchored_time))
            if bundle:
                response.evidence.json = bundle
        return response

    def GetProvenance(
        self, request: pb.GetProvenanceRequest, context: grpc.ServicerContext
    ) -> pb.GetProvenanceResponse:
        versions = self._anchoring.versions(
            current_caller(), request.organization_id, request.record_id
        )
        versions = [self._seal(v, 0.0)[0] if v.sealed_tree_size is None else v for v in versions]
        response = pb.GetProvenanceResponse(
            organization_id=request.organization_id, record_id=request.record_id
        )
        for version in versions:
            item = pb.RecordVersion(
                version=version.version,
                action=version.action,  # type: ignore[arg-type]
                commitment=version.commitment,
                author_practitioner_id=version.author_practitioner_id,
                organization_id=version.organization_id,
                anchored_time=timestamp(version.anchored_time),
                reason_code=version.reason_code,
                reason_text=version.reason_text,
                key_id=version.key_id,
                proof=proof_ref(version),
            )
            if version.sealed_time is not None:
                item.sealed_time.CopyFrom(timestamp(version.sealed_time))
            response.versions.append(item)
        sealed = [v.entry_id for v in versions if v.sealed_tree_size is not None]
        if request.include_evidence and sealed:
            bundle = evidence_bundle(self._consortium, prove_together(self._chain, sealed, 0.0))
            response.evidence.json = bundle.to_json()
        return response

    def ExportProvenance(
        self, request: pb.ExportProvenanceRequest, context: grpc.ServicerContext
    ) -> pb.ExportProvenanceResponse:
        versions = self._anchoring.versions(
            current_caller(), request.organization_id, request.record_id
        )
        sealed: dict[str, str] = {}
        for index, version in enumerate(versions):
            versions[index], bundle = self._seal(version, 0.0)
            if bundle:
                sealed[version.entry_id] = bundle
        return pb.ExportProvenanceResponse(fhir_json=provenance_bundle(versions, sealed))
