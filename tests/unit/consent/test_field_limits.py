"""Consent's fields at the edge: a directive's times must be real times, and a directive stored
before they were checked never stops a decision."""

from __future__ import annotations

import pytest

from chain.errors import InvalidInputError
from sdk.consent import PERMIT, organization, provision
from services.consent.domain import directives as directives_module
from services.consent.domain.policy import AccessQuery, DirectiveView, decide
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import directive_pb2
from tests.unit.consent.test_domain import NOW, World

#: 2**40 seconds after 1970: year 36812, which a datetime cannot hold.
FAR = 2**40
ACTIVE = entry_pb2.DIRECTIVE_STATUS_ACTIVE


def _far_provision() -> directive_pb2.Provision:
    rule = provision(PERMIT)
    rule.end_time.seconds = FAR
    return rule


def test_grant_with_an_end_time_beyond_9999_is_refused_and_nothing_is_stored() -> None:
    world = World()
    with pytest.raises(InvalidInputError) as refused:
        world.grant(_far_provision())
    assert str(refused.value) == (
        "expected directive.provision.end_time to be a time between 1970-01-01 and 9999-12-31 "
        f"with nanos in [0, 999999999], got seconds {FAR}, nanos 0"
    )
    assert world.store.versions == {}
    assert world.sent == []
    assert world.sink.notifications == []


def test_a_nested_provision_before_1970_is_refused() -> None:
    world = World()
    inner = provision(PERMIT)
    inner.start_time.seconds = -1
    with pytest.raises(InvalidInputError, match=r"directive\.provision\.provisions\[0\]\.start"):
        world.grant(provision(PERMIT, nested=[inner]))
    assert world.store.versions == {}


def test_a_stored_directive_ending_beyond_9999_still_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A directive stored before times were checked (here: with the check switched off) still
    gets a decision, recorded as any other, instead of an error on every CheckAccess."""
    world = World()
    monkeypatch.setattr(directives_module, "check_fields", lambda *_args: None)
    world.grant(_far_provision())
    monkeypatch.undo()
    decision = world.check()
    assert decision.decision == common_pb2.ACCESS_DECISION_PERMIT
    assert decision.reason == common_pb2.ACCESS_REASON_PERMITTED
    assert world.store.decisions  # recorded


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (None, FAR, common_pb2.ACCESS_REASON_PERMITTED),
        (FAR, None, common_pb2.ACCESS_REASON_NO_CONSENT),
        (-FAR, None, common_pb2.ACCESS_REASON_PERMITTED),
        (None, -FAR, common_pb2.ACCESS_REASON_EXPIRED),
    ],
)
def test_the_policy_decides_with_any_stored_time(
    start: int | None, end: int | None, reason: int
) -> None:
    rule = provision(PERMIT)
    if start is not None:
        rule.start_time.seconds = start
    if end is not None:
        rule.end_time.seconds = end
    view = DirectiveView(
        "d", 1, ACTIVE, organization("hospital-a"), rule, "hospital-a", accept_time=NOW
    )
    query = AccessQuery("hospital-a", "", "laboratory", "TREAT", NOW)
    assert decide([view], query).reason == reason
