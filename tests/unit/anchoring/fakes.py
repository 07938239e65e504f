"""Shared pieces of the anchoring unit tests: a fake store, keys, and the SDK making entries."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.consortium import ConsortiumConfig, GenesisKey, Member
from chain.note import generate_key
from cli.identity_files import raw_public
from sdk.anchoring import HospitalClient, RecordVersionDraft
from services.anchoring.domain import AnchorRequest, RecordAnchoring, RecordVersion
from services.anchoring.domain.tracking import SealTracker
from services.anchoring.servicer import AnchoringServicer
from services.platform.events import envelope
from services.platform.known_keys import KnownKeys
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TAG_KEY = bytes(range(32))
SUBJECT = "pt-AAAAAAAAAAAAAAAAAAAAAA"


class FakeStore:
    def __init__(self) -> None:
        self.versions: dict[tuple[str, str, int], RecordVersion] = {}
        self.events: list[events_pb2.EventEnvelope] = []
        self.position = 0
        self.log_state_writes = 0
        #: The next set_log_state fails, as a store that is away would.
        self.fail_next_log_state = False

    def get_many(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], RecordVersion]:
        return {k: copy.copy(self.versions[k]) for k in keys if k in self.versions}

    def insert_new(self, versions: Sequence[RecordVersion]) -> list[RecordVersion]:
        raced = [self.versions[v.key] for v in versions if v.key in self.versions]
        for version in versions:
            self.versions.setdefault(version.key, copy.copy(version))
        return raced

    def set_ordered(
        self, ordered: Sequence[RecordVersion], events: Sequence[events_pb2.EventEnvelope]
    ) -> None:
        for version in ordered:
            self.versions[version.key].ordering_offset = version.ordering_offset
        self.events.extend(events)

    def unordered(self, older_than: datetime) -> list[RecordVersion]:
        return [v for v in self.versions.values() if v.ordering_offset is None]

    def set_log_state(
        self, versions: Sequence[RecordVersion], events: Sequence[events_pb2.EventEnvelope]
    ) -> None:
        if self.fail_next_log_state:
            self.fail_next_log_state = False
            raise RuntimeError("the store is away")
        self.log_state_writes += 1
        for version in versions:
            self.versions[version.key] = copy.copy(version)
        self.events.extend(events)

    def unsettled(self) -> list[RecordVersion]:
        return [
            copy.copy(v)
            for v in self.versions.values()
            if v.sealed_tree_size is None and not v.rejection_reason
        ]

    def log_position(self) -> int:
        return self.position

    def set_log_position(self, tree_size: int) -> None:
        self.position = tree_size

    def by_entry(self, entry_id: str) -> RecordVersion | None:
        return next((v for v in self.versions.values() if v.entry_id == entry_id), None)

    def of_record(self, organization_id: str, record_id: str) -> list[RecordVersion]:
        return sorted(
            (v for v in self.versions.values() if v.key[:2] == (organization_id, record_id)),
            key=lambda v: v.version,
        )


HOSPITAL_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def key_registered(owner: str, key: Ed25519PrivateKey) -> events_pb2.EventEnvelope:
    """identity's KeyRegistered event for ``owner``'s first key."""
    event = events_pb2.KeyRegistered(
        owner_id=owner,
        key_id=f"{owner}#1",
        public_key=raw_public(key),
        allowed_kinds=[common_pb2.ENTRY_KIND_RECORD],
    )
    return envelope(event, producer="identity", subject=owner, now=NOW)


def known_keys(*, registered: bool = True, grace: float = 0.0) -> KnownKeys:
    keys = KnownKeys([GenesisKey("registrar", "identity", ("KEY",), bytes(32 * [7]))], grace)
    if registered:
        for owner, key in (("hospital-a", HOSPITAL_KEY), ("hospital-b", OTHER_KEY)):
            keys.apply(key_registered(owner, key))
    return keys


class NoChannel:
    def unary_unary(self, *args: object, **kwargs: object) -> None:
        return None

    unary_stream = stream_unary = stream_stream = unary_unary


#: The consortium the SDK clients here pin (they ask for no receipt).
CONSORTIUM = ConsortiumConfig(
    origin="test", quorum=1, members=(Member("node-a", generate_key("node-a")[1]),), genesis_keys=()
)


def sdk(owner: str = "hospital-a", key: Ed25519PrivateKey = HOSPITAL_KEY) -> HospitalClient:
    return HospitalClient(
        NoChannel(),  # type: ignore[arg-type]
        owner,
        f"{owner}#1",
        key,
        TAG_KEY,
        consortium=CONSORTIUM,
    )


def request(message: pb.AnchorRecordRequest) -> AnchorRequest:
    return AnchorRequest(
        message.signed_entry,
        message.record_id,
        message.version,
        message.action,
        message.commitment,
        message.subject_tag,
        message.previous_version_commitment,
        message.author_practitioner_id,
        message.reason_code,
        message.reason_text,
    )


def drafts(count: int, record_id: str = "rec-1") -> list[RecordVersionDraft]:
    client = sdk()
    made: list[RecordVersionDraft] = []
    for version in range(1, count + 1):
        made.append(
            client.record_version(
                record_id,
                version,
                f"v{version}".encode(),
                subject_id=SUBJECT,
                previous=made[-1] if made else None,
            )
        )
    return made


def servicer_on(store: FakeStore, writer: object) -> AnchoringServicer:
    """The anchoring servicer over ``store``, ordering with ``writer`` (a log writer's
    ``write``), with no chain node behind it."""
    _, verifier = generate_key("node-a")
    return AnchoringServicer(
        anchoring=RecordAnchoring(store, known_keys(), TAG_KEY),
        tracker=SealTracker(store),
        writer=writer,  # type: ignore[arg-type]
        chain=NoChannel(),  # type: ignore[arg-type]
        consortium=ConsortiumConfig(
            origin="test", quorum=1, members=(Member("node-a", verifier),), genesis_keys=()
        ),
        clock=lambda: NOW,
    )
