"""Kafka plumbing shared by every process: producers, trace headers, at-least-once consumers.

Producers are idempotent with ``acks=all`` (DESIGN §3.2). Consumers commit an offset only after
the message was processed, so a crash replays rather than loses; handlers are idempotent by id.
A record that cannot be used is set aside (services/platform/poison.py), and the broker or the
database away is waited out (services/platform/threads.py): neither stops a consumer.

Every client proves who it is to the brokers with its TLS client certificate from the platform
CA (:class:`KafkaSecurity`): the brokers take the certificate's subject as the principal and
allow it only what ``services/platform/kafka_acls.py`` grants.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation

from chain.errors import InvalidInputError
from services.platform.poison import PoisonRecord, PoisonSink, set_aside
from services.platform.settings import ProcessSettings
from services.platform.threads import Stopped, retry_transient
from services.platform.tls import CA_FILE, CERT_FILE, KEY_FILE

_log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
_tracer = trace.get_tracer("swiftchain.kafka")
#: (consumer name, topic) -> records not yet read, as of the consumer's last poll.
_lag: dict[tuple[str, str], int] = {}
_lag_lock = threading.Lock()


def _observe_lag(_options: CallbackOptions) -> Iterable[Observation]:
    with _lag_lock:
        current = dict(_lag)
    return [
        Observation(lag, {"consumer": consumer, "topic": topic})
        for (consumer, topic), lag in current.items()
    ]


metrics.get_meter("swiftchain.kafka").create_observable_gauge(
    "swiftchain.kafka.consumer_lag",
    callbacks=[_observe_lag],
    unit="{record}",
    description="Records on the broker that this process's consumer has not read yet, per topic",
)


def record_lag(consumer: KafkaConsumer, name: str, polled: Mapping[Any, Sequence[Any]]) -> None:
    """Note how far ``consumer`` (``name``: its group or role) trails each assigned topic's end
    after a poll that returned ``polled``, for the ``swiftchain.kafka.consumer_lag`` gauge.
    No broker round trip: kafka-python learns the high watermark with every fetch."""
    behind: dict[str, int] = {}
    for partition in consumer.assignment():
        highwater = consumer.highwater(partition)
        if highwater is None:
            continue
        records = polled.get(partition)
        if records:
            position: int | None = records[-1].offset + 1
        else:
            position = consumer.position(partition, timeout_ms=0)
        if position is not None:
            behind[partition.topic] = behind.get(partition.topic, 0) + max(highwater - position, 0)
    with _lag_lock:
        for topic, lag in behind.items():
            _lag[(name, topic)] = lag


#: Seconds a consumer may read nothing before :class:`StallWatch` asks whether it is stuck.
STALL_SECONDS = 15.0
#: How long that question waits for the broker's answer, in milliseconds.
_END_OFFSETS_TIMEOUT_MS = 5_000


class StallWatch:
    """Tells a consumer that reads nothing because it is stuck from one that reads nothing
    because nothing comes.

    kafka-python's consumer can read nothing for minutes after the broker restarted while other
    consumers of the same partition read on: measured on Kafka 4.3 with kafka-python 3.0.12,
    one of three consumers stalled 2 minutes after a SIGKILL and restart of the broker. Reopening
    the consumer where it stands ends that. ``clock`` is passed in for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._quiet_since = clock()

    def stalled(
        self, consumer: Any, read_any: bool, positions: Mapping[Any, int | None] | None = None
    ) -> str | None:
        """Call after every poll: None, or why ``consumer`` should be reopened. It should be when
        it has read nothing for :data:`STALL_SECONDS` while records wait past its positions
        (``positions`` per partition, by default the consumer's own), or when it cannot ask the
        broker where its partitions end."""
        now = self._clock()
        if read_any or now - self._quiet_since < STALL_SECONDS:
            if read_any:
                self._quiet_since = now
            return None
        self._quiet_since = now
        if positions is None:
            positions = {tp: consumer.position(tp, timeout_ms=0) for tp in consumer.assignment()}
        if not positions:
            return None
        try:
            ends = consumer.end_offsets(list(positions), timeout_ms=_END_OFFSETS_TIMEOUT_MS)
        except Exception as error:  # the broker away, or this consumer's connection broken
            return f"it could not ask the broker where its partitions end ({type(error).__name__})"
        for partition, position in positions.items():
            end = ends.get(partition)
            if end is not None and end > (position or 0):
                return (
                    f"it read nothing for {STALL_SECONDS:.0f} s at offset {position} of "
                    f"{partition.topic}[{partition.partition}], which ends at {end}"
                )
        return None


