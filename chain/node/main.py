"""Entry point of a chain node: ``python -m chain.node`` (or ``swiftchain node run``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from chain.consortium import ConsortiumConfig
from chain.errors import SwiftchainError
from chain.genesis import genesis_hash, parse_genesis
from chain.node.kafka_readers import KafkaReaders
from chain.node.mirror import MirrorServer
from chain.node.node import ChainNode
from chain.node.service import ChainServicer
from chain.node.store import ALIAS, ChainStore
from chain.node.tile_store import DEFAULT_BUNDLE_CACHE_BYTES, TileStore
from chain.note import Signer, new_signer
from services.platform import mongo, poison
from services.platform.kafka import make_producer
from services.platform.poison import MongoPoisonStore
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
    #: Memory for decoded entry bundles, so proofs of recent entries skip the file reads.
    bundle_cache_mib: int = Field(default=DEFAULT_BUNDLE_CACHE_BYTES // (1024 * 1024), ge=0)
    #: Where the log lives as C2SP tlog-tiles files (a PersistentVolume in k8s); empty means
    #: ``.stack/run/<node name>/data``.
    data_dir: Path | None = None
    #: fsync every file of the log before it is renamed into place (off only for benchmarks of
    #: what that costs; a crash of the machine could then leave damaged files).
    data_fsync: bool = True
    #: The public mirror's HTTP port (the log read-only, anonymously, in tlog-tiles paths);
    #: 0 means no mirror.
    mirror_port: int = Field(default=0, ge=0, le=65535)

    #: The node's own Mongo database; empty means ``chain_<node name>``.
    database: str = ""
    #: A member admitted, or whose key was replaced, by a vote on the log: the node starts with
    #: a name or key the genesis does not list, and its signatures count only at the tree sizes
    #: where the member set the log leads to lists that key (chain.membership).
    admitted_by_vote: bool = False

    @property
    def data_path(self) -> Path:
        """The folder of the node's log files."""
        return self.data_dir or Path(".stack/run") / self.node_name / "data"

    @property
    def database_name(self) -> str:
        """The node's own Mongo database."""
        return self.database or "chain_" + self.node_name.replace("-", "_")


#: The exit status of a node that refuses its consortium file or its key.
EXIT_REFUSED = 2


class NodeRefusedError(SwiftchainError):
    """The node will not start: its consortium file is not a genesis every founder signed, or
    its key is not the one that genesis lists for it."""


def load_genesis_and_key(settings: NodeSettings) -> tuple[ConsortiumConfig, Signer]:
    """The consortium the node starts from and its signing key, both checked: every founder
    signed the genesis with the key it lists, and the node's key is the one listed for it.
    Raises :class:`NodeRefusedError` saying what is wrong."""
    where = f"chain node {settings.node_name}"
    path = settings.consortium_file
    try:
        config = parse_genesis(path.read_bytes())
        member = None if settings.admitted_by_vote else config.member(settings.node_name)
        path = settings.signing_key_file
        signer = new_signer(path.read_text().strip())
    except OSError as error:
        raise NodeRefusedError(f"{where}: cannot read {path}: {error.strerror}") from None
    except SwiftchainError as error:
        raise NodeRefusedError(f"{where}: {path}: {error}") from None
    if member is None:
        if signer.name != settings.node_name:
            raise NodeRefusedError(
                f"{where}: expected a key named {settings.node_name!r} in "
                f"{settings.signing_key_file}, got {signer.name!r}"
            )
        _log.warning(
            "%s: admitted by vote: key %s+%08x counts where the log's member set lists it",
            where,
            signer.name,
            signer.key_hash,
        )
        return config, signer
    listed = member.verifier
    if (signer.name, signer.key_hash) != (listed.name, listed.key_hash):
        raise NodeRefusedError(
            f"{where}: expected the key {listed.name}+{listed.key_hash:08x} that the genesis "
            f"lists for it in {settings.signing_key_file}, got {signer.name}+{signer.key_hash:08x}"
        )
    return config, signer


def build_node(settings: NodeSettings) -> tuple[ChainNode, TileStore]:
    """Connect the store and Kafka and return a node ready to :meth:`ChainNode.start`, and
    its log files (for the mirror). Raises :class:`NodeRefusedError` before connecting to
    anything if the consortium file or the key cannot be trusted."""
    config, signer = load_genesis_and_key(settings)
    _log.info(
        "node %s: genesis %s, signed by every founder", signer.name, genesis_hash(config).hex()
    )
    mongo.connect(settings.mongo_uri, settings.database_name, alias=ALIAS)
    poison.use_store(MongoPoisonStore(ALIAS))
    tiles = TileStore(
        settings.data_path,
        bundle_cache_bytes=settings.bundle_cache_mib * 1024 * 1024,
        fsync=settings.data_fsync,
    )
    store = ChainStore(tiles)
    if tiles.is_empty() and store.legacy_log_collections():
        dropped = store.drop_legacy_log()
        _log.warning(
            "node %s: the log was kept in Mongo (%s) by an earlier version; dropped, and "
            "rebuilt into %s from ordering offset 0",
            settings.node_name,
            ", ".join(dropped),
            settings.data_path,
        )
    producer = make_producer(settings.kafka_bootstrap, f"chain-node-{settings.node_name}")
    node = ChainNode(
        name=settings.node_name,
        config=config,
        signer=signer,
        store=store,
        producer=producer,
        readers=KafkaReaders(settings.kafka_bootstrap, settings.node_name),
        ordering_topic=settings.ordering_topic,
        cosignatures_topic=settings.cosignatures_topic,
    )
    return node, tiles


def main() -> None:
    """Run a node until SIGTERM; exit with :data:`EXIT_REFUSED` and say why if the
    consortium file is not a genesis every founder signed or the key is not the node's."""
    settings = NodeSettings()
    configure_process(settings)
    try:
        node, tiles = build_node(settings)
    except NodeRefusedError as error:
        _log.critical("refusing to start: %s", error)
        raise SystemExit(EXIT_REFUSED) from None
    node.start()
    mirror = None
    if settings.mirror_port:
        mirror = MirrorServer(
            settings.listen_host,
            settings.mirror_port,
            tiles,
            _latest(node),
            lambda: node.membership.entry_indexes,
        )
        mirror.start()
        _log.info("mirror of %s on http://%s:%d/", node.name, settings.listen_host, mirror.port)

    def stop() -> None:
        if mirror is not None:
            mirror.stop()
        node.stop()

    servicer = ChainServicer(node)
    serve(
        settings,
        [
            ServiceRegistration(
                "swiftchain.chain.v1.ChainService",
                lambda s: chain_service_pb2_grpc.add_ChainServiceServicer_to_server(servicer, s),
            )
        ],
        on_stop=stop,
    )


def _latest(node: ChainNode) -> Callable[[], tuple[int, str] | None]:
    def latest() -> tuple[int, str] | None:
        sealed = node.latest_sealed()
        return None if sealed is None else (sealed.tree_size, sealed.note)

    return latest
