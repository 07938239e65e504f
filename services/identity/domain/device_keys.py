"""KEY entries that put a patient's device keys on the log, under the patient's subject tag.

Every enrollment, addition and revocation of a patient's device becomes a KEY entry signed by
the registrar (the identity service's genesis key) that carries the holder's consent as the
log requires it (:mod:`chain.holder_signatures`): the first device's proof of possession over
its enrollment code's digest, or the signature of the patient's device that signed the request.
The identity service forwards those signatures as it checked them, so a node accepts the entry
only if the patient's device really made the request, and a consent directive's signature can
then be checked against the log alone (:mod:`chain.device_keys`).

The log names the patient by its subject tag only (``KeyDetail.owner_id`` is derived from it);
the subject id, the device's label and the times stay with the identity service in the entry's
salted registration record, which the entry's commitment covers.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

from chain.entry import EntrySigner, new_entry_id
from chain.signed_messages import request_time_micros
from chain.tags import patient_key_owner, salted_commitment, subject_tag
from services.identity.domain.organizations import PRODUCER, KeyEntry
from services.identity.domain.request_signatures import RequestSignature
from services.platform.convert import timestamp
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

#: The reason a device revocation carries: the request names none, and a device is revoked
#: because the patient no longer uses it or no longer trusts it; either way another replaces it.
DEVICE_REVOCATION_REASON = entry_pb2.KEY_REASON_SUPERSEDED


class DeviceKeyLog:
    """Signs the KEY entries for a patient's device keys (see the module docstring)."""

    def __init__(
        self, registrar: EntrySigner, tag_key: bytes, *, registrar_id: str = PRODUCER
    ) -> None:
        self._registrar = registrar
        self._tag_key = tag_key
        self._registrar_id = registrar_id

    def enrolled(
        self,
        subject_id: str,
        key_id: str,
        public_key: bytes,
        code_digest: bytes,
        proof: bytes,
        now: datetime,
    ) -> KeyEntry:
        """The entry for a patient's first device ``key_id``, with the device's own proof of
        possession ``proof`` over the enrollment code's digest ``code_digest``."""
        holder = entry_pb2.HolderSignature(
            key_id=key_id, request_time_micros=0, nonce=code_digest, signature=proof
        )
        return self._entry(
            subject_id, entry_pb2.KEY_ACTION_REGISTER, key_id, public_key, holder, now
        )

    def added(
        self,
        subject_id: str,
        key_id: str,
        public_key: bytes,
        signed: RequestSignature,
        now: datetime,
    ) -> KeyEntry:
        """The entry for another device ``key_id``, with the signature of the active device
        that asked for it."""
        return self._entry(
            subject_id,
            entry_pb2.KEY_ACTION_REGISTER,
            key_id,
            public_key,
            signed.holder_signature(),
            now,
        )

    def recovered(
        self,
        subject_id: str,
        key_id: str,
        public_key: bytes,
        code_digest: bytes,
        proof: bytes,
        request_time: datetime,
        now: datetime,
    ) -> KeyEntry:
        """The entry for a device ``key_id`` recovered with the recovery code whose digest is
        ``code_digest``, with the device's own signature ``proof`` over its recovery request
        made at ``request_time`` (the log checks that ``now`` is late enough after it)."""
        holder = entry_pb2.HolderSignature(
            key_id=key_id,
            request_time_micros=request_time_micros(request_time),
            nonce=code_digest,
            signature=proof,
        )
        return self._entry(
            subject_id, entry_pb2.KEY_ACTION_REGISTER, key_id, public_key, holder, now
        )

    def revoked(
        self, subject_id: str, key_id: str, signed: RequestSignature, now: datetime
    ) -> KeyEntry:
        """The entry revoking device ``key_id``, with the signature of the active device that
        asked for it (which may be ``key_id`` itself)."""
        return self._entry(
            subject_id, entry_pb2.KEY_ACTION_REVOKE, key_id, b"", signed.holder_signature(), now
        )

    def _entry(
        self,
        subject_id: str,
        action: entry_pb2.KeyAction.ValueType,
        key_id: str,
        public_key: bytes,
        holder: entry_pb2.HolderSignature,
        now: datetime,
    ) -> KeyEntry:
        tag = subject_tag(self._tag_key, subject_id)
        revoke = action == entry_pb2.KEY_ACTION_REVOKE
        detail = entry_pb2.KeyDetail(
            action=action,
            owner_id=patient_key_owner(tag),
            owner_kind=entry_pb2.KEY_OWNER_KIND_PATIENT,
            key_id=key_id,
            public_key=public_key,
            reason=DEVICE_REVOCATION_REASON if revoke else entry_pb2.KEY_REASON_NEW_KEY,
            holder_signature=holder,
        )
        entry_id = new_entry_id()
        record = json.dumps(
            {
                "format": "swiftchain-device-key-record/v1",
                "entry_id": entry_id,
                "action": entry_pb2.KeyAction.Name(action),
                "subject_id": subject_id,
                "key_id": key_id,
                "public_key": base64.b64encode(public_key).decode(),
                "time": now.isoformat(),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        salt, commitment = salted_commitment(record)
        body = entry_pb2.EntryBody(
            entry_id=entry_id,
            kind=common_pb2.ENTRY_KIND_KEY,
            submitter_id=self._registrar_id,
            time=timestamp(now),
            commitment=commitment,
            subject_tag=tag,
            key=detail,
        )
        return KeyEntry(
            entry_id, self._registrar.sign_entry(body.SerializeToString()), record, salt
        )