@contextmanager
def publish_span(topic: str, count: int) -> Iterator[None]:
    """A producer span around sending ``count`` records to ``topic``; records sent inside it
    with :func:`trace_headers` make the consumer's spans its children."""
    with _tracer.start_as_current_span(
        f"{topic} publish",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": count,
        },
    ):
        yield


SecurityProtocol = Literal["PLAINTEXT", "SSL"]


@dataclass(frozen=True)
class KafkaSecurity:
    """How a Kafka client connects: ``SSL`` with the certificate in ``tls_dir`` (``ca.pem``,
    ``cert.pem``, ``key.pem``: the platform root it trusts, and who it is), or ``PLAINTEXT``
    (no identity at all; the platform's brokers refuse it)."""

    protocol: SecurityProtocol = "PLAINTEXT"
    tls_dir: Path | None = None

    @classmethod
    def tls(cls, folder: Path) -> KafkaSecurity:
        """TLS with the certificate in ``folder``."""
        return cls("SSL", folder)

    @classmethod
    def from_settings(cls, settings: ProcessSettings) -> KafkaSecurity:
        """What a process's settings say: ``kafka_security_protocol`` (PLAINTEXT when unset)
        with the TLS folder ``kafka_tls_dir`` (by default the process's own ``tls_dir``)."""
        folder = settings.kafka_tls_dir or settings.tls_dir
        protocol = settings.kafka_security_protocol or "PLAINTEXT"
        if protocol == "SSL" and folder is None:
            raise InvalidInputError(
                "expected SWIFTCHAIN_KAFKA_TLS_DIR or SWIFTCHAIN_TLS_DIR with "
                "SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL=SSL, got neither"
            )
        return cls(protocol, folder if protocol == "SSL" else None)

    @classmethod
    def from_environment(cls) -> KafkaSecurity:
        """:meth:`from_settings` of the ``SWIFTCHAIN_*`` variables of this process."""
        return cls.from_settings(ProcessSettings())

    def client_options(self) -> dict[str, Any]:
        """The kafka-python options for this (``security_protocol``, ``ssl_*``);
        :class:`InvalidInputError` naming a TLS file that is missing."""
        if self.protocol == "PLAINTEXT":
            return {"security_protocol": "PLAINTEXT"}
        assert self.tls_dir is not None
        files = {}
        for option, name in (
            ("ssl_cafile", CA_FILE),
            ("ssl_certfile", CERT_FILE),
            ("ssl_keyfile", KEY_FILE),
        ):
            path = self.tls_dir / name
            if not path.is_file():
                raise InvalidInputError(f"expected the Kafka TLS file {path}, got no such file")
            files[option] = str(path)
        return {"security_protocol": "SSL", "ssl_check_hostname": True, **files}


def kafka_client_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """The connection options of every Kafka client of this process (producers, consumers,
    admin clients): ``security``'s, or those this process's ``SWIFTCHAIN_*`` settings name."""
    return (security or KafkaSecurity.from_environment()).client_options()


def make_producer(
    bootstrap: str, client_id: str, *, security: KafkaSecurity | None = None, **overrides: Any
) -> KafkaProducer:
    """An idempotent producer that waits for all in-sync replicas, connecting as
    :func:`kafka_client_options` says."""
    options: dict[str, Any] = {
        **kafka_client_options(security),
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
    }
    options.update(overrides)
    return KafkaProducer(**options)


