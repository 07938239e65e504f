"""Entry point of the anchoring service: ``python -m services.anchoring``."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.anchoring.domain import Practitioners, RecordAnchoring
from services.anchoring.domain.tracking import SealTracker
from services.anchoring.observability import SealObserver, count_missed
from services.anchoring.seal_watch import SealWatch
from services.anchoring.servicer import AnchoringServicer
from services.anchoring.store import ALIAS, SETTLED_CACHE_SIZE, ChunkDoc, VersionStore
from services.platform import mongo, poison
from services.platform.consortium_files import ConsortiumFiles
from services.platform.kafka import make_producer
from services.platform.known_keys import KnownKeys
from services.platform.log_writer import LogWriter
from services.platform.outbox import OutboxRelay
from services.platform.poison import MongoPoisonStore
from services.platform.revocations import IdentityEventFeed
from services.platform.server import ServiceRegistration, configure_process, serve
from services.platform.settings import ANCHORING_PORT, ProcessSettings
from services.platform.threads import start_supervised
from services.platform.tls import open_channel
from services.platform.topics import ORDERING_TOPIC, RECORDS_EVENTS_TOPIC
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc
from swiftchain.events.v1.events_pb2 import EventEnvelope

_log = logging.getLogger(__name__)
#: An entry stored but not acknowledged by Kafka this long ago is sent again.
RESEND_AFTER = timedelta(seconds=5)
#: How often the outbox relay reads every chunk document (in between, only those the store
#: marked): a chunk is a few hundred KB that FerretDB v1 decodes on every such read.
RELAY_SWEEP_SECONDS = 30.0


class AnchoringSettings(ProcessSettings):
    """Settings of the anchoring service (``SWIFTCHAIN_*``)."""

    process_name: str = "anchoring"
    port: int = ANCHORING_PORT
    database: str = "anchoring"
    #: The consortium's files: the public config and the tag key (record tags are checked).
    consortium_dir: Path = Path(".stack/run/consortium")
    #: A chain node for receipts (``HOST:PORT``, mTLS).
    chain_node: str = "127.0.0.1:50061"
    ordering_topic: str = ORDERING_TOPIC
    events_topic: str = RECORDS_EVENTS_TOPIC
    #: The maximum merge delay promised in receipts: by then the entry is sealed.
    max_seal_delay_ms: int = 5000
    #: Sealed or rejected versions kept in memory, so their receipts skip the database.
    settled_cache_size: int = SETTLED_CACHE_SIZE


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    """Run the anchoring service until SIGTERM."""
    settings = AnchoringSettings()
    configure_process(settings)
    files = ConsortiumFiles(settings.consortium_dir)
    consortium = files.load()
    mongo.connect(settings.mongo_uri, settings.database, alias=ALIAS)
    poison.use_store(MongoPoisonStore(ALIAS))
    producer = make_producer(settings.kafka_bootstrap, settings.process_name)
    keys = KnownKeys(consortium.genesis_keys)
    practitioners = Practitioners()

    def learn(event: EventEnvelope) -> None:
        keys.apply(event)
        practitioners.apply(event)

    key_feed = IdentityEventFeed(settings.kafka_bootstrap, f"{settings.process_name}-keys", learn)
    key_feed.start()
    store = VersionStore(settings.settled_cache_size)
    anchoring = RecordAnchoring(
        store,
        keys,
        files.load_tag_key(),
        max_seal_delay=timedelta(milliseconds=settings.max_seal_delay_ms),
        authors=practitioners,
    )
    chain = open_channel(settings.chain_node, settings.tls_dir)
    relay = OutboxRelay(
        producer, settings.events_topic, [ChunkDoc], sweep_seconds=RELAY_SWEEP_SECONDS
    )
    tracker = SealTracker(store, on_missed=count_missed)
    observer = SealObserver()
    watch = SealWatch(tracker, clock=_now, observer=observer)
    writer = LogWriter(
        producer,
        chain,
        watch,
        topic=settings.ordering_topic,
        position=store,
        doing="following RECORD entries",
    )
    servicer = AnchoringServicer(
        anchoring=anchoring,
        tracker=tracker,
        writer=writer,
        chain=chain,
        consortium=consortium,
        clock=_now,
        on_write=relay.wake,
        observer=observer,
    )
    stop = threading.Event()

    def resend_unordered() -> None:
        reported: set[str] = set()  # entries Kafka refused, reported once each
        while not stop.wait(RESEND_AFTER.total_seconds()):
            try:
                failures = servicer.resend(
                    lambda: store.unordered(
                        _now() - RESEND_AFTER, leave_out=servicer.chunks_being_ordered()
                    )
                )
            except Exception:  # Kafka or the database away: the entries wait in the store
                _log.warning("resending unordered entries failed; will retry", exc_info=True)
                continue
            for failure in failures:
                if failure.version.entry_id not in reported:
                    if len(reported) >= 10_000:
                        reported.clear()
                    reported.add(failure.version.entry_id)
                    _log.warning(
                        "could not resend entry %s (%s, record %r version %d): %s; "
                        "the other entries went on",
                        failure.version.entry_id,
                        failure.version.organization_id,
                        failure.version.record_id,
                        failure.version.version,
                        failure.reason,
                    )

    writer.resume([(v.entry_id, v.ordering_offset) for v in tracker.resume()])
    writer.start()
    watch.start()
    workers = [
        start_supervised("outbox", relay.run, stop),
        start_supervised("resend", resend_unordered),
    ]

    def on_stop() -> None:
        stop.set()
        watch.stop()
        writer.stop()
        for worker in workers:
            worker.join(timeout=10)
        key_feed.stop()
        chain.close()
        producer.close(timeout=10)

    serve(
        settings,
        [
            ServiceRegistration(
                "swiftchain.anchoring.v1.AnchoringService",
                lambda s: anchoring_service_pb2_grpc.add_AnchoringServiceServicer_to_server(
                    servicer, s
                ),
            )
        ],
        on_stop=on_stop,
    )
