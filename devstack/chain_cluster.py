"""A real three-node chain for tests and benchmarks: node processes on free ports, own topics."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
import pymongo
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaProducer

from chain.entry import EntrySigner, new_entry_id
from chain.sequencer import ordering_records
from chain.tiles import TILE_WIDTH, entries_path
from devstack.kafka import create_topics, grant, platform_grants
from devstack.pki import ADMIN, Pki, ensure_pki
from devstack.process import ManagedProcess, free_port, wait_grpc_serving
from services.platform.consortium_files import (
    ConsortiumFiles,
    create_consortium,
    load_registrar_key,
)
from services.platform.genesis_ceremony import member_keygen
from services.platform.kafka import KafkaSecurity, kafka_client_options
from services.platform.tls import open_channel
from services.platform.topics import COSIGNATURES_TOPIC, ORDERING_TOPIC, topic_spec
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc, entry_pb2
from swiftchain.common.v1 import common_pb2

MEMBERS = ("hospital-a", "hospital-b", "hospital-c")
HOSPITAL = "hospital-x"


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(int(time.time() * 1000))
    return stamp


def _broker_pki(root: Path) -> Pki:
    """The PKI of the broker this process talks to (its Kafka TLS folder's parent, laid out by
    devstack/pki.py), or a new one under ``root`` for a broker without TLS."""
    security = KafkaSecurity.from_environment()
    if security.tls_dir is None:
        return Pki(root / "pki")
    return Pki(security.tls_dir.parent)


class ChainCluster:
    """Three chain nodes (quorum 2) sharing fresh topics on the test run's Kafka.

    The nodes' certificates come from ``pki``, by default the PKI of the broker this process
    talks to (see :class:`~services.platform.kafka.KafkaSecurity`): the broker knows each node
    by its certificate, and the cluster grants the nodes what
    :mod:`services.platform.kafka_acls` grants chain nodes, on its own topics (this process
    must be the broker's super user). The cluster's own writes to the ordering topic go as this
    process.

    ``voted_in`` names nodes the genesis does not list, for tests of membership by vote: each
    has its own node key and card (``voted_in_keys``), a certificate and the chain nodes'
    grants, and starts with ``SWIFTCHAIN_ADMITTED_BY_VOTE``.
    """

    def __init__(
        self,
        root: Path,
        kafka_bootstrap: str,
        mongo_uri: str,
        *,
        batch_max: int = 50,
        batch_timeout_ms: int = 100,
        pki: Pki | None = None,
        voted_in: Sequence[str] = (),
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.root = root
        self.kafka = kafka_bootstrap
        self.kafka_security = KafkaSecurity.from_environment()
        self.mongo_uri = mongo_uri
        self.ordering_topic = f"{ORDERING_TOPIC}.{suffix}"
        self.cosignatures_topic = f"{COSIGNATURES_TOPIC}.{suffix}"
        self.db_suffix = suffix
        create_topics(
            kafka_bootstrap,
            specs=[
                dataclasses.replace(topic_spec(ORDERING_TOPIC), name=self.ordering_topic),
                dataclasses.replace(topic_spec(COSIGNATURES_TOPIC), name=self.cosignatures_topic),
            ],
        )
        self.files: ConsortiumFiles = create_consortium(
            root / "consortium",
            list(MEMBERS),
            quorum=2,
            origin=f"test.swiftchain/{suffix}",
            batch_max=batch_max,
            batch_timeout_ms=batch_timeout_ms,
        )
        self.config = self.files.load()
        #: Every node this cluster may run: the genesis members, then those voted in.
        self.names = (*MEMBERS, *voted_in)
        #: The node key and card of each node voted in, made as keygen makes them.
        self.voted_in_keys = {name: member_keygen(name, root / "voted-in") for name in voted_in}
        self.ports = {name: free_port() for name in self.names}
        #: Each node's public mirror (HTTP, tlog-tiles paths).
        self.mirror_ports = {name: free_port() for name in self.names}
        self.pki = ensure_pki(
            (pki or _broker_pki(root)).folder, [(name, "chain-node") for name in self.names]
        )
        self._grant_nodes(self.ordering_topic, self.cosignatures_topic)
        #: The TLS folder tests and benchmarks call the nodes with (the consortium admin's).
        self.tls_dir = self.pki.tls_dir(ADMIN)
        self.processes: dict[str, ManagedProcess] = {}
        self.producer = KafkaProducer(
            **kafka_client_options(self.kafka_security),
            bootstrap_servers=kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
        )
        self.registrar = EntrySigner("registrar", load_registrar_key(self.files))
        self.hospital_key = Ed25519PrivateKey.generate()
        self.hospital = EntrySigner(f"{HOSPITAL}/key-1", self.hospital_key)

    def node_key_path(self, name: str) -> Path:
        """Node ``name``'s signed-note key file (its member key, which also signs its votes)."""
        if name in self.voted_in_keys:
            return self.voted_in_keys[name].key_path
        return self.files.node_key_path(name)

    def data_dir(self, name: str) -> Path:
        """The folder of node ``name``'s log files."""
        return self.root / name / "data"

    def mirror_url(self, name: str) -> str:
        """The base URL of node ``name``'s public mirror."""
        return f"http://127.0.0.1:{self.mirror_ports[name]}"

    def _grant_nodes(self, ordering_topic: str, cosignatures_topic: str) -> None:
        """Let every node do on these topics what chain nodes may do on the chain topics."""
        if self.kafka_security.protocol == "PLAINTEXT":
            return  # a broker without TLS knows no one and allows everything
        topics = {ORDERING_TOPIC: ordering_topic, COSIGNATURES_TOPIC: cosignatures_topic}
        grant(self.kafka, platform_grants(self.pki, nodes=self.names, topics=topics))

    def database(self, name: str) -> str:
        """The node's database name in this test."""
        return f"chain_{name.replace('-', '_')}_{self.db_suffix}"

    def start(self, name: str, *, cosignatures_topic: str | None = None) -> None:
        """Start (or restart) node ``name`` and wait until it answers SERVING; with
        ``cosignatures_topic``, the node signs into that topic instead of the cluster's (a test
        of lines that never reached the others)."""
        env = {
            "SWIFTCHAIN_NODE_NAME": name,
            "SWIFTCHAIN_PORT": str(self.ports[name]),
            "SWIFTCHAIN_KAFKA_BOOTSTRAP": self.kafka,
            "SWIFTCHAIN_KAFKA_SECURITY_PROTOCOL": self.kafka_security.protocol,
            "SWIFTCHAIN_KAFKA_TLS_DIR": str(self.pki.tls_dir(name)),
            "SWIFTCHAIN_MONGO_URI": self.mongo_uri,
            "SWIFTCHAIN_CONSORTIUM_FILE": str(self.files.config_path),
            "SWIFTCHAIN_SIGNING_KEY_FILE": str(self.node_key_path(name)),
            "SWIFTCHAIN_ORDERING_TOPIC": self.ordering_topic,
            "SWIFTCHAIN_COSIGNATURES_TOPIC": cosignatures_topic or self.cosignatures_topic,
            "SWIFTCHAIN_DATABASE": self.database(name),
            "SWIFTCHAIN_DATA_DIR": str(self.data_dir(name)),
            "SWIFTCHAIN_MIRROR_PORT": str(self.mirror_ports[name]),
            "SWIFTCHAIN_TLS_DIR": str(self.pki.tls_dir(name)),
        }
        if name in self.voted_in_keys:
            env["SWIFTCHAIN_ADMITTED_BY_VOTE"] = "true"
        process = ManagedProcess(
            name,
            [sys.executable, "-m", "chain.node"],
            log_path=self.root / f"{name}.log",
            env=env,
        ).start()
        self.processes[name] = process
        wait_grpc_serving(process, self.ports[name], timeout=60, tls_dir=self.tls_dir)

    def start_all(self) -> None:
        """Start every node."""
        for name in MEMBERS:
            self.start(name)

    def create_cosignatures_topic(self) -> str:
        """A new, empty topic configured as the cosignatures topic; its name."""
        name = f"{COSIGNATURES_TOPIC}.{uuid.uuid4().hex[:8]}"
        create_topics(
            self.kafka, specs=[dataclasses.replace(topic_spec(COSIGNATURES_TOPIC), name=name)]
        )
        self._grant_nodes(self.ordering_topic, name)
        return name

    def stop(self, name: str) -> None:
        """Stop node ``name`` with SIGTERM."""
        self.processes[name].stop()

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (no chance to clean up), then reap it."""
        process = self.processes[name]
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.stop(grace=1)

    def drop_database(self, name: str) -> None:
        """Delete node ``name``'s small state (its Mongo database)."""
        client: pymongo.MongoClient[dict[str, object]]
        with pymongo.MongoClient(self.mongo_uri) as client:
            client.drop_database(self.database(name))

    def wipe_data_dir(self, name: str) -> None:
        """Delete node ``name``'s log files (a lost volume)."""
        shutil.rmtree(self.data_dir(name), ignore_errors=True)

    def tamper_entry(self, name: str, leaf_index: int) -> None:
        """Flip the last byte of the last entry of the full entry bundle holding
        ``leaf_index`` in node ``name``'s data directory."""
        path = self.data_dir(name) / entries_path(leaf_index // TILE_WIDTH)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))

    def status(self, name: str) -> chain_service_pb2.GetNodeStatusResponse:
        """Node ``name``'s status."""
        with self.client(name) as stub:
            return stub.GetNodeStatus(chain_service_pb2.GetNodeStatusRequest(), timeout=5)

    def stop_all(self) -> None:
        """Stop every node."""
        for process in self.processes.values():
            process.stop()
        self.producer.close()

    @contextmanager
    def client(self, name: str) -> Iterator[chain_service_pb2_grpc.ChainServiceStub]:
        """A ChainService stub for node ``name``."""
        with self.channel(name) as channel:
            yield chain_service_pb2_grpc.ChainServiceStub(channel)

    def channel(self, name: str) -> grpc.Channel:
        """An mTLS channel to node ``name``, as the consortium admin."""
        return open_channel(f"127.0.0.1:{self.ports[name]}", self.tls_dir)

    # ---------------------------------------------------------------- entries

    def hospital_key_entry(self) -> bytes:
        """A KEY entry (by the registrar) registering the test hospital's RECORD key."""
        public = self.hospital_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        body = entry_pb2.EntryBody(
            entry_id=new_entry_id(),
            kind=common_pb2.ENTRY_KIND_KEY,
            submitter_id="identity",
            time=_now(),
            commitment=bytes(32),
            key=entry_pb2.KeyDetail(
                action=entry_pb2.KEY_ACTION_REGISTER,
                owner_id=HOSPITAL,
                owner_kind=entry_pb2.KEY_OWNER_KIND_ORGANIZATION,
                owner_role=common_pb2.ORGANIZATION_ROLE_HOSPITAL,
                key_id=self.hospital.key_id,
                public_key=public,
                reason=entry_pb2.KEY_REASON_NEW_KEY,
                allowed_kinds=[common_pb2.ENTRY_KIND_RECORD],
            ),
        )
        return self.registrar.sign_entry(body.SerializeToString())

    @staticmethod
    def record_body(entry_id: str | None = None) -> bytes:
        """A RECORD entry body (a first version: CREATE) with random commitment and tags."""
        return entry_pb2.EntryBody(
            entry_id=entry_id or new_entry_id(),
            kind=common_pb2.ENTRY_KIND_RECORD,
            submitter_id=HOSPITAL,
            time=_now(),
            commitment=uuid.uuid4().bytes * 2,
            subject_tag=uuid.uuid4().bytes * 2,
            record=entry_pb2.RecordDetail(
                record_tag=uuid.uuid4().bytes * 2,
                version=1,
                action=common_pb2.RECORD_ACTION_CREATE,
                reason_code="clinical-update",
            ),
        ).SerializeToString()

    def submit(self, entries: Sequence[bytes]) -> None:
        """Send entries to the ordering topic (idempotent producer, acks=all), as few records
        as fit (:func:`~chain.sequencer.ordering_records`)."""
        for value, _count in ordering_records(entries):
            self.producer.send(self.ordering_topic, value)
        self.producer.flush()

    def wait_sealed_size(self, name: str, size: int, timeout: float = 60) -> str:
        """Wait until node ``name`` serves a sealed checkpoint of at least ``size``; its note."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            with self.client(name) as stub:
                try:
                    response = stub.GetCheckpoint(
                        chain_service_pb2.GetCheckpointRequest(), timeout=2
                    )
                    last = response.checkpoint
                    if last.tree_size >= size:
                        return str(last.note)
                except grpc.RpcError:
                    pass
            time.sleep(0.1)
        raise AssertionError(
            f"node {name} did not seal size {size} within {timeout}s (last: "
            f"{last.tree_size if last else None}); log:\n{self.processes[name].log_tail()}"
        )
