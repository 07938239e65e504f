"""The anchoring service end to end, through the hospital SDK, on the running platform: anchors,
retries, conflicts, receipts that verify offline, provenance and its FHIR export, verification,
a batch of 10,000, and the bad-input matrix."""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from fhir.resources.R4B.bundle import Bundle
from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner, Result

from chain.evidence import parse_bundle
from cli.main import app
from sdk.anchoring import HospitalClient, RecordVersionDraft
from sdk.commitments import canonical_json
from services.platform.caller import Role
from services.platform.consortium_files import ConsortiumFiles
from services.platform.events import decode
from services.platform.topics import RECORDS_EVENTS_TOPIC
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
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
    return platform.hospital_client(hospital, key_id)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def record_events(
    platform: Platform,
    entry_ids: set[str],
    kinds: set[str],
    client: HospitalClient,
    wait_seconds: float = 60.0,
) -> dict[str, set[str]]:
    """entry id -> which of ``kinds`` (RecordAnchored, RecordSealed, ...) ``records.events.v1``
    holds for it, read from the beginning until every entry has all of them or
    ``wait_seconds`` passed; every event read is checked to be about ``client``'s hospital."""
    consumer = KafkaConsumer(
        **platform.stack.kafka.admin.client_options(),
        bootstrap_servers=platform.stack.kafka.bootstrap,
        consumer_timeout_ms=1000,
    )
    partitions = [
        TopicPartition(RECORDS_EVENTS_TOPIC, p)
        for p in consumer.partitions_for_topic(RECORDS_EVENTS_TOPIC) or ()
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline and any(seen.get(e, set()) != kinds for e in entry_ids):
        for message in consumer:
            event = decode(message.value)
            kind = event.type.rsplit(".", 1)[1]
            if kind not in kinds:
                continue
            payload = getattr(events_pb2, kind)()
            event.payload.Unpack(payload)
            if payload.entry_id in entry_ids:
                assert event.subject == client.organization_id
                seen.setdefault(payload.entry_id, set()).add(kind)
    consumer.close()
    return seen


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
            "--consortium",
            str(platform.consortium.config_path),
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


def test_every_version_of_a_streamed_thousand_is_announced_sealed(
    platform: Platform, anchoring_hospital: Principal
) -> None:
    """Nothing accepted is lost: each of 1,000 versions anchored through one AnchorRecords
    stream gets its RecordSealed, as the service itself learns of the seals (no receipt is
    asked for). Their chunk document is written by the checkpoint follower, one update per
    checkpoint, while the outbox relay removes what it published; on FerretDB v1, whose updates
    are a read then a whole-document write, such overlapping updates lost RecordSealed events
    (and the seals with them): 400 of 1,000 in one run here, 96 in one of the benchmark's."""
    client = client_for(platform, anchoring_hospital)
    drafts = [
        client.record_version(f"sealed-{i}", 1, f"document {i}".encode(), subject_id=SUBJECT)
        for i in range(1000)
    ]
    results = client.anchor(drafts, timeout=120)
    entry_ids = {r.receipt.entry_id for r in results if r.WhichOneof("outcome") == "receipt"}
    assert len(entry_ids) == 1000, [r.error for r in results if r.error.message][:3]
    seen = record_events(platform, entry_ids, {"RecordSealed"}, client, wait_seconds=120)
    unsealed = entry_ids - set(seen)
    assert not unsealed, f"{len(unsealed)} of 1000 versions were never announced sealed"


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
    for record_id in ("bad-1", "bad-2"):  # nothing of the refused requests was stored
        code, _ = code_of(
            lambda record_id=record_id: stub.GetProvenance(  # type: ignore[misc]
                pb.GetProvenanceRequest(
                    organization_id=client.organization_id, record_id=record_id
                ),
                timeout=10,
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND, record_id


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


def test_versions_are_sealed_without_being_asked_and_announced_on_the_records_topic(
    platform: Platform, anchoring_hospital: Principal
) -> None:
    client = client_for(platform, anchoring_hospital)
    drafts: list[RecordVersionDraft] = []
    for version in (1, 2, 3):
        drafts.append(
            client.record_version(
                "events-1",
                version,
                fhir_observation(60 + version),
                subject_id=SUBJECT,
                previous=drafts[-1] if drafts else None,
            )
        )
    results = client.anchor(drafts)
    entry_ids = {r.receipt.entry_id for r in results}
    assert len(entry_ids) == 3
    seen = record_events(platform, entry_ids, {"RecordAnchored", "RecordSealed"}, client)
    assert all(seen.get(e) == {"RecordAnchored", "RecordSealed"} for e in entry_ids), seen
    # The seals were recorded by the service itself: provenance says SEALED without a wait.
    stub = anchoring_service_pb2_grpc.AnchoringServiceStub(
        platform.channel(anchoring_hospital, "anchoring")
    )
    provenance = stub.GetProvenance(
        pb.GetProvenanceRequest(organization_id=client.organization_id, record_id="events-1"),
        timeout=10,
    )
    assert [v.proof.state for v in provenance.versions] == [common_pb2.ENTRY_STATE_SEALED] * 3


def anchor_cli(platform: Platform, hospital: Principal, *args: str) -> Result:
    assert hospital.tls_dir is not None
    return CliRunner().invoke(
        app,
        [
            "anchor",
            *args,
            "--org",
            str(hospital.tls_dir),
            "--subject",
            SUBJECT,
            "--tag-key",
            str(ConsortiumFiles(platform.stack.root / "consortium").tag_key_path),
            "--consortium",
            str(ConsortiumFiles(platform.stack.root / "consortium").config_path),
            "--anchoring",
            platform.target("anchoring"),
        ],
    )


def verify_cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["verify", *args])


def test_swiftchain_anchor_anchors_chains_versions_and_writes_a_receipt_that_verifies(
    platform: Platform, anchoring_hospital: Principal, tmp_path: Path
) -> None:
    consortium = ConsortiumFiles(platform.stack.root / "consortium").config_path
    document = tmp_path / "obs-cli.json"
    document.write_text(json.dumps(fhir_observation(64), indent=2))  # not canonical on purpose
    first = anchor_cli(platform, anchoring_hospital, str(document), "--record", "cli-1", "--wait")
    assert first.exit_code == 0, first.output
    anchored = json.loads((tmp_path / "obs-cli.json.anchor.json").read_text())
    assert (anchored["version"], anchored["action"]) == (1, "RECORD_ACTION_CREATE")
    assert anchored["document_form"] == "rfc8785"
    assert (tmp_path / "obs-cli.json.anchor.json").stat().st_mode & 0o777 == 0o600
    receipt = str(tmp_path / "obs-cli.json.receipt.json")
    salt = anchored["salt"]
    proven = verify_cli(
        receipt, "--consortium", str(consortium), "--document", str(document),
        "--canonical-json", "--salt", salt,
    )  # fmt: skip
    assert proven.exit_code == 0, proven.output
    # The file's own bytes are not what was committed (it is committed canonicalized).
    raw = verify_cli(
        receipt, "--consortium", str(consortium), "--document", str(document), "--salt", salt
    )
    assert raw.exit_code == 1, raw.output

    # Without --version the next one is anchored, chained to the previous commitment (the
    # service refuses a wrong chain, so acceptance proves it).
    document.write_text(json.dumps(fhir_observation(65)))
    second = anchor_cli(
        platform, anchoring_hospital, str(document), "--record", "cli-1", "--out",
        str(tmp_path / "v2.json"), "--reason-text", "corrected the reading",
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    assert json.loads((tmp_path / "v2.json").read_text())["version"] == 2

    gap = anchor_cli(platform, anchoring_hospital, str(document), "--record", "cli-1",
                     "--version", "9")  # fmt: skip
    assert gap.exit_code == 1 and "no version 8" in gap.output, gap.output
    missing = anchor_cli(platform, anchoring_hospital, str(tmp_path / "nope.json"),
                         "--record", "cli-2")  # fmt: skip
    assert missing.exit_code == 2 and "no such file" in missing.output, missing.output
    bad_action = anchor_cli(platform, anchoring_hospital, str(document), "--record", "cli-2",
                            "--action", "delete")  # fmt: skip
    assert bad_action.exit_code == 2 and "expected an action" in bad_action.output


def test_erasure_by_crypto_shredding_keeps_the_log_verifiable_and_unlinkable(
    platform: Platform, anchoring_hospital: Principal, tmp_path: Path
) -> None:
    """docs/operations.md "Erasing a record": anchor an ERASE version, delete the document and
    every salt; the log still verifies, and nothing on it leads back to the document."""
    client = client_for(platform, anchoring_hospital)
    document = fhir_observation(120)
    canonical = canonical_json(document)
    created = client.record_version("erase-1", 1, document, subject_id=SUBJECT)
    erased = client.record_version(
        "erase-1",
        2,
        {"resourceType": "Basic", "code": {"text": "erased at the patient's request"}},
        subject_id=SUBJECT,
        action=common_pb2.RECORD_ACTION_ERASE,
        previous=created,
        reason_code="patient-request",
    )
    results = client.anchor([created, erased])
    bundle = client.receipt(results[0].receipt.entry_id, wait=True)
    assert bundle and client.receipt(results[1].receipt.entry_id, wait=True)
    receipt = tmp_path / "receipt.json"
    receipt.write_text(bundle)
    assert client.verify("erase-1", 1, document, created.commitment.salt).result == (
        pb.VERIFY_RESULT_MATCH
    )

    # The hospital deletes the document and the salts of every version: nothing else held them.
    del document, created, erased

    consortium = ConsortiumFiles(platform.stack.root / "consortium").config_path
    still = verify_cli(str(receipt), "--consortium", str(consortium))
    assert still.exit_code == 0, still.output
    provenance = client.provenance("erase-1")
    assert [v.action for v in provenance.versions] == [
        common_pb2.RECORD_ACTION_CREATE,
        common_pb2.RECORD_ACTION_ERASE,
    ]
    assert [v.proof.state for v in provenance.versions] == [common_pb2.ENTRY_STATE_SEALED] * 2

    # Whoever holds the document now cannot show it is the anchored one: any salt they pick
    # gives another commitment.
    for _ in range(3):
        guess = client.verify("erase-1", 1, canonical, secrets.token_bytes(32))
        assert guess.result == pb.VERIFY_RESULT_MISMATCH
    # And the log itself holds nothing derived from the document without a salt.
    entry = parse_bundle(bundle).entries[0].entry
    for derived in (canonical, hashlib.sha256(canonical).digest(), b"Observation"):
        assert derived not in entry, derived
