"""Moves the identity service's KEY entries to the log and records where they landed.

The store keeps each signed KEY entry with the change that made it, so an accepted key change
is never lost. A round hands what waits to the platform's :class:`LogWriter` and forgets it once
Kafka acknowledged it (a resend after a crash is harmless: the log accepts an entry id once).
The writer follows sealed checkpoints and reports each entry's leaf index, which turns a
PENDING key ACTIVE (or an ending key ROTATED or REVOKED) and makes "valid at position p"
answerable. Patients' device-key entries wait in the patients' store the same way and go to
the log in the same rounds (their positions are not recorded: a device's state is its own
record's, and the log answers for the rest).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

import grpc

from services.identity.domain.organizations import OrganizationRegistry
from services.identity.store.organizations import OrganizationStore
from services.platform.log_writer import LogWriter, Ordered, Rejected, Sealed
from services.platform.topics import ORDERING_TOPIC

_log = logging.getLogger(__name__)


class EntryOutbox(Protocol):
    """A store holding signed KEY entries until Kafka acknowledged them."""

    def entries_to_submit(self) -> list[tuple[str, list[bytes]]]:
        """(owner id, signed entries) not yet acknowledged."""

    def mark_submitted(self, owner_id: str, entries: Sequence[bytes]) -> None:
        """Forget acknowledged entries."""


class KeyLogSync:
    """See the module docstring; :meth:`run` loops, :meth:`sync_once` does one round."""

    def __init__(
        self,
        store: OrganizationStore,
        registry: OrganizationRegistry,
        producer: Any,
        chain: grpc.Channel,
        ordering_topic: str = ORDERING_TOPIC,
        *,
        interval_seconds: float = 0.2,
        patients: EntryOutbox | None = None,
    ) -> None:
        self._store = store
        self._outboxes: list[EntryOutbox] = [store] + ([patients] if patients else [])
        self._registry = registry
        self._writer = LogWriter(
            producer, chain, self, topic=ordering_topic, doing="following KEY entries"
        )
        self._interval = interval_seconds
        self._wake = threading.Event()

    def wake(self) -> None:
        """Run a round now (after a write that queued an entry)."""
        self._wake.set()

    def sync_once(self, timeout: float = 10.0) -> None:
        """Hand what waits for Kafka to the log writer."""
        for outbox in self._outboxes:
            for owner_id, entries in outbox.entries_to_submit():
                # The entries were stored by an earlier call, whose trace is gone: the publish
                # starts a trace of its own, which the nodes' spans join.
                self._writer.write(
                    entries,
                    on_ordered=partial(self._submitted, outbox, owner_id, entries),
                    timeout=timeout,
                )

    @staticmethod
    def _submitted(
        outbox: EntryOutbox, owner_id: str, entries: Sequence[bytes], _: Sequence[Ordered]
    ) -> None:
        outbox.mark_submitted(owner_id, entries)

    def entries_sealed(self, sealed: Sequence[Sealed]) -> None:
        """The writer's report: KEY entries on the log, at their leaves."""
        for item in sealed:
            self._registry.record_sequenced(item.entry_id, item.leaf_index)

    def entries_rejected(self, rejected: Sequence[Rejected]) -> None:
        """The writer's report: the registrar validated each entry before signing it, so a
        rejection means the log and identity disagree about keys: an operator must look."""
        for item in rejected:
            _log.error("KEY entry %s was rejected by the log: %s", item.entry_id, item.detail)

    def run(self, stop: threading.Event) -> None:
        """Follow the entries stored before a restart, then loop until ``stop``; failures
        (Kafka or the node away) are logged and retried."""
        self._writer.resume([(entry_id, None) for entry_id in self._store.entries_awaiting_log()])
        self._writer.start()
        try:
            while not stop.is_set():
                try:
                    self.sync_once()
                except Exception:
                    _log.warning("handing KEY entries to the log failed; will retry", exc_info=True)
                self._wake.wait(self._interval)
                self._wake.clear()
        finally:
            self._writer.stop()
