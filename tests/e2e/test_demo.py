"""The `make demo` scenario against real servers, every step asserted (issue: audit + demo)."""

from __future__ import annotations

import json
from pathlib import Path

from chain.evidence import parse_bundle, verify_bundle
from devstack.demo import Demo
from swiftchain.common.v1 import common_pb2
from tests.e2e.platform import Platform


def test_the_demo_scenario_behaves_at_every_step(platform: Platform, tmp_path: Path) -> None:
    lines: list[str] = []
    result = Demo(platform, tmp_path, say=lines.append).run_all()

    assert len(result.steps) == 12, result.steps
    assert len(result.record_entry_ids) == 3
    assert len(result.consent_entry_ids) == 2
    assert set(result.access_entry_ids) == {
        "b permitted",
        "c denied",
        "c break-glass",
        "b after revoke",
    }
    # The trail holds every entry of the scenario, each sealed with a leaf index, and each
    # access item tells who decided what.
    by_id = {item.entry_id: item for item in result.trail}
    for entry_id in result.record_entry_ids:
        assert by_id[entry_id].kind == common_pb2.ENTRY_KIND_RECORD
        assert by_id[entry_id].actor_organization_id == result.hospitals["a"]
    assert [by_id[e].record.version for e in result.record_entry_ids] == [1, 2, 3]
    access = {label: by_id[e].access for label, e in result.access_entry_ids.items()}
    assert access["b permitted"].decision == common_pb2.ACCESS_DECISION_PERMIT
    assert access["c denied"].decision == common_pb2.ACCESS_DECISION_DENY
    assert access["c break-glass"].break_glass
    assert access["b after revoke"].decision == common_pb2.ACCESS_DECISION_DENY
    assert by_id[result.access_entry_ids["c break-glass"]].flag_ids
    for item in result.trail:
        assert item.patient_subject_id == result.patient_subject_id
        assert item.proof.HasField("leaf_index")
    # The exported file verifies here too, and holds exactly the trail's entries.
    bundle = parse_bundle(result.evidence_path.read_text())
    report = verify_bundle(bundle)
    assert report.ok, report.failures
    assert {e.entry_id for e in report.entries} == set(by_id)
    assert "exit 0" in "\n".join(lines)
    # The tampered copy was rejected by `swiftchain verify`, which said why.
    assert json.loads(result.tampered_path.read_text()) != json.loads(
        result.evidence_path.read_text()
    )
    assert "FAIL" in result.tampered_output.upper(), result.tampered_output
