"""Deterministic entry validation: the same log prefix and config give the same verdict.

A :class:`KeyRegistry` holds which keys the log says are valid *at the current position*: the
consortium's genesis keys, then every accepted KEY entry in log order. :class:`EntryValidator`
checks one entry at its position (DESIGN §3.2): well formed, signed by a key valid here that may
sign this kind and belongs to the submitter, fresh entry id. Signatures are verified once: a
batch root signature is cached, so a batch of 10,000 entries costs one Ed25519 verification.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chain.consortium import GenesisKey
from chain.entry import (
    EntryTooLargeError,
    ParsedEntry,
    batch_signing_input,
    entry_signing_input,
    parse_entry,
)
from chain.entry_rules import KIND_NAMES, KINDS_BY_NAME
from chain.errors import InvalidInputError, VerificationError
from chain.holder_signatures import (
    RECOVERY_WAIT_FLOOR,
    action_name,
    holder_message,
    needs_holder_signature,
    recovery_proof_message,
)
from chain.membership import MembershipLog, MembershipRejectedError
from chain.proof_verify import root_from_inclusion_proof
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_NODE = b"\x01"


class EntryRejectedError(VerificationError):
    """An entry that is well formed but not valid at its position; ``reason`` is the name of
    its ``swiftchain.chain.v1.RejectionReason`` without the prefix (e.g. ``"UNKNOWN_KEY"``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def rejection_reason(error: Exception) -> str:
    """The RejectionReason name (without prefix) for an error raised while validating."""
    if isinstance(error, EntryRejectedError):
        return error.reason
    if isinstance(error, EntryTooLargeError):
        return "TOO_LARGE"
    return "MALFORMED"


@dataclass
class KeyState:
    """A key as the log knows it at the current position."""

    key_id: str
    owner_id: str
    public_key: Ed25519PublicKey
    allowed_kinds: frozenset[int]
    valid: bool = True
    #: The ``KeyOwnerKind`` the key was registered with; None for genesis keys, which the
    #: consortium config names without one.
    owner_kind: entry_pb2.KeyOwnerKind.ValueType | None = None


class KeyRegistry:
    """Keys valid at the current log position; advanced by :meth:`apply` in log order."""

    def __init__(self, genesis: Iterable[GenesisKey] = ()) -> None:
        self._keys: dict[str, KeyState] = {}
        #: (signer key id, nonce) of every holder signature on the log: each is good once.
        self._holder_nonces: set[tuple[str, bytes]] = set()
        #: Owners that have had a key on the log: a patient's first device enrolls only once.
        self._owners: set[str] = set()
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

    def check(self, detail: entry_pb2.KeyDetail, *, time_micros: int = 0) -> None:
        """Raise :class:`VerificationError` if ``detail`` cannot apply at this position: it
        contradicts the key state (:meth:`check_state`), or it changes a key with a holder
        without that holder's valid signature (:meth:`check_holder`). ``time_micros``: the
        entry body's time, against which a recovery's waiting period is checked."""
        self.check_state(detail)
        self.check_holder(detail, time_micros=time_micros)

    def check_state(self, detail: entry_pb2.KeyDetail) -> None:
        """Raise :class:`VerificationError` if ``detail`` contradicts the keys at this
        position (a key id reused, a replaced or revoked key not valid or of another owner)."""
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
                    "got " + ("an unknown key" if replaced is None else "a revoked or rotated key")
                )
            if replaced.owner_id != detail.owner_id:
                raise VerificationError(
                    f"expected the rotated key to belong to {detail.owner_id!r}, "
                    f"got owner {replaced.owner_id!r}"
                )
            if replaced.owner_kind is not None and replaced.owner_kind != detail.owner_kind:
                raise VerificationError(
                    "expected the new key's owner kind to be the rotated key's "
                    f"{entry_pb2.KeyOwnerKind.Name(replaced.owner_kind)}, got "
                    f"{entry_pb2.KeyOwnerKind.Name(detail.owner_kind)}"
                )
        if detail.action == entry_pb2.KEY_ACTION_REVOKE:
            if current is None or not current.valid:
                raise VerificationError(
                    f"expected the revoked key {detail.key_id!r} to be valid here, got "
                    + ("an unknown key" if current is None else "a key revoked or rotated already")
                )
            if current.owner_id != detail.owner_id:
                raise VerificationError(
                    f"expected the revoked key to belong to {detail.owner_id!r}, "
                    f"got owner {current.owner_id!r}"
                )
            if current.owner_kind is not None and current.owner_kind != detail.owner_kind:
                raise VerificationError(
                    "expected the owner kind the revoked key was registered with, "
                    f"{entry_pb2.KeyOwnerKind.Name(current.owner_kind)}, got "
                    f"{entry_pb2.KeyOwnerKind.Name(detail.owner_kind)}"
                )

    def check_holder(self, detail: entry_pb2.KeyDetail, *, time_micros: int = 0) -> None:
        """Raise :class:`VerificationError` unless ``detail`` carries the holder's consent
        where the log requires it (:func:`chain.holder_signatures.needs_holder_signature`): a
        signature by a key of the same owner valid here, over the holder's request for exactly
        this change (:func:`chain.holder_signatures.holder_message`), with a nonce not used on
        the log before; for a patient's first device key, the key's own proof of possession
        over its enrollment code's digest; for a device key registered by recovery, the key's
        own recovery request, at least :data:`chain.holder_signatures.RECOVERY_WAIT_FLOOR`
        before ``time_micros`` (the entry's time). So the registrar, which signs every KEY
        entry, changes no holder's key alone."""
        has_holder = detail.HasField("holder_signature")
        if not needs_holder_signature(detail.owner_kind, detail.action):
            if has_holder:
                holder_message(detail)  # raises: no holder signs this kind of change
            return
        action = action_name(detail.action)
        if not has_holder:
            raise VerificationError(
                f"expected a {action} of {detail.owner_id!r}'s key to carry a signature by a key "
                f"of {detail.owner_id!r} valid here (the holder's consent), got none: the "
                "registrar alone cannot change a holder's key"
            )
        holder = detail.holder_signature
        signer_key, message, what = self._holder_proof(detail, action, time_micros)
        if (holder.key_id, holder.nonce) in self._holder_nonces:
            raise VerificationError(
                f"expected a holder signature with a fresh nonce, got one whose nonce key "
                f"{holder.key_id!r} used on the log before (a replay)"
            )
        try:
            signer_key.verify(holder.signature, message)
        except InvalidSignature:
            raise VerificationError(
                f"expected the holder signature to verify with key {holder.key_id!r} over the "
                f"{what} for this change, got one that does not"
            ) from None

    def _holder_proof(
        self, detail: entry_pb2.KeyDetail, action: str, time_micros: int
    ) -> tuple[Ed25519PublicKey, bytes, str]:
        """The key that must have made the holder signature, the bytes it signs, and what they
        are called: a patient's first device signs its enrollment, a device signing for itself
        on a patient with keys before is a recovery, any other change a key of the owner's."""
        patient_register = (
            detail.owner_kind == entry_pb2.KEY_OWNER_KIND_PATIENT
            and detail.action == entry_pb2.KEY_ACTION_REGISTER
        )
        if patient_register and detail.owner_id not in self._owners:
            proof = holder_message(detail, first_device=True)
            return self._first_device_key(detail), proof, "enrollment proof"
        if patient_register and detail.holder_signature.key_id == detail.key_id:
            _check_recovery_wait(detail.holder_signature.request_time_micros, time_micros)
            new_key = Ed25519PublicKey.from_public_bytes(detail.public_key)
            return new_key, recovery_proof_message(detail), "recovery request"
        return self._holder_key(detail), holder_message(detail), f"{action} request"

    def _first_device_key(self, detail: entry_pb2.KeyDetail) -> Ed25519PublicKey:
        """The key that signs a patient's first device key's enrollment: that key itself."""
        if detail.holder_signature.key_id != detail.key_id:
            raise VerificationError(
                f"expected the first device key of {detail.owner_id!r} to sign its own "
                f"enrollment (holder key {detail.key_id!r}), got a signature by "
                f"{detail.holder_signature.key_id!r}"
            )
        return Ed25519PublicKey.from_public_bytes(detail.public_key)

    def _holder_key(self, detail: entry_pb2.KeyDetail) -> Ed25519PublicKey:
        """The key of the detail's owner, valid here, that signed its holder signature."""
        holder = detail.holder_signature
        signer = self._keys.get(holder.key_id)
        if (
            signer is None
            or not signer.valid
            or signer.owner_id != detail.owner_id
            or signer.owner_kind not in (None, detail.owner_kind)
        ):
            found = (
                "an unknown key"
                if signer is None
                else "a revoked or rotated key"
                if not signer.valid
                else f"a key of {signer.owner_id!r}"
            )
            lost = (
                "; a patient whose devices are all revoked cannot be given a device by the "
                "registrar (recovery is not built yet)"
                if detail.owner_kind == entry_pb2.KEY_OWNER_KIND_PATIENT
                and not any(k.valid for k in self.owned_by(detail.owner_id))
                else ""
            )
            raise VerificationError(
                f"expected the holder signature by a key of {detail.owner_id!r} valid here, got "
                f"one by {holder.key_id!r}, {found}{lost}"
            )
        return signer.public_key

    def owned_by(self, owner_id: str) -> list[KeyState]:
        """Every key ``owner_id`` has had on the log (valid or not), in no particular order."""
        return [key for key in self._keys.values() if key.owner_id == owner_id]

    def apply(self, detail: entry_pb2.KeyDetail) -> None:
        """Advance past an accepted KEY entry (checked with :meth:`check` first)."""
        if detail.HasField("holder_signature"):
            holder = detail.holder_signature
            self._holder_nonces.add((holder.key_id, holder.nonce))
        self._owners.add(detail.owner_id)
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
            owner_kind=detail.owner_kind,
        )


