"""Reading directives: one directive with its history (GetConsent, ExportConsent) and a
patient's directives page by page (ListConsents), each only to those who may see it — the
patient, a delegate allowed to view, a hospital named by the directive, a regulator.

A listing is newest first by grant time: a directive's position is (the time its version 1 was
accepted, in milliseconds since the epoch; its id). The position never changes, so a page token
names the last directive given and the next page continues strictly after it: directives
granted, amended or revoked while a caller pages are neither repeated nor skipped (a newly
granted one sorts before the first page, and is on the next listing from the start).
Milliseconds, because that is what the store keeps of a time: a token outlives a restart that
reloads the versions from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chain.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from services.consent.domain.delegations import Delegations
from services.consent.domain.directory import Directory
from services.consent.domain.records import (
    CONSENT,
    DELEGATION,
    VIEW,
    AcceptedVersion,
    grantee_organization,
)
from services.consent.domain.versions import Versions
from services.platform.caller import Caller, Role
from services.platform.paging import filter_key, page_after, page_token
from swiftchain.chain.v1 import entry_pb2
from swiftchain.consent.v1 import directive_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True)
class ConsentPage:
    """One page of a patient's directives."""

    #: Each directive as its versions, oldest first; the directives newest granted first.
    directives: list[list[AcceptedVersion]]
    #: The patient's delegations (current versions), on the first page only.
    delegations: list[AcceptedVersion]
    #: The token for the next page; '' when this is the last.
    next_page_token: str


def listing_position(versions: list[AcceptedVersion]) -> tuple[int, str]:
    """A directive's place in a listing: (grant time in milliseconds, directive id)."""
    first = versions[0]
    return (first.accept_time - _EPOCH) // _MILLISECOND, first.document_id


class DirectiveReader:
    """Directives as their readers may see them."""

    def __init__(self, versions: Versions, directory: Directory, delegations: Delegations) -> None:
        self._versions = versions
        self._directory = directory
        self._delegations = delegations

    def history(self, caller: Caller, directive_id: str, now: datetime) -> list[AcceptedVersion]:
        """Every version of a directive, oldest first, if ``caller`` may see it."""
        versions = self._versions.history(directive_id)
        if not versions or versions[0].directive_type != CONSENT:
            raise NotFoundError(f"no directive {directive_id}")
        if not self._may_read(caller, versions, now):
            # Existence is not the caller's to know.
            raise NotFoundError(f"no directive {directive_id}")
        return versions

    def _may_read(self, caller: Caller, versions: list[AcceptedVersion], now: datetime) -> bool:
        if caller.role is Role.REGULATOR:
            return True
        if caller.role is Role.PATIENT:
            return self._delegations.may_act_for(caller, versions[-1].patient_subject_id, VIEW, now)
        if caller.role is Role.HOSPITAL:
            return any(self._grantee_organization(v) == caller.id for v in versions)
        return False

    def _grantee_organization(self, version: AcceptedVersion) -> str:
        return grantee_organization(self._directory, version.directive.grantee)

    def page(
        self,
        caller: Caller,
        patient: str,
        *,
        grantee: directive_pb2.Grantee | None,
        status: entry_pb2.DirectiveStatus.ValueType,
        size: int,
        token: str,
        now: datetime,
    ) -> ConsentPage:
        """The page of a patient's directives (at most ``size``) that ``caller`` may see, after
        the one ``token`` names ('' for the first page); only those for ``grantee`` if given,
        only those whose current status is ``status`` unless UNSPECIFIED. InvalidInputError for
        a token of another patient or filter."""
        if size < 1:
            raise InvalidInputError(f"expected a page size of at least 1, got {size}")
        if caller.role is Role.PATIENT and not self._delegations.may_act_for(
            caller, patient, VIEW, now
        ):
            raise PermissionDeniedError(
                f"{caller.describe()} may not read the consents of {patient!r}"
            )
        which = grantee.WhichOneof("grantee") if grantee is not None else None
        key = filter_key(
            "ListConsents",
            patient,
            which or "",
            getattr(grantee, which) if grantee is not None and which else "",
            int(status),
        )
        after = _position(page_after(token, key, 2))
        documents = self._versions.documents_of(patient)
        directives = [d for d in documents if d[0].directive_type == CONSENT]
        delegations = [d[-1] for d in documents if d[0].directive_type == DELEGATION]
        if caller.role is Role.HOSPITAL:
            directives = [d for d in directives if self._grantee_organization(d[-1]) == caller.id]
            delegations = []
        if grantee is not None and which is not None:
            directives = [d for d in directives if d[-1].directive.grantee == grantee]
        if status != entry_pb2.DIRECTIVE_STATUS_UNSPECIFIED:
            directives = [d for d in directives if d[-1].status == status]
        listed = sorted(
            ((listing_position(d), d) for d in directives), key=lambda p: p[0], reverse=True
        )
        if after is not None:
            listed = [(position, d) for position, d in listed if position < after]
        page = listed[:size]
        return ConsentPage(
            directives=[d for _, d in page],
            delegations=delegations if after is None else [],
            next_page_token=page_token(page[-1][0], key) if len(listed) > size else "",
        )


def _position(after: tuple[str | int, ...] | None) -> tuple[int, str] | None:
    if after is None:
        return None
    grant_ms, directive_id = after
    if not isinstance(grant_ms, int) or not isinstance(directive_id, str):
        raise InvalidInputError("expected a page token from a previous response of ListConsents")
    return grant_ms, directive_id
