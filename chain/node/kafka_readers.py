"""The node's two topic readers on Kafka (see :class:`chain.node.ports.Readers`).

Each reads partition 0 of its topic without a consumer group (every node reads everything and
keeps its own position in its store), with long broker waits while nothing comes.

A reader that has read nothing for a while and lags the partition's end (or cannot ask the
broker where it ends) reopens its consumer where it stands
(:class:`~services.platform.kafka.StallWatch`): a node whose reader stalls after a broker
restart cuts no block and seals nothing the others seal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import LogTruncationError, OffsetOutOfRangeError

from chain.errors import InvalidInputError, UnavailableError
from chain.node.ports import IDLE_WAIT_MS, PolledRecord, Reader
from services.platform.kafka import (
    KafkaSecurity,
    StallWatch,
    kafka_client_options,
    record_lag,
)

__all__ = ["KafkaReaders"]

_log = logging.getLogger(__name__)


class _KafkaReader:
    """Partition 0 of ``topic`` from ``position`` on (``None``: from the beginning), through
    consumers made by ``open_consumer(position)``; reopened where it stands when stalled."""

    def __init__(
        self,
        topic: str,
        open_consumer: Callable[[int | None], Any],
        position: int | None,
        max_records: int | None,
        lag_name: str | None,
        watch: StallWatch | None = None,
    ) -> None:
        self._partition = TopicPartition(topic, 0)
        self._open = open_consumer
        self._position = position
        self._max_records = max_records
        self._lag_name = lag_name
        self._watch = watch or StallWatch()
        self._consumer = open_consumer(position)
        self.reopened = 0

    def poll(self, timeout_ms: int) -> Sequence[PolledRecord]:
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=self._max_records)
        except OffsetOutOfRangeError:
            # Retried by the caller until the broker has the offset again; never skipped.
            raise UnavailableError(
                f"expected the broker to hold offset {self._position} of "
                f"{self._partition.topic}, got an offset out of its range"
            ) from None
        except LogTruncationError as error:
            # Raised once by a consumer that keeps its position; a broker that really lost
            # records this node applied shows as checkpoints that differ (an alarm).
            _log.error(
                "%s: the broker says its log was truncated (%s); reading on from offset %s",
                self._partition.topic,
                error,
                self._position,
            )
            return []
        if self._lag_name is not None:
            record_lag(self._consumer, self._lag_name, batches)
        records = [record for records in batches.values() for record in records]
        if records:
            self._position = records[-1].offset + 1
        why = self._watch.stalled(self._consumer, bool(records), {self._partition: self._position})
        if why is not None:
            self._reopen(why)
        return records

    def close(self) -> None:
        self._consumer.close()

    def _reopen(self, why: str) -> None:
        _log.warning(
            "reopening the %s reader at offset %s: %s", self._partition.topic, self._position, why
        )
        try:
            self._consumer.close()
        except Exception as error:  # a broken consumer may fail to close; it is dropped anyway
            _log.warning("closing the stalled consumer failed: %s: %s", type(error).__name__, error)
        self._consumer = self._open(self._position)
        self.reopened += 1


class KafkaReaders:
    """Opens a node's readers on the brokers at ``bootstrap``, connecting with ``security`` (by
    default as the process's ``SWIFTCHAIN_*`` settings say); an ordering poll returns at most
    ``poll_max_records`` records."""

    def __init__(
        self,
        bootstrap: str,
        node_name: str,
        *,
        poll_max_records: int = 5000,
        security: KafkaSecurity | None = None,
    ) -> None:
        if poll_max_records < 1:
            raise InvalidInputError(f"expected poll_max_records >= 1, got {poll_max_records}")
        self._bootstrap = bootstrap
        self._connection = kafka_client_options(security)
        self._name = node_name
        self._poll_max = poll_max_records

    def ordering(self, topic: str, from_offset: int) -> Reader:
        def open_at(position: int | None) -> Any:
            return self._consumer(
                topic,
                position,
                f"chain-node-{self._name}",
                max_poll_records=self._poll_max,
                max_partition_fetch_bytes=8 * 1024 * 1024,
            )

        return _KafkaReader(topic, open_at, from_offset, self._poll_max, "chain-node")

    def cosignatures(self, topic: str) -> Reader:
        def open_at(position: int | None) -> Any:
            return self._consumer(topic, position, f"chain-node-{self._name}-cosign")

        return _KafkaReader(topic, open_at, None, None, None)

    def _consumer(self, topic: str, position: int | None, client_id: str, **options: Any) -> Any:
        """A consumer without a group on partition 0 of ``topic``, at ``position`` (None: the
        beginning). It never moves itself elsewhere: an offset out of range or a truncated log
        raises instead of skipping to the end, since a node must apply every record in order."""
        consumer = KafkaConsumer(
            **self._connection,
            bootstrap_servers=self._bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=IDLE_WAIT_MS,
            auto_offset_reset="none",
            **options,
        )
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        if position is None:
            consumer.seek_to_beginning(partition)
        else:
            consumer.seek(partition, position)
        return consumer
