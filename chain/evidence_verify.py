"""The offline verifier of evidence bundles (DESIGN §3.5), and the commitment of DESIGN §3.1.

:func:`verify_bundle` runs every check a :class:`~chain.evidence_bundle.EvidenceBundle` calls
for and returns a :class:`VerificationReport`, never raising for anything the bundle says (only
for bad arguments, such as a 31-byte salt). The signed notes are the evidence itself, so their
content is *verified*, not parsed: a note with a garbled signature line is a failed check, like
a note with a wrong signature.

Pure: standard library, ``cryptography`` (through :mod:`chain.note`) and the generated
messages; no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from google.protobuf.message import DecodeError

from chain.checkpoint import Checkpoint, parse_checkpoint
from chain.consortium import ConsortiumConfig
from chain.entry import parse_entry
from chain.errors import InvalidInputError, SwiftchainError
from chain.evidence_bundle import (
    ConsistencyEvidence,
    EvidenceBundle,
    EvidenceEntry,
    _check_quorum,
    _check_text,
    _show,
)
from chain.hashing import HASH_SIZE, leaf_hash
from chain.membership import MemberSet, MembershipLog
from chain.note import (
    Note,
    Verifier,
    count_distinct_signers,
    new_verifier,
    parse_note,
    verify_note,
)
from chain.proof_verify import verify_consistency, verify_inclusion
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

__all__ = [
    "SALT_SIZE",
    "Check",
    "EntrySummary",
    "VerificationReport",
    "commitment",
    "verify_against_consortium",
    "verify_bundle",
]

SALT_SIZE: Final = 32
"""Size in bytes of a commitment salt (DESIGN §3.1)."""

KeySource = Literal["trusted", "bundle"]


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _short(raw: bytes) -> str:
    return raw.hex()[:16] + "…"


def commitment(salt: bytes, document: bytes) -> bytes:
    """``HMAC-SHA256(key = salt, msg = document)``, the commitment of DESIGN §3.1.

    ``salt`` must be 32 bytes (:class:`InvalidInputError` otherwise).
    """
    if not isinstance(salt, bytes | bytearray):
        raise InvalidInputError(f"expected the salt as bytes, got {type(salt).__name__}")
    if len(salt) != SALT_SIZE:
        raise InvalidInputError(f"expected a {SALT_SIZE}-byte salt, got {len(salt)} bytes")
    if not isinstance(document, bytes | bytearray | memoryview):
        raise InvalidInputError(f"expected the document as bytes, got {type(document).__name__}")
    return hmac.new(bytes(salt), bytes(document), hashlib.sha256).digest()


@dataclass(frozen=True)
class Check:
    """One check of a verification: a stable name (for scripts), pass or fail, and what was
    found, for people."""

    name: str
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "ok": self.ok, "message": self.message}


@dataclass(frozen=True)
class EntrySummary:
    """What a bundle entry says, decoded leniently for display (``None`` when undecodable).

    Decoded from the bytes, not verified: an entry counts only if its inclusion check passed.
    """

    position: int
    leaf_index: int
    entry_id: str | None
    kind: str | None
    submitter_id: str | None
    commitment: bytes | None

    @property
    def label(self) -> str:
        """``leaf 12, RECORD <entry id>`` (or ``leaf 12, undecodable entry``)."""
        if self.entry_id is None:
            return f"leaf {self.leaf_index}, undecodable entry"
        return f"leaf {self.leaf_index}, {self.kind or 'unknown kind'} {self.entry_id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "leaf_index": self.leaf_index,
            "entry_id": self.entry_id,
            "kind": self.kind,
            "submitter_id": self.submitter_id,
            "commitment": None if self.commitment is None else self.commitment.hex(),
        }


@dataclass(frozen=True)
class VerificationReport:
    """The outcome of :func:`verify_bundle`: every check with its result, and what was found.

    ``ok`` holds only if there is at least one check and every check passed.
    ``keys_source`` / ``quorum_source`` say whether the member keys and quorum were the
    caller's trusted ones or the bundle's own (which prove only that the bundle is consistent).
    """

    checks: tuple[Check, ...]
    origin: str
    keys_source: KeySource
    quorum: int
    quorum_source: KeySource
    tree_size: int | None
    root_hash: bytes | None
    height: int | None
    cut_time_ms: int | None
    signers: tuple[str, ...]
    entries: tuple[EntrySummary, ...]

    @property
    def ok(self) -> bool:
        """Whether everything holds."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        """The checks that failed."""
        return tuple(c for c in self.checks if not c.ok)

    def check(self, name: str) -> Check:
        """The check called ``name`` (:class:`KeyError` if there is none)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (hashes in hex)."""
        return {
            "ok": self.ok,
            "origin": self.origin,
            "keys_source": self.keys_source,
            "quorum": self.quorum,
            "quorum_source": self.quorum_source,
            "checkpoint": {
                "tree_size": self.tree_size,
                "root_hash": None if self.root_hash is None else self.root_hash.hex(),
                "height": self.height,
                "cut_time_ms": self.cut_time_ms,
                "signers": list(self.signers),
            },
            "entries": [e.to_dict() for e in self.entries],
            "checks": [c.to_dict() for c in self.checks],
        }


def _kind_name(kind: int) -> str | None:
    """KEY, RECORD, CONSENT or ACCESS (as ``chain.entry.KIND_NAMES``); ``None`` if unknown."""
    if kind == common_pb2.ENTRY_KIND_UNSPECIFIED or kind not in common_pb2.EntryKind.values():
        return None
    return common_pb2.EntryKind.Name(common_pb2.EntryKind.ValueType(kind)).removeprefix(
        "ENTRY_KIND_"
    )


def _summarize(position: int, item: EvidenceEntry) -> EntrySummary:
    entry = entry_pb2.ChainEntry()
    body = entry_pb2.EntryBody()
    try:
        entry.ParseFromString(item.entry)
        body.ParseFromString(entry.body)
    except DecodeError:
        return EntrySummary(position, item.leaf_index, None, None, None, None)
    return EntrySummary(
        position=position,
        leaf_index=item.leaf_index,
        entry_id=body.entry_id,
        kind=_kind_name(body.kind),
        submitter_id=body.submitter_id,
        commitment=bytes(body.commitment) if len(body.commitment) == HASH_SIZE else None,
    )


def _trusted_keys(trusted: Iterable[Verifier | str]) -> tuple[Verifier, ...]:
    if isinstance(trusted, str):
        raise InvalidInputError("expected trusted verifiers as an iterable of keys, got a str")
    keys = []
    for item in trusted:
        if isinstance(item, Verifier):
            keys.append(item)
        elif isinstance(item, str):
            keys.append(new_verifier(item))
        else:
            raise InvalidInputError(
                f"expected a Verifier or a verifier key string, got {type(item).__name__}"
            )
    if not keys:
        raise InvalidInputError("expected at least one trusted verifier key, got none")
    return tuple(keys)


def _check_note(
    name: str,
    what: str,
    note_text: str,
    keys: Sequence[Verifier],
    quorum: int,
    keys_source: KeySource,
) -> tuple[Check, tuple[str, ...]]:
    """Signatures and quorum of a signed note, and the names of its valid member signers."""
    try:
        parsed = parse_note(note_text.encode("utf-8"))
    except InvalidInputError as exc:
        return Check(name, False, f"{what} is not a signed note: {exc}"), ()
    try:
        note: Note = verify_note(parsed, keys)
    except SwiftchainError as exc:
        return Check(name, False, f"{what}: {exc}"), ()
    count = count_distinct_signers(note)
    signers = tuple(dict.fromkeys(sig.name for sig in note.signatures))
    source = (
        "keys from the trusted consortium"
        if keys_source == "trusted"
        else "keys from the bundle itself (not pinned)"
    )
    unknown = len(note.unverified_signatures)
    extra = f"; {_plural(unknown, 'signature')} by unknown keys ignored" if unknown else ""
    if count < quorum:
        foreign = _foreign_keys(note, keys) if keys_source == "trusted" and unknown else ""
        return (
            Check(
                name,
                False,
                f"{what} has {_plural(count, 'valid member signature')}"
                f"{' (' + ', '.join(signers) + ')' if signers else ''}, quorum is {quorum}; "
                f"{source}{extra}{foreign}",
            ),
            signers,
        )
    return (
        Check(
            name,
            True,
            f"{what} is signed by {count} of {len({k.name for k in keys})} members "
            f"({', '.join(signers)}), quorum {quorum}; {source}{extra}",
        ),
        signers,
    )


def _foreign_keys(note: Note, keys: Sequence[Verifier]) -> str:
    """Which keys the note's unknown signatures name, against the pinned ones: a bundle
    re-signed with keys of someone else's making shows up here."""
    pinned = ", ".join(f"{k.name}+{k.key_hash:08x}" for k in keys)
    got = ", ".join(sig.key_id for sig in note.unverified_signatures)
    return (
        f" (expected signatures by the pinned consortium's keys {pinned}, got signatures by "
        f"{got}: keys the consortium does not hold)"
    )


