"""The submitter client: put entries in the ordering topic and wait for their sealed receipts.

Used by the services that submit entries (identity, anchoring, consent) and by tests and
benchmarks. Sending is idempotent with ``acks=all``; a receipt is the node's inclusion proof
against a sealed checkpoint, checked here before it is returned.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc

from chain.checkpoint import verify_sealed_checkpoint
from chain.consortium import ConsortiumConfig
from chain.errors import NotFoundError, UnavailableError, VerificationError
from chain.hashing import leaf_hash
from chain.proof_verify import verify_inclusion
from chain.sequencer import ordering_records
from services.platform.kafka import publish_span, trace_headers
from services.platform.topics import ORDERING_TOPIC
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2


class Submitter:
    """Sends entries through ``producer`` and asks the node behind ``channel`` for receipts."""

    def __init__(
        self,
        producer: Any,
        channel: grpc.Channel,
        config: ConsortiumConfig,
        *,
        ordering_topic: str = ORDERING_TOPIC,
    ) -> None:
        self._producer = producer
        self._stub = chain_service_pb2_grpc.ChainServiceStub(channel)
        self._config = config
        self._topic = ordering_topic

    def submit(self, entries: Sequence[bytes], timeout: float = 30.0) -> list[int]:
        """Send ``entries`` (exact ChainEntry bytes); return their ordering offsets."""
        return [offset for offset, _ in self.submit_timed(entries, timeout)]

    def submit_timed(
        self, entries: Sequence[bytes], timeout: float = 30.0
    ) -> list[tuple[int, int]]:
        """Send ``entries``; return each one's (ordering offset, Kafka timestamp in ms): the
        broker's append time, on the ordering topic (LogAppendTime). Entries travel together in
        batch records (:func:`~chain.sequencer.ordering_records`), so entries of one record share
        its offset and time. Each record carries the current trace context, so the nodes' spans
        for it join the caller's trace."""
        with publish_span(self._topic, len(entries)):
            headers = trace_headers()
            futures = [
                (self._producer.send(self._topic, value, headers=headers), count)
                for value, count in ordering_records(entries)
            ]
            self._producer.flush(timeout=timeout)
        placed: list[tuple[int, int]] = []
        try:
            for future, count in futures:
                metadata = future.get(timeout=timeout)
                placed.extend([(int(metadata.offset), int(metadata.timestamp))] * count)
        except Exception as error:  # kafka-python raises its own KafkaError family
            raise UnavailableError(f"could not hand entries to Kafka: {error}") from error
        return placed

    def await_receipt(
        self, entry_id: str, timeout: float = 30.0
    ) -> chain_service_pb2.GetInclusionProofResponse:
        """Wait until ``entry_id`` is sealed and return its checked inclusion proof.

        Raises :class:`VerificationError` if the log rejected the entry (with the node's reason)
        or the receipt does not verify, :class:`NotFoundError` if it was not sealed in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotFoundError(f"entry {entry_id} was not sealed within {timeout:.0f}s")
            try:
                response: chain_service_pb2.GetInclusionProofResponse = (
                    self._stub.GetInclusionProof(
                        chain_service_pb2.GetInclusionProofRequest(
                            entry_id=entry_id, wait_until_sealed=True
                        ),
                        timeout=remaining,
                    )
                )
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    self._raise_if_rejected(entry_id)
                    time.sleep(min(0.05, max(remaining, 0)))
                    continue
                if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.FAILED_PRECONDITION):
                    continue
                raise UnavailableError(f"node did not answer: {error.details()}") from error
            self.check_receipt(response)
            return response

    def _raise_if_rejected(self, entry_id: str) -> None:
        try:
            status = self._stub.GetEntryStatus(
                chain_service_pb2.GetEntryStatusRequest(entry_id=entry_id), timeout=5
            )
        except grpc.RpcError:
            return
        if status.state == common_pb2.ENTRY_STATE_REJECTED:
            raise VerificationError(f"entry {entry_id} was rejected: {status.rejection_detail}")

    def check_receipt(self, response: chain_service_pb2.GetInclusionProofResponse) -> None:
        """Verify a receipt offline: quorum-signed checkpoint, then the inclusion proof."""
        checkpoint = verify_sealed_checkpoint(
            response.checkpoint.note.encode(),
            self._config.verifiers,
            self._config.quorum,
            self._config.origin,
        )
        verify_inclusion(
            leaf_hash(response.entry),
            response.leaf_index,
            checkpoint.size,
            list(response.proof),
            checkpoint.root_hash,
        )
