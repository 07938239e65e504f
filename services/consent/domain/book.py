"""The consent domain as one object for the service's entry point, servicer and sender: the
parts (directives, delegations, reading, decisions, announcements) composed over one set of
accepted versions held in memory and written through to the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from chain.entry import EntrySigner
from services.consent.domain.decisions import Decisions
from services.consent.domain.delegations import Delegations
from services.consent.domain.directives import Directives
from services.consent.domain.directory import Directory
from services.consent.domain.entries import EntryWriter
from services.consent.domain.notifications import PRODUCER, Announcer, NotificationSink, Outgoing
from services.consent.domain.reading import ConsentPage, DirectiveReader
from services.consent.domain.records import AcceptedVersion, ConsentStore, StoredDecision
from services.consent.domain.versions import Versions
from services.platform.caller import Caller
from swiftchain.chain.v1 import entry_pb2
from swiftchain.consent.v1 import directive_pb2

#: How long a change waits for a party or device key that identity announced a moment ago.
DEVICE_KEY_GRACE_SECONDS = 3.0


class ConsentBook:
    """Directives, delegations and decisions of all patients of one consent service."""

    def __init__(
        self,
        store: ConsentStore,
        directory: Directory,
        signer: EntrySigner,
        tag_key: bytes,
        *,
        submitter_id: str = PRODUCER,
        send: Callable[[Outgoing], None] = lambda _: None,
        notify: NotificationSink | None = None,
        key_grace_seconds: float = DEVICE_KEY_GRACE_SECONDS,
    ) -> None:
        self._store = store
        self._versions = Versions()
        entries = EntryWriter(signer, tag_key, submitter_id)
        self._announcer = Announcer(directory, tag_key, send, notify)
        parts = (self._versions, store, directory, entries, self._announcer)
        self._delegations = Delegations(*parts, key_grace_seconds)
        self._directives = Directives(*parts, key_grace_seconds)
        self._reader = DirectiveReader(self._versions, directory, self._delegations)
        self._decisions = Decisions(*parts, key_grace_seconds)

    def set_sender(self, send: Callable[[Outgoing], None]) -> None:
        """Where accepted changes go to reach Kafka (the sender is made after the book)."""
        self._announcer.set_sender(send)

    # --- state -------------------------------------------------------------------------

    def load(self) -> list[AcceptedVersion]:
        """Read every stored version; return those whose entry Kafka never acknowledged."""
        unlogged: list[AcceptedVersion] = []
        with self._versions.lock:
            for version in self._store.load_versions():
                self._versions.remember(version)
                if not version.logged:
                    unlogged.append(version)
        return unlogged

    def record_leaf_index(self, entry_id: str, leaf_index: int) -> AcceptedVersion | None:
        """Remember where a version's CONSENT entry landed; the version, if it is one of ours."""
        return self._versions.record_leaf_index(entry_id, leaf_index)

    def awaiting_leaf_index(self) -> list[AcceptedVersion]:
        """Versions whose entry has no known leaf index yet."""
        return self._versions.awaiting_leaf_index()

    # --- what leaves -------------------------------------------------------------------

    def outgoing_for(self, version: AcceptedVersion) -> Outgoing:
        """The entry, events and notification of a stored version (the same again to resend
        after a restart)."""
        return self._announcer.outgoing_for(version)

    def decision_outgoing(self, decision: StoredDecision) -> Outgoing:
        """The entry and events of a stored decision (the same again after a restart)."""
        return self._announcer.decision_outgoing(decision)

    def deliver(self, item: Outgoing) -> None:
        """Hand ``item`` to the sender and its notifications to the patients' watchers (at
        start too, for what Kafka never acknowledged before a crash)."""
        self._announcer.deliver(item)

    # --- directives and delegations ---------------------------------------------------

    def accept_directive(
        self,
        caller: Caller,
        raw_signed: directive_pb2.SignedDirective,
        *,
        revoke: bool,
        first: bool,
        now: datetime,
    ) -> AcceptedVersion:
        """Check and accept one signed directive version (grant when ``first``, else amend or,
        with ``revoke``, revoke)."""
        return self._directives.accept(caller, raw_signed, revoke=revoke, first=first, now=now)

    def accept_delegation(
        self,
        caller: Caller,
        raw_signed: directive_pb2.SignedDelegation,
        *,
        remove: bool,
        now: datetime,
    ) -> AcceptedVersion:
        """Check and accept one signed delegation version (add or change; ``remove``)."""
        return self._delegations.accept(caller, raw_signed, remove=remove, now=now)

    # --- reading -------------------------------------------------------------------------

    def history(self, caller: Caller, directive_id: str, now: datetime) -> list[AcceptedVersion]:
        """Every version of a directive, oldest first, if ``caller`` may see it."""
        return self._reader.history(caller, directive_id, now)

    def may_act_for(
        self,
        caller: Caller,
        patient: str,
        scope: directive_pb2.DelegationScope.ValueType,
        now: datetime,
    ) -> bool:
        """True when ``caller`` is the patient, or a delegate of it with ``scope`` (MANAGE
        implies VIEW) whose delegation is active and unexpired at ``now``."""
        return self._delegations.may_act_for(caller, patient, scope, now)

    def list_page(
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
        """One page of the directives of a patient that ``caller`` may see, newest granted
        first, after the directive ``token`` names (see services/consent/domain/reading.py)."""
        return self._reader.page(
            caller, patient, grantee=grantee, status=status, size=size, token=token, now=now
        )

    # --- access decisions ------------------------------------------------------------------

    def check_access(
        self,
        caller: Caller,
        patient: str,
        data_category: str,
        purpose: str,
        practitioner_id: str,
        request_id: str,
        now: datetime,
    ) -> StoredDecision:
        """Decide, record durably, and hand the ACCESS entry to the sender; a retry with the
        same request id returns the first decision."""
        return self._decisions.check_access(
            caller, patient, data_category, purpose, practitioner_id, request_id, now
        )

    def break_glass(
        self,
        caller: Caller,
        patient: str,
        data_category: str,
        reason_code: str,
        justification: str,
        practitioner_id: str,
        purpose: str,
        request_id: str,
        now: datetime,
    ) -> StoredDecision:
        """Emergency access: always permitted, recorded, flagged and told to the patient."""
        return self._decisions.break_glass(
            caller,
            patient,
            data_category,
            reason_code,
            justification,
            practitioner_id,
            purpose,
            request_id,
            now,
        )
