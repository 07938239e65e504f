"""Revoked certificates and patient device keys, as every process learns them from Kafka.

The identity service publishes ``CertificateRevoked`` and ``PatientDeviceRevoked`` events on
``identity.events.v1``. Every process reads that topic from its beginning (it is small: one
message per identity change) into a :class:`RevocationList`, which the authorization interceptor
consults on every call. This is the platform's CRL distribution: a revocation takes effect
everywhere within the time it takes Kafka to deliver one message, and a process that restarts
reads the whole list again before it serves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition

from chain.errors import InvalidInputError, UnavailableError
from services.platform.events import decode
from services.platform.kafka import StallWatch, make_consumer
from services.platform.poison import PoisonRecord, PoisonSink, set_aside
from services.platform.threads import Backoff, Stopped, start_supervised
from services.platform.topics import IDENTITY_EVENTS_TOPIC
from swiftchain.events.v1 import events_pb2

_log = logging.getLogger(__name__)


class RevocationList:
    """Revoked certificate serials and device key ids; safe to read from any thread."""

    def __init__(self) -> None:
        self._certificates: set[str] = set()
        self._devices: set[str] = set()

    def certificate_revoked(self, serial_hex: str) -> bool:
        """True if the certificate with this serial (lower-case hex) was revoked."""
        return serial_hex in self._certificates

    def device_revoked(self, key_id: str) -> bool:
        """True if the patient device key ``key_id`` was revoked."""
        return key_id in self._devices

    def revoke_certificate(self, serial_hex: str) -> None:
        """Record a certificate revocation."""
        self._certificates.add(serial_hex)

    def revoke_device(self, key_id: str) -> None:
        """Record a device key revocation."""
        self._devices.add(key_id)

    def apply(self, event: events_pb2.EventEnvelope) -> None:
        """Take in one identity event (others are ignored)."""
        if event.payload.Is(events_pb2.CertificateRevoked.DESCRIPTOR):
            certificate = events_pb2.CertificateRevoked()
            event.payload.Unpack(certificate)
            self.revoke_certificate(certificate.serial_number)
        elif event.payload.Is(events_pb2.PatientDeviceRevoked.DESCRIPTOR):
            device = events_pb2.PatientDeviceRevoked()
            event.payload.Unpack(device)
            self.revoke_device(device.key_id)


class IdentityEventFeed:
    """Feeds every event of ``identity.events.v1`` to ``apply`` (a :class:`RevocationList`'s,
    or another view that a process keeps of identity, such as the keys the log knows).

    It reads every partition from offset 0 with no consumer group (each process needs the whole
    history, not a share of it). :meth:`start` returns once the view has caught up with the
    topic's end as of the call, so a process never serves with a stale view after a restart.
    A record that is not an event envelope, or that ``apply`` cannot take, is set aside
    (:mod:`services.platform.poison`, under ``client_id``, in ``poison`` or the process's store)
    and the feed reads on; the broker away is waited out with a backoff.
    """

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        apply: Callable[[events_pb2.EventEnvelope], None],
        *,
        topic: str = IDENTITY_EVENTS_TOPIC,
        poison: PoisonSink | None = None,
    ) -> None:
        self._apply_event = apply
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._topic = topic
        self._poison = poison
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start reading and wait until caught up; :class:`UnavailableError` if not in time."""
        self._thread = start_supervised("identity-events", self._run)
        if not self._caught_up.wait(timeout):
            self.stop()
            raise UnavailableError(
                f"could not read {self._topic} at {self._bootstrap} "
                f"within {timeout:.0f}s" + (f": {self._error}" if self._error else "")
            )

    def stop(self) -> None:
        """Stop reading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        delays = Backoff(first=0.5).delays()
        while not self._stop.is_set():
            try:
                self._consume()
            except Stopped:
                return
            except Exception as error:  # broker away: keep the view we have and read again
                self._error = error
                delay = next(delays)
                _log.warning("identity event feed: %s; again in %.1f s", error, delay)
                self._stop.wait(delay)

    def _consume(self) -> None:
        consumer: Any = make_consumer(self._bootstrap, self._client_id, None, ())
        try:
            partitions = [
                TopicPartition(self._topic, p)
                for p in sorted(consumer.partitions_for_topic(self._topic) or ())
            ]
            if not partitions:
                raise UnavailableError(f"topic {self._topic} does not exist")
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            targets = consumer.end_offsets(partitions)
            watch = StallWatch()
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200)
                for records in polled.values():
                    for record in records:
                        self._take(record)
                stalled = watch.stalled(consumer, bool(polled))
                if stalled is not None:  # read again from the start by a new consumer
                    raise UnavailableError(f"the consumer stalled: {stalled}")
                if not self._caught_up.is_set() and all(
                    consumer.position(tp) >= end for tp, end in targets.items()
                ):
                    self._caught_up.set()
        finally:
            consumer.close()

    def _take(self, record: Any) -> None:
        """Apply one record, or set it aside."""
        value: bytes | None = record.value
        if value is None:
            reason = "the record has no value"
        else:
            try:
                event = decode(value)
            except InvalidInputError as error:
                reason = str(error)
            except Exception as error:  # anyone can write to the topic: nothing may stop us
                reason = f"expected an EventEnvelope, got bytes that fail to decode: {error}"
            else:
                try:
                    self._apply_event(event)
                except Exception as error:
                    reason = f"could not apply {event.type}: {type(error).__name__}: {error}"
                else:
                    return
        poison = PoisonRecord(
            self._client_id, record.topic, record.partition, record.offset, reason, value
        )
        set_aside(poison, self._stop, sink=self._poison)
