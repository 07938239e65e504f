"""Entry point of a chain node: ``python -m chain.node`` (or ``swiftchain node run``)."""

from __future__ import annotations

import logging
from pathlib import Path

from chain.consortium import parse_consortium
from chain.node.kafka_readers import KafkaReaders
from chain.node.node import ChainNode
from chain.node.service import ChainServicer
from chain.node.store import ALIAS, DEFAULT_BUNDLE_CACHE_BYTES, ChainStore
from chain.note import new_signer
from services.platform import mongo
from services.platform.kafka import make_producer
from services.platform.server import ServiceRegistration, configure_process, serve
from services.platform.settings import FIRST_NODE_PORT, ProcessSettings
from services.platform.topics import COSIGNATURES_TOPIC, ORDERING_TOPIC
from swiftchain.chain.v1 import chain_service_pb2_grpc

_log = logging.getLogger(__name__)


class NodeSettings(ProcessSettings):
    """A chain node's settings (``SWIFTCHAIN_*``)."""

    process_name: str = "chain-node"
    port: int = FIRST_NODE_PORT
    #: The member name this node signs with (must be in the consortium config).
    node_name: str = "hospital-a"
    #: The consortium config (``swiftchain-consortium/v1`` JSON).
    consortium_file: Path = Path(".stack/run/consortium/consortium.json")
    #: The node's signed-note private key (``PRIVATE+KEY+name+hash+key``), kept secret.
    signing_key_file: Path = Path(".stack/run/consortium/hospital-a.key")
    ordering_topic: str = ORDERING_TOPIC
    cosignatures_topic: str = COSIGNATURES_TOPIC
    #: Memory for decoded entry bundles, so proofs of recent entries skip the database.
    bundle_cache_mib: int = DEFAULT_BUNDLE_CACHE_BYTES // (1024 * 1024)

    #: The node's own Mongo database; empty means ``chain_<node name>``.
    database: str = ""

    @property
    def database_name(self) -> str:
        """The node's own Mongo database."""
        return self.database or "chain_" + self.node_name.replace("-", "_")


def build_node(settings: NodeSettings) -> ChainNode:
    """Connect the store and Kafka and return a node ready to :meth:`ChainNode.start`."""
    config = parse_consortium(settings.consortium_file.read_text())
    signer = new_signer(settings.signing_key_file.read_text().strip())
    mongo.connect(settings.mongo_uri, settings.database_name, alias=ALIAS)
    producer = make_producer(settings.kafka_bootstrap, f"chain-node-{settings.node_name}")
    return ChainNode(
        name=settings.node_name,
        config=config,
        signer=signer,
        store=ChainStore(settings.bundle_cache_mib * 1024 * 1024),
        producer=producer,
        readers=KafkaReaders(settings.kafka_bootstrap, settings.node_name),
        ordering_topic=settings.ordering_topic,
        cosignatures_topic=settings.cosignatures_topic,
    )


def main() -> None:
    """Run a node until SIGTERM."""
    settings = NodeSettings()
    configure_process(settings)
    node = build_node(settings)
    node.start()
    servicer = ChainServicer(node)
    serve(
        settings,
        [
            ServiceRegistration(
                "swiftchain.chain.v1.ChainService",
                lambda s: chain_service_pb2_grpc.add_ChainServiceServicer_to_server(servicer, s),
            )
        ],
        on_stop=node.stop,
    )