def _check_origin(
    name: str, what: str, note_text: str, origins: Sequence[tuple[str, str]]
) -> tuple[Check, Checkpoint | None]:
    """That the note's text is a checkpoint whose origin is each of ``origins`` (value, whose)."""
    try:
        text = parse_note(note_text.encode("utf-8")).text
    except InvalidInputError:
        return Check(name, False, f"cannot check: {what} is not a signed note"), None
    try:
        checkpoint = parse_checkpoint(text)
    except InvalidInputError as exc:
        return Check(name, False, f"{what} is not a checkpoint: {exc}"), None
    for value, whose in origins:
        if checkpoint.origin != value:
            return (
                Check(
                    name,
                    False,
                    f"{what} has origin {_show(checkpoint.origin)}, expected {whose} "
                    f"{_show(value)}",
                ),
                checkpoint,
            )
    whose_list = " and ".join(whose for _, whose in origins)
    return (
        Check(name, True, f"{what} has origin {_show(checkpoint.origin)}, as {whose_list}"),
        checkpoint,
    )


def _check_inclusion(
    position: int, item: EvidenceEntry, summary: EntrySummary, checkpoint: Checkpoint | None
) -> Check:
    name = f"entries[{position}].inclusion"
    if checkpoint is None:
        return Check(name, False, f"cannot check {summary.label}: the checkpoint is unreadable")
    try:
        verify_inclusion(
            leaf_hash(item.entry),
            item.leaf_index,
            checkpoint.size,
            item.inclusion_proof,
            checkpoint.root_hash,
        )
    except SwiftchainError as exc:
        return Check(name, False, f"{summary.label}: {exc}")
    hashes = _plural(len(item.inclusion_proof), "hash", "hashes")
    return Check(
        name,
        True,
        f"{summary.label}: the inclusion proof of {hashes} leads to the checkpoint root "
        f"(tree size {checkpoint.size})",
    )


