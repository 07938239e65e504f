"""Access decisions from consent directives: pure functions, no storage, no clock.

The rules are those of ``swiftchain.consent.v1.Provision`` (protos/.../directive.proto):

* a provision matches a request when the request's time lies in ``[start_time, end_time)``,
  its purpose is among ``purposes`` and its data category among ``data_categories`` (an empty
  list or an absent time matches anything within the parent);
* a matching provision's verdict is that of its matching nested provisions when any match (DENY
  wins among siblings), else its own type — so a deny nested in a permit carves an exception;
* across a patient's directives for the requester: any DENY decides (EXPLICIT_DENY), otherwise
  any PERMIT (PERMITTED), otherwise the request is denied with NO_CONSENT, or with REVOKED or
  EXPIRED when the only directives that would have permitted it are revoked or past their end.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.platform.fields import nanos_of, timestamp_nanos
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import directive_pb2

#: HL7 v3 PurposeOfUse codes a directive or a request may name.
PURPOSES: frozenset[str] = frozenset(
    {
        "TREAT",  # treatment
        "ETREAT",  # emergency treatment
        "HPAYMT",  # healthcare payment
        "HOPERAT",  # healthcare operations
        "HRESCH",  # healthcare research
        "PUBHLTH",  # public health
        "HMARKT",  # marketing
        "PATRQT",  # patient requested
        "FAMRQT",  # family requested
        "CAREMGT",  # care management
        "COVERAGE",  # coverage under a policy
        "LEGAL",  # legal
    }
)
#: The consortium's data categories.
DATA_CATEGORIES: frozenset[str] = frozenset(
    {
        "demographics",
        "encounters",
        "laboratory",
        "imaging",
        "medication",
        "allergies",
        "immunizations",
        "procedures",
        "vital-signs",
        "clinical-notes",
        "mental-health",
        "substance-use",
        "sexual-health",
        "genetics",
    }
)
#: How deep provisions may nest (a directive deeper than this is refused).
MAX_NESTING = 8

PERMIT = directive_pb2.PROVISION_TYPE_PERMIT
DENY = directive_pb2.PROVISION_TYPE_DENY


class Verdict(enum.Enum):
    """What one directive says about one request."""

    PERMIT = "permit"
    DENY = "deny"


@dataclass(frozen=True)
class AccessQuery:
    """One access request, as the policy sees it."""

    organization_id: str
    #: The practitioner who asks, if any (already checked to belong to ``organization_id``).
    practitioner_id: str
    data_category: str
    purpose: str
    time: datetime


@dataclass(frozen=True)
class DirectiveView:
    """The current version of a directive, as the policy needs it."""

    directive_id: str
    version: int
    status: entry_pb2.DirectiveStatus.ValueType
    grantee: directive_pb2.Grantee
    provision: directive_pb2.Provision
    #: The organization of a practitioner grantee (for an organization grantee: itself).
    grantee_organization_id: str
    #: When the version was accepted: among several deciding directives, the latest decides.
    accept_time: datetime


@dataclass(frozen=True)
class Decision:
    """The outcome for a request: the decision, why, and the directive that decided."""

    decision: common_pb2.AccessDecision.ValueType
    reason: common_pb2.AccessReason.ValueType
    directive: DirectiveView | None = None


# Times are compared in nanoseconds: a directive stored before times were checked may hold one
# beyond year 9999, which a datetime cannot hold, and a decision must still be made.


def _within(provision: directive_pb2.Provision, time: datetime) -> bool:
    now = nanos_of(time)
    if provision.HasField("start_time") and now < timestamp_nanos(provision.start_time):
        return False
    return not (provision.HasField("end_time") and now >= timestamp_nanos(provision.end_time))


def _applies(provision: directive_pb2.Provision, query: AccessQuery, *, timed: bool) -> bool:
    if provision.purposes and query.purpose not in provision.purposes:
        return False
    if provision.data_categories and query.data_category not in provision.data_categories:
        return False
    return not timed or _within(provision, query.time)


def provision_verdict(
    provision: directive_pb2.Provision, query: AccessQuery, *, root_timed: bool = True
) -> Verdict | None:
    """The verdict of ``provision`` (and its nested provisions) on ``query``; None when it does
    not match. ``root_timed=False`` ignores the top provision's own period (to tell an expired
    directive from one that never applied)."""
    if not _applies(provision, query, timed=root_timed):
        return None
    nested = [provision_verdict(child, query) for child in provision.provisions]
    if Verdict.DENY in nested:
        return Verdict.DENY
    if Verdict.PERMIT in nested:
        return Verdict.PERMIT
    return Verdict.PERMIT if provision.type == PERMIT else Verdict.DENY


def names_requester(directive: DirectiveView, query: AccessQuery) -> bool:
    """True when the directive's grantee is the requester: its organization (any of its
    practitioners), or the very practitioner asking through its own organization."""
    which = directive.grantee.WhichOneof("grantee")
    if which == "organization_id":
        return directive.grantee.organization_id == query.organization_id
    if which == "practitioner_id":
        return (
            directive.grantee.practitioner_id == query.practitioner_id
            and directive.grantee_organization_id == query.organization_id
        )
    return False


def _latest(directives: Sequence[DirectiveView]) -> DirectiveView:
    return max(directives, key=lambda d: (d.accept_time, d.directive_id))


def decide(directives: Iterable[DirectiveView], query: AccessQuery) -> Decision:
    """The decision on ``query`` from a patient's directives (current versions)."""
    denies: list[DirectiveView] = []
    permits: list[DirectiveView] = []
    revoked: list[DirectiveView] = []
    expired: list[DirectiveView] = []
    for directive in directives:
        if not names_requester(directive, query):
            continue
        if directive.status == entry_pb2.DIRECTIVE_STATUS_REVOKED:
            # A revocation carries a copy of the revoked provision: would it have permitted?
            if provision_verdict(directive.provision, query) is Verdict.PERMIT:
                revoked.append(directive)
            continue
        verdict = provision_verdict(directive.provision, query)
        if verdict is Verdict.DENY:
            denies.append(directive)
        elif verdict is Verdict.PERMIT:
            permits.append(directive)
        elif (
            provision_verdict(directive.provision, query, root_timed=False) is Verdict.PERMIT
            and directive.provision.HasField("end_time")
            and nanos_of(query.time) >= timestamp_nanos(directive.provision.end_time)
        ):
            expired.append(directive)
    deny, permit = common_pb2.ACCESS_DECISION_DENY, common_pb2.ACCESS_DECISION_PERMIT
    if denies:
        return Decision(deny, common_pb2.ACCESS_REASON_EXPLICIT_DENY, _latest(denies))
    if permits:
        return Decision(permit, common_pb2.ACCESS_REASON_PERMITTED, _latest(permits))
    if revoked:
        return Decision(deny, common_pb2.ACCESS_REASON_REVOKED, _latest(revoked))
    if expired:
        return Decision(deny, common_pb2.ACCESS_REASON_EXPIRED, _latest(expired))
    return Decision(deny, common_pb2.ACCESS_REASON_NO_CONSENT)