def _check_recovery_wait(requested_micros: int, entry_micros: int) -> None:
    """VerificationError unless the entry comes at least RECOVERY_WAIT_FLOOR after the
    recovery's request."""
    floor = RECOVERY_WAIT_FLOOR // timedelta(microseconds=1)
    if entry_micros - requested_micros < floor:
        raise VerificationError(
            f"expected a recovered device's KEY entry at least {RECOVERY_WAIT_FLOOR} after its "
            f"recovery request ({requested_micros} µs since the epoch), got one at "
            f"{entry_micros} µs: the patient's devices must have had time to cancel it"
        )


@dataclass
class _BatchState:
    """A batch whose root signature verified: its root, and the last entry accepted under it.

    ``path`` and ``nodes`` are that entry's inclusion path and the nodes it computed (``nodes[i]``
    after combining with ``path[i]``; the last is the root); ``leaf`` is its leaf hash. The next
    entry of the batch shares every node above their lowest common ancestor with it, so it only
    hashes up to there (see :meth:`EntryValidator._check_batch`).
    """

    root: bytes
    remaining: int
    index: int
    leaf: bytes
    path: tuple[bytes, ...]
    nodes: list[bytes]


def _path_nodes(leaf: bytes, index: int, size: int, path: tuple[bytes, ...]) -> list[bytes]:
    """The nodes computed from ``leaf`` up along ``path`` (of the right length); last: the root."""
    inner = (index ^ (size - 1)).bit_length()
    left = index | (-1 << inner)
    sha, node = _sha256, _NODE
    nodes = []
    h = leaf
    for sibling in path:
        h = sha(node + sibling + h).digest() if left & 1 else sha(node + h + sibling).digest()
        nodes.append(h)
        left >>= 1
    return nodes


