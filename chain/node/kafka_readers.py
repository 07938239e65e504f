"""The node's two topic readers on Kafka (see :class:`chain.node.ports.Readers`).

Each reads partition 0 of its topic without a consumer group (every node reads everything and
keeps its own position in its store), with long broker waits while nothing comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from chain.errors import InvalidInputError
from chain.node.ports import IDLE_WAIT_MS, PolledRecord, Reader
from services.platform.kafka import KafkaSecurity, kafka_client_options, record_lag

__all__ = ["KafkaReaders"]


class _KafkaReader:
    def __init__(self, consumer: Any, max_records: int | None, lag_name: str | None) -> None:
        self._consumer = consumer
        self._max_records = max_records
        self._lag_name = lag_name

    def poll(self, timeout_ms: int) -> Sequence[PolledRecord]:
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=self._max_records)
        if self._lag_name is not None:
            record_lag(self._consumer, self._lag_name, batches)
        return [record for records in batches.values() for record in records]

    def close(self) -> None:
        self._consumer.close()


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
        consumer = self._consumer(
            topic,
            f"chain-node-{self._name}",
            max_poll_records=self._poll_max,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        consumer.seek(TopicPartition(topic, 0), from_offset)
        return _KafkaReader(consumer, self._poll_max, "chain-node")

    def cosignatures(self, topic: str) -> Reader:
        consumer = self._consumer(topic, f"chain-node-{self._name}-cosign")
        consumer.seek_to_beginning(TopicPartition(topic, 0))
        return _KafkaReader(consumer, None, None)

    def _consumer(self, topic: str, client_id: str, **options: Any) -> Any:
        """A consumer without a group, assigned partition 0 of ``topic``."""
        consumer = KafkaConsumer(
            **self._connection,
            bootstrap_servers=self._bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=IDLE_WAIT_MS,
            **options,
        )
        consumer.assign([TopicPartition(topic, 0)])
        return consumer