def _check_consistency(
    position: int,
    item: ConsistencyEvidence,
    older: Checkpoint | None,
    newer: Checkpoint | None,
) -> Check:
    name = f"consistency[{position}].proof"
    if older is None:
        return Check(name, False, "cannot check: the older checkpoint is unreadable")
    if newer is None:
        return Check(name, False, "cannot check: the bundle's checkpoint is unreadable")
    if older.size > newer.size:
        return Check(
            name,
            False,
            f"the older checkpoint (size {older.size}) is larger than the bundle's checkpoint "
            f"(size {newer.size})",
        )
    try:
        verify_consistency(older.size, newer.size, item.proof, older.root_hash, newer.root_hash)
    except SwiftchainError as exc:
        return Check(name, False, str(exc))
    return Check(
        name,
        True,
        f"the tree of size {newer.size} extends the tree of size {older.size} "
        f"(consistency proof of {_plural(len(item.proof), 'hash', 'hashes')})",
    )


def _check_commitment(expected: bytes, summaries: Sequence[EntrySummary]) -> Check:
    matches = [
        s
        for s in summaries
        if s.commitment is not None and hmac.compare_digest(s.commitment, expected)
    ]
    if matches:
        which = "; ".join(f"entry {s.position} ({s.label})" for s in matches)
        return Check(
            "commitment", True, f"HMAC-SHA256(salt, document) is the commitment of {which}"
        )
    if not summaries:
        return Check("commitment", False, "the bundle has no entries whose commitment to check")
    entries = "entry" if len(summaries) == 1 else f"{len(summaries)} entries"
    return Check(
        "commitment",
        False,
        f"HMAC-SHA256(salt, document) = {_short(expected)} is the commitment of none of the "
        f"bundle's {entries} (wrong document bytes or wrong salt?)",
    )