class EntryValidator:
    """Validates entries in log order against a :class:`KeyRegistry`.

    ``validate`` raises :class:`InvalidInputError` (malformed) or :class:`VerificationError`
    (bad signature, key not valid here, id seen before); the message is the rejection reason
    kept for the submitter. On success the entry's KEY detail, if any, is applied.

    Batch authentication is checked as ``BatchAuth`` says (recompute the root from the body's
    leaf hash and the path, check the root signature) but with two caches, keyed by
    (key id, size, root signature), that only save work and never change a verdict or a message:
    a batch's root signature is verified once, and an entry of a batch whose previous entry was
    accepted hashes only up to their lowest common ancestor and compares the rest of its path
    with the one already verified (about two hashes per entry for a batch in order, instead of
    log2(size)). A batch's state is dropped once ``size`` entries passed under it, and the
    least recently used beyond ``cache_size`` batches.
    """

    def __init__(
        self,
        registry: KeyRegistry,
        *,
        max_batch_size: int = 1 << 20,
        cache_size: int = 4096,
        membership: MembershipLog | None = None,
    ) -> None:
        self.registry = registry
        #: The member sets along the log, advanced past every accepted entry; MEMBERSHIP
        #: entries are valid only against it (``None``: they are all rejected).
        self.membership = membership
        self._max_batch_size = max_batch_size
        self._batches: OrderedDict[tuple[str, int, bytes], _BatchState] = OrderedDict()
        self._cache_size = cache_size
        #: Ed25519 verifications done so far (entry signatures and batch root signatures).
        self.signatures_verified = 0

    def validate(self, raw: bytes, seen: Callable[[str], bool]) -> ParsedEntry:
        """Check ``raw`` at the current position; ``seen`` says if an entry id is on the log."""
        return self.validate_parsed(parse_entry(raw), seen)

    def validate_parsed(self, parsed: ParsedEntry, seen: Callable[[str], bool]) -> ParsedEntry:
        """As :meth:`validate`, for an entry parsed already."""
        if parsed.kind == common_pb2.ENTRY_KIND_MEMBERSHIP:
            return self._validate_membership(parsed, seen)
        key_id = parsed.key_id
        key = self.registry.get(key_id)
        if key is None:
            raise EntryRejectedError(
                "UNKNOWN_KEY", f"expected a key registered on the log, got {key_id!r}"
            )
        if not key.valid:
            raise EntryRejectedError(
                "KEY_NOT_VALID", f"key {key_id!r} was revoked or rotated away before this position"
            )
        kind = parsed.kind
        if kind not in key.allowed_kinds:
            raise EntryRejectedError(
                "KEY_NOT_ALLOWED",
                f"key {key_id!r} may sign {sorted(KIND_NAMES[k] for k in key.allowed_kinds)}"
                f" entries, got a {KIND_NAMES[kind]} entry",
            )
        if key.owner_id != parsed.submitter_id:
            raise EntryRejectedError(
                "KEY_NOT_ALLOWED",
                f"expected submitter {key.owner_id!r} (the owner of key {key_id!r}), "
                f"got {parsed.submitter_id!r}",
            )
        if parsed.batch_size:
            try:
                self._check_batch(key, parsed)
            except InvalidInputError as error:
                raise EntryRejectedError("TOO_LARGE", str(error)) from None
            except VerificationError as error:
                raise EntryRejectedError("BAD_BATCH_AUTH", str(error)) from None
        else:
            try:
                self._verify(
                    key, parsed.signature, entry_signing_input(parsed.body_bytes), "entry signature"
                )
            except VerificationError as error:
                raise EntryRejectedError("BAD_SIGNATURE", str(error)) from None
        if kind == common_pb2.ENTRY_KIND_KEY:
            try:
                body_time = parsed.body.time
                self.registry.check(
                    parsed.body.key,
                    time_micros=body_time.seconds * 1_000_000 + body_time.nanos // 1000,
                )
            except VerificationError as error:
                raise EntryRejectedError("KEY_STATE_CONFLICT", str(error)) from None
        if seen(parsed.entry_id):
            raise EntryRejectedError(
                "DUPLICATE_ENTRY_ID", f"entry id {parsed.entry_id} is on the log already"
            )
        if kind == common_pb2.ENTRY_KIND_KEY:
            self.registry.apply(parsed.body.key)
        if self.membership is not None:
            self.membership.position += 1
        return parsed

    def _validate_membership(self, parsed: ParsedEntry, seen: Callable[[str], bool]) -> ParsedEntry:
        """A MEMBERSHIP entry is signed by a member's own key, not a KEY-registered one, and
        valid only as :class:`~chain.membership.MembershipLog` says at this position."""
        membership = self.membership
        if membership is None:
            raise EntryRejectedError(
                "MEMBERSHIP_NOT_A_MEMBER",
                "expected no MEMBERSHIP entry here: this validator follows no member set",
            )
        try:
            membership.check(parsed)
        except MembershipRejectedError as error:
            raise EntryRejectedError(error.reason, str(error)) from None
        if seen(parsed.entry_id):
            raise EntryRejectedError(
                "DUPLICATE_ENTRY_ID", f"entry id {parsed.entry_id} is on the log already"
            )
        membership.apply(parsed)
        return parsed

    def _check_batch(self, key: KeyState, parsed: ParsedEntry) -> None:
        index, size, path = parsed.batch_index, parsed.batch_size, parsed.batch_path
        if size > self._max_batch_size:
            raise InvalidInputError(
                f"expected a batch of at most {self._max_batch_size} entries, got {size}"
            )
        leaf = _sha256(_LEAF + parsed.body_bytes).digest()
        inner = (index ^ (size - 1)).bit_length()
        if len(path) != inner + (index >> inner).bit_count():
            root_from_inclusion_proof(leaf, index, size, path)  # raises the length error
        signature = parsed.root_signature
        cache_key = (key.key_id, size, signature)
        batches = self._batches
        state = batches.get(cache_key)
        if state is not None:
            batches.move_to_end(cache_key)
            if not self._extends(state, leaf, index, size, path):
                nodes = _path_nodes(leaf, index, size, path)
                root = nodes[-1] if nodes else leaf
                if root != state.root:
                    # The signature verified over (size, state.root) only; verify anyway, so
                    # the verdict and message are the uncached ones whatever the key.
                    self._verify(key, signature, batch_signing_input(size, root), "batch signature")
                    return  # valid only under a key that signs every message: keep the state
                state.index, state.leaf, state.path, state.nodes = index, leaf, path, nodes
        else:
            nodes = _path_nodes(leaf, index, size, path)
            root = nodes[-1] if nodes else leaf
            self._verify(key, signature, batch_signing_input(size, root), "batch signature")
            state = _BatchState(root, size, index, leaf, path, nodes)
            batches[cache_key] = state
            if len(batches) > self._cache_size:
                batches.popitem(last=False)
        state.remaining -= 1
        if state.remaining <= 0:  # every entry of the batch passed: it is most likely done
            del batches[cache_key]

    @staticmethod
    def _extends(
        state: _BatchState, leaf: bytes, index: int, size: int, path: tuple[bytes, ...]
    ) -> bool:
        """True if the entry's path leads to ``state.root``, known from the last entry accepted.

        Let L be the level of the lowest common ancestor of this leaf and the last one. Below
        L - 1 the paths differ: hash this leaf up to its level-(L-1) node. That node must be the
        sibling the last path used at level L - 1, this path's hash at level L - 1 must be the
        last entry's own level-(L-1) node, and every hash above must be the last path's. Then
        recomputing the whole path gives exactly the last entry's nodes from level L up, so the
        root: the same verdict as the full computation, with no assumption about the hash.
        False means "not shown this way"; the caller then recomputes the whole path.
        """
        last = state.index
        if index == last:
            return leaf == state.leaf and path == state.path
        level = (index ^ last).bit_length() - 1
        # j, jl: how many hashes of each path lie below `level`. The path of leaf m has one hash
        # per level below inner = bit_length(m ^ (size - 1)) and, above, one per set bit of
        # m >> inner (left siblings along the right edge), as in root_from_inclusion_proof.
        inner = (index ^ (size - 1)).bit_length()
        j = (
            level
            if level <= inner
            else inner + ((index >> inner) & ((1 << (level - inner)) - 1)).bit_count()
        )
        last_inner = (last ^ (size - 1)).bit_length()
        jl = (
            level
            if level <= last_inner
            else last_inner + ((last >> last_inner) & ((1 << (level - last_inner)) - 1)).bit_count()
        )
        last_path, last_nodes = state.path, state.nodes
        if path[j + 1 :] != last_path[jl + 1 :]:
            return False
        if path[j] != (last_nodes[jl - 1] if jl else state.leaf):
            return False
        left = index | (-1 << inner)
        sha, node = _sha256, _NODE
        own = []
        h = leaf
        for i in range(j):
            sibling = path[i]
            h = sha(node + sibling + h).digest() if left & 1 else sha(node + h + sibling).digest()
            own.append(h)
            left >>= 1
        if h != last_path[jl]:
            return False
        state.index, state.leaf, state.path = index, leaf, path
        own.extend(last_nodes[jl:])
        state.nodes = own
        return True

    def _verify(self, key: KeyState, signature: bytes, message: bytes, what: str) -> None:
        self.signatures_verified += 1
        try:
            key.public_key.verify(signature, message)
        except InvalidSignature:
            raise VerificationError(f"{what} does not verify with key {key.key_id!r}") from None