def make_consumer(
    bootstrap: str,
    client_id: str,
    group_id: str | None,
    topics: Sequence[str],
    *,
    security: KafkaSecurity | None = None,
    **overrides: Any,
) -> KafkaConsumer:
    """A consumer that never auto-commits (call :func:`run_consumer` or commit yourself),
    connecting as :func:`kafka_client_options` says."""
    options: dict[str, Any] = {
        **kafka_client_options(security),
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    consumer = KafkaConsumer(**options)
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def trace_headers(extra: Mapping[str, str] | None = None) -> Headers:
    """Kafka headers carrying the current W3C trace context (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = dict(extra or {})
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def context_from_headers(headers: Iterable[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context a producer put in the headers (empty context if none)."""
    carrier = {key: value.decode("latin-1") for key, value in headers or ()}
    return propagate.extract(carrier)


@dataclass(frozen=True)
class ConsumedMessage:
    """What a handler needs of a Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: Headers


def _consumed(record: Any) -> ConsumedMessage:
    return ConsumedMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        timestamp_ms=record.timestamp,
        headers=list(record.headers or ()),
    )


def run_batch_consumer(
    consumer: KafkaConsumer,
    handle_batch: Callable[[list[ConsumedMessage]], None],
    stop: threading.Event,
    *,
    name: str | None = None,
    poison: PoisonSink | None = None,
    poll_timeout_ms: int = 200,
    max_records: int = 500,
    reopen: Callable[[], KafkaConsumer] | None = None,
) -> None:
    """Process each polled batch until ``stop`` is set, committing it only after handling it
    (at-least-once: handlers must be idempotent). With ``reopen``, a consumer that stalls
    (:class:`StallWatch`) is closed and replaced by ``reopen()``, which resumes from the
    group's committed offsets.

    Nothing a record holds stops the loop. A record with a null value is set aside before the
    handler sees it (:mod:`services.platform.poison`, in ``poison`` or the process's store,
    under ``name``: the consumer group by default). A batch whose handler fails transiently (the
    database or the broker away; :func:`~services.platform.threads.is_transient`) is handled
    again after a backoff, for as long as it takes; one whose handler raises anything else is
    split in halves, handled apart, until the records that fail are alone, and those are set
    aside. Polls and commits that fail transiently are retried the same way. Returns when
    ``stop`` is set (raising :class:`~services.platform.threads.Stopped` if it was set while
    waiting to retry).
    """
    label = name or str(consumer.config.get("group_id") or consumer.config.get("client_id"))
    watch = StallWatch()
    while not stop.is_set():
        batches = retry_transient(
            partial(consumer.poll, timeout_ms=poll_timeout_ms, max_records=max_records),
            stop=stop,
            doing=f"{label}: reading",
        )
        record_lag(consumer, label, batches)
        if reopen is not None:
            why = watch.stalled(consumer, bool(batches))
            if why is not None:
                _log.warning("%s: reopening its consumer: %s", label, why)
                _close_quietly(consumer)
                consumer = retry_transient(reopen, stop=stop, doing=f"{label}: reopening")
        if not batches:
            continue
        messages: list[ConsumedMessage] = []
        for records in batches.values():
            for record in records:
                if record.value is None:
                    _set_aside(label, _consumed(record), "the record has no value", stop, poison)
                else:
                    messages.append(_consumed(record))
        if messages:
            _handle_or_set_aside(label, messages, handle_batch, stop, poison)
        _commit(consumer, label, stop)


def _close_quietly(consumer: KafkaConsumer) -> None:
    """Close a consumer that is being replaced; one that is broken may fail to close."""
    try:
        consumer.close()
    except Exception as error:
        _log.warning("closing a stalled consumer failed: %s: %s", type(error).__name__, error)


def _set_aside(
    label: str,
    message: ConsumedMessage,
    reason: str,
    stop: threading.Event,
    poison: PoisonSink | None,
) -> None:
    record = PoisonRecord(
        label, message.topic, message.partition, message.offset, reason, message.value
    )
    set_aside(record, stop, sink=poison)


def _handle_or_set_aside(
    label: str,
    messages: list[ConsumedMessage],
    handle_batch: Callable[[list[ConsumedMessage]], None],
    stop: threading.Event,
    poison: PoisonSink | None,
) -> None:
    """Handle ``messages``; set aside the ones that cannot be handled (see
    :func:`run_batch_consumer`)."""
    try:
        retry_transient(
            lambda: handle_batch(messages),
            stop=stop,
            doing=f"{label}: applying {len(messages)} records",
        )
    except Stopped:
        raise
    except Exception as error:
        if len(messages) == 1:
            _set_aside(label, messages[0], f"{type(error).__name__}: {error}", stop, poison)
            return
        middle = len(messages) // 2
        _handle_or_set_aside(label, messages[:middle], handle_batch, stop, poison)
        _handle_or_set_aside(label, messages[middle:], handle_batch, stop, poison)


def _commit(consumer: KafkaConsumer, label: str, stop: threading.Event) -> None:
    try:
        retry_transient(consumer.commit, stop=stop, doing=f"{label}: committing")
    except CommitFailedError as error:
        # The group moved the partitions elsewhere: their new owner reads the batch again, and
        # handlers are idempotent.
        _log.warning("%s: commit refused (%s); the batch will be read again", label, error)


def run_consumer(
    consumer: KafkaConsumer,
    handle: Callable[[ConsumedMessage], None],
    stop: threading.Event,
    *,
    poll_timeout_ms: int = 200,
) -> None:
    """Process messages one by one until ``stop`` is set, each in the trace context its producer
    put in its headers, committing each batch only after handling it (see
    :func:`run_batch_consumer`)."""

    def handle_each(messages: list[ConsumedMessage]) -> None:
        for message in messages:
            token = otel_context.attach(context_from_headers(message.headers))
            try:
                handle(message)
            finally:
                otel_context.detach(token)

    run_batch_consumer(consumer, handle_each, stop, poll_timeout_ms=poll_timeout_ms)
