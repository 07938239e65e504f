"""The log entries of the consent service: a CONSENT entry for every accepted directive or
delegation version, an ACCESS entry for every access decision. Each carries a salted commitment
to what it stands for (the signed document, or the access record below), never the thing itself,
and is signed by the consent service's genesis key."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from chain.entry import EntrySigner, new_entry_id
from chain.tags import device_key_tag, salted_commitment, subject_tag
from services.consent.domain.records import CONSENT, AcceptedVersion, parse
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import directive_pb2


@dataclass(frozen=True)
class SignedEntry:
    """One signed entry and the commitment it carries."""

    entry_id: str
    #: The entry's exact bytes (a serialized ChainEntry).
    entry: bytes
    commitment: bytes
    #: The commitment's salt: kept off the log.
    salt: bytes


class EntryWriter:
    """Builds and signs this consent service's CONSENT and ACCESS entries."""

    def __init__(self, signer: EntrySigner, tag_key: bytes, submitter_id: str) -> None:
        self._signer = signer
        self._tag_key = tag_key
        self._submitter_id = submitter_id

    def consent_entry(
        self,
        directive_type: entry_pb2.DirectiveType.ValueType,
        document_id: str,
        number: int,
        patient: str,
        document: bytes,
        key_id: str,
        signature: bytes,
        previous: AcceptedVersion | None,
        delegation: AcceptedVersion | None,
        now: datetime,
    ) -> SignedEntry:
        """The CONSENT entry of version ``number`` of a directive or delegation (``document``:
        its serialized ConsentDirective or Delegation), referring to the ``previous`` version
        and to the ``delegation`` a delegate signed under."""
        salt, commitment = salted_commitment(document)
        entry_id = new_entry_id()
        status = (
            parse(directive_pb2.ConsentDirective, document).status
            if directive_type == CONSENT
            else parse(directive_pb2.Delegation, document).status
        )
        body = self._body(entry_id, common_pb2.ENTRY_KIND_CONSENT, commitment, patient)
        body.consent.CopyFrom(
            entry_pb2.ConsentDetail(
                directive_type=directive_type,
                directive_id=document_id,
                version=number,
                status=status,
                signer_key_tag=device_key_tag(self._tag_key, key_id),
                signer_signature=signature,
            )
        )
        references = [
            (entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION, previous),
            (entry_pb2.REFERENCE_KIND_DELEGATION, delegation),
        ]
        return self._signed(body, now, references, salt)

    def access_entry(
        self,
        key: str,
        requester: str,
        patient: str,
        category: str,
        purpose: str,
        practitioner: str,
        decision: common_pb2.AccessDecision.ValueType,
        reason: common_pb2.AccessReason.ValueType,
        deciding: AcceptedVersion | None,
        reason_code: str,
        justification: str,
        now: datetime,
    ) -> SignedEntry:
        """The ACCESS entry of one decision (request ``key``), committing to a
        ``swiftchain-access-record/v1`` JSON record of the request and its outcome, and
        referring to the deciding directive version if there is one."""
        entry_id = new_entry_id()
        record = json.dumps(
            {
                "format": "swiftchain-access-record/v1",
                "entry_id": entry_id,
                "request": key,
                "patient": patient,
                "requester": requester,
                "practitioner": practitioner,
                "data_category": category,
                "purpose": purpose,
                "decision": common_pb2.AccessDecision.Name(decision),
                "reason": common_pb2.AccessReason.Name(reason),
                "reason_code": reason_code,
                "justification": justification,
                "time": now.isoformat(),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        salt, commitment = salted_commitment(record)
        body = self._body(entry_id, common_pb2.ENTRY_KIND_ACCESS, commitment, patient)
        body.access.CopyFrom(
            entry_pb2.AccessDetail(
                decision=decision,
                break_glass=reason == common_pb2.ACCESS_REASON_BREAK_GLASS,
                requester_id=requester,
                deciding_directive_id=deciding.document_id if deciding else "",
                deciding_directive_version=deciding.version if deciding else 0,
                reason=reason,
            )
        )
        references = [(entry_pb2.REFERENCE_KIND_DECIDING_CONSENT, deciding)]
        return self._signed(body, now, references, salt)

    def _body(
        self, entry_id: str, kind: common_pb2.EntryKind.ValueType, commitment: bytes, patient: str
    ) -> entry_pb2.EntryBody:
        return entry_pb2.EntryBody(
            entry_id=entry_id,
            kind=kind,
            submitter_id=self._submitter_id,
            commitment=commitment,
            subject_tag=subject_tag(self._tag_key, patient),
        )

    def _signed(
        self,
        body: entry_pb2.EntryBody,
        now: datetime,
        references: Sequence[tuple[entry_pb2.ReferenceKind.ValueType, AcceptedVersion | None]],
        salt: bytes,
    ) -> SignedEntry:
        """``body`` at ``now`` with a reference to each version given, signed."""
        body.time.FromDatetime(now)
        for kind, version in references:
            if version is not None:
                body.references.add(
                    kind=kind, entry_id=version.entry_id, commitment=version.commitment
                )
        signed = self._signer.sign_entry(body.SerializeToString())
        return SignedEntry(body.entry_id, signed, body.commitment, salt)
