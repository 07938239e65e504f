"""The anchoring service end to end, through the hospital SDK, on the running platform: anchors,
retries, conflicts, receipts that verify offline, provenance and its FHIR export, verification,
a batch of 10,000, and the bad-input matrix."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from fhir.resources.R4B.bundle import Bundle
from typer.testing import CliRunner

from chain.node.setup import ConsortiumFiles
from cli.main import app
from sdk.anchoring import HospitalClient, RecordVersionDraft
from sdk.commitments import canonical_json
from services.common.caller import Role
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc
from swiftchain.common.v1 import common_pb2
from tests.e2e.platform import Platform, Principal

pytestmark = pytest.mark.e2e

SUBJECT = "pt-AAAAAAAAAAAAAAAAAAAAAA"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def fhir_observation(value: float) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": value, "unit": "beats/minute"},
    }


@pytest.fixture(scope="module")
def anchoring_hospital(platform: Platform) -> Principal:
    hospital = platform.register_organization("anchoring hospital", Role.HOSPITAL, "hospital-m")
    platform.wait_key_active(hospital, hospital.id, "hospital-m#1")
    return hospital


def client_for(
    platform: Platform, hospital: Principal, key_id: str | None = None
) -> HospitalClient:
    assert hospital.signing_key is not None
    tag_key = ConsortiumFiles(platform.stack.root / "consortium").load_tag_key()
    return HospitalClient(
        platform.channel(hospital, "anchoring"),
        hospital.id,
        key_id or f"{hospital.id}#1",
        hospital.signing_key,
        tag_key,
    )


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_anchor_retry_conflict_and_a_receipt_that_verifies_offline(
    platform: Platform, anchoring_hospital: Principal, tmp_path: Path
) -> None:
    client = client_for(platform, anchoring_hospital)
    document = fhir_observation(72)
    draft = client.record_version("obs-1", 1, document, subject_id=SUBJECT)
    [request] = client.sign([draft])
    stub = anchoring_service_pb2_grpc.AnchoringServiceStub(
        platform.channel(anchoring_hospital, "anchoring")
    )
    promise = stub.AnchorRecord(request, timeout=10).receipt
    assert promise.entry_id and promise.seal_due_time.seconds > 0
    again = stub.AnchorRecord(request, timeout=10).receipt
    assert (again.entry_id, again.ordering_offset) == (promise.entry_id, promise.ordering_offset)
    other = client.record_version("obs-1", 1, fhir_observation(99), subject_id=SUBJECT)
    code, details = code_of(lambda: client.anchor_one(other))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "another commitment" in details

    bundle = client.receipt(promise.entry_id, wait=True)
    assert bundle, "the entry was not sealed within the wait"
    receipt = tmp_path / "receipt.json"
    receipt.write_text(bundle)
    document_file = tmp_path / "observation.json"
    document_file.write_bytes(canonical_json(document))
    verified = CliRunner().invoke(
        app,
        [
            "verify",
            str(receipt),
            "--document",
            str(document_file),
            "--salt",
            draft.commitment.salt.hex(),
        ],
    )
    assert verified.exit_code == 0, verified.output
    assert "commitment" in verified.output.lower()


def test_provenance_of_five_versions_with_proofs_and_fhir(
    platform: Platform, anchoring_hospital: Principal
) -> None:
    client = client_for(platform, anchoring_hospital)
    drafts: list[RecordVersionDraft] = []
    actions = [
        common_pb2.RECORD_ACTION_CREATE,
        common_pb2.RECORD_ACTION_AMEND,
        common_pb2.RECORD_ACTION_CORRECT,
        common_pb2.RECORD_ACTION_AMEND,
        common_pb2.RECORD_ACTION_AMEND,
    ]
    for version, action in enumerate(actions, start=1):
        drafts.append(
            client.record_version(
                "obs-5",
                version,
                fhir_observation(60 + version),
                subject_id=SUBJECT,
                action=action,
                previous=drafts[-1] if drafts else None,
                reason_text="checked twice" if version == 3 else "",
            )
        )
    results = client.anchor(drafts)
    assert [r.WhichOneof("outcome") for r in results] == ["receipt"] * 5
    assert client.receipt(results[-1].receipt.entry_id, wait=True)
    stub = anchoring_service_pb2_grpc.AnchoringServiceStub(
        platform.channel(anchoring_hospital, "anchoring")
    )
    provenance = stub.GetProvenance(
        pb.GetProvenanceRequest(
            organization_id=anchoring_hospital.id, record_id="obs-5", include_evidence=True
        ),
        timeout=30,
    )
    assert [v.version for v in provenance.versions] == [1, 2, 3, 4, 5]
    assert [v.action for v in provenance.versions] == actions
    assert provenance.versions[2].reason_text == "checked twice"
    assert all(v.proof.state == common_pb2.ENTRY_STATE_SEALED for v in provenance.versions)
    evidence = json.loads(provenance.evidence.json)
    assert len(evidence["entries"]) == 5

    exported = stub.ExportProvenance(
        pb.ExportProvenanceRequest(organization_id=anchoring_hospital.id, record_id="obs-5"),
        timeout=30,
    )
    bundle = Bundle.model_validate_json(exported.fhir_json)
    entries = bundle.entry or []
    assert len(entries) == 5
    assert {type(e.resource).__name__ for e in entries} == {"Provenance"}

    # Verification against what was anchored.
    match = client.verify("obs-5", 2, fhir_observation(62), drafts[1].commitment.salt)
    mismatch = client.verify("obs-5", 2, fhir_observation(0), drafts[1].commitment.salt)
    unknown = client.verify("obs-5", 9, fhir_observation(62), drafts[1].commitment.salt)
    assert (match.result, mismatch.result, unknown.result) == (
        pb.VERIFY_RESULT_MATCH,
        pb.VERIFY_RESULT_MISMATCH,
        pb.VERIFY_RESULT_UNKNOWN,
    )
    assert match.evidence.json


def test_a_batch_of_ten_thousand_is_anchored_and_sealed(
    platform: Platform, anchoring_hospital: Principal
) -> None:
    client = client_for(platform, anchoring_hospital)
    drafts = [
        client.record_version(f"bulk-{i}", 1, f"document {i}".encode(), subject_id=SUBJECT)
        for i in range(10_000)
    ]
    began = time.monotonic()
    results = client.anchor(drafts, timeout=300)
    accepted = time.monotonic() - began
    assert sum(1 for r in results if r.WhichOneof("outcome") == "receipt") == 10_000, [
        r.error for r in results if r.WhichOneof("outcome") == "error"
    ][:3]
    assert client.receipt(results[-1].receipt.entry_id, wait=True), (
        f"not sealed (accepted in {accepted:.1f}s)"
    )


def test_bad_input_gets_the_right_status_and_nothing_is_written(
    platform: Platform, anchoring_hospital: Principal
) -> None:
    client = client_for(platform, anchoring_hospital)
    stub = anchoring_service_pb2_grpc.AnchoringServiceStub(
        platform.channel(anchoring_hospital, "anchoring")
    )
    draft = client.record_version("bad-1", 1, b"doc", subject_id=SUBJECT)
    [good] = client.sign([draft])

    def altered(**changes: object) -> pb.AnchorRecordRequest:
        request = pb.AnchorRecordRequest()
        request.CopyFrom(good)
        for name, value in changes.items():
            setattr(request, name, value)
        return request

    bad_signature = bytearray(good.signed_entry)
    bad_signature[-3] ^= 0x01
    other_hospital = client_for(platform, platform.hospital, "hospital-a#1")
    [foreign] = other_hospital.sign(
        [other_hospital.record_version("bad-1", 1, b"doc", subject_id=SUBJECT)]
    )
    gap_draft = client.record_version("bad-2", 3, b"doc", subject_id=SUBJECT, previous=draft)
    [gap] = client.sign([gap_draft])
    cases = [
        (
            pb.AnchorRecordRequest(record_id="bad-1", version=1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expected the signed RECORD entry",
        ),
        (
            altered(commitment=b"\x01" * 31),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expected commitment to equal",
        ),
        (altered(record_id=""), grpc.StatusCode.INVALID_ARGUMENT, "expected a record id of 1-256"),
        (altered(signed_entry=bytes(bad_signature)), grpc.StatusCode.INVALID_ARGUMENT, "signature"),
        (foreign, grpc.StatusCode.PERMISSION_DENIED, "submitted by 'hospital-a'"),
        (gap, grpc.StatusCode.FAILED_PRECONDITION, "follows no anchored version 2"),
    ]
    for request, want, message in cases:
        code, details = code_of(functools.partial(stub.AnchorRecord, request, timeout=10))
        assert (code, message in details) == (want, True), (message, code, details)
    oversized = pb.AnchorRecordsRequest(records=[good] * 1001)
    code, details = code_of(lambda: stub.AnchorRecords(iter([oversized]), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 1000 records" in details
    unknown = client.verify("bad-1", 1, b"doc", draft.commitment.salt)
    assert unknown.result == pb.VERIFY_RESULT_UNKNOWN


def test_another_hospital_cannot_see_a_receipt(
    platform: Platform, anchoring_hospital: Principal
) -> None:
    client = client_for(platform, anchoring_hospital)
    promise = client.anchor_one(client.record_version("private-1", 1, b"x", subject_id=SUBJECT))
    other = anchoring_service_pb2_grpc.AnchoringServiceStub(
        platform.channel(platform.parties["other hospital"], "anchoring")
    )
    code, _ = code_of(
        lambda: other.GetReceipt(pb.GetReceiptRequest(entry_id=promise.entry_id), timeout=10)
    )
    assert code == grpc.StatusCode.NOT_FOUND
    regulator = anchoring_service_pb2_grpc.AnchoringServiceStub(
        platform.channel(platform.parties["regulator"], "anchoring")
    )
    seen = regulator.GetReceipt(pb.GetReceiptRequest(entry_id=promise.entry_id), timeout=10)
    assert seen.promise.entry_id == promise.entry_id
