"""The access policy (services/consent/domain/policy.py): nesting, DENY wins, and reasons
told apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sdk.consent import DENY, PERMIT, organization, practitioner, provision
from services.consent.domain.policy import (
    AccessQuery,
    DirectiveView,
    Verdict,
    check_provision,
    decide,
    provision_verdict,
)
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import directive_pb2

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
ACTIVE, REVOKED = entry_pb2.DIRECTIVE_STATUS_ACTIVE, entry_pb2.DIRECTIVE_STATUS_REVOKED


def query(
    category: str = "laboratory", purpose: str = "TREAT", org: str = "b", who: str = ""
) -> AccessQuery:
    return AccessQuery(org, who, category, purpose, NOW)


def view(
    rule: directive_pb2.Provision,
    *,
    grantee: directive_pb2.Grantee | None = None,
    status: entry_pb2.DirectiveStatus.ValueType = ACTIVE,
    directive_id: str = "d1",
    grantee_org: str = "b",
    accepted: datetime = NOW,
) -> DirectiveView:
    return DirectiveView(
        directive_id,
        1,
        status,
        grantee or organization("b"),
        rule,
        grantee_org,
        accepted,
    )


def test_a_deny_nested_in_a_permit_carves_an_exception() -> None:
    rule = provision(PERMIT, purposes=["TREAT"], nested=[provision(DENY, categories=["genetics"])])
    assert provision_verdict(rule, query()) is Verdict.PERMIT
    assert provision_verdict(rule, query("genetics")) is Verdict.DENY
    assert provision_verdict(rule, query(purpose="HRESCH")) is None


def test_deny_wins_among_siblings_and_the_deepest_match_decides() -> None:
    rule = provision(
        PERMIT,
        nested=[
            provision(PERMIT, categories=["imaging"]),
            provision(
                DENY, categories=["imaging"], nested=[provision(PERMIT, purposes=["ETREAT"])]
            ),
        ],
    )
    assert provision_verdict(rule, query("imaging")) is Verdict.DENY
    assert provision_verdict(rule, query("imaging", "ETREAT")) is Verdict.PERMIT


@pytest.mark.parametrize(
    ("directives", "asked", "decision", "reason", "decider"),
    [
        ([view(provision(PERMIT))], query(), "PERMIT", "PERMITTED", "d1"),
        ([view(provision(DENY))], query(), "DENY", "EXPLICIT_DENY", "d1"),
        ([], query(), "DENY", "NO_CONSENT", ""),
        ([view(provision(PERMIT, purposes=["HRESCH"]))], query(), "DENY", "NO_CONSENT", ""),
        (
            [view(provision(PERMIT), grantee_org="c", grantee=organization("c"))],
            query(),
            "DENY",
            "NO_CONSENT",
            "",
        ),
        (
            [view(provision(PERMIT, end=NOW - timedelta(days=1)))],
            query(),
            "DENY",
            "EXPIRED",
            "d1",
        ),
        (
            [view(provision(PERMIT, start=NOW + timedelta(days=1)))],
            query(),
            "DENY",
            "NO_CONSENT",
            "",
        ),
        ([view(provision(PERMIT), status=REVOKED)], query(), "DENY", "REVOKED", "d1"),
        (
            [view(provision(PERMIT), directive_id="p"), view(provision(DENY), directive_id="n")],
            query(),
            "DENY",
            "EXPLICIT_DENY",
            "n",
        ),
        (
            [view(provision(PERMIT), grantee=practitioner("dr-1"))],
            query(who="dr-1"),
            "PERMIT",
            "PERMITTED",
            "d1",
        ),
        (
            [view(provision(PERMIT), grantee=practitioner("dr-1"))],
            query(),
            "DENY",
            "NO_CONSENT",
            "",
        ),
        (
            [view(provision(PERMIT), grantee=practitioner("dr-1"))],
            query(org="c", who="dr-1"),  # the practitioner acting through another hospital
            "DENY",
            "NO_CONSENT",
            "",
        ),
        ([view(provision(PERMIT))], query(who="dr-2"), "PERMIT", "PERMITTED", "d1"),
    ],
)
def test_decision_table(
    directives: list[DirectiveView], asked: AccessQuery, decision: str, reason: str, decider: str
) -> None:
    outcome = decide(directives, asked)
    assert common_pb2.AccessDecision.Name(outcome.decision) == f"ACCESS_DECISION_{decision}"
    assert common_pb2.AccessReason.Name(outcome.reason) == f"ACCESS_REASON_{reason}"
    assert (outcome.directive.directive_id if outcome.directive else "") == decider


def test_the_latest_of_several_deciding_directives_is_named() -> None:
    older = view(provision(PERMIT), directive_id="old", accepted=NOW - timedelta(days=2))
    newer = view(provision(PERMIT), directive_id="new", accepted=NOW - timedelta(days=1))
    outcome = decide([older, newer], query())
    assert outcome.directive is not None and outcome.directive.directive_id == "new"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (provision(0), "expected the provision to be of type PERMIT or DENY, got 0"),  # type: ignore[arg-type]
        (provision(PERMIT, purposes=["TREATS"]), "expected HL7 PurposeOfUse codes"),
        (provision(PERMIT, categories=["dna"]), "expected data categories of the consortium"),
        (provision(PERMIT, start=NOW, end=NOW), "to end after it starts"),
        (
            provision(PERMIT, nested=[provision(DENY, purposes=["X"])]),
            "in a provision nested 1 deep",
        ),
    ],
)
def test_malformed_provisions_are_refused_with_what_was_expected(
    rule: directive_pb2.Provision, message: str
) -> None:
    problems = check_provision(rule)
    assert any(message in p for p in problems), problems


def test_nesting_is_bounded() -> None:
    rule = provision(PERMIT)
    for _ in range(10):
        rule = provision(PERMIT, nested=[rule])
    assert any("nested at most" in p for p in check_provision(rule))
