"""Commitments to documents (DESIGN §3.1): ``HMAC-SHA256(key = salt, msg = document bytes)``.

A fresh 32-byte salt per document version, kept off the log with the document: delete both and
the entry on the log can never be linked to the document again (crypto-shredding). FHIR JSON is
canonicalized with RFC 8785 (the JSON Canonicalization Scheme, through the ``rfc8785`` library)
first, so that the same resource always gives the same bytes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import rfc8785

from chain.evidence import SALT_SIZE, commitment

__all__ = ["Commitment", "canonical_json", "commit", "commit_json"]


def canonical_json(document: Any) -> bytes:
    """The RFC 8785 canonical bytes of a JSON value (e.g. a FHIR resource as a dict)."""
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, TypeError) as error:
        raise ValueError(f"expected a JSON value to canonicalize, got: {error}") from None


@dataclass(frozen=True)
class Commitment:
    """A commitment and the salt that opens it (keep the salt with the document, secret)."""

    value: bytes
    salt: bytes

    def opens(self, document: bytes) -> bool:
        """True if ``document`` is what this commitment commits to."""
        return commitment(self.salt, document) == self.value


def commit(document: bytes, salt: bytes | None = None) -> Commitment:
    """Commit to ``document`` bytes with a fresh salt (or ``salt``, to recompute one)."""
    chosen = salt if salt is not None else secrets.token_bytes(SALT_SIZE)
    return Commitment(commitment(chosen, document), chosen)


def commit_json(document: Any, salt: bytes | None = None) -> Commitment:
    """Commit to a JSON document (a FHIR resource) through its RFC 8785 canonical form."""
    return commit(canonical_json(document), salt)