def verify_bundle(
    bundle: EvidenceBundle,
    *,
    trusted_verifiers: Iterable[Verifier | str] | None = None,
    trusted_quorum: int | None = None,
    trusted_origin: str | None = None,
    document: bytes | None = None,
    salt: bytes | None = None,
    membership: MembershipLog | None = None,
) -> VerificationReport:
    """Check everything a bundle claims and report each check.

    * ``checkpoint.signatures``: the checkpoint note has at least ``quorum`` distinct valid
      member signatures, and every signature line by a member key verifies. The member keys
      are ``trusted_verifiers`` if given (a regulator should pin the consortium's), else the
      bundle's own ``verifiers``; the quorum ``trusted_quorum`` if given, else the bundle's;
      with ``membership`` (votes followed from a trusted genesis), the node members and quorum
      at each checkpoint's own size.
    * ``checkpoint.origin``: the note's text is a checkpoint whose origin is the bundle's
      ``origin`` (and ``trusted_origin`` if given).
    * ``entries[i].inclusion``: the inclusion proof leads from the leaf hash of the exact entry
      bytes to the checkpoint's root.
    * ``consistency[i].checkpoint`` / ``consistency[i].proof``: the older note is a sealed
      checkpoint by the same rules, and the checkpoint extends it.
    * ``commitment`` (with ``document`` and ``salt``): ``HMAC-SHA256(salt, document)`` is the
      commitment of one of the entries' bodies.

    Never raises for what the bundle contains; raises :class:`InvalidInputError` for bad
    arguments (a salt that is not 32 bytes, a document without a salt, a malformed trusted key).
    """
    if not isinstance(bundle, EvidenceBundle):
        raise InvalidInputError(f"expected an EvidenceBundle, got {type(bundle).__name__}")
    if (document is None) != (salt is None):
        raise InvalidInputError(
            "expected both a document and its salt, got only the "
            + ("document" if salt is None else "salt")
        )
    expected = None if salt is None or document is None else commitment(salt, document)
    if trusted_quorum is not None:
        _check_quorum(trusted_quorum, "trusted quorum")
    if trusted_origin is not None:
        _check_text(trusted_origin, "trusted origin")

    keys_source: KeySource = "bundle" if trusted_verifiers is None else "trusted"
    quorum_source: KeySource = "bundle" if trusted_quorum is None else "trusted"
    quorum = bundle.quorum if trusted_quorum is None else trusted_quorum
    bundle_quorum = quorum
    checks: list[Check] = []
    keys: tuple[Verifier, ...]
    if trusted_verifiers is not None:
        keys = _trusted_keys(trusted_verifiers)
    else:
        keys = tuple(new_verifier(k) for k in bundle.verifiers)  # parsed once already

    origins = [(bundle.origin, "the bundle's origin")]
    if trusted_origin is not None:
        origins.append((trusted_origin, "the trusted consortium's origin"))

    origin_check, checkpoint = _check_origin(
        "checkpoint.origin", "the checkpoint", bundle.checkpoint, origins
    )
    keys_here, quorum = _members_at(checkpoint, membership, keys, quorum)
    sig_check, signers = _check_note(
        "checkpoint.signatures", "the checkpoint", bundle.checkpoint, keys_here, quorum, keys_source
    )
    checks.append(sig_check)
    checks.append(origin_check)

    summaries = tuple(_summarize(i, e) for i, e in enumerate(bundle.entries))
    for i, (item, summary) in enumerate(zip(bundle.entries, summaries, strict=True)):
        checks.append(_check_inclusion(i, item, summary, checkpoint))

    for i, proof in enumerate(bundle.consistency):
        what = f"older checkpoint {i}"
        older_origin, older = _check_origin(
            f"consistency[{i}].checkpoint", what, proof.from_checkpoint, origins
        )
        older_keys, older_quorum = _members_at(older, membership, keys, bundle_quorum)
        older_sig, _ = _check_note(
            f"consistency[{i}].checkpoint",
            what,
            proof.from_checkpoint,
            older_keys,
            older_quorum,
            keys_source,
        )
        if older_sig.ok and older_origin.ok:
            checks.append(
                Check(older_sig.name, True, f"{older_sig.message}; {older_origin.message}")
            )
        else:
            failed = [c.message for c in (older_sig, older_origin) if not c.ok]
            checks.append(Check(older_sig.name, False, "; ".join(failed)))
        checks.append(_check_consistency(i, proof, older, checkpoint))

    if expected is not None:
        checks.append(_check_commitment(expected, summaries))

    return VerificationReport(
        checks=tuple(checks),
        origin=bundle.origin,
        keys_source=keys_source,
        quorum=quorum,
        quorum_source=quorum_source,
        tree_size=None if checkpoint is None else checkpoint.size,
        root_hash=None if checkpoint is None else checkpoint.root_hash,
        height=None if checkpoint is None else checkpoint.height,
        cut_time_ms=None if checkpoint is None else checkpoint.cut_time_ms,
        signers=signers,
        entries=summaries,
    )


