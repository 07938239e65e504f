"""Anchoring for hospitals: build and sign RECORD entries, send them, wait for receipts, verify.

    consortium = parse_consortium(Path("consortium.json").read_bytes())   # the file you hold
    client = HospitalClient(
        channel, "hospital-a", "hospital-a#1", signing_key, tag_key, consortium=consortium
    )
    version = client.record_version("rec-1", 1, fhir_resource, subject_id="pt-…")
    promise = client.anchor([version])[0]
    receipt = client.receipt(promise.entry_id, wait=True)   # an evidence bundle, verified

Receipts are verified against the consortium the hospital pins (its own copy of the consortium
file), never against the keys a receipt carries: the service, or anyone between, could sign a
receipt with keys of its own making and list those.

The hospital keeps, per version, the document and ``version.commitment.salt`` (secret): they are
what later proves the version (``verify``) and what erasure deletes. A batch of versions is
signed with one signature over the RFC 9162 root of the batch (``EntrySigner.sign_batch``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp

from chain.consortium import ConsortiumConfig
from chain.entry import EntrySigner, new_entry_id
from chain.errors import InvalidInputError, VerificationError
from chain.evidence import parse_bundle, verify_against_consortium
from chain.tags import record_tag, subject_tag
from sdk.commitments import Commitment, canonical_json, commit
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

#: Records per AnchorRecords message (the service's limit).
CHUNK = 1000


@dataclass(frozen=True)
class RecordVersionDraft:
    """One record version ready to sign: the facts, the commitment and its salt."""

    record_id: str
    version: int
    action: int
    commitment: Commitment
    subject_tag: bytes
    previous_commitment: bytes = b""
    author_practitioner_id: str = ""
    reason_code: str = "clinical-update"
    reason_text: str = ""

    def body(self, organization_id: str, tag_key: bytes, now: datetime) -> bytes:
        """The serialized EntryBody of this version's RECORD entry."""
        stamp = Timestamp()
        stamp.FromDatetime(now)
        references = (
            [
                entry_pb2.EntryReference(
                    kind=entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION,
                    commitment=self.previous_commitment,
                )
            ]
            if self.previous_commitment
            else []
        )
        return entry_pb2.EntryBody(
            entry_id=new_entry_id(),
            kind=common_pb2.ENTRY_KIND_RECORD,
            submitter_id=organization_id,
            time=stamp,
            commitment=self.commitment.value,
            subject_tag=self.subject_tag,
            references=references,
            record=entry_pb2.RecordDetail(
                record_tag=record_tag(tag_key, organization_id, self.record_id),
                version=self.version,
                action=self.action,  # type: ignore[arg-type]
                author_ref=self.author_practitioner_id,
                reason_code=self.reason_code,
            ),
        ).SerializeToString()

    def request(self, signed_entry: bytes) -> pb.AnchorRecordRequest:
        """The AnchorRecordRequest carrying ``signed_entry`` (this version's, signed)."""
        return pb.AnchorRecordRequest(
            signed_entry=signed_entry,
            record_id=self.record_id,
            version=self.version,
            action=self.action,  # type: ignore[arg-type]
            commitment=self.commitment.value,
            subject_tag=self.subject_tag,
            previous_version_commitment=self.previous_commitment,
            author_practitioner_id=self.author_practitioner_id,
            reason_code=self.reason_code,
            reason_text=self.reason_text,
        )


def check_receipt(bundle_json: str, entry_id: str, consortium: ConsortiumConfig) -> None:
    """Check a receipt offline: an evidence bundle that verifies against ``consortium`` (the
    pinned one, never the keys the bundle carries) and proves entry ``entry_id``;
    :class:`VerificationError` saying what failed otherwise."""
    try:
        bundle = parse_bundle(bundle_json)
    except InvalidInputError as exc:
        raise VerificationError(
            f"the receipt for entry {entry_id} is not an evidence bundle: {exc}"
        ) from None
    report = verify_against_consortium(bundle, consortium)
    if not report.ok:
        failed = "; ".join(f"{c.name}: {c.message}" for c in report.failures)
        raise VerificationError(
            f"the receipt for entry {entry_id} does not verify against the pinned consortium "
            f"{consortium.origin!r}: {failed}"
        )
    proved = [e.entry_id for e in report.entries]
    if entry_id not in proved:
        raise VerificationError(
            f"expected the receipt to prove entry {entry_id}, got a receipt for {proved}"
        )


