"""Entry point of the consent service: ``python -m services.consent``."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from chain.entry import EntrySigner
from services.consent.domain import ConsentBook, Directory
from services.consent.notifications import Notifications
from services.consent.sender import LogSender
from services.consent.servicer import ConsentServicer
from services.consent.store import ALIAS, ConsentMongoStore
from services.platform import mongo, poison
from services.platform.consortium_files import CONSENT_KEY_ID, ConsortiumFiles, load_consent_key
from services.platform.kafka import make_producer
from services.platform.poison import MongoPoisonStore
from services.platform.revocations import IdentityEventFeed
from services.platform.server import ServiceRegistration, configure_process, serve
from services.platform.settings import CONSENT_PORT, ProcessSettings
from services.platform.threads import start_supervised
from services.platform.tls import open_channel
from services.platform.topics import ORDERING_TOPIC
from swiftchain.consent.v1 import consent_service_pb2_grpc

_log = logging.getLogger(__name__)


class ConsentSettings(ProcessSettings):
    """Settings of the consent service (``SWIFTCHAIN_*``)."""

    process_name: str = "consent"
    port: int = CONSENT_PORT
    database: str = "consent"
    #: The consortium's files: the public config, the tag key and the consent signing key.
    consortium_dir: Path = Path(".stack/run/consortium")
    #: A chain node, to learn where CONSENT entries landed (``HOST:PORT``, mTLS).
    chain_node: str = "127.0.0.1:50061"
    ordering_topic: str = ORDERING_TOPIC


def main() -> None:
    """Run the consent service until SIGTERM."""
    settings = ConsentSettings()
    configure_process(settings)
    files = ConsortiumFiles(settings.consortium_dir)
    files.load()
    mongo.connect(settings.mongo_uri, settings.database, alias=ALIAS)
    poison.use_store(MongoPoisonStore(ALIAS))
    producer = make_producer(settings.kafka_bootstrap, settings.process_name)
    directory = Directory()
    identity_feed = IdentityEventFeed(
        settings.kafka_bootstrap, f"{settings.process_name}-directory", directory.apply
    )
    identity_feed.start()
    store = ConsentMongoStore()
    notifications = Notifications(store.recent_notifications)
    chain = open_channel(settings.chain_node, settings.tls_dir)
    book = ConsentBook(
        store,
        directory,
        EntrySigner(CONSENT_KEY_ID, load_consent_key(files)),
        files.load_tag_key(),
        notify=notifications,
    )
    sender = LogSender(producer, settings.ordering_topic, store, book, chain)
    book.set_sender(sender.put)
    unlogged = book.load()
    pending = store.pending_decisions()
    for item in [*map(book.outgoing_for, unlogged), *map(book.decision_outgoing, pending)]:
        book.deliver(item)
    if unlogged or pending:
        _log.info(
            "sending again %d directive versions and %d decisions that Kafka never acknowledged",
            len(unlogged),
            len(pending),
        )
    stop = threading.Event()
    worker = start_supervised("log-sender", sender.run, stop)

    def on_stop() -> None:
        stop.set()
        worker.join(timeout=15)
        identity_feed.stop()
        chain.close()
        producer.close(timeout=10)

    serve(
        settings,
        [
            ServiceRegistration(
                "swiftchain.consent.v1.ConsentService",
                lambda s: consent_service_pb2_grpc.add_ConsentServiceServicer_to_server(
                    ConsentServicer(book, notifications, clock=lambda: datetime.now(UTC)), s
                ),
            )
        ],
        on_stop=on_stop,
    )
