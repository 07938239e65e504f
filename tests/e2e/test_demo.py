"""The `make demo` scenario against real servers, every step asserted (issue: audit + demo);
and the same scenario while a hostile client attacks the platform (issue #24, "Done when")."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from grpc_health.v1 import health_pb2

from chain.evidence import parse_bundle, verify_bundle
from devstack.demo import Demo, DemoResult
from devstack.parties import wait_for
from devstack.pki import ADMIN
from services.platform.settings import ProcessSettings
from services.platform.topics import (
    COSIGNATURES_TOPIC,
    EVENT_TOPICS,
    IDENTITY_EVENTS_TOPIC,
    ORDERING_TOPIC,
)
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2
from tests.e2e.hostile import POISONED_TOPICS, PoisonWriter, StreamHolder, StreamPlan
from tests.e2e.platform import Platform


def test_the_demo_scenario_behaves_at_every_step(platform: Platform, tmp_path: Path) -> None:
    lines: list[str] = []
    result = Demo(platform, tmp_path, say=lines.append).run_all()
    assert_the_demo_behaved(result, lines)


def assert_the_demo_behaved(result: DemoResult, lines: list[str]) -> None:
    """Every step of the scenario produced what it narrates (``lines``: what it said)."""
    assert len(result.steps) == 13, result.steps
    # The patient's key was made on its phone, enrolled with the code the hospital was given;
    # the hospital, holding the code, could not enroll a key of its own.
    said = "\n".join(lines)
    assert "was given a one-time enrollment code, not a key" in said
    assert "tries to enroll a key of its own: UNAUTHENTICATED" in said
    assert "a device-signed grant: directive" in said
    # The members voted the run's regulator in: a proposal and an approval, each on the log,
    # the change in force from the approval's leaf.
    regulator = f"regulator-{result.hospitals['a'].rsplit('-', 1)[1]}"
    assert result.members_after == [*result.members_before, regulator]
    assert regulator not in result.members_before
    assert result.vote_leaf > 0
    assert "proposes admitting" in said and " approves, signed with its node key" in said
    assert "the change took effect there" in said
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


# --- the demo under attack ----------------------------------------------------------------------

#: The steps of the demo at whose start the hostile client writes a round of poison (it writes
#: one before the demo too).
POISON_AT_STEPS = (1, 3, 6, 8)
#: The topics each gRPC process reads: every process follows identity events for revocations.
_NODE_READS = (ORDERING_TOPIC, COSIGNATURES_TOPIC, IDENTITY_EVENTS_TOPIC)
_SERVICE_READS = {
    "identity": (IDENTITY_EVENTS_TOPIC,),
    "anchoring": (IDENTITY_EVENTS_TOPIC,),
    "consent": (IDENTITY_EVENTS_TOPIC,),
    "audit": EVENT_TOPICS,
}
#: ``swiftchain_poison_records_total{consumer,topic}`` (services/platform/poison.py).
POISON_METRIC = "swiftchain_poison_records"
_SET_ASIDE = re.compile(r"^set aside (\S+) partition (\d+) offset (\d+):")


def _poison_counts(platform: Platform) -> dict[tuple[str, str, str], float]:
    """(process, consumer, topic) -> records set aside so far, as each process's metric says."""
    return {
        (process, labels.get("consumer", ""), labels.get("topic", "")): value
        for process in platform.grpc_process_names()
        for labels, value in platform.metric_samples(process, POISON_METRIC)
    }


def _not_set_aside(
    platform: Platform, before: dict[tuple[str, str, str], float], poison: PoisonWriter
) -> list[str]:
    """Each consumer of each topic that has not (yet) set aside exactly the poison written to
    that topic since ``before``."""
    after = _poison_counts(platform)
    problems: list[str] = []
    for process in platform.grpc_process_names():
        for topic in _SERVICE_READS.get(process, _NODE_READS):
            sent = len(poison.sent_to(topic))
            consumers = sorted({c for p, c, t in {*before, *after} if (p, t) == (process, topic)})
            if not consumers:
                problems.append(f"{process}: nothing set aside of the {sent} records on {topic}")
            for consumer in consumers:
                key = (process, consumer, topic)
                count = after.get(key, 0) - before.get(key, 0)
                if count != sent:
                    problems.append(
                        f"{process} ({consumer}): {count:g} of the {sent} records on {topic} "
                        "set aside"
                    )
    return problems


def _poison_alarms(platform: Platform, node: str) -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of every POISON_RECORD alarm ``node`` raised."""
    found: set[tuple[str, int, int]] = set()
    with platform.channel(platform.admin, node) as channel:
        chain = chain_service_pb2_grpc.ChainServiceStub(channel)
        token = ""
        while True:
            page = chain.ListAlarms(
                chain_service_pb2.ListAlarmsRequest(page_size=1000, page_token=token), timeout=30
            )
            for alarm in page.alarms:
                where = _SET_ASIDE.match(alarm.detail)
                if alarm.kind == chain_service_pb2.ALARM_KIND_POISON_RECORD and where:
                    found.add((where[1], int(where[2]), int(where[3])))
            token = page.next_page_token
            if not token:
                return found


def _roots(platform: Platform) -> set[tuple[int, bytes]]:
    """The (tree size, root) each node's latest sealed checkpoint says."""
    return {
        (c.tree_size, c.root_hash)
        for c in (platform.sealed_checkpoint(node) for node, _ in platform.ports.nodes)
    }