class HospitalClient:
    """A hospital's handle on the anchoring service (an mTLS channel as the hospital).

    ``consortium`` is the pinned consortium (the hospital's own copy of the consortium file,
    parsed with :func:`chain.consortium.parse_consortium`): receipts are checked against its
    member keys, quorum and origin."""

    def __init__(
        self,
        channel: grpc.Channel,
        organization_id: str,
        key_id: str,
        signing_key: Ed25519PrivateKey,
        tag_key: bytes,
        *,
        consortium: ConsortiumConfig,
    ) -> None:
        if not isinstance(consortium, ConsortiumConfig):
            raise InvalidInputError(
                "expected the pinned consortium as a ConsortiumConfig, got "
                f"{type(consortium).__name__}"
            )
        self.organization_id = organization_id
        self.consortium = consortium
        self.channel = channel
        self._stub = anchoring_service_pb2_grpc.AnchoringServiceStub(channel)
        self._signer = EntrySigner(key_id, signing_key)
        self._tag_key = tag_key

    def record_version(
        self,
        record_id: str,
        version: int,
        document: bytes | Any,
        *,
        subject_id: str,
        action: int | None = None,
        previous: RecordVersionDraft | None = None,
        previous_commitment: bytes = b"",
        author_practitioner_id: str = "",
        reason_code: str = "clinical-update",
        reason_text: str = "",
    ) -> RecordVersionDraft:
        """A draft for ``document`` (bytes, or a JSON value such as a FHIR resource, which is
        canonicalized with RFC 8785) with a fresh salt. Versions after the first name version
        - 1: its draft (``previous``) or its anchored commitment (``previous_commitment``, e.g.
        from :meth:`provenance`)."""
        if previous is not None and previous_commitment:
            raise ValueError("expected previous or previous_commitment, got both")
        raw = document if isinstance(document, bytes) else canonical_json(document)
        return RecordVersionDraft(
            record_id=record_id,
            version=version,
            action=action
            if action is not None
            else (
                common_pb2.RECORD_ACTION_CREATE if version == 1 else common_pb2.RECORD_ACTION_AMEND
            ),
            commitment=commit(raw),
            subject_tag=subject_tag(self._tag_key, subject_id),
            previous_commitment=previous.commitment.value if previous else previous_commitment,
            author_practitioner_id=author_practitioner_id,
            reason_code=reason_code,
            reason_text=reason_text,
        )

    def sign(self, drafts: Sequence[RecordVersionDraft]) -> list[pb.AnchorRecordRequest]:
        """Requests with signed entries: one signature per chunk of up to 1,000 versions."""
        now = datetime.now(UTC)
        requests: list[pb.AnchorRecordRequest] = []
        for start in range(0, len(drafts), CHUNK):
            chunk = drafts[start : start + CHUNK]
            bodies = [d.body(self.organization_id, self._tag_key, now) for d in chunk]
            signed = (
                [self._signer.sign_entry(bodies[0])]
                if len(bodies) == 1
                else self._signer.sign_batch(bodies)
            )
            requests.extend(d.request(e) for d, e in zip(chunk, signed, strict=True))
        return requests

    def anchor(
        self, drafts: Sequence[RecordVersionDraft], timeout: float = 60.0
    ) -> list[pb.AnchorRecordResult]:
        """Sign and anchor ``drafts`` through one AnchorRecords stream; one result per draft."""
        return self.anchor_signed(self.sign(drafts), timeout)

    def anchor_signed(
        self, requests: Sequence[pb.AnchorRecordRequest], timeout: float = 60.0
    ) -> list[pb.AnchorRecordResult]:
        """Anchor requests from :meth:`sign` through one AnchorRecords stream."""

        def chunks() -> Iterator[pb.AnchorRecordsRequest]:
            for start in range(0, len(requests), CHUNK):
                yield pb.AnchorRecordsRequest(records=requests[start : start + CHUNK])

        return list(self._stub.AnchorRecords(chunks(), timeout=timeout).results)

    def anchor_one(self, draft: RecordVersionDraft, timeout: float = 10.0) -> pb.PromiseReceipt:
        """Sign and anchor one version; its promise receipt (grpc errors propagate)."""
        [request] = self.sign([draft])
        return self._stub.AnchorRecord(request, timeout=timeout).receipt

    def receipt(self, entry_id: str, *, wait: bool = True, timeout: float = 35.0) -> str:
        """The entry's evidence bundle (JSON), checked offline here against the pinned
        consortium; VerificationError if it does not verify or proves another entry, '' if the
        entry is not sealed (yet)."""
        response = self._stub.GetReceipt(
            pb.GetReceiptRequest(entry_id=entry_id, wait=wait), timeout=timeout
        )
        if not response.evidence.json:
            return ""
        check_receipt(response.evidence.json, entry_id, self.consortium)
        return response.evidence.json

    def provenance(self, record_id: str, timeout: float = 10.0) -> pb.GetProvenanceResponse:
        """Every anchored version of one of this hospital's records (NOT_FOUND if none)."""
        return self._stub.GetProvenance(
            pb.GetProvenanceRequest(organization_id=self.organization_id, record_id=record_id),
            timeout=timeout,
        )

    def verify(
        self, record_id: str, version: int, document: bytes | Any, salt: bytes
    ) -> pb.VerifyRecordResponse:
        """Ask whether ``document`` (with its salt) is what was anchored for that version."""
        raw = document if isinstance(document, bytes) else canonical_json(document)
        return self._stub.VerifyRecord(
            pb.VerifyRecordRequest(
                organization_id=self.organization_id,
                record_id=record_id,
                version=version,
                commitment=commit(raw, salt).value,
            ),
            timeout=10,
        )