def check_provision(provision: directive_pb2.Provision, depth: int = 0) -> list[str]:
    """The problems of a provision tree, as messages ("expected X, got Y"); empty when valid."""
    where = "the provision" if depth == 0 else f"a provision nested {depth} deep"
    problems: list[str] = []
    if depth >= MAX_NESTING:
        return [f"expected provisions nested at most {MAX_NESTING} deep, got deeper"]
    if provision.type not in (PERMIT, DENY):
        problems.append(f"expected {where} to be of type PERMIT or DENY, got {provision.type}")
    unknown_purposes = sorted(set(provision.purposes) - PURPOSES)
    if unknown_purposes:
        problems.append(
            f"expected HL7 PurposeOfUse codes ({', '.join(sorted(PURPOSES))}) in {where}, "
            f"got {', '.join(unknown_purposes)}"
        )
    unknown_categories = sorted(set(provision.data_categories) - DATA_CATEGORIES)
    if unknown_categories:
        problems.append(
            f"expected data categories of the consortium ({', '.join(sorted(DATA_CATEGORIES))}) "
            f"in {where}, got {', '.join(unknown_categories)}"
        )
    if (
        provision.HasField("start_time")
        and provision.HasField("end_time")
        and timestamp_nanos(provision.end_time) <= timestamp_nanos(provision.start_time)
    ):
        problems.append(f"expected {where} to end after it starts, got an empty period")
    for child in provision.provisions:
        problems.extend(check_provision(child, depth + 1))
    return problems
