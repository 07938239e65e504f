"""Moves the identity service's KEY entries to the log and learns where they landed.

Two duties, both retried until they succeed, so an accepted key change is never lost:

1. hand the signed KEY entries that the store holds (written with the change itself) to the
   ordering topic, idempotently, and forget them once Kafka acknowledged them; a resend after a
   crash is harmless because the log accepts an entry id once;
2. ask a chain node where each submitted entry landed; once it is sequenced, record its leaf
   index, which turns a PENDING key ACTIVE (or an ending key ROTATED or REVOKED) and makes
   "valid at position p" answerable.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from chain.sequencer import ordering_records
from services.identity.domain.organizations import OrganizationRegistry
from services.identity.store.organizations import OrganizationStore
from services.platform.kafka import publish_span, trace_headers
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2

_log = logging.getLogger(__name__)
_ON_LOG = (common_pb2.ENTRY_STATE_SEQUENCED, common_pb2.ENTRY_STATE_SEALED)


class KeyLogSync:
    """See the module docstring; :meth:`run` loops, :meth:`sync_once` does one round."""

    def __init__(
        self,
        store: OrganizationStore,
        registry: OrganizationRegistry,
        producer: Any,
        chain: grpc.Channel,
        ordering_topic: str,
        *,
        interval_seconds: float = 0.2,
    ) -> None:
        self._store = store
        self._registry = registry
        self._producer = producer
        self._chain = chain_service_pb2_grpc.ChainServiceStub(chain)
        self._topic = ordering_topic
        self._interval = interval_seconds
        self._wake = threading.Event()

    def wake(self) -> None:
        """Run a round now (after a write that queued an entry)."""
        self._wake.set()

    def sync_once(self, timeout: float = 10.0) -> None:
        """Submit what waits for Kafka, then record what reached the log."""
        for organization_id, entries in self._store.entries_to_submit():
            # The entries were stored by an earlier call, whose trace is gone: the publish
            # starts a trace of its own, which the nodes' spans join.
            with publish_span(self._topic, len(entries)):
                headers = trace_headers()
                futures = [
                    self._producer.send(self._topic, value, headers=headers)
                    for value, _count in ordering_records(entries)
                ]
                self._producer.flush(timeout=timeout)
            for future in futures:
                future.get(timeout=timeout)
            self._store.mark_submitted(organization_id, entries)
        for entry_id in self._store.entries_awaiting_log():
            try:
                status = self._chain.GetEntryStatus(
                    chain_service_pb2.GetEntryStatusRequest(entry_id=entry_id), timeout=timeout
                )
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # not ordered yet, or the node has not read that far
                raise
            if status.state in _ON_LOG and status.HasField("leaf_index"):
                self._registry.record_sequenced(entry_id, status.leaf_index)
            elif status.state == common_pb2.ENTRY_STATE_REJECTED:
                # The registrar validated the entry before signing it, so a rejection means the
                # log and identity disagree about keys: an operator must look.
                _log.error(
                    "KEY entry %s was rejected by the log: %s", entry_id, status.rejection_detail
                )

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop``; failures (Kafka or the node away) are logged and retried."""
        while not stop.is_set():
            try:
                self.sync_once()
            except grpc.RpcError as error:
                _log.warning("key log sync: chain node: %s", error.details())
            except Exception:
                _log.warning("key log sync failed; will retry", exc_info=True)
            self._wake.wait(self._interval)
            self._wake.clear()
