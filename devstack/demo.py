"""``make demo``: the whole platform in one narrated scenario, against a running stack.

A consortium of three hospitals and a regulator; a patient whose phone makes its own key and
enrolls it with the one-time code hospital A was given (hospital A, holding the code, cannot
enroll a key of its own after that); hospital A anchors three versions of a record; the patient
grants hospital B treatment access; B is permitted and C denied; C breaks the glass; the
patient revokes; B is denied; the regulator pulls the patient's trail, checks it is complete
against the log, reviews the break-glass flag, exports the evidence to a file that
``swiftchain verify`` accepts offline, and sees a tampered copy rejected. Last, the consortium
votes on the log: hospital A proposes admitting the regulator as a (non-voting) regulator member
and hospital B approves, each with its own node key through ``swiftchain consortium propose``
and ``approve``; the member set before and after, and the leaf the change took effect at, are
shown.

Every party is registered afresh through the identity service (ids carry a per-run suffix), so
the demo can run again and again on the same stack. It uses the stack of ``make up`` when one
is running, and otherwise starts one for the length of the demo. Exit status 0 only if every
step behaved as narrated; otherwise 1, naming the step, what was expected and what happened.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from chain.membership import role_name
from cli.main import app as swiftchain_cli
from devstack.parties import Principal, StackParties
from devstack.paths import REPO_ROOT, run_dir
from devstack.process import ProcessError
from devstack.stack import LocalStack, StackPorts, stack_is_running
from sdk.anchoring import RecordVersionDraft
from sdk.audit import enum_word, item_detail, proof_state
from sdk.consent import PERMIT, PatientDevice, bearer, organization, provision
from sdk.identity import enrollment_request
from services.platform.caller import Role
from services.platform.genesis_ceremony import member_keygen
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.audit.v1 import audit_service_pb2_grpc
from swiftchain.chain.v1 import chain_service_pb2 as chain_pb
from swiftchain.chain.v1 import chain_service_pb2_grpc, entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import consent_service_pb2 as cpb
from swiftchain.consent.v1 import consent_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as ipb

Say = Callable[[str], None]

#: Seconds the demo waits for anything asynchronous (sealing, the audit read model).
WAIT = 90.0
#: The chain node the consortium's votes are sent to and its member set is read from.
VOTE_NODE = "hospital-a"
#: What ``swiftchain consortium propose|approve --wait`` prints once its vote is on the log.
_LOGGED = re.compile(r"on the log at leaf (\d+) \(entry ([0-9a-f-]{36})\)")
_PROPOSAL = re.compile(r"proposal ([0-9a-f-]{36}) by ")
_PERMIT = common_pb2.ACCESS_DECISION_PERMIT
_DENY = common_pb2.ACCESS_DECISION_DENY


class DemoStepError(Exception):
    """A step did not behave as narrated."""

    def __init__(self, step: str, expected: str, got: str) -> None:
        super().__init__(f"step '{step}': expected {expected}, got {got}")
        self.step = step


@dataclass
class DemoResult:
    """What the scenario produced, for the end-to-end test to check further."""

    patient_subject_id: str = ""
    hospitals: dict[str, str] = field(default_factory=dict)
    record_entry_ids: list[str] = field(default_factory=list)
    consent_entry_ids: list[str] = field(default_factory=list)
    access_entry_ids: dict[str, str] = field(default_factory=dict)
    trail: list[apb.TrailItem] = field(default_factory=list)
    flags: list[apb.Flag] = field(default_factory=list)
    evidence_path: Path = Path()
    tampered_path: Path = Path()
    tampered_output: str = ""
    #: The member names before and after the vote, and the leaf the change took effect at.
    members_before: list[str] = field(default_factory=list)
    members_after: list[str] = field(default_factory=list)
    vote_leaf: int = -1
    steps: list[str] = field(default_factory=list)


def _wait(
    step: str,
    what: str,
    check: Callable[[], Any],
    timeout: float = WAIT,
    seen: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy; DemoStepError after ``timeout``,
    saying what the last look found (``seen``) or that every call ran out of time."""
    deadline = time.monotonic() + timeout
    pause = 0.2
    answered = 0
    while True:
        try:
            value = check()
            answered += 1
        except grpc.RpcError as exc:
            # A call that ran out of time on a loaded machine is "not yet", not a failure.
            if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            if not answered:
                found = "no answer: every call ran out of time"
            else:
                found = seen() if seen is not None else "nothing"
            raise DemoStepError(step, what, f"{found} after {timeout:.0f}s")
        # Back off: a trail query costs the database a read of the whole read model on
        # FerretDB v1, and polling it hard would slow the service that is catching up.
        time.sleep(pause)
        pause = min(pause * 1.5, 2.0)