def _wait_until_none(what: str, problems: Callable[[], list[str]], timeout: float) -> None:
    """Wait until ``problems()`` finds none; fail listing those it still finds."""
    try:
        wait_for(what, lambda: not problems(), timeout)
    except AssertionError:
        assert problems() == [], f"timed out after {timeout:.0f}s waiting for {what}"


def test_the_demo_behaves_while_a_hostile_client_holds_streams_and_sends_poison(
    platform: Platform, tmp_path: Path
) -> None:
    """Issue #24's "Done when": thousands of idle streams held on every process and poison on
    every topic, written with the admin's certificate (the broker's super user: it may write
    anywhere), do not stop the demo or the log."""
    before = _poison_counts(platform)
    holder = StreamHolder(platform, platform.parties["regulator"], platform.patient)
    poison = PoisonWriter(f"127.0.0.1:{platform.ports.kafka}", platform.stack.pki.tls_dir(ADMIN))
    try:
        # Thousands of idle streams, each group asking for more than one caller may hold.
        plan = StreamPlan(limit=ProcessSettings().max_streams_per_caller)
        holder.hold(plan)
        asked, held, refused = holder.counts()
        print(f"\nstreams: {asked:,} asked for, {held:,} held, {refused:,} refused")
        for group in holder.groups:
            print(f"  {group.label}: {len(group.held)} held, {len(group.refused)} refused")
        assert holder.problems() == []
        assert holder.anonymous_held() >= 2000
        assert refused >= len(holder.groups) * plan.over

        # The demo, with poison on every topic before it and at some of its steps.
        poison.round()
        lines: list[str] = []

        def say(line: str) -> None:
            lines.append(line)
            step = re.match(r"\n\[(\d+)\]", line)
            if step and int(step[1]) in POISON_AT_STEPS:
                poison.round()

        started = time.monotonic()
        result = Demo(platform, tmp_path, say=say).run_all()
        assert_the_demo_behaved(result, lines)
        print(
            f"the demo took {time.monotonic() - started:.0f} s; poison: "
            f"{len(poison.written)} records on {len(POISONED_TOPICS)} topics"
        )

        _assert_poison_set_aside(platform, before, poison)
        _assert_the_log_whole_and_serving(platform, result)
        assert holder.problems() == []  # every health watch heard SERVING throughout
        _assert_streams_close_cleanly(platform, holder, plan, held)
    finally:
        poison.close()
        holder.shutdown()


def _assert_poison_set_aside(
    platform: Platform, before: dict[tuple[str, str, str], float], poison: PoisonWriter
) -> None:
    """Every consumer set every poison record of its topics aside, and the nodes raised an
    alarm for each record on their topics that was no message of the topic's type."""
    _wait_until_none(
        "every consumer to set the poison aside",
        lambda: _not_set_aside(platform, before, poison),
        timeout=120,
    )
    alarmed = {
        (p.topic, p.partition, p.offset)
        for p in poison.written
        if p.topic == ORDERING_TOPIC
        # another type may parse as a cosignature: its alarm is BAD_COSIGNATURE, blaming nobody
        or (p.topic == COSIGNATURES_TOPIC and p.kind != "another type")
    }
    for node, _ in platform.ports.nodes:
        missing = alarmed - _poison_alarms(platform, node)
        assert not missing, f"{node} raised no POISON_RECORD alarm for {sorted(missing)}"


def _assert_the_log_whole_and_serving(platform: Platform, result: DemoResult) -> None:
    """Every node on the same sealed root, as far as the demo's last leaf at least, and every
    process SERVING."""
    wait_for("every node on the same sealed root", lambda: len(_roots(platform)) == 1, 60)
    [(size, _root)] = _roots(platform)
    assert size > max(item.proof.leaf_index for item in result.trail)
    for process in platform.grpc_process_names():
        assert platform.health(process) == health_pb2.HealthCheckResponse.SERVING, process


def _assert_streams_close_cleanly(
    platform: Platform, holder: StreamHolder, plan: StreamPlan, held: int
) -> None:
    """Every stream the servers held is still open when the test closes it, and once closed
    the servers let go of them: each neighbour may watch again."""
    assert holder.close() == held

    def watches_again(process: str, address: str) -> Callable[[], bool]:
        return lambda: bool(holder.reopen_one(process, address).answers)

    for process in platform.grpc_process_names():
        for address in plan.addresses():
            wait_for(f"{process} to let {address} watch again", watches_again(process, address), 30)
