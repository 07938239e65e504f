"""The signing keys of the log as a service sees them, from ``identity.events.v1``.

Services that accept entries signed by others (anchoring: hospitals' RECORD entries) check them
before they forward them, with the chain's own validator (:class:`chain.validation.EntryValidator`,
batch signatures verified once per batch) over a :class:`chain.validation.KeyRegistry` that the
identity events keep current: the consortium's genesis keys, then every ``KeyRegistered``,
``KeyRotated`` and ``KeyRevoked`` in order. The log has the last word: this check refuses early
what the nodes would reject, with a message for the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from chain.consortium import GenesisKey
from chain.entry import ParsedEntry
from chain.errors import VerificationError
from chain.validation import EntryValidator, KeyRegistry
from swiftchain.chain.v1 import entry_pb2
from swiftchain.events.v1 import events_pb2


def key_detail(event: events_pb2.EventEnvelope) -> entry_pb2.KeyDetail | None:
    """The KEY-entry detail an identity key event stands for; None for other events."""
    payload = event.payload
    if payload.Is(events_pb2.KeyRegistered.DESCRIPTOR):
        registered = events_pb2.KeyRegistered()
        payload.Unpack(registered)
        return entry_pb2.KeyDetail(
            action=entry_pb2.KEY_ACTION_REGISTER,
            owner_id=registered.owner_id,
            key_id=registered.key_id,
            public_key=registered.public_key,
            allowed_kinds=registered.allowed_kinds,
        )
    if payload.Is(events_pb2.KeyRotated.DESCRIPTOR):
        rotated = events_pb2.KeyRotated()
        payload.Unpack(rotated)
        return entry_pb2.KeyDetail(
            action=entry_pb2.KEY_ACTION_ROTATE,
            owner_id=rotated.owner_id,
            key_id=rotated.new_key_id,
            public_key=rotated.new_public_key,
            replaces_key_id=rotated.old_key_id,
            allowed_kinds=rotated.allowed_kinds,
        )
    if payload.Is(events_pb2.KeyRevoked.DESCRIPTOR):
        revoked = events_pb2.KeyRevoked()
        payload.Unpack(revoked)
        return entry_pb2.KeyDetail(
            action=entry_pb2.KEY_ACTION_REVOKE, owner_id=revoked.owner_id, key_id=revoked.key_id
        )
    return None


#: How long a check waits for an unknown key to be announced: identity calls a key ACTIVE as
#: soon as the log sealed it, and its event reaches this process a moment later, so a hospital
#: that anchors right after its key became active must not be refused for that moment.
UNKNOWN_KEY_GRACE = 3.0


class KnownKeys:
    """Keys by identity's events, and signature checks against them; thread-safe."""

    def __init__(self, genesis: Sequence[GenesisKey], grace: float = UNKNOWN_KEY_GRACE) -> None:
        self._validator = EntryValidator(KeyRegistry(genesis))
        self._lock = threading.Lock()
        self._announced = threading.Condition(self._lock)
        self._grace = grace
        #: Unknown key ids already waited for (each is waited for once: a batch signed with a
        #: key that never comes waits once, not once per entry).
        self._waited: set[str] = set()

    def apply(self, event: events_pb2.EventEnvelope) -> None:
        """Take in one identity event (others, and repeats of key events, change nothing)."""
        detail = key_detail(event)
        if detail is None:
            return
        with self._lock:
            registry = self._validator.registry
            try:
                # Events carry no holder signature: identity checked it, and the log checks it
                # again before the key is ever ACTIVE; here only the key state must agree.
                registry.check_state(detail)
            except VerificationError:
                return  # a repeat delivered by the outbox, or a change the log refuses too
            registry.apply(detail)
            self._announced.notify_all()

    def check(self, parsed: ParsedEntry) -> None:
        """Raise :class:`chain.validation.EntryRejectedError` (with the log's reason code) if
        ``parsed`` is not signed by a current key of its submitter that may sign its kind. A key
        not announced yet is waited for (once per key id, at most the grace period)."""
        with self._lock:
            key_id = parsed.key_id
            if self._validator.registry.get(key_id) is None and key_id not in self._waited:
                if len(self._waited) >= 10_000:
                    self._waited.clear()
                self._waited.add(key_id)
                self._announced.wait_for(
                    lambda: self._validator.registry.get(key_id) is not None, self._grace
                )
            self._validator.validate_parsed(parsed, seen=lambda _entry_id: False)