def _decision(value: int) -> str:
    return enum_word(value, common_pb2.AccessDecision)


def _expect(step: str, what: str, actual: object, expected: object) -> None:
    if actual != expected:
        raise DemoStepError(step, f"{what} {expected}", str(actual))


def _tampered(bundle_json: str) -> str:
    """The bundle with one bit flipped in the middle of its last entry's bytes."""
    bundle = json.loads(bundle_json)
    entry = bytearray(base64.b64decode(bundle["entries"][-1]["entry"]))
    entry[len(entry) // 2] ^= 0x01
    bundle["entries"][-1]["entry"] = base64.b64encode(bytes(entry)).decode()
    return json.dumps(bundle, indent=2)


def _swiftchain_verify(bundle: Path, consortium_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "verify", str(bundle), "--consortium", str(consortium_file)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )


class Demo:
    """The scenario, step by step, on a stack reached through ``parties``."""

    def __init__(self, parties: StackParties, out_dir: Path, say: Say = print) -> None:
        self.parties = parties
        self.out_dir = out_dir
        self.say = say
        self.run = uuid.uuid4().hex[:6]
        self.result = DemoResult()
        #: The parties the scenario registered, by label ("hospital a", "patient", ...).
        self.principals: dict[str, Principal] = {}

    # --- plumbing -------------------------------------------------------------------------

    def _step(self, title: str) -> str:
        self.result.steps.append(title)
        self.say(f"\n[{len(self.result.steps)}] {title}")
        return title

    def _consent(self, caller: Principal) -> consent_service_pb2_grpc.ConsentServiceStub:
        return consent_service_pb2_grpc.ConsentServiceStub(self.parties.channel(caller, "consent"))

    def _audit(self, caller: Principal) -> audit_service_pb2_grpc.AuditServiceStub:
        return audit_service_pb2_grpc.AuditServiceStub(self.parties.channel(caller, "audit"))

    def _practitioner(self, hospital: Principal, ref: str) -> str:
        response = self.parties.identity(hospital).RegisterPractitioner(
            ipb.RegisterPractitionerRequest(
                organization_id=hospital.id, display_ref=ref, role_code="doctor"
            ),
            timeout=10,
        )
        return str(response.practitioner.practitioner_id)

    def _check(
        self, hospital: Principal, patient: str, practitioner_id: str
    ) -> cpb.CheckAccessResponse:
        return self._consent(hospital).CheckAccess(
            cpb.CheckAccessRequest(
                patient_subject_id=patient,
                data_category="laboratory",
                purpose="TREAT",
                practitioner_id=practitioner_id,
                request_id=str(uuid.uuid4()),
            ),
            timeout=15,
        )

    def _hospital_enrolls_with(self, hospital: Principal, code: str) -> str:
        """What the identity service answers ``hospital`` enrolling a key of its own with
        ``code``: the status and message of its refusal, or "enrolled" if it let it in."""
        try:
            self.parties.identity(hospital).EnrollDevice(
                enrollment_request(code, Ed25519PrivateKey.generate(), "hospital"), timeout=10
            )
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
        return "enrolled"

    def _membership(self) -> chain_pb.GetMembershipResponse:
        """The members, quorum and open proposals as the voting node has them."""
        with self.parties.channel(self.parties.admin, VOTE_NODE) as channel:
            return chain_service_pb2_grpc.ChainServiceStub(channel).GetMembership(
                chain_pb.GetMembershipRequest(), timeout=15
            )

    def _vote(self, step: str, member: str, *args: str) -> tuple[str, int]:
        """Cast ``member``'s vote with ``swiftchain consortium ARGS``, signed with its own node
        key, and wait until the log has it; (what the CLI said, the vote's leaf index)."""
        key = self.parties.consortium.node_key_path(member)
        said = CliRunner().invoke(
            swiftchain_cli,
            [
                "consortium",
                *args,
                "--key",
                str(key),
                "--node",
                self.parties.target(VOTE_NODE),
                "--tls-dir",
                str(self.parties.admin.tls_dir),
                "--wait",
                str(int(WAIT)),
            ],
        )
        logged = _LOGGED.search(said.output)
        if said.exit_code != 0 or logged is None:
            raise DemoStepError(step, f"{member}'s vote on the log", said.output.strip())
        return said.output, int(logged.group(1))

    # --- the scenario ---------------------------------------------------------------------

    def run_all(self) -> DemoResult:
        """Run every step; DemoStepError at the first that misbehaves."""
        result = self.result
        consortium = self.parties.consortium.load()
        step = self._step("The consortium")
        self.say(
            f"    log {consortium.origin!r}: {len(consortium.verifiers)} member nodes, checkpoints "
            f"sealed by {consortium.quorum} of them"
        )
        hospitals: dict[str, Principal] = {}
        for letter in "abc":
            organization_id = f"hospital-{letter}-{self.run}"
            hospitals[letter] = self.parties.register_organization(
                f"hospital {letter}", Role.HOSPITAL, organization_id
            )
            result.hospitals[letter] = organization_id
        regulator = self.parties.register_organization(
            "regulator", Role.REGULATOR, f"regulator-{self.run}"
        )
        self.principals["regulator"] = regulator
        self.principals.update({f"hospital {k}": v for k, v in hospitals.items()})
        self.say(
            "    registered hospitals "
            + ", ".join(h.id for h in hospitals.values())
            + f" and regulator {regulator.id}: each has a signing key and a client certificate"
        )
        doctor_b = self._practitioner(hospitals["b"], "dr-b")
        doctor_c = self._practitioner(hospitals["c"], "dr-c")

        step = self._step("A patient enrolls a key made on their phone, with a one-time code")
        code = self.parties.patient_enrollment_code(f"patient {self.run}", hospitals["a"])
        self.say(
            f"    hospital A registered the patient and was given a one-time enrollment code, "
            f"not a key: {code}"
        )
        patient = self.parties.enroll_patient(f"patient {self.run}", code)
        assert patient.device_dir is not None
        device = PatientDevice.from_folder(patient.device_dir)
        result.patient_subject_id = patient.id
        self.principals["patient"] = patient
        self.say(
            f"    the phone made its key and enrolled it with the code: patient {patient.id}, "
            f"device {device.key_id}; the key never leaves {patient.device_dir}"
        )
        refused = self._hospital_enrolls_with(hospitals["a"], code)
        self.say(
            f"    hospital A, still holding the code, tries to enroll a key of its own: {refused}"
        )
        _expect(
            step,
            "hospital A's own enrollment refused with",
            refused.split(":")[0],
            "UNAUTHENTICATED",
        )

        step = self._step("Hospital A anchors three versions of a record")
        a = hospitals["a"]
        assert a.signing_key is not None
        self.parties.wait_key_active(a, a.id, a.key_id, WAIT)
        client = self.parties.hospital_client(a)
        drafts: list[RecordVersionDraft] = []
        for version in (1, 2, 3):
            document = {
                "resourceType": "Observation",
                "id": "hb-1",
                "status": "final" if version < 3 else "amended",
                "code": {"text": "haemoglobin"},
                "valueQuantity": {"value": 13.0 + version / 10, "unit": "g/dL"},
            }
            drafts.append(
                client.record_version(
                    f"obs-{self.run}",
                    version,
                    document,
                    subject_id=patient.id,
                    previous=drafts[-1] if drafts else None,
                )
            )
        results = client.anchor(drafts)
        for anchored in results:
            if anchored.WhichOneof("outcome") != "receipt":
                raise DemoStepError(step, "a promise receipt per version", str(anchored.error))
            result.record_entry_ids.append(anchored.receipt.entry_id)
        for entry_id in result.record_entry_ids:
            if not client.receipt(entry_id, wait=True):
                raise DemoStepError(step, f"a sealed receipt for {entry_id}", "none")
        self.say(
            "    versions 1-3 of "
            f"obs-{self.run}: only salted commitments on the log; sealed receipts verified: "
            + ", ".join(result.record_entry_ids)
        )

        step = self._step("The patient grants hospital B treatment access")
        patient_stub = self._consent(patient)
        signed = device.sign_directive(
            device.directive(
                grantee=organization(hospitals["b"].id),
                provision=provision(PERMIT, purposes=["TREAT"]),
            )
        )
        granted = patient_stub.GrantConsent(
            cpb.GrantConsentRequest(signed_directive=signed),
            metadata=bearer(patient.token),
            timeout=15,
        ).consent_version
        result.consent_entry_ids.append(granted.proof.entry_id)
        self.say(
            f"    a device-signed grant: directive {granted.directive.directive_id} v1 signed on "
            f"the phone with device key {device.key_id}, which no hospital holds; "
            f"CONSENT entry {granted.proof.entry_id}"
        )

        step = self._step("Hospital B is permitted; hospital C is denied")

        def b_answer() -> cpb.CheckAccessResponse | None:
            try:  # the consent service learns new parties from identity's events
                return self._check(hospitals["b"], patient.id, doctor_b)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                raise

        b_first = _wait(step, "the consent service to know hospital B", b_answer)
        _expect(step, "B's decision", _decision(b_first.decision), "PERMIT")
        result.access_entry_ids["b permitted"] = b_first.access_entry_id
        c_first = _wait(
            step,
            "the consent service to know hospital C",
            lambda: _retry_not_found(lambda: self._check(hospitals["c"], patient.id, doctor_c)),
        )
        _expect(step, "C's decision", _decision(c_first.decision), "DENY")
        result.access_entry_ids["c denied"] = c_first.access_entry_id
        self.say(
            f"    B: PERMIT ({enum_word(b_first.reason, common_pb2.AccessReason)}); "
            f"C: DENY ({enum_word(c_first.reason, common_pb2.AccessReason)}); "
            "each decision is an ACCESS entry on the log"
        )

        step = self._step("Hospital C breaks the glass")
        glass = self._consent(hospitals["c"]).BreakGlass(
            cpb.BreakGlassRequest(
                patient_subject_id=patient.id,
                data_category="laboratory",
                reason_code="unconscious-patient",
                justification="Brought in unconscious; the latest haemoglobin is needed now.",
                practitioner_id=doctor_c,
                request_id=str(uuid.uuid4()),
            ),
            timeout=15,
        )
        _expect(step, "the decision", _decision(glass.decision), "PERMIT")
        result.access_entry_ids["c break-glass"] = glass.access_entry_id
        self.say(
            f"    PERMIT as BREAK_GLASS, entry {glass.access_entry_id}; the patient is "
            "notified and the regulator gets a flag to review"
        )

        step = self._step("The patient revokes; hospital B is denied")
        revocation = device.sign_directive(device.next_version(granted, revoke=True))
        revoked = patient_stub.RevokeConsent(
            cpb.RevokeConsentRequest(signed_directive=revocation),
            metadata=bearer(patient.token),
            timeout=15,
        ).consent_version
        result.consent_entry_ids.append(revoked.proof.entry_id)
        b_after = self._check(hospitals["b"], patient.id, doctor_b)
        _expect(step, "B's decision", _decision(b_after.decision), "DENY")
        result.access_entry_ids["b after revoke"] = b_after.access_entry_id
        self.say(
            f"    revocation is CONSENT entry {revoked.proof.entry_id}; B now: DENY "
            f"({enum_word(b_after.reason, common_pb2.AccessReason)})"
        )

        step = self._step("The regulator pulls the patient's trail")
        # Whatever ran on this stack before (a burst of anchors) may have left the audit
        # service behind; its trail is complete only once it has read everything.
        self.parties.wait_audit_caught_up(say=self.say)
        audit = self._audit(regulator)
        expected = (
            set(result.record_entry_ids)
            | set(result.consent_entry_ids)
            | set(result.access_entry_ids.values())
        )
        sealed = common_pb2.ENTRY_STATE_SEALED

        def full_trail() -> list[apb.TrailItem] | None:
            items = list(
                audit.QueryTrail(
                    apb.QueryTrailRequest(
                        filter=apb.TrailFilter(patient_subject_id=patient.id), page_size=1000
                    ),
                    timeout=15,
                ).items
            )
            found[:] = items
            sealed_ids = {i.entry_id for i in items if i.proof.state == sealed}
            return items if expected <= sealed_ids else None

        def trail_seen() -> str:
            ids = {i.entry_id for i in found}
            sealed_ids = {i.entry_id for i in found if i.proof.state == sealed}
            return (
                f"{len(expected & ids)} of them in the trail, {len(expected & sealed_ids)} sealed"
            )

        found: list[apb.TrailItem] = []
        result.trail = _wait(
            step,
            f"all {len(expected)} entries in the trail, sealed",
            full_trail,
            seen=trail_seen,
        )
        for item in result.trail:
            self.say(f"    {_trail_line(item)}")

        step = self._step("The regulator checks the trail is complete against the log")

        def complete() -> apb.CheckCompletenessResponse | None:
            answer = audit.CheckCompleteness(
                apb.CheckCompletenessRequest(patient_subject_id=patient.id), timeout=30
            )
            return answer if answer.complete else None

        checked = _wait(step, "a complete trail", complete)
        self.say(
            f"    scanned the log up to size {checked.checked_tree_size} for the patient's "
            "blinded tag: nothing missing on either side"
        )

        step = self._step("The regulator reviews the break-glass flag")

        def glass_flags() -> list[apb.Flag] | None:
            flags = audit.ListFlags(
                apb.ListFlagsRequest(
                    patient_subject_id=patient.id, kinds=[apb.FLAG_KIND_BREAK_GLASS]
                ),
                timeout=15,
            ).flags
            return [f for f in flags if glass.access_entry_id in f.entry_ids] or None

        [flag] = _wait(step, "a break-glass flag", glass_flags)
        reviewed = audit.ReviewFlag(
            apb.ReviewFlagRequest(
                flag_id=flag.flag_id,
                outcome=apb.REVIEW_OUTCOME_JUSTIFIED,
                note="Emergency admission confirmed with the ward.",
            ),
            timeout=15,
        ).flag
        _expect(step, "the flag's status", reviewed.status, apb.FLAG_STATUS_REVIEWED)
        result.flags = [reviewed]
        self.say(f"    {flag.summary} -> reviewed: JUSTIFIED")

        step = self._step("The regulator exports the evidence; swiftchain verify accepts it")
        exported = audit.ExportEvidence(
            apb.ExportEvidenceRequest(filter=apb.TrailFilter(patient_subject_id=patient.id)),
            timeout=60,
        )
        if exported.unsealed_entry_ids or not exported.evidence.json:
            raise DemoStepError(
                step, "every entry sealed", f"unsealed {list(exported.unsealed_entry_ids)}"
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        result.evidence_path = self.out_dir / f"evidence-{patient.id}.json"
        result.evidence_path.write_text(exported.evidence.json)
        verified = _swiftchain_verify(result.evidence_path, self.parties.consortium.config_path)
        _expect(step, "swiftchain verify's exit status", verified.returncode, 0)
        self.say(
            f"    {exported.entry_count} entries, one checkpoint: "
            f"swiftchain verify {result.evidence_path} --consortium "
            f"{self.parties.consortium.config_path}  -> exit 0"
        )

        step = self._step("A tampered copy is rejected")
        result.tampered_path = self.out_dir / f"evidence-{patient.id}.tampered.json"
        result.tampered_path.write_text(_tampered(exported.evidence.json))
        rejected = _swiftchain_verify(result.tampered_path, self.parties.consortium.config_path)
        result.tampered_output = rejected.stdout + rejected.stderr
        _expect(step, "swiftchain verify's exit status", rejected.returncode, 1)
        self.say(f"    one bit flipped in one entry: exit 1 ({result.tampered_path})")

        self._membership_vote(regulator)
        return result

    def _membership_vote(self, regulator: Principal) -> None:
        """Hospital A proposes admitting ``regulator`` as a regulator member, the other node
        members approve until the quorum is reached; show the member set before and after."""
        result = self.result
        step = self._step("The consortium votes the regulator in as a member, on the log")
        before = self._membership()
        result.members_before = [m.name for m in before.members]
        self.say(f"    before: {_members_line(before)}")
        card = member_keygen(regulator.id, self.out_dir / "member-keys").card_path
        self.say(f"    the regulator made its member key on its own machine; its card: {card}")
        voters = [m.name for m in before.members if m.role == entry_pb2.MEMBER_ROLE_NODE]
        proposer, approvers = voters[0], voters[1 : before.quorum]
        said, leaf = self._vote(
            step,
            proposer,
            "propose",
            "--admit",
            regulator.id,
            "--role",
            "regulator",
            "--card",
            str(card),
        )
        proposed = _PROPOSAL.search(said)
        if proposed is None:
            raise DemoStepError(step, "a proposal id", said.strip())
        self.say(
            f"    {proposer} proposes admitting {regulator.id} (regulator, no vote), signed with "
            f"its node key: proposal {proposed.group(1)} at leaf {leaf}"
        )
        for approver in approvers:
            _, leaf = self._vote(step, approver, "approve", proposed.group(1))
            self.say(f"    {approver} approves, signed with its node key: leaf {leaf}")

        def past_the_vote() -> chain_pb.GetMembershipResponse | None:
            membership = self._membership()
            return membership if membership.position > leaf else None

        after = _wait(step, f"the node past leaf {leaf}", past_the_vote)
        result.members_after = [m.name for m in after.members]
        _expect(
            step,
            "the member set after the vote",
            result.members_after,
            [*result.members_before, regulator.id],
        )
        result.vote_leaf = leaf
        self.say(
            f"    the quorum of {before.quorum} was reached by the vote at leaf {leaf}: the change "
            f"took effect there: the member set of every checkpoint from tree size {leaf + 1} "
            f"includes {regulator.id}"
        )
        self.say(f"    after: {_members_line(after)}")


def _retry_not_found(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def _members_line(membership: chain_pb.GetMembershipResponse) -> str:
    members = ", ".join(f"{m.name} ({role_name(m.role)})" for m in membership.members)
    return f"{members}; quorum {membership.quorum}, at leaf {membership.position}"


def _trail_line(item: apb.TrailItem) -> str:
    kind = enum_word(item.kind, common_pb2.EntryKind)
    actor = item.actor_organization_id or "the patient"
    return f"{kind:<8} {actor:<20} {item_detail(item):<40} {proof_state(item.proof)}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devstack.demo``: run the scenario; 0 only if every step behaved."""
    parser = argparse.ArgumentParser(prog="python -m devstack.demo", description=__doc__)
    parser.parse_args(argv)
    root = run_dir()
    started: LocalStack | None = None
    if stack_is_running():
        print(f"using the running stack in {root}")
    else:
        print(f"no stack is running: starting one in {root} for the demo (`make up` keeps one)")
        started = LocalStack(root, StackPorts())
        try:
            started.start()
        except ProcessError as error:  # a port taken, a process that would not start
            started.stop()
            print(f"swiftchain: {error}", file=sys.stderr)
            return 1
        except BaseException:
            started.stop()
            raise
    out_dir = root / "demo"
    demo = Demo(StackParties(root, StackPorts(), out_dir / "parties"), out_dir)
    try:
        result = demo.run_all()
    except (DemoStepError, grpc.RpcError) as error:
        message = (
            f"{error.code().name}: {error.details()}"
            if isinstance(error, grpc.RpcError)
            else str(error)
        )
        print(f"\ndemo FAILED at step {len(demo.result.steps)}: {message}", file=sys.stderr)
        return 1
    finally:
        if started is not None:
            print("stopping the stack the demo started")
            started.stop()
    print(f"\nevery step behaved. Evidence: {result.evidence_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
