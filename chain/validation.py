"""Deterministic entry validation: the same log prefix and config give the same verdict.

A :class:`KeyRegistry` holds which keys the log says are valid *at the current position*: the
consortium's genesis keys, then every accepted KEY entry in log order. :class:`EntryValidator`
checks one entry at its position (DESIGN §3.2): well formed, signed by a key valid here that may
sign this kind and belongs to the submitter, fresh entry id. Signatures are verified once: a
batch root signature is cached, so a batch of 10,000 entries costs one Ed25519 verification.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chain.consortium import GenesisKey
from chain.entry import (
    KIND_NAMES,
    KINDS_BY_NAME,
    ParsedEntry,
    batch_signing_input,
    entry_signing_input,
    parse_entry,
)
from chain.errors import InvalidInputError, VerificationError
from chain.hashing import leaf_hash
from chain.proof_verify import root_from_inclusion_proof
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2


@dataclass
class KeyState:
    """A key as the log knows it at the current position."""

    key_id: str
    owner_id: str
    public_key: Ed25519PublicKey
    allowed_kinds: frozenset[int]
    valid: bool = True


class KeyRegistry:
    """Keys valid at the current log position; advanced by :meth:`apply` in log order."""

    def __init__(self, genesis: Iterable[GenesisKey] = ()) -> None:
        self._keys: dict[str, KeyState] = {}
        for key in genesis:
            self._keys[key.key_id] = KeyState(
                key_id=key.key_id,
                owner_id=key.owner_id,
                public_key=Ed25519PublicKey.from_public_bytes(key.public_key),
                allowed_kinds=frozenset(KINDS_BY_NAME[k] for k in key.allowed_kinds),
            )

    def get(self, key_id: str) -> KeyState | None:
        """The key ``key_id`` (valid or not), or None if the log never registered it."""
        return self._keys.get(key_id)

    def check(self, detail: entry_pb2.KeyDetail) -> None:
        """Raise :class:`VerificationError` if ``detail`` cannot apply at this position."""
        current = self._keys.get(detail.key_id)
        if current is not None and detail.action in (
            entry_pb2.KEY_ACTION_REGISTER,
            entry_pb2.KEY_ACTION_ROTATE,
        ):
            raise VerificationError(f"expected a new key id, got {detail.key_id!r} again")
        if detail.action == entry_pb2.KEY_ACTION_ROTATE:
            replaced = self._keys.get(detail.replaces_key_id)
            if replaced is None or not replaced.valid:
                raise VerificationError(
                    f"expected the rotated key {detail.replaces_key_id!r} to be valid here, "
                    "got " + ("an unknown key" if replaced is None else "a revoked key")
                )
            if replaced.owner_id != detail.owner_id:
                raise VerificationError(
                    f"expected the rotated key to belong to {detail.owner_id!r}, "
                    f"got owner {replaced.owner_id!r}"
                )
        if detail.action == entry_pb2.KEY_ACTION_REVOKE:
            if current is None or not current.valid:
                raise VerificationError(
                    f"expected the revoked key {detail.key_id!r} to be valid here, got "
                    + ("an unknown key" if current is None else "a key revoked already")
                )
            if current.owner_id != detail.owner_id:
                raise VerificationError(
                    f"expected the revoked key to belong to {detail.owner_id!r}, "
                    f"got owner {current.owner_id!r}"
                )

    def apply(self, detail: entry_pb2.KeyDetail) -> None:
        """Advance past an accepted KEY entry (checked with :meth:`check` first)."""
        if detail.action == entry_pb2.KEY_ACTION_REVOKE:
            self._keys[detail.key_id].valid = False
            return
        if detail.action == entry_pb2.KEY_ACTION_ROTATE:
            self._keys[detail.replaces_key_id].valid = False
        self._keys[detail.key_id] = KeyState(
            key_id=detail.key_id,
            owner_id=detail.owner_id,
            public_key=Ed25519PublicKey.from_public_bytes(detail.public_key),
            allowed_kinds=frozenset(detail.allowed_kinds),
        )


class EntryValidator:
    """Validates entries in log order against a :class:`KeyRegistry`.

    ``validate`` raises :class:`InvalidInputError` (malformed) or :class:`VerificationError`
    (bad signature, key not valid here, id seen before); the message is the rejection reason
    kept for the submitter. On success the entry's KEY detail, if any, is applied.
    """

    def __init__(
        self, registry: KeyRegistry, *, max_batch_size: int = 1 << 20, cache_size: int = 4096
    ) -> None:
        self.registry = registry
        self._max_batch_size = max_batch_size
        self._verified_batches: OrderedDict[tuple[str, int, bytes, bytes], None] = OrderedDict()
        self._cache_size = cache_size

    def validate(self, raw: bytes, seen: Callable[[str], bool]) -> ParsedEntry:
        """Check ``raw`` at the current position; ``seen`` says if an entry id is on the log."""
        return self.validate_parsed(parse_entry(raw), seen)

    def validate_parsed(self, parsed: ParsedEntry, seen: Callable[[str], bool]) -> ParsedEntry:
        """As :meth:`validate`, for an entry parsed already."""
        entry, body = parsed.entry, parsed.body
        key = self.registry.get(entry.key_id)
        if key is None:
            raise VerificationError(f"expected a key registered on the log, got {entry.key_id!r}")
        if not key.valid:
            raise VerificationError(f"key {entry.key_id!r} was revoked before this position")
        if body.kind not in key.allowed_kinds:
            raise VerificationError(
                f"key {entry.key_id!r} may sign {sorted(KIND_NAMES[k] for k in key.allowed_kinds)}"
                f" entries, got a {KIND_NAMES[body.kind]} entry"
            )
        if key.owner_id != body.submitter_id:
            raise VerificationError(
                f"expected submitter {key.owner_id!r} (the owner of key {entry.key_id!r}), "
                f"got {body.submitter_id!r}"
            )
        self._check_signature(key, entry)
        if body.kind == common_pb2.ENTRY_KIND_KEY:
            self.registry.check(body.key)
        if seen(body.entry_id):
            raise VerificationError(f"entry id {body.entry_id} is on the log already")
        if body.kind == common_pb2.ENTRY_KIND_KEY:
            self.registry.apply(body.key)
        return parsed

    def _check_signature(self, key: KeyState, entry: entry_pb2.ChainEntry) -> None:
        if entry.WhichOneof("auth") == "signature":
            self._verify(key, entry.signature, entry_signing_input(entry.body), "entry signature")
            return
        batch = entry.batch
        if batch.size > self._max_batch_size:
            raise InvalidInputError(
                f"expected a batch of at most {self._max_batch_size} entries, got {batch.size}"
            )
        root = root_from_inclusion_proof(leaf_hash(entry.body), batch.index, batch.size, batch.path)
        cache_key = (key.key_id, batch.size, root, batch.root_signature)
        if cache_key in self._verified_batches:
            self._verified_batches.move_to_end(cache_key)
            return
        self._verify(
            key, batch.root_signature, batch_signing_input(batch.size, root), "batch signature"
        )
        self._verified_batches[cache_key] = None
        if len(self._verified_batches) > self._cache_size:
            self._verified_batches.popitem(last=False)

    @staticmethod
    def _verify(key: KeyState, signature: bytes, message: bytes, what: str) -> None:
        try:
            key.public_key.verify(signature, message)
        except InvalidSignature:
            raise VerificationError(f"{what} does not verify with key {key.key_id!r}") from None
