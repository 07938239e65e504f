"""The audit service against the real stack: who sees which trail, a regulator who cannot change
anything, pages and streams, evidence with a consistency proof, the FHIR AuditEvent export, bad
input, and a SIGKILL in the middle of the event stream."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pymongo
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from typer.testing import CliRunner

from chain.evidence import parse_bundle, verify_bundle
from chain.tags import subject_tag
from cli.main import app as cli_app
from devstack.demo import Demo, DemoResult
from devstack.parties import Principal
from swiftchain.anchoring.v1 import anchoring_service_pb2 as anpb
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc
from swiftchain.audit.v1 import audit_service_pb2 as pb
from swiftchain.audit.v1 import audit_service_pb2_grpc
from swiftchain.chain.v1 import chain_service_pb2 as chpb
from swiftchain.chain.v1 import chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import consent_service_pb2 as cpb
from swiftchain.consent.v1 import consent_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as ipb
from tests.e2e.platform import Platform, wait_for

RECORD = common_pb2.ENTRY_KIND_RECORD
ACCESS = common_pb2.ENTRY_KIND_ACCESS
CONSENT = common_pb2.ENTRY_KIND_CONSENT
Items = pymongo.collection.Collection[dict[str, Any]]


class Scenario:
    """The demo's world, run once for this module, and stubs for its parties."""

    def __init__(self, platform: Platform, out: Path) -> None:
        self.platform = platform
        self.demo = Demo(platform, out, say=lambda line: None)
        self.result: DemoResult = self.demo.run_all()

    def party(self, label: str) -> Principal:
        return self.demo.principals[label]

    def audit(self, caller: Principal) -> audit_service_pb2_grpc.AuditServiceStub:
        return audit_service_pb2_grpc.AuditServiceStub(self.platform.channel(caller, "audit"))

    def metadata(self, caller: Principal) -> tuple[tuple[str, str], ...]:
        return self.platform.bearer(caller) if caller.token else ()

    def trail(self, caller: Principal, **filter_fields: object) -> list[pb.TrailItem]:
        items: list[pb.TrailItem] = []
        token = ""
        while True:
            page = self.audit(caller).QueryTrail(
                pb.QueryTrailRequest(
                    filter=pb.TrailFilter(**filter_fields),  # type: ignore[arg-type]
                    page_size=1000,
                    page_token=token,
                ),
                metadata=self.metadata(caller),
                timeout=30,
            )
            items.extend(page.items)
            token = page.next_page_token
            if not token:
                return items