def _members_at(
    checkpoint: Checkpoint | None,
    membership: MembershipLog | None,
    keys: tuple[Verifier, ...],
    quorum: int,
) -> tuple[tuple[Verifier, ...], int]:
    """The keys and quorum a checkpoint is checked against: those at its size when votes are
    followed, else the given ones."""
    if membership is None or checkpoint is None:
        return keys, quorum
    members = membership.members_at(checkpoint.size)
    return tuple(members.verifiers), members.quorum


def _bundle_checkpoint(bundle: EvidenceBundle) -> Checkpoint | None:
    try:
        return parse_checkpoint(parse_note(bundle.checkpoint.encode("utf-8")).text)
    except SwiftchainError:
        return None


def _follow_votes(bundle: EvidenceBundle, log: MembershipLog) -> list[Check]:
    """Replay the bundle's MEMBERSHIP entries into ``log``, each once its inclusion in the
    checkpoint is proved; one check per entry, and one naming the members it leads to."""
    if not bundle.membership:
        return []
    checkpoint = _bundle_checkpoint(bundle)
    checks: list[Check] = []
    for i, item in enumerate(bundle.membership):
        summary = _summarize(i, item)
        included = _check_inclusion(i, item, summary, checkpoint)
        if not included.ok:
            checks.append(replace(included, name=f"membership[{i}].inclusion"))
            continue
        try:
            parsed = parse_entry(item.entry)
            if parsed.kind != common_pb2.ENTRY_KIND_MEMBERSHIP:
                raise InvalidInputError(f"expected a MEMBERSHIP entry, got {parsed.kind_name}")
            log.replay([(item.leaf_index, parsed)])
        except SwiftchainError as exc:
            checks.append(Check(f"membership[{i}].vote", False, f"{summary.label}: {exc}"))
            continue
        checks.append(
            Check(
                f"membership[{i}].vote",
                True,
                f"{summary.label}: in the checkpoint and a valid vote by {parsed.submitter_id}",
            )
        )
    if checkpoint is not None:
        members = log.members_at(checkpoint.size)
        names = ", ".join(m.name for m in members.nodes)
        checks.append(
            Check(
                "membership",
                all(c.ok for c in checks),
                f"the votes lead from the pinned genesis to the node members {names}, quorum "
                f"{members.quorum}, at tree size {checkpoint.size}",
            )
        )
    return checks


def verify_against_consortium(
    bundle: EvidenceBundle,
    consortium: ConsortiumConfig,
    *,
    document: bytes | None = None,
    salt: bytes | None = None,
) -> VerificationReport:
    """:func:`verify_bundle` with the member keys, quorum and origin pinned to ``consortium``
    (the consortium file the verifier holds), never the bundle's own: a bundle re-signed with
    keys of someone else's making fails ``checkpoint.signatures``.

    The consortium file is the genesis; the members and quorum at the checkpoint's size follow
    from it and the bundle's MEMBERSHIP entries, each proved in the checkpoint and replayed as
    every node did (``membership[i].*`` checks). The bundle must carry every vote below the
    checkpoint's size: one left out leaves the verifier with an older member set, which a
    checkpoint sealed under the newer one then fails."""
    if not isinstance(consortium, ConsortiumConfig):
        raise InvalidInputError(
            f"expected the pinned consortium as a ConsortiumConfig, got {type(consortium).__name__}"
        )
    log = MembershipLog(MemberSet.from_consortium(consortium))
    votes = _follow_votes(bundle, log)
    report = verify_bundle(
        bundle,
        trusted_verifiers=consortium.verifiers,
        trusted_quorum=consortium.quorum,
        trusted_origin=consortium.origin,
        document=document,
        salt=salt,
        membership=log,
    )
    return replace(report, checks=report.checks + tuple(votes)) if votes else report
