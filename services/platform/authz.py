"""The authorization table: for every RPC of every service, who may call it.

One row per RPC (DESIGN §4, "The API surface"). A row says which roles may call the RPC and, for
some roles, which request field must name the caller itself ("a hospital only for its own
records"). The interceptor in services/platform/auth.py enforces the roles and those fields before
the handler runs; rules that depend on stored data ("the hospital that anchored this record")
are named in ``service_rule`` and enforced by the service's domain. An RPC without a row is
denied to everyone, and a test fails for every RPC of the protos that has no row.

``python -m services.platform.authz`` prints the table as Markdown; docs/security.md carries that
output and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from services.platform.caller import Role

#: Every authenticated role ("any" in DESIGN §4).
ANY: frozenset[Role] = frozenset(Role) - {Role.ANONYMOUS}
#: Everyone, anonymous callers included.
EVERYONE: frozenset[Role] = frozenset(Role)
#: Organization roles that act for themselves only.
_ORGANIZATIONS = (Role.HOSPITAL, Role.REGULATOR, Role.APP)


@dataclass(frozen=True)
class Rule:
    """Who may call one RPC."""

    roles: frozenset[Role]
    #: role -> dotted request field that must equal the caller's id for callers of that role.
    owner_fields: Mapping[Role, str] = field(default_factory=lambda: MappingProxyType({}))
    #: An ownership rule the service checks against its stored data, in words (for the docs).
    service_rule: str = ""

    def __post_init__(self) -> None:
        stray = set(self.owner_fields) - set(self.roles)
        if stray:
            raise ValueError(f"owner fields for roles that may not call: {sorted(stray)}")


def _rule(
    *roles: Role,
    owners: Mapping[Role, str] | None = None,
    service_rule: str = "",
) -> Rule:
    return Rule(frozenset(roles), MappingProxyType(dict(owners or {})), service_rule)


def _own(path: str, *roles: Role) -> dict[Role, str]:
    return dict.fromkeys(roles, path)


_I = "/swiftchain.identity.v1.IdentityService/"
_AN = "/swiftchain.anchoring.v1.AnchoringService/"
_CO = "/swiftchain.consent.v1.ConsentService/"
_AU = "/swiftchain.audit.v1.AuditService/"
_CH = "/swiftchain.chain.v1.ChainService/"

_ORG_SELF = _own("organization_id", *_ORGANIZATIONS)
_TRAIL_OWNERS = {
    Role.PATIENT: "filter.patient_subject_id",
    Role.HOSPITAL: "filter.organization_id",
}
_DEVICE_SIGNED = "the request is signed by an active device key of the patient"
_MEMBER_SIGNED = "the entry is signed by a node member's own key at the node's log position"
_ORG_KEY_SIGNED = (
    "the request is signed by the organization's active signing key (the admin only relays it)"
)
_PATIENT_SIGNED = (
    "the directive is signed by a device key of the calling patient (or of a delegate acting "
    "within its delegation)"
)

#: The table: full RPC method name -> rule.
RULES: Mapping[str, Rule] = MappingProxyType(
    {
        # Infrastructure every client needs, before it has any credential.
        "/grpc.health.v1.Health/Check": _rule(*EVERYONE),
        "/grpc.health.v1.Health/Watch": _rule(*EVERYONE),
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _rule(*EVERYONE),
        # identity
        _I + "RegisterOrganization": _rule(Role.ADMIN),
        _I + "IssueCertificate": _rule(Role.ADMIN, *_ORGANIZATIONS, owners=_ORG_SELF),
        _I + "RevokeCertificate": _rule(Role.ADMIN),
        _I + "RotateOrganizationKey": _rule(
            Role.ADMIN, *_ORGANIZATIONS, owners=_ORG_SELF, service_rule=_ORG_KEY_SIGNED
        ),
        _I + "RevokeOrganizationKey": _rule(
            Role.ADMIN, *_ORGANIZATIONS, owners=_ORG_SELF, service_rule=_ORG_KEY_SIGNED
        ),
        _I + "RegisterPractitioner": _rule(
            Role.HOSPITAL, owners=_own("organization_id", Role.HOSPITAL)
        ),
        _I + "RegisterPatient": _rule(Role.HOSPITAL, Role.APP),
        # The one-time enrollment code is the credential: a patient's device has no other yet.
        _I + "EnrollDevice": _rule(
            *EVERYONE,
            service_rule="the enrollment code is unexpired, unused and the patient's latest, and "
            "the new key's proof of possession is bound to it",
        ),
        _I + "AddPatientDevice": _rule(
            Role.PATIENT, owners=_own("subject_id", Role.PATIENT), service_rule=_DEVICE_SIGNED
        ),
        _I + "RevokePatientDevice": _rule(
            Role.PATIENT, owners=_own("subject_id", Role.PATIENT), service_rule=_DEVICE_SIGNED
        ),
        _I + "IssueRecoveryCode": _rule(
            Role.HOSPITAL,
            service_rule="the caller registered the patient or holds a reference to it, and the "
            "patient has had a device",
        ),
        # The one-time recovery code is the credential, as an enrollment code is.
        _I + "BeginRecovery": _rule(
            *EVERYONE,
            service_rule="the recovery code is unexpired, unused and the patient's latest, and "
            "the new key signed the request within 5 minutes",
        ),
        _I + "ListRecoveries": _rule(Role.PATIENT, owners=_own("subject_id", Role.PATIENT)),
        _I + "CancelRecovery": _rule(
            Role.PATIENT, owners=_own("subject_id", Role.PATIENT), service_rule=_DEVICE_SIGNED
        ),
        _I + "CompleteRecovery": _rule(
            *EVERYONE,
            service_rule="the waiting period is over and no device of the patient cancelled it",
        ),
        _I + "BeginLogin": _rule(*EVERYONE),
        _I + "CompleteLogin": _rule(*EVERYONE),
        _I + "GetOrganization": _rule(*ANY),
        _I + "ListOrganizations": _rule(*ANY),
        _I + "ResolveKey": _rule(*ANY),
        _I + "GetConsortium": _rule(*ANY),
        # anchoring
        _AN + "AnchorRecord": _rule(
            Role.HOSPITAL, service_rule="the signed entry is submitted and signed by the caller"
        ),
        _AN + "AnchorRecords": _rule(
            Role.HOSPITAL, service_rule="each signed entry is submitted and signed by the caller"
        ),
        _AN + "GetReceipt": _rule(
            Role.HOSPITAL, Role.REGULATOR, service_rule="a hospital: only for its own anchors"
        ),
        _AN + "VerifyRecord": _rule(
            Role.HOSPITAL, Role.REGULATOR, owners=_own("organization_id", Role.HOSPITAL)
        ),
        _AN + "GetProvenance": _rule(
            Role.HOSPITAL, Role.REGULATOR, owners=_own("organization_id", Role.HOSPITAL)
        ),
        _AN + "ExportProvenance": _rule(
            Role.HOSPITAL, Role.REGULATOR, owners=_own("organization_id", Role.HOSPITAL)
        ),
        # consent
        _CO + "GrantConsent": _rule(Role.PATIENT, service_rule=_PATIENT_SIGNED),
        _CO + "AmendConsent": _rule(Role.PATIENT, service_rule=_PATIENT_SIGNED),
        _CO + "RevokeConsent": _rule(Role.PATIENT, service_rule=_PATIENT_SIGNED),
        _CO + "AddDelegate": _rule(Role.PATIENT, service_rule=_PATIENT_SIGNED),
        _CO + "RemoveDelegate": _rule(Role.PATIENT, service_rule=_PATIENT_SIGNED),
        _CO + "GetConsent": _rule(
            Role.PATIENT,
            Role.HOSPITAL,
            Role.REGULATOR,
            service_rule="a patient: its own directives (or as a delegate); a hospital: "
            "directives that grant to it or its practitioners",
        ),
        _CO + "ListConsents": _rule(
            Role.PATIENT,
            Role.HOSPITAL,
            Role.REGULATOR,
            service_rule="a patient: its own, or those of a patient it is a delegate of; a "
            "hospital: only directives that grant to it or its practitioners",
        ),
        _CO + "ExportConsent": _rule(
            Role.PATIENT,
            Role.HOSPITAL,
            Role.REGULATOR,
            service_rule="a patient: its own directives (or as a delegate); a hospital: "
            "directives that grant to it or its practitioners",
        ),
        _CO + "CheckAccess": _rule(Role.HOSPITAL),
        _CO + "BreakGlass": _rule(Role.HOSPITAL),
        _CO + "WatchNotifications": _rule(
            Role.PATIENT,
            service_rule="its own, or those of a patient it is a delegate of (scope VIEW)",
        ),
        # audit
        _AU + "QueryTrail": _rule(
            Role.REGULATOR, Role.PATIENT, Role.HOSPITAL, owners=_TRAIL_OWNERS
        ),
        _AU + "StreamTrail": _rule(
            Role.REGULATOR, Role.PATIENT, Role.HOSPITAL, owners=_TRAIL_OWNERS
        ),
        _AU + "ExportEvidence": _rule(
            Role.REGULATOR,
            Role.PATIENT,
            Role.HOSPITAL,
            owners=_TRAIL_OWNERS,
            service_rule="entries named by id are only those the filter's owner may see",
        ),
        _AU + "CheckCompleteness": _rule(Role.REGULATOR),
        _AU + "ListFlags": _rule(Role.REGULATOR),
        _AU + "ReviewFlag": _rule(Role.REGULATOR),
        _AU + "ExportAuditEvents": _rule(Role.REGULATOR),
        # chain: public facts about the log, for every authenticated party
        _CH + "GetCheckpoint": _rule(*ANY),
        _CH + "GetInclusionProof": _rule(*ANY),
        _CH + "GetConsistencyProof": _rule(*ANY),
        _CH + "GetEntries": _rule(*ANY),
        _CH + "GetEntryStatus": _rule(*ANY),
        _CH + "WatchCheckpoints": _rule(*ANY),
        _CH + "GetConsortium": _rule(*ANY),
        _CH + "GetNodeStatus": _rule(*ANY),
        _CH + "ListAlarms": _rule(*ANY),
        # membership votes: the entry's signature by a voting member is what authorizes
        _CH + "ProposeMembership": _rule(*ANY, service_rule=_MEMBER_SIGNED),
        _CH + "ApproveMembership": _rule(*ANY, service_rule=_MEMBER_SIGNED),
        _CH + "GetMembership": _rule(*ANY),
    }
)


def rule_for(method: str) -> Rule | None:
    """The rule for a full method name ("/package.Service/Method"), or None (deny)."""
    return RULES.get(method)


def read_field(message: object, path: str) -> str:
    """The value of a dotted field path of a protobuf message, as text ('' when unset)."""
    value: object = message
    for name in path.split("."):
        value = getattr(value, name)
    return value if isinstance(value, str) else ""


_ROLE_ORDER = (
    Role.ADMIN,
    Role.HOSPITAL,
    Role.REGULATOR,
    Role.APP,
    Role.PATIENT,
    Role.SERVICE,
    Role.CHAIN_NODE,
    Role.ANONYMOUS,
)


def _describe_roles(rule: Rule) -> str:
    if rule.roles == EVERYONE:
        return "everyone, anonymous included"
    if rule.roles == ANY:
        return "any authenticated caller"
    parts = []
    for role in _ROLE_ORDER:
        if role not in rule.roles:
            continue
        owner = rule.owner_fields.get(role)
        parts.append(f"{role.value} (only its own: `{owner}`)" if owner else role.value)
    return ", ".join(parts)


def markdown_table() -> str:
    """The table as Markdown, one row per RPC, in table order."""
    lines = [
        "| RPC | who may call | further rule checked by the service |",
        "| --- | --- | --- |",
    ]
    for method, rule in RULES.items():
        service, name = method.strip("/").rsplit("/", 1)
        lines.append(
            f"| `{service.rsplit('.', 1)[-1]}.{name}` | {_describe_roles(rule)} | "
            f"{rule.service_rule or '—'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
