"""A patient's signature on a consent directive, checked against the log alone.

A patient's device keys are KEY entries owned by the patient's tag
(:func:`chain.tags.patient_key_owner`); a CONSENT entry names the device that signed by
``signer_key_tag`` (:func:`chain.tags.device_key_tag`, under the consortium tag key). So whoever
holds the tag key (members, regulators) and the signed directive can check, from the log and
nothing else (no call to the identity service), that one of the patient's devices valid at the
entry's position signed it: replay the KEY entries before the CONSENT entry into a
:class:`chain.validation.KeyRegistry` and call :func:`check_consent_signature`.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidSignature

from chain.errors import VerificationError
from chain.signed_messages import DELEGATION_PREFIX, DIRECTIVE_PREFIX
from chain.tags import device_key_tag, patient_key_owner
from chain.validation import KeyRegistry, KeyState
from swiftchain.chain.v1 import entry_pb2


def consent_signer(registry: KeyRegistry, tag_key: bytes, body: entry_pb2.EntryBody) -> KeyState:
    """The patient's device key, valid at the registry's position, that the CONSENT entry
    ``body`` names as its signer; VerificationError if the log has none such."""
    owner = patient_key_owner(body.subject_tag)
    wanted = body.consent.signer_key_tag
    for key in registry.owned_by(owner):
        if hmac.compare_digest(device_key_tag(tag_key, key.key_id), wanted):
            if not key.valid:
                raise VerificationError(
                    f"expected the signing device key {key.key_id!r} to be valid at this "
                    "position, got a key revoked before it"
                )
            return key
    raise VerificationError(
        "expected the CONSENT entry's signer to be a device key of its patient on the log, "
        f"got a signer key tag matching none of the {len(registry.owned_by(owner))} device "
        f"keys of {owner!r}"
    )


def check_consent_signature(
    registry: KeyRegistry, tag_key: bytes, body: entry_pb2.EntryBody, document: bytes
) -> KeyState:
    """Check that ``document`` (the signed directive or delegation bytes) carries the
    signature of the CONSENT entry ``body`` by a device key of its patient valid at the
    registry's position; return that key. VerificationError if not."""
    key = consent_signer(registry, tag_key, body)
    detail = body.consent
    prefix = (
        DELEGATION_PREFIX
        if detail.directive_type == entry_pb2.DIRECTIVE_TYPE_DELEGATION
        else DIRECTIVE_PREFIX
    )
    try:
        key.public_key.verify(detail.signer_signature, prefix + document)
    except InvalidSignature:
        raise VerificationError(
            f"expected the patient's signature by device key {key.key_id!r} over the "
            "document, got one that does not verify"
        ) from None
    return key
