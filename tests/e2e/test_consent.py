"""The consent service against the real stack: directives signed on a patient device, the
decision table of CheckAccess, delegation, break-glass, notifications, ACCESS entries whose
receipts verify, and the FHIR Consent export."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from fhir.resources.R4B.consent import Consent
from typer.testing import CliRunner

from chain.consortium import consortium_message
from chain.evidence import verify_bundle
from cli.main import app as cli_app
from sdk.consent import (
    DENY,
    MANAGE_CONSENT,
    PERMIT,
    PatientDevice,
    bearer,
    organization,
    practitioner,
    provision,
)
from services.platform.caller import Role
from services.platform.chain_client import evidence_bundle, prove_entry
from services.platform.consortium_files import ConsortiumFiles
from swiftchain.chain.v1 import chain_service_pb2 as cpb
from swiftchain.chain.v1 import chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import consent_service_pb2 as pb
from swiftchain.consent.v1 import consent_service_pb2_grpc, directive_pb2
from swiftchain.identity.v1 import identity_service_pb2 as ipb
from tests.e2e.platform import Platform, Principal, wait_for

PERMITTED = common_pb2.ACCESS_REASON_PERMITTED
PERMIT_DECISION = common_pb2.ACCESS_DECISION_PERMIT
DENY_DECISION = common_pb2.ACCESS_DECISION_DENY


@dataclass
class Patient:
    principal: Principal
    device: PatientDevice
    stub: consent_service_pb2_grpc.ConsentServiceStub

    def call(self, method: str, request: object) -> object:
        return getattr(self.stub, method)(
            request, metadata=bearer(self.principal.token), timeout=15
        )

    def grant(
        self, grantee: directive_pb2.Grantee, rule: directive_pb2.Provision
    ) -> pb.ConsentVersion:
        signed = self.device.sign_directive(self.device.directive(grantee=grantee, provision=rule))
        response = self.call("GrantConsent", pb.GrantConsentRequest(signed_directive=signed))
        assert isinstance(response, pb.GrantConsentResponse)
        return response.consent_version


@dataclass
class World:
    platform: Platform
    hospital_b: Principal
    hospital_c: Principal
    doctor_b: str
    doctor_c: str
    patient: Patient
    carer: Patient

    def stub(self, hospital: Principal) -> consent_service_pb2_grpc.ConsentServiceStub:
        return consent_service_pb2_grpc.ConsentServiceStub(
            self.platform.channel(hospital, "consent")
        )

    def check(
        self,
        hospital: Principal,
        category: str = "laboratory",
        purpose: str = "TREAT",
        practitioner_id: str = "",
        patient: Patient | None = None,
    ) -> pb.CheckAccessResponse:
        return self.stub(hospital).CheckAccess(
            pb.CheckAccessRequest(
                patient_subject_id=(patient or self.patient).principal.id,
                data_category=category,
                purpose=purpose,
                practitioner_id=practitioner_id,
                request_id=str(uuid.uuid4()),
            ),
            timeout=15,
        )


def _patient(platform: Platform, label: str) -> Patient:
    principal = platform.register_patient(label, platform.hospital)
    assert principal.device_dir is not None
    stub = consent_service_pb2_grpc.ConsentServiceStub(platform.channel(principal, "consent"))
    return Patient(principal, PatientDevice.from_folder(principal.device_dir), stub)


def _practitioner(platform: Platform, hospital: Principal, ref: str) -> str:
    response = platform.identity(hospital).RegisterPractitioner(
        ipb.RegisterPractitionerRequest(
            organization_id=hospital.id, display_ref=ref, role_code="doctor"
        ),
        timeout=10,
    )
    return response.practitioner.practitioner_id


@pytest.fixture(scope="module")
def world(platform: Platform) -> World:
    suffix = uuid.uuid4().hex[:6]
    hospital_b = platform.register_organization("b", Role.HOSPITAL, f"hospital-b-{suffix}")
    hospital_c = platform.register_organization("c", Role.HOSPITAL, f"hospital-c-{suffix}")
    doctor_b = _practitioner(platform, hospital_b, "staff-1")
    doctor_c = _practitioner(platform, hospital_c, "staff-2")
    patient = _patient(platform, f"consenting {suffix}")
    carer = _patient(platform, f"carer {suffix}")
    world = World(platform, hospital_b, hospital_c, doctor_b, doctor_c, patient, carer)

    def consent_knows_everyone() -> bool:  # the consent service learns identity from events
        try:
            world.check(hospital_b, practitioner_id=doctor_b)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    wait_for("the consent service to know the new parties", consent_knows_everyone, 30)
    return world


def test_decision_table(world: World) -> None:
    now = datetime.now(UTC)
    patient, b, c = world.patient, world.hospital_b, world.hospital_c
    # B: treatment of anything except mental health (a deny nested in a permit).
    granted = patient.grant(
        organization(b.id),
        provision(
            PERMIT,
            purposes=["TREAT"],
            nested=[provision(DENY, categories=["mental-health"])],
        ),
    )
    # C: explicitly no research on genetics.
    denied = patient.grant(organization(c.id), provision(DENY, purposes=["HRESCH"]))
    # C: imaging for treatment, but the period has ended.
    expired = patient.grant(
        organization(c.id),
        provision(
            PERMIT,
            categories=["imaging"],
            start=now - timedelta(days=30),
            end=now - timedelta(days=1),
        ),
    )
    # A practitioner of C, personally, for medication.
    personal = patient.grant(
        practitioner(world.doctor_c), provision(PERMIT, categories=["medication"])
    )

    cases: list[tuple[str, Callable[[], pb.CheckAccessResponse], int, int, str]] = [
        (
            "permit",
            lambda: world.check(b),
            PERMIT_DECISION,
            PERMITTED,
            granted.directive.directive_id,
        ),
        (
            "a practitioner under a permitted organization",
            lambda: world.check(b, practitioner_id=world.doctor_b),
            PERMIT_DECISION,
            PERMITTED,
            granted.directive.directive_id,
        ),
        (
            "nested deny",
            lambda: world.check(b, category="mental-health"),
            DENY_DECISION,
            common_pb2.ACCESS_REASON_EXPLICIT_DENY,
            granted.directive.directive_id,
        ),
        (
            "wrong purpose",
            lambda: world.check(b, purpose="HMARKT"),
            DENY_DECISION,
            common_pb2.ACCESS_REASON_NO_CONSENT,
            "",
        ),
        (
            "explicit deny",
            lambda: world.check(c, purpose="HRESCH", category="genetics"),
            DENY_DECISION,
            common_pb2.ACCESS_REASON_EXPLICIT_DENY,
            denied.directive.directive_id,
        ),
        (
            "expired period",
            lambda: world.check(c, category="imaging"),
            DENY_DECISION,
            common_pb2.ACCESS_REASON_EXPIRED,
            expired.directive.directive_id,
        ),
        (
            "wrong grantee",
            lambda: world.check(c, category="laboratory"),
            DENY_DECISION,
            common_pb2.ACCESS_REASON_NO_CONSENT,
            "",
        ),
        (
            "the named practitioner",
            lambda: world.check(c, category="medication", practitioner_id=world.doctor_c),
            PERMIT_DECISION,
            PERMITTED,
            personal.directive.directive_id,
        ),
        (
            "the practitioner's hospital without the practitioner",
            lambda: world.check(c, category="medication"),
            DENY_DECISION,
            common_pb2.ACCESS_REASON_NO_CONSENT,
            "",
        ),
    ]
    for name, ask, decision, reason, directive_id in cases:
        answer = ask()
        assert (answer.decision, answer.reason, answer.deciding_directive_id) == (
            decision,
            reason,
            directive_id,
        ), name
        assert answer.access_entry_id, name
        if directive_id:
            assert answer.deciding_directive_version == 1, name


def test_revoke_is_read_your_writes_and_revoked_is_told_apart(world: World) -> None:
    patient, b = world.patient, world.hospital_b
    granted = patient.grant(
        organization(b.id), provision(PERMIT, purposes=["HOPERAT"], categories=["immunizations"])
    )
    assert world.check(b, category="immunizations", purpose="HOPERAT").decision == PERMIT_DECISION
    revocation = patient.device.sign_directive(patient.device.next_version(granted, revoke=True))
    patient.call("RevokeConsent", pb.RevokeConsentRequest(signed_directive=revocation))
    answer = world.check(b, category="immunizations", purpose="HOPERAT")  # at once, no waiting
    assert (answer.decision, answer.reason) == (DENY_DECISION, common_pb2.ACCESS_REASON_REVOKED)
    assert (answer.deciding_directive_id, answer.deciding_directive_version) == (
        granted.directive.directive_id,
        2,
    )


def test_forged_and_foreign_signatures_are_rejected(world: World) -> None:
    patient, carer, b = world.patient, world.carer, world.hospital_b
    directive = patient.device.directive(
        grantee=organization(b.id), provision=provision(PERMIT, categories=["allergies"])
    )
    forged = patient.device.sign_directive(directive)
    forged.signature = bytes(64)
    by_other = carer.device.sign_directive(directive)  # the carer's key, for the patient
    for signed in (forged, by_other):
        with pytest.raises(grpc.RpcError) as raised:
            patient.call("GrantConsent", pb.GrantConsentRequest(signed_directive=signed))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED, raised.value.details()
    stale = patient.grant(organization(b.id), provision(PERMIT, categories=["allergies"]))
    same_version_again = patient.device.sign_directive(
        patient.device.next_version(stale, provision=provision(PERMIT))
    )
    patient.call("AmendConsent", pb.AmendConsentRequest(signed_directive=same_version_again))
    with pytest.raises(grpc.RpcError) as raised:
        patient.call(
            "AmendConsent",
            pb.AmendConsentRequest(
                signed_directive=patient.device.sign_directive(
                    patient.device.next_version(stale, provision=provision(DENY))
                )
            ),
        )
    assert raised.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.RpcError) as raised:
        world.check(b, category="not-a-category")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected a data category" in (raised.value.details() or "")


def test_a_delegate_within_and_after_expiry(world: World) -> None:
    patient, carer, b = world.patient, world.carer, world.hospital_b
    expire = datetime.now(UTC) + timedelta(seconds=6)
    delegation = patient.device.sign_delegation(
        patient.device.delegation(carer.principal.id, scopes=[MANAGE_CONSENT], expire=expire)
    )
    added = patient.call("AddDelegate", pb.AddDelegateRequest(signed_delegation=delegation))
    assert isinstance(added, pb.AddDelegateResponse)
    delegation_id = added.delegation_version.delegation.delegation_id

    def as_carer(category: str) -> directive_pb2.SignedDirective:
        return carer.device.sign_directive(
            carer.device.directive(
                grantee=organization(b.id),
                provision=provision(PERMIT, categories=[category]),
                patient=patient.principal.id,
                delegation_id=delegation_id,
            )
        )

    accepted = carer.call(
        "GrantConsent", pb.GrantConsentRequest(signed_directive=as_carer("vital-signs"))
    )
    assert isinstance(accepted, pb.GrantConsentResponse)
    assert accepted.consent_version.signer_subject_id == carer.principal.id
    assert world.check(b, category="vital-signs").decision == PERMIT_DECISION
    listed = carer.call(
        "ListConsents", pb.ListConsentsRequest(patient_subject_id=patient.principal.id)
    )
    assert isinstance(listed, pb.ListConsentsResponse) and listed.consents
    wait_for("the delegation to expire", lambda: datetime.now(UTC) > expire, 15)
    with pytest.raises(grpc.RpcError) as raised:
        carer.call("GrantConsent", pb.GrantConsentRequest(signed_directive=as_carer("procedures")))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "expired" in (raised.value.details() or "")


def test_break_glass_notifies_the_patient_and_every_decision_has_a_verifiable_entry(
    world: World,
) -> None:
    patient, c = world.patient, world.hospital_c
    received: list[pb.Notification] = []
    stream = patient.stub.WatchNotifications(
        pb.WatchNotificationsRequest(patient_subject_id=patient.principal.id),
        metadata=bearer(patient.principal.token),
        timeout=60,
    )

    def watch() -> None:
        try:
            for message in stream:
                received.append(message.notification)
                if message.notification.kind == pb.NOTIFICATION_KIND_BREAK_GLASS:
                    return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(0.5)  # the stream registers with the service before the access below
    answer = world.stub(c).BreakGlass(
        pb.BreakGlassRequest(
            patient_subject_id=patient.principal.id,
            data_category="allergies",
            reason_code="unconscious-patient",
            justification="Patient brought in unconscious; allergy list needed now.",
            practitioner_id=world.doctor_c,
            request_id=str(uuid.uuid4()),
        ),
        timeout=15,
    )
    assert (answer.decision, answer.reason) == (
        PERMIT_DECISION,
        common_pb2.ACCESS_REASON_BREAK_GLASS,
    )
    watcher.join(30)
    stream.cancel()
    assert any(
        n.kind == pb.NOTIFICATION_KIND_BREAK_GLASS and n.entry_id == answer.access_entry_id
        for n in received
    ), received
    # The ACCESS entry reaches the log and its receipt verifies offline.
    chain = chain_service_pb2_grpc.ChainServiceStub(world.platform.channel(c, "hospital-a"))
    consortium = ConsortiumFiles(world.platform.stack.root / "consortium").load()

    proved = prove_entry(chain, answer.access_entry_id, wait=30)
    report = verify_bundle(
        evidence_bundle(consortium_message(consortium), [proved]),
        trusted_verifiers=consortium.verifiers,
        trusted_quorum=consortium.quorum,
        trusted_origin=consortium.origin,
    )
    assert report.ok, report.failures
    assert report.entries[0].entry_id == answer.access_entry_id


def test_fhir_consent_export_validates(world: World) -> None:
    patient, b = world.patient, world.hospital_b
    granted = patient.grant(
        organization(b.id),
        provision(PERMIT, purposes=["TREAT"], nested=[provision(DENY, categories=["genetics"])]),
    )
    request = pb.ExportConsentRequest(directive_id=granted.directive.directive_id)
    by_patient = patient.call("ExportConsent", request)
    by_grantee = world.stub(b).ExportConsent(request, timeout=10)
    for exported in (by_patient, by_grantee):
        assert isinstance(exported, pb.ExportConsentResponse)
        resource = Consent.model_validate_json(exported.fhir_json)
        assert resource.status == "active"
    with pytest.raises(grpc.RpcError) as raised:  # not C's directive: C cannot know it exists
        world.stub(world.hospital_c).GetConsent(
            pb.GetConsentRequest(directive_id=granted.directive.directive_id), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_swiftchain_consent_grants_lists_checks_revokes_and_exports(world: World) -> None:
    runner = CliRunner()
    patient, c = world.patient, world.hospital_c  # C has no standing permit for payment
    assert patient.principal.device_dir is not None and c.tls_dir is not None
    as_patient = [
        "--device-dir",
        str(patient.principal.device_dir),
        "--identity-public",
        world.platform.target("identity", public=True),
        "--consent-public",
        world.platform.target("consent", public=True),
    ]
    granted = runner.invoke(
        cli_app,
        ["consent", "grant", *as_patient, "--to", c.id, "--purpose", "HPAYMT", "--json"],
    )
    assert granted.exit_code == 0, granted.output
    directive_id = json.loads(granted.output)["directive"]["directiveId"]
    listed = runner.invoke(cli_app, ["consent", "list", *as_patient, "--json"])
    assert listed.exit_code == 0, listed.output
    assert directive_id in {c["directiveId"] for c in json.loads(listed.output)["consents"]}
    as_hospital = [
        "--tls-dir",
        str(c.tls_dir),
        "--consent",
        world.platform.target("consent"),
        "--patient",
        patient.principal.id,
        "--category",
        "encounters",
        "--purpose",
        "HPAYMT",
    ]
    checked = runner.invoke(cli_app, ["consent", "check", *as_hospital])
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("PERMIT (permitted) by directive " + directive_id)
    revoked = runner.invoke(cli_app, ["consent", "revoke", directive_id, *as_patient])
    assert revoked.exit_code == 0, revoked.output
    checked = runner.invoke(cli_app, ["consent", "check", *as_hospital])
    assert checked.output.startswith("DENY (revoked)"), checked.output
    exported = runner.invoke(cli_app, ["consent", "export", directive_id, *as_patient])
    assert exported.exit_code == 0, exported.output
    assert Consent.model_validate_json(exported.output).status == "inactive"
    refused = runner.invoke(cli_app, ["consent", "check", *as_hospital[:-4], "--category", "x"])
    assert refused.exit_code != 0 and "INVALID_ARGUMENT" in refused.output


def _watch(
    patient: Patient, request: pb.WatchNotificationsRequest, wanted: set[str]
) -> list[pb.Notification]:
    """Notifications of a stream until every entry id in ``wanted`` has come (or 30 s)."""
    received: list[pb.Notification] = []
    stream = patient.stub.WatchNotifications(
        request, metadata=bearer(patient.principal.token), timeout=30
    )
    try:
        for message in stream:
            received.append(message.notification)
            if wanted <= {n.entry_id for n in received}:
                break
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        stream.cancel()
    return received


def test_decisions_answered_before_a_crash_reach_the_log_and_notifications_resume(
    world: World,
) -> None:
    platform, patient, hospital = world.platform, world.patient, world.hospital_b
    kafka = platform.stack.kafka.process.pid
    consent = next(p for p in platform.stack.grpc_processes if p.name == "consent")
    assert kafka is not None and consent.process.pid is not None
    since = datetime.now(UTC)
    # Kafka paused: the decisions are answered (durable in the store) but never sent.
    os.kill(kafka, signal.SIGSTOP)
    try:
        answers = [world.check(hospital) for _ in range(20)]
        os.kill(consent.process.pid, signal.SIGKILL)  # a crash: nothing flushed, nothing said
    finally:
        os.kill(kafka, signal.SIGCONT)
    platform.restart("consent")
    started = consent.process.log_path.read_text().rsplit("=== ", 1)[1]
    resent = re.search(r"sending again \d+ directive versions and (\d+) decisions", started)
    assert resent is not None and int(resent.group(1)) >= 20, started[-2000:]

    chain = chain_service_pb2_grpc.ChainServiceStub(platform.channel(hospital, "hospital-a"))
    entries = [a.access_entry_id for a in answers]

    def all_on_the_log() -> bool:
        for entry_id in entries:
            try:
                status = chain.GetEntryStatus(
                    cpb.GetEntryStatusRequest(entry_id=entry_id), timeout=10
                )
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return False
                raise
            if status.state not in (
                common_pb2.ENTRY_STATE_SEQUENCED,
                common_pb2.ENTRY_STATE_SEALED,
            ):
                return False
        return True

    wait_for("the decisions answered before the crash to reach the log", all_on_the_log, 60)

    # The restarted service still tells the patient about them, from a start time...
    request = pb.WatchNotificationsRequest(patient_subject_id=patient.principal.id)
    request.start_time.FromDatetime(since)
    replayed = _watch(patient, request, set(entries))
    by_entry = {n.entry_id: n for n in replayed}
    assert set(entries) <= set(by_entry), replayed
    # ...and after a notification id, the resume cursor of an app that saw the first ten.
    cursor = by_entry[entries[9]].notification_id
    resumed = _watch(
        patient,
        pb.WatchNotificationsRequest(
            patient_subject_id=patient.principal.id, after_notification_id=cursor
        ),
        set(entries[10:]),
    )
    resumed_entries = {n.entry_id for n in resumed}
    assert set(entries[10:]) <= resumed_entries
    assert not set(entries[:10]) & resumed_entries
    # Kept across a second restart too (now from the store, not from the resend).
    platform.restart("consent")
    again = _watch(patient, request, set(entries))
    assert set(entries) <= {n.entry_id for n in again}
