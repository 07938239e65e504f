"""``HospitalClient.receipt`` checks the receipt a service sends against the consortium the
hospital pinned, never against the keys the receipt carries: over a real gRPC channel to an
anchoring service that answers GetReceipt with the bundle a test gives it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.errors import InvalidInputError, VerificationError
from chain.evidence import EvidenceEntry, build_bundle, bundle_to_json
from chain.hashing import leaf_hash
from chain.note import Signer, sign
from chain.proof_build import inclusion_proof, tree_root
from chain.tiles import MemoryHashStore
from sdk.anchoring import HospitalClient
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from tests.unit.anchoring.fakes import HOSPITAL_KEY, TAG_KEY

ORIGIN = "test.swiftchain/receipts"
MEMBERS = [Signer(f"node-{c}", Ed25519PrivateKey.generate()) for c in "abc"]
PINNED = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(s.name, s.verifier().vkey) for s in MEMBERS),
    genesis_keys=(),
)
ENTRY_ID = "00000000-0000-4000-8000-000000000002"
SIZE = 5


def _entry(i: int) -> bytes:
    body = entry_pb2.EntryBody(
        entry_id=f"00000000-0000-4000-8000-{i:012d}",
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id="hospital-a",
        commitment=bytes(32),
    )
    return entry_pb2.ChainEntry(
        body=body.SerializeToString(), key_id="hospital-a#1", signature=bytes(64)
    ).SerializeToString()


def receipt(signers: list[Signer], leaf: int = 2) -> str:
    """A bundle proving leaf ``leaf`` (entry ``...{leaf}``), signed by ``signers`` and listing
    their keys as the consortium's."""
    entries = [_entry(i) for i in range(SIZE)]
    tree = MemoryHashStore()
    tree.extend(leaf_hash(e) for e in entries)
    text = Checkpoint(ORIGIN, SIZE, tree_root(SIZE, tree), 1, GENESIS_PREVIOUS_HASH, 0).to_text()
    return bundle_to_json(
        build_bundle(
            origin=ORIGIN,
            verifiers=[s.verifier() for s in signers],
            quorum=2,
            checkpoint=sign(text, signers),
            entries=[EvidenceEntry(leaf, entries[leaf], tuple(inclusion_proof(leaf, SIZE, tree)))],
        )
    )


class ReceiptService(anchoring_service_pb2_grpc.AnchoringServiceServicer):
    """Answers GetReceipt with ``self.bundle``, as a service (or anyone in between) could."""

    def __init__(self) -> None:
        self.bundle = ""

    def GetReceipt(
        self, request: pb.GetReceiptRequest, context: grpc.ServicerContext
    ) -> pb.GetReceiptResponse:
        response = pb.GetReceiptResponse()
        response.evidence.json = self.bundle
        return response


@pytest.fixture
def served() -> Iterator[tuple[ReceiptService, grpc.Channel]]:
    service = ReceiptService()  # type: ignore[abstract]  # serves only GetReceipt
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    anchoring_service_pb2_grpc.add_AnchoringServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield service, channel
    channel.close()
    server.stop(grace=None)


def client(channel: grpc.Channel) -> HospitalClient:
    return HospitalClient(
        channel, "hospital-a", "hospital-a#1", HOSPITAL_KEY, TAG_KEY, consortium=PINNED
    )


def test_a_receipt_signed_by_the_pinned_members_is_returned(
    served: tuple[ReceiptService, grpc.Channel],
) -> None:
    service, channel = served
    service.bundle = receipt(MEMBERS[:2])
    assert client(channel).receipt(ENTRY_ID) == service.bundle


def test_a_receipt_re_signed_with_foreign_keys_is_refused(
    served: tuple[ReceiptService, grpc.Channel],
) -> None:
    service, channel = served
    forgers = [Signer(s.name, Ed25519PrivateKey.generate()) for s in MEMBERS[:2]]
    service.bundle = receipt(forgers)  # consistent with the keys it lists
    with pytest.raises(VerificationError) as refused:
        client(channel).receipt(ENTRY_ID)
    message = str(refused.value)
    assert message.startswith(
        f"the receipt for entry {ENTRY_ID} does not verify against the pinned consortium "
        f"'{ORIGIN}': checkpoint.signatures: the checkpoint has 0 valid member signatures"
    )
    assert "expected signatures by the pinned consortium's keys node-a+" in message


def test_a_receipt_below_the_pinned_quorum_is_refused(
    served: tuple[ReceiptService, grpc.Channel],
) -> None:
    service, channel = served
    service.bundle = receipt(MEMBERS[:1]).replace('"quorum": 2', '"quorum": 1')
    with pytest.raises(VerificationError, match=r"has 1 valid member signature .*quorum is 2"):
        client(channel).receipt(ENTRY_ID)


def test_a_genuine_receipt_for_another_entry_is_refused(
    served: tuple[ReceiptService, grpc.Channel],
) -> None:
    service, channel = served
    service.bundle = receipt(MEMBERS[:2], leaf=3)
    with pytest.raises(
        VerificationError,
        match=f"expected the receipt to prove entry {ENTRY_ID}, got a receipt for "
        r"\['00000000-0000-4000-8000-000000000003'\]",
    ):
        client(channel).receipt(ENTRY_ID)


def test_something_that_is_no_bundle_is_refused(
    served: tuple[ReceiptService, grpc.Channel],
) -> None:
    service, channel = served
    service.bundle = '{"format": "not-a-bundle"}'
    with pytest.raises(VerificationError, match="is not an evidence bundle"):
        client(channel).receipt(ENTRY_ID)


def test_the_client_needs_a_pinned_consortium(
    served: tuple[ReceiptService, grpc.Channel],
) -> None:
    _, channel = served
    with pytest.raises(InvalidInputError, match="expected the pinned consortium as a Consortium"):
        HospitalClient(
            channel,
            "hospital-a",
            "hospital-a#1",
            HOSPITAL_KEY,
            TAG_KEY,
            consortium=None,  # type: ignore[arg-type]
        )
