"""The consortium's genesis: the first consortium file, signed by every founding member.

Nobody owns the genesis. Each founder makes its own node key on its own machine and shares only
a public key card (``swiftchain consortium keygen``); the cards are assembled into a consortium
file (``swiftchain consortium genesis propose``), which every founder then signs with its node
key (``genesis sign``). A node starts only from a genesis that every founder signed
(:func:`verify_genesis`), so no single party can add a member, change the quorum or slip in a
genesis key on its own.

The founders are the members the genesis lists, each signing with the verifier key it lists for
itself, over ``GENESIS_CONTEXT || genesis_body`` (:func:`chain.signed_messages.genesis_message`).
:func:`genesis_hash`, the SHA-256 of those bytes, names this genesis: later changes of
membership, which a vote of the members will decide, are to reference it as the first link of
their chain.
"""

from __future__ import annotations

import dataclasses
import hashlib

from chain.consortium import ConsortiumConfig, FounderSignature, parse_consortium
from chain.errors import PermissionDeniedError, VerificationError
from chain.note import Signer
from chain.signed_messages import genesis_message as _genesis_message

__all__ = [
    "genesis_hash",
    "genesis_message",
    "genesis_problems",
    "parse_genesis",
    "sign_genesis",
    "verify_genesis",
]


def genesis_message(config: ConsortiumConfig) -> bytes:
    """The bytes every founder signs: the context line, then the genesis's canonical bytes."""
    return _genesis_message(config.genesis_body())


def genesis_hash(config: ConsortiumConfig) -> bytes:
    """SHA-256 of :func:`genesis_message`: what names this genesis (signatures aside)."""
    return hashlib.sha256(genesis_message(config)).digest()


def sign_genesis(config: ConsortiumConfig, signer: Signer) -> ConsortiumConfig:
    """``config`` with founder ``signer.name``'s signature added (replacing one it had). The
    signer must be the key the genesis lists for that member, else
    :class:`PermissionDeniedError`: a founder signs only for itself. Signatures stay in the
    order of the members."""
    founders = [m.name for m in config.members]
    if signer.name not in founders:
        raise PermissionDeniedError(
            f"expected the key of one of the founders {founders}, got {signer.name}+"
            f"{signer.key_hash:08x}, whose name is not among them"
        )
    member = config.member(signer.name)
    if member.verifier.key_hash != signer.key_hash:
        raise PermissionDeniedError(
            f"expected the key of founder {member.name!r} listed in the genesis "
            f"({member.name}+{member.verifier.key_hash:08x}), "
            f"got {signer.name}+{signer.key_hash:08x}"
        )
    signed = {s.name: s for s in config.founder_signatures}
    signed[signer.name] = FounderSignature(signer.name, signer.sign(genesis_message(config)))
    order = [m.name for m in config.members]
    ordered = sorted(signed.values(), key=lambda s: _index(order, s.name))
    return dataclasses.replace(config, founder_signatures=tuple(ordered))


def _index(names: list[str], name: str) -> int:
    """Where ``name`` is in ``names``; past the end if it is not there."""
    return names.index(name) if name in names else len(names)


def genesis_problems(config: ConsortiumConfig) -> list[str]:
    """What keeps ``config`` from being a genesis every founder signed, one ``expected ...,
    got ...`` line each; none if it is one."""
    message = genesis_message(config)
    founders = {m.name: m for m in config.members}
    signed = {s.name: s for s in config.founder_signatures}
    problems = [
        f"expected signatures by the founders {sorted(founders)} only, got one by {name!r}, "
        "who is not a member of this genesis"
        for name in signed
        if name not in founders
    ]
    for name, member in founders.items():
        key = f"{name}+{member.verifier.key_hash:08x}"
        signature = signed.get(name)
        if signature is None:
            problems.append(f"expected a signature by founder {name!r} (key {key}), got none")
        elif not member.verifier.verify(message, signature.signature):
            problems.append(
                f"expected a signature by founder {name!r} with key {key} over this genesis, got "
                "one that does not verify (made by another key, or over another genesis)"
            )
    return problems


def verify_genesis(config: ConsortiumConfig) -> None:
    """Check that every founder signed ``config`` with the key it lists; raises
    :class:`VerificationError` naming each signature missing or wrong."""
    problems = genesis_problems(config)
    if problems:
        raise VerificationError(
            f"genesis of {config.origin!r} (SHA-256 {genesis_hash(config).hex()}) is not signed "
            f"by every founder: {'; '.join(problems)}"
        )


def parse_genesis(text: str | bytes) -> ConsortiumConfig:
    """Parse a consortium file and check that every founder signed it: what a node starts
    from. :class:`InvalidInputError` if it is not a consortium file, :class:`VerificationError`
    if a founder's signature is missing or wrong."""
    config = parse_consortium(text)
    verify_genesis(config)
    return config
