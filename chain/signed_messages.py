"""What a patient's or an organization's signature is over, outside the log's own entries.

Clients (the SDK, the CLI, the patient app) build these bytes and the services check them, so
both sides take them from here. Every message starts with a context line naming what it is, so
a signature made for one purpose can never be replayed as another.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DELEGATION_PREFIX",
    "DIRECTIVE_PREFIX",
    "POSSESSION_CONTEXT",
    "possession_message",
]

#: A patient signs ``DIRECTIVE_PREFIX || ConsentDirective bytes``.
DIRECTIVE_PREFIX: Final = b"swiftchain/directive/v1\n"
#: A patient signs ``DELEGATION_PREFIX || Delegation bytes``.
DELEGATION_PREFIX: Final = b"swiftchain/delegation/v1\n"
#: A key holder proves possession by signing ``POSSESSION_CONTEXT || owner || 0x00 || key``.
POSSESSION_CONTEXT: Final = b"swiftchain/key-possession/v1\n"


def possession_message(owner: str, public_key: bytes) -> bytes:
    """The bytes a key holder signs to prove it holds ``public_key`` for ``owner``."""
    return POSSESSION_CONTEXT + owner.encode() + b"\x00" + public_key
