"""services/platform/kafka.py on the real broker: a consumer commits only after processing, so a
batch that a stopping process did not finish (its handler waiting out a database that is away)
is read again by the next consumer of the group. (A handler that fails for good sets the record
aside instead: tests/integration/test_poison_consumers.py.)"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from devstack.kafka import create_topics
from services.platform.kafka import ConsumedMessage, make_consumer, make_producer, run_consumer
from services.platform.threads import Stopped
from services.platform.topics import IDENTITY_EVENTS_TOPIC, topic_spec

pytestmark = pytest.mark.integration


def test_a_batch_unfinished_when_the_process_stops_is_read_again(kafka_bootstrap: str) -> None:
    topic = f"test.commit.{uuid.uuid4().hex[:8]}"
    spec = dataclasses.replace(topic_spec(IDENTITY_EVENTS_TOPIC), name=topic, partitions=1)
    create_topics(kafka_bootstrap, specs=[spec])
    producer = make_producer(kafka_bootstrap, "test-producer")
    for value in (b"1", b"2", b"3"):
        producer.send(topic, value, key=b"k")
    producer.flush()
    producer.close()
    group = f"group-{uuid.uuid4().hex[:8]}"

    first_seen: list[bytes] = []
    stopping = threading.Event()

    def fail_on_two(message: ConsumedMessage) -> None:
        first_seen.append(message.value)
        if message.value == b"2":  # the database is away as the process is told to stop
            stopping.set()
            raise AutoReconnect("localhost:27017: connection closed")

    # A short session so that, should the first consumer's LeaveGroup be lost, the coordinator
    # drops it quickly instead of holding the second consumer's join.
    timeouts: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
    first = make_consumer(kafka_bootstrap, "test-consumer-1", group, [topic], **timeouts)
    with pytest.raises(Stopped):
        run_consumer(first, fail_on_two, stopping)
    first.close(autocommit=False)
    assert b"2" in first_seen

    second_seen: list[bytes] = []
    stop = threading.Event()

    def record(message: ConsumedMessage) -> None:
        second_seen.append(message.value)
        if message.value == b"3":
            stop.set()

    second = make_consumer(kafka_bootstrap, "test-consumer-2", group, [topic], **timeouts)
    runner = threading.Thread(target=run_consumer, args=(second, record, stop), daemon=True)
    runner.start()
    reached_three = stop.wait(timeout=120)
    stop.set()
    runner.join(timeout=10)
    second.close()
    assert reached_three, f"the second consumer never reached message 3 (it saw {second_seen})"
    assert b"2" in second_seen, "the message whose batch was not finished was not read again"
