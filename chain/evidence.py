"""Evidence bundles (DESIGN §3.5): the ``swiftchain-evidence/v1`` JSON document and its offline
verifier, in one import for the SDK, the CLI and the services.

Three layers, each with its own kind of failure:

* :func:`parse_bundle` (:mod:`chain.evidence_bundle`) reads the JSON layer strictly; anything
  else is an :class:`~chain.errors.InvalidInputError` "<json path>: expected X, got Y"
  (``swiftchain verify`` exits 2).
* The signed notes are the evidence itself, so their content is *verified*, not parsed: a note
  with a garbled signature line is a failed check, like a note with a wrong signature.
* :func:`verify_bundle` (:mod:`chain.evidence_verify`) runs every check and returns a
  :class:`VerificationReport`, never raising for anything the bundle says (only for bad
  arguments, such as a 31-byte salt). :func:`verify_against_consortium` is the same with the
  keys, quorum and origin pinned to a consortium file, as every verifier should run it.
"""

from __future__ import annotations

from chain.evidence_bundle import (
    FORMAT,
    MAX_PROOF_HASHES,
    ConsistencyEvidence,
    EvidenceBundle,
    EvidenceEntry,
    build_bundle,
    bundle_to_json,
    parse_bundle,
)
from chain.evidence_verify import (
    SALT_SIZE,
    Check,
    EntrySummary,
    VerificationReport,
    commitment,
    verify_against_consortium,
    verify_bundle,
)

__all__ = [
    "FORMAT",
    "MAX_PROOF_HASHES",
    "SALT_SIZE",
    "Check",
    "ConsistencyEvidence",
    "EntrySummary",
    "EvidenceBundle",
    "EvidenceEntry",
    "VerificationReport",
    "build_bundle",
    "bundle_to_json",
    "commitment",
    "parse_bundle",
    "verify_against_consortium",
    "verify_bundle",
]
