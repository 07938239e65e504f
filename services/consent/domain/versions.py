"""The accepted versions of every directive and delegation, kept in memory (decisions read
memory only; the store is written through), and the rules every new version follows: it is the
next number, and a resent version gets the first answer back."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from chain.errors import AlreadyExistsError, InvalidInputError, NotFoundError, StaleVersionError
from services.consent.domain.entries import EntryWriter
from services.consent.domain.records import AcceptedVersion
from services.consent.domain.signatures import SignerKey
from swiftchain.chain.v1 import entry_pb2


class Versions:
    """Every accepted version by document, by patient and by entry (thread-safe)."""

    def __init__(self) -> None:
        #: Held by a change from reading a document's history until its new version is stored
        #: and remembered, so that two changes cannot both become version n.
        self.lock = threading.Lock()
        #: document id -> its versions, oldest first.
        self._versions: dict[str, list[AcceptedVersion]] = {}
        #: patient -> ids of its directives and delegations.
        self._by_patient: dict[str, list[str]] = {}
        #: entry id -> version, to record leaf indexes.
        self._by_entry: dict[str, AcceptedVersion] = {}

    def remember(self, version: AcceptedVersion) -> None:
        """Add a stored version (the caller holds :attr:`lock`)."""
        versions = self._versions.setdefault(version.document_id, [])
        if not versions:
            self._by_patient.setdefault(version.patient_subject_id, []).append(version.document_id)
        versions.append(version)
        self._by_entry[version.entry_id] = version

    def held_history(self, document_id: str) -> Sequence[AcceptedVersion]:
        """The versions of a document, oldest first (the caller holds :attr:`lock`)."""
        return self._versions.get(document_id, [])

    def history(self, document_id: str) -> list[AcceptedVersion]:
        """The versions of a document, oldest first."""
        with self.lock:
            return list(self._versions.get(document_id, []))

    def version(self, document_id: str, number: int) -> AcceptedVersion:
        """Version ``number`` of a document that has it."""
        with self.lock:
            return next(v for v in self._versions[document_id] if v.version == number)

    def documents_of(self, patient: str) -> list[list[AcceptedVersion]]:
        """The directives and delegations of a patient, each as its versions, oldest first."""
        with self.lock:
            return [list(self._versions[i]) for i in self._by_patient.get(patient, [])]

    def ends_of(self, patient: str) -> list[tuple[AcceptedVersion, AcceptedVersion]]:
        """(first version, current version) of each directive and delegation of a patient."""
        with self.lock:
            return [
                (self._versions[i][0], self._versions[i][-1])
                for i in self._by_patient.get(patient, [])
            ]

    def record_leaf_index(self, entry_id: str, leaf_index: int) -> AcceptedVersion | None:
        """Remember where a version's CONSENT entry landed; the version, if it is one of ours."""
        with self.lock:
            version = self._by_entry.get(entry_id)
            if version is not None:
                version.leaf_index = leaf_index
            return version

    def awaiting_leaf_index(self) -> list[AcceptedVersion]:
        """Versions whose entry has no known leaf index yet."""
        with self.lock:
            return [v for v in self._by_entry.values() if v.leaf_index is None]


def resent(
    history: Sequence[AcceptedVersion], signed: bytes, version: int
) -> AcceptedVersion | None:
    """The accepted version that ``signed`` repeats, if it is a retry."""
    for accepted in history:
        if accepted.version == version and accepted.signed == signed:
            return accepted  # a retry of an accepted version: same answer, nothing new
    return None


def check_next_version(
    history: Sequence[AcceptedVersion], version: int, first: bool, what: str
) -> None:
    """Raise unless ``version`` is the next one of ``history`` (version 1 of a new document
    when ``first``)."""
    if first:
        if history:
            raise AlreadyExistsError(
                f"{what} {history[0].document_id} exists already; amend it with version "
                f"{history[-1].version + 1}"
            )
        if version != 1:
            raise InvalidInputError(f"expected version 1 for a new {what}, got {version}")
        return
    if not history:
        raise NotFoundError(f"no {what} with that id; grant it first")
    expected = history[-1].version + 1
    if version != expected:
        raise StaleVersionError(
            f"expected version {expected} of the {what} (the latest is "
            f"{history[-1].version}), got {version}; re-read it and sign the next version"
        )


def new_version(
    entries: EntryWriter,
    directive_type: entry_pb2.DirectiveType.ValueType,
    document_id: str,
    number: int,
    patient: str,
    signed: bytes,
    document: bytes,
    signer_subject: str,
    key: SignerKey,
    signature: bytes,
    previous: AcceptedVersion | None,
    delegation: AcceptedVersion | None,
    now: datetime,
) -> AcceptedVersion:
    """A new version with its signed CONSENT entry (not stored yet)."""
    entry = entries.consent_entry(
        directive_type,
        document_id,
        number,
        patient,
        document,
        key.key_id,
        signature,
        previous,
        delegation,
        now,
    )
    return AcceptedVersion(
        directive_type=directive_type,
        document_id=document_id,
        version=number,
        patient_subject_id=patient,
        signed=signed,
        signer_subject_id=signer_subject,
        signer_key_id=key.key_id,
        signer_public_key=key.public_key,
        entry_id=entry.entry_id,
        entry=entry.entry,
        commitment=entry.commitment,
        salt=entry.salt,
        accept_time=now,
    )
