"""Entry point of the audit service: ``python -m services.audit``.

Three loops feed the book: a Kafka consumer of every event topic (group ``audit``; a batch's
offsets are committed only after its items are written, so a crash replays and never loses; a
record it cannot use is set aside in the ``poison_records`` collection, and the database away
is waited out),
the log follower (sealed leaves from a chain node, under checkpoints it checked, and the node's
alarms), and the consent check of
PERMIT decisions and records once the events of other topics had time to arrive.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer
from pydantic import Field

from services.audit.domain import AuditBook, AuditPolicy, CheckpointGate
from services.audit.domain.events import accept_event
from services.audit.log_follower import LogFollower
from services.audit.servicer import AuditServicer
from services.audit.store import ALIAS, AuditMongoStore
from services.platform import mongo, poison
from services.platform.consortium_files import ConsortiumFiles
from services.platform.events import decode
from services.platform.kafka import ConsumedMessage, make_consumer, run_batch_consumer
from services.platform.poison import MongoPoisonStore
from services.platform.server import ServiceRegistration, configure_process, serve
from services.platform.settings import AUDIT_PORT, ProcessSettings
from services.platform.threads import start_supervised
from services.platform.tls import open_channel
from services.platform.topics import EVENT_TOPICS
from swiftchain.audit.v1 import audit_service_pb2_grpc

_log = logging.getLogger(__name__)
#: Seconds between two consent checks.
CONSENT_CHECK_EVERY = 1.0


class AuditSettings(ProcessSettings):
    """Settings of the audit service (``SWIFTCHAIN_*``)."""

    process_name: str = "audit"
    port: int = AUDIT_PORT
    database: str = "audit"
    #: The consortium's files: the public config and the tag key (patients' subject tags).
    consortium_dir: Path = Path(".stack/run/consortium")
    #: A chain node to follow (``HOST:PORT``, mTLS).
    chain_node: str = "127.0.0.1:50061"
    #: The Kafka consumer group of the read models.
    consumer_group: str = "audit"
    #: DENY decisions for one requester within the window that make a burst.
    denial_burst_count: int = Field(default=5, ge=2)
    denial_burst_window_seconds: float = Field(default=60.0, gt=0)
    #: How long a PERMIT or a record waits for its consent events before it is checked.
    consent_check_grace_seconds: float = Field(default=10.0, ge=0)


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    """Run the audit service until SIGTERM."""
    settings = AuditSettings()
    configure_process(settings)
    files = ConsortiumFiles(settings.consortium_dir)
    consortium = files.load()
    mongo.connect(settings.mongo_uri, settings.database, alias=ALIAS)
    poison.use_store(MongoPoisonStore(ALIAS))
    store = AuditMongoStore()
    store.ensure_indexes()
    book = AuditBook(
        store,
        files.load_tag_key(),
        AuditPolicy(
            denial_burst_count=settings.denial_burst_count,
            denial_burst_window=timedelta(seconds=settings.denial_burst_window_seconds),
            consent_check_grace=timedelta(seconds=settings.consent_check_grace_seconds),
        ),
    )
    book.load(_now())
    chain = open_channel(settings.chain_node, settings.tls_dir)
    # Every checkpoint the node serves is checked against the consortium's pinned member keys
    # and the last checkpoint accepted, stored so that a restart keeps it.
    gate = CheckpointGate(consortium, store.log_checkpoint())
    follower = LogFollower(chain, book, store.log_position(), gate, clock=_now)
    book.attach_log(follower)

    def open_consumer() -> KafkaConsumer:
        return make_consumer(
            settings.kafka_bootstrap, settings.process_name, settings.consumer_group, EVENT_TOPICS
        )

    consumer = open_consumer()
    stop = threading.Event()

    def handle(messages: list[ConsumedMessage]) -> None:
        # A record that is not an envelope, or that the book cannot apply, raises here: the
        # consumer then sets it aside (services/platform/poison.py) and applies the others; the
        # database away raises a transient error, and the batch is applied again after a wait.
        # An event is believed only from the topic and producer that may emit it.
        book.apply_events([accept_event(m.topic, decode(m.value)) for m in messages])

    def consume() -> None:
        run_batch_consumer(consumer, handle, stop, reopen=open_consumer)

    def check_consents() -> None:
        while not stop.wait(CONSENT_CHECK_EVERY):
            try:
                book.check_consents(_now())
            except Exception:
                _log.warning("the consent check failed; will retry", exc_info=True)

    follower.start()
    workers = [
        start_supervised("events", consume),
        start_supervised("consent-check", check_consents),
    ]

    def on_stop() -> None:
        stop.set()
        follower.stop()
        for worker in workers:
            worker.join(timeout=10)
        consumer.close()
        chain.close()

    serve(
        settings,
        [
            ServiceRegistration(
                "swiftchain.audit.v1.AuditService",
                lambda s: audit_service_pb2_grpc.add_AuditServiceServicer_to_server(
                    AuditServicer(book, clock=_now, stopping=stop), s
                ),
            )
        ],
        on_stop=on_stop,
    )