@pytest.fixture(scope="module")
def scenario(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return Scenario(platform, tmp_path_factory.mktemp("audit"))


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        assert error.details(), "a refusal says why"
        return error.code()
    raise AssertionError("the call succeeded")


def test_a_patient_sees_only_their_own_trail(scenario: Scenario) -> None:
    patient = scenario.party("patient")
    mine = scenario.trail(patient, patient_subject_id=patient.id)
    assert {i.entry_id for i in mine} == {i.entry_id for i in scenario.result.trail}
    assert {i.patient_subject_id for i in mine} == {patient.id}
    other = scenario.platform.parties["patient"]  # a patient of the shared platform
    assert other.id != patient.id
    assert (
        code_of(lambda: scenario.trail(patient, patient_subject_id=other.id))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # Nor any of the regulator's tools.
    stub = scenario.audit(patient)
    assert (
        code_of(
            lambda: stub.CheckCompleteness(
                pb.CheckCompletenessRequest(patient_subject_id=patient.id),
                metadata=scenario.metadata(patient),
                timeout=10,
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_a_hospital_sees_only_its_own_accesses_and_records(scenario: Scenario) -> None:
    patient = scenario.result.patient_subject_id
    a, b, c = (scenario.party(f"hospital {x}") for x in "abc")
    # A hospital asks about its own doings (organization_id = itself), here for one patient.
    a_items = scenario.trail(a, organization_id=a.id, patient_subject_id=patient)
    assert sorted(i.entry_id for i in a_items) == sorted(scenario.result.record_entry_ids)
    b_items = scenario.trail(b, organization_id=b.id, patient_subject_id=patient)
    for item in b_items:  # B's own accesses, and the consents that grant to B
        assert item.actor_organization_id == b.id or (
            item.kind == CONSENT and item.consent.grantee_organization_id == b.id
        ), item
    assert {scenario.result.access_entry_ids[k] for k in ("b permitted", "b after revoke")} <= {
        i.entry_id for i in b_items
    }
    assert set(scenario.result.consent_entry_ids) <= {i.entry_id for i in b_items}
    c_items = scenario.trail(c, organization_id=c.id)
    assert {i.entry_id for i in c_items} >= {
        scenario.result.access_entry_ids[k] for k in ("c denied", "c break-glass")
    }
    assert all(i.actor_organization_id == c.id for i in c_items)
    assert (
        code_of(lambda: scenario.trail(c, organization_id=b.id))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    for call in (
        lambda: scenario.audit(c).ListFlags(pb.ListFlagsRequest(), timeout=10),
        lambda: scenario.audit(c).ExportAuditEvents(pb.ExportAuditEventsRequest(), timeout=10),
        lambda: scenario.audit(c).ReviewFlag(
            pb.ReviewFlagRequest(
                flag_id=scenario.result.flags[0].flag_id,
                outcome=pb.REVIEW_OUTCOME_FALSE_POSITIVE,
                note="not me",
            ),
            timeout=10,
        ),
    ):
        assert code_of(call) == grpc.StatusCode.PERMISSION_DENIED


def test_a_regulator_cannot_modify_anything(scenario: Scenario) -> None:
    regulator = scenario.party("regulator")
    platform = scenario.platform
    patient = scenario.result.patient_subject_id
    anchoring = anchoring_service_pb2_grpc.AnchoringServiceStub(
        platform.channel(regulator, "anchoring")
    )
    consent = consent_service_pb2_grpc.ConsentServiceStub(platform.channel(regulator, "consent"))
    identity = platform.identity(regulator)
    attempts: dict[str, Callable[[], object]] = {
        "anchor a record": lambda: anchoring.AnchorRecord(
            anpb.AnchorRecordRequest(signed_entry=b"x"), timeout=10
        ),
        "grant consent": lambda: consent.GrantConsent(cpb.GrantConsentRequest(), timeout=10),
        "revoke consent": lambda: consent.RevokeConsent(cpb.RevokeConsentRequest(), timeout=10),
        "ask for access": lambda: consent.CheckAccess(
            cpb.CheckAccessRequest(
                patient_subject_id=patient,
                data_category="laboratory",
                purpose="TREAT",
                request_id=str(uuid.uuid4()),
            ),
            timeout=10,
        ),
        "break the glass": lambda: consent.BreakGlass(cpb.BreakGlassRequest(), timeout=10),
        "register an organization": lambda: identity.RegisterOrganization(
            ipb.RegisterOrganizationRequest(organization_id="rogue"), timeout=10
        ),
        "register a patient": lambda: identity.RegisterPatient(
            ipb.RegisterPatientRequest(hospital_reference="x"), timeout=10
        ),
    }
    refused = {what: code_of(call) for what, call in attempts.items()}
    assert refused == dict.fromkeys(attempts, grpc.StatusCode.PERMISSION_DENIED)
    # What it may do is read, and review flags (which changes only the audit service's notes).
    assert scenario.trail(regulator, patient_subject_id=patient)


def test_pages_and_the_stream_hold_the_same_trail(scenario: Scenario) -> None:
    regulator = scenario.party("regulator")
    patient = scenario.result.patient_subject_id
    stub = scenario.audit(regulator)
    paged: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stub.QueryTrail(
            pb.QueryTrailRequest(
                filter=pb.TrailFilter(patient_subject_id=patient), page_size=2, page_token=token
            ),
            timeout=10,
        )
        assert len(page.items) <= 2
        paged.extend(i.entry_id for i in page.items)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    streamed = [
        m.item.entry_id
        for m in stub.StreamTrail(
            pb.StreamTrailRequest(filter=pb.TrailFilter(patient_subject_id=patient)), timeout=30
        )
    ]
    assert pages == 5 and len(paged) == 9
    assert paged == streamed == [i.entry_id for i in scenario.result.trail]
    # By kind and time range.
    records = scenario.trail(regulator, patient_subject_id=patient, kinds=[RECORD])
    assert sorted(i.entry_id for i in records) == sorted(scenario.result.record_entry_ids)
    later = scenario.result.trail[-1].time
    recent = scenario.trail(regulator, patient_subject_id=patient, start_time=later)
    assert recent and all(i.time.ToDatetime() >= later.ToDatetime() for i in recent)


def test_swiftchain_audit_commands(scenario: Scenario, tmp_path: Path) -> None:
    runner = CliRunner()
    regulator = scenario.party("regulator")
    assert regulator.tls_dir is not None
    to_audit = ["--audit", scenario.platform.target("audit"), "--tls-dir", str(regulator.tls_dir)]
    patient = scenario.result.patient_subject_id
    expected = [i.entry_id for i in scenario.result.trail]

    listed = runner.invoke(cli_app, ["audit", "trail", "--patient", patient, *to_audit, "--json"])
    assert listed.exit_code == 0, listed.output
    ids = [json.loads(line)["entryId"] for line in listed.output.splitlines()]
    assert ids[: len(expected)] == expected  # later tests of this module add entries
    wide = {"COLUMNS": "220"}  # a table for people, on a terminal wide enough for one line each
    table = runner.invoke(cli_app, ["audit", "trail", "--patient", patient, *to_audit], env=wide)
    assert table.exit_code == 0 and f"{len(ids)} items" in table.output, table.output
    assert "sealed in" in table.output and "break-glass" in table.output

    evidence = tmp_path / "evidence.json"
    exported = runner.invoke(
        cli_app, ["audit", "export", "--patient", patient, *to_audit, "--out", str(evidence)]
    )
    assert exported.exit_code == 0, exported.output
    report = verify_bundle(parse_bundle(evidence.read_text()))
    assert report.ok, report.failures
    assert set(expected) <= {e.entry_id for e in report.entries}
    verified = runner.invoke(
        cli_app,
        ["verify", str(evidence), "--consortium", str(scenario.platform.consortium.config_path)],
    )
    assert verified.exit_code == 0, verified.output

    complete = runner.invoke(cli_app, ["audit", "completeness", "--patient", patient, *to_audit])
    assert complete.exit_code == 0 and complete.output.startswith("complete"), complete.output

    flags = runner.invoke(
        cli_app,
        ["audit", "flags", "--kind", "break-glass", "--status", "all", *to_audit, "--json"],
    )
    assert flags.exit_code == 0, flags.output
    glass = scenario.result.access_entry_ids["c break-glass"]
    assert any(glass in f["entryIds"] for f in json.loads(flags.output)["flags"])

    events = tmp_path / "events.json"
    fhir = runner.invoke(
        cli_app, ["audit", "fhir", "--patient", patient, *to_audit, "--out", str(events)]
    )
    assert fhir.exit_code == 0, fhir.output
    bundle = Bundle.model_validate_json(events.read_text())
    assert len(bundle.entry or []) == len(ids)

    unknown = runner.invoke(
        cli_app,
        ["audit", "review", str(uuid.uuid4()), "--outcome", "justified", "--note", "x", *to_audit],
    )
    assert unknown.exit_code == 1 and "NOT_FOUND" in unknown.output, unknown.output
    no_filter = runner.invoke(cli_app, ["audit", "trail", *to_audit])
    assert no_filter.exit_code == 2 and "expected --patient or --organization" in no_filter.output


def test_a_followed_stream_delivers_new_items(scenario: Scenario) -> None:
    regulator = scenario.party("regulator")
    patient = scenario.result.patient_subject_id
    stream = scenario.audit(regulator).StreamTrail(
        pb.StreamTrailRequest(
            filter=pb.TrailFilter(patient_subject_id=patient, kinds=[ACCESS]), follow=True
        ),
        timeout=60,
    )
    answer = _check(scenario, scenario.party("hospital c"))
    seen: list[str] = []
    try:
        for message in stream:
            seen.append(message.item.entry_id)
            if message.item.entry_id == answer.access_entry_id:
                break
    finally:
        stream.cancel()
    assert answer.access_entry_id in seen
    assert set(scenario.result.access_entry_ids.values()) <= set(seen)


def _check(scenario: Scenario, hospital: Principal) -> cpb.CheckAccessResponse:
    stub = consent_service_pb2_grpc.ConsentServiceStub(
        scenario.platform.channel(hospital, "consent")
    )
    return stub.CheckAccess(
        cpb.CheckAccessRequest(
            patient_subject_id=scenario.result.patient_subject_id,
            data_category="imaging",
            purpose="TREAT",
            request_id=str(uuid.uuid4()),
        ),
        timeout=15,
    )


def test_evidence_since_an_older_checkpoint_carries_a_consistency_proof(
    scenario: Scenario,
) -> None:
    regulator = scenario.party("regulator")
    chain = chain_service_pb2_grpc.ChainServiceStub(
        scenario.platform.channel(regulator, "hospital-a")
    )
    older = chain.GetCheckpoint(chpb.GetCheckpointRequest(), timeout=10).checkpoint
    # Grow the log past that checkpoint, then export a trail that includes the new entry.
    answer = _check(scenario, scenario.party("hospital b"))
    patient = scenario.result.patient_subject_id

    def exported() -> pb.ExportEvidenceResponse | None:
        response = scenario.audit(regulator).ExportEvidence(
            pb.ExportEvidenceRequest(
                entry_ids=pb.EntryIdList(entry_ids=[answer.access_entry_id]),
                since_checkpoint=older.note,
            ),
            timeout=30,
        )
        return None if response.unsealed_entry_ids or not response.evidence.json else response

    response = None
    deadline = time.monotonic() + 60
    while response is None and time.monotonic() < deadline:
        try:
            response = exported()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:  # not in the read model yet
                raise
        time.sleep(0.2)
    assert response is not None, "the new entry was never exported sealed"
    bundle = parse_bundle(response.evidence.json)
    assert bundle.consistency and bundle.consistency[0].from_checkpoint == older.note
    report = verify_bundle(bundle)
    assert report.ok, report.failures
    assert [e.entry_id for e in report.entries] == [answer.access_entry_id]
    assert patient


def test_fhir_audit_events_follow_balp_and_validate(scenario: Scenario) -> None:
    regulator = scenario.party("regulator")
    patient = scenario.result.patient_subject_id
    response = scenario.audit(regulator).ExportAuditEvents(
        pb.ExportAuditEventsRequest(filter=pb.TrailFilter(patient_subject_id=patient)),
        timeout=30,
    )
    bundle = Bundle.model_validate_json(response.fhir_json)
    assert bundle.type == "collection"
    events = [
        AuditEvent.model_validate(e.resource.model_dump())
        for e in bundle.entry or []
        if e.resource is not None
    ]
    assert len(events) >= 9
    raw = json.loads(response.fhir_json)
    for event, resource in zip(events, (e["resource"] for e in raw["entry"]), strict=True):
        assert event.recorded is not None
        assert event.agent and event.source
        # BALP: the patient is an entity (a logical Patient reference by identifier, as no
        # FHIR server holds the patient here); the log entry is named.
        assert any(
            entity.what is not None
            and entity.what.type == "Patient"
            and entity.what.identifier is not None
            and entity.what.identifier.value == patient
            for entity in event.entity or []
        ), resource
        assert "entry" in json.dumps(resource.get("extension", [])) or "entry" in json.dumps(
            resource.get("entity", [])
        ), resource
    break_glass = scenario.result.access_entry_ids["c break-glass"]
    assert break_glass in response.fhir_json


def test_bad_input_gets_a_clear_status(scenario: Scenario) -> None:
    regulator = scenario.party("regulator")
    stub = scenario.audit(regulator)
    cases: dict[str, tuple[Callable[[], object], grpc.StatusCode]] = {
        "an unknown kind": (
            lambda: stub.QueryTrail(
                pb.QueryTrailRequest(filter=pb.TrailFilter(kinds=[99])),  # type: ignore[list-item]
                timeout=10,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "a forged page token": (
            lambda: stub.QueryTrail(pb.QueryTrailRequest(page_token="not-a-token"), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "an export of nothing": (
            lambda: stub.ExportEvidence(pb.ExportEvidenceRequest(), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "an unknown flag": (
            lambda: stub.ReviewFlag(
                pb.ReviewFlagRequest(
                    flag_id=str(uuid.uuid4()), outcome=pb.REVIEW_OUTCOME_JUSTIFIED, note="ok"
                ),
                timeout=10,
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        "a review without outcome": (
            lambda: stub.ReviewFlag(
                pb.ReviewFlagRequest(flag_id=scenario.result.flags[0].flag_id, note="x"),
                timeout=10,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "completeness without a patient": (
            lambda: stub.CheckCompleteness(pb.CheckCompletenessRequest(), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    }
    codes = {what: code_of(call) for what, (call, _) in cases.items()}
    assert codes == {what: code for what, (_, code) in cases.items()}


@pytest.fixture
def items_collection(platform: Platform) -> Iterator[Items]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(platform.stack.mongo.uri)
    try:
        yield client["audit"]["items"]
    finally:
        client.close()


def test_killed_mid_stream_the_audit_service_resumes_without_loss_or_duplicate(
    scenario: Scenario, items_collection: Items
) -> None:
    platform = scenario.platform
    a = scenario.party("hospital a")
    tag_key = platform.consortium.load_tag_key()
    subject = platform.register_patient(f"busy {uuid.uuid4().hex[:6]}", a).id
    tag = subject_tag(tag_key, subject)
    audit = next(p for p in platform.stack.grpc_processes if p.name == "audit")
    assert audit.process.pid is not None
    client = platform.hospital_client(a)
    count = 1500
    drafts = [
        client.record_version(f"busy-{n}", 1, f"note {n}".encode(), subject_id=subject)
        for n in range(count)
    ]
    # Stopped, the service lets the events pile up in Kafka; woken, it is killed as soon as
    # part of them is in its read model.
    os.kill(audit.process.pid, signal.SIGSTOP)
    try:
        results = client.anchor(drafts, timeout=120)
    finally:
        os.kill(audit.process.pid, signal.SIGCONT)
    entry_ids = {r.receipt.entry_id for r in results}
    assert len(entry_ids) == count
    deadline = time.monotonic() + 60
    try:
        # Lookups by _id are the only ones FerretDB v1 answers from an index; any other filter
        # reads the whole read model, which gave the service time to store every item before
        # the kill. A sample across the batch finds the first items whatever order they come in.
        sample = [r.receipt.entry_id for r in results][:: count // 30]
        while not any(items_collection.find_one({"_id": i}, {"_id": 1}) for i in sample):
            assert time.monotonic() < deadline, "the audit service never started on the events"
        os.kill(audit.process.pid, signal.SIGKILL)
        at_kill = items_collection.count_documents({"subject_tag": tag})
        assert 0 < at_kill < count, f"the kill came at {at_kill} of {count} items"
    finally:
        platform.restart("audit")  # the later tests need it, whatever happened here

    regulator = scenario.party("regulator")
    wait_for(
        "every anchored version in the trail",
        lambda: items_collection.count_documents({"subject_tag": tag}) == count,
        120,
    )
    trail = scenario.trail(regulator, patient_subject_id=subject)
    ids = [i.entry_id for i in trail]
    assert len(ids) == len(set(ids)) == count
    assert set(ids) == entry_ids

    def complete() -> bool:
        answer = scenario.audit(regulator).CheckCompleteness(
            pb.CheckCompletenessRequest(patient_subject_id=subject), timeout=60
        )
        return answer.complete

    wait_for("the trail to be complete against the log", complete, 120)
