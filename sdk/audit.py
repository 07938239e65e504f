"""For regulators' tools: audit trail items as short human-readable text.

for message in stub.StreamTrail(StreamTrailRequest(filter=...)):
    item = message.item
    print(enum_word(item.kind, EntryKind), item_detail(item), proof_state(item.proof))
"""

from __future__ import annotations

from typing import Any

from swiftchain.audit.v1 import audit_service_pb2 as pb
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2


def enum_word(value: int, enum: Any) -> str:
    """The last word of an enum value's name: ``ENTRY_KIND_RECORD`` -> ``RECORD``
    (``FLAG_KIND_BREAK_GLASS`` -> ``BREAK_GLASS``: the part after the enum's own prefix)."""
    name = str(enum.Name(value))
    names = enum.keys()  # an EnumTypeWrapper: keys() is its API, it is no dict
    prefix = _common_prefix([str(n) for n in names])
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    prefix = first[:size]
    return prefix[: prefix.rfind("_") + 1]


def item_detail(item: pb.TrailItem) -> str:
    """What the item says: ``record r-1 v2``, ``directive v1 ACTIVE``, ``DENY break-glass``..."""
    which = item.WhichOneof("detail")
    if which == "record":
        return f"record {item.record.record_id} v{item.record.version}"
    if which == "consent":
        status = enum_word(item.consent.status, entry_pb2.DirectiveStatus)
        grantee = item.consent.grantee_organization_id or item.consent.grantee_practitioner_id
        return f"directive v{item.consent.version} {status}" + (f" to {grantee}" if grantee else "")
    if which == "access":
        access = item.access
        decision = enum_word(access.decision, common_pb2.AccessDecision)
        glass = " break-glass" if access.break_glass else ""
        return f"{decision}{glass} {access.data_category} for {access.purpose}".rstrip()
    if which == "key":
        return f"key {item.key.key_id} {enum_word(item.key.action, entry_pb2.KeyAction)}"
    return ""


def proof_state(proof: common_pb2.ProofRef) -> str:
    """``sealed in 120 (leaf 7)``, ``sequenced (leaf 7)``, ``pending`` or ``rejected``."""
    state = enum_word(proof.state, common_pb2.EntryState).lower()
    leaf = f" (leaf {proof.leaf_index})" if proof.HasField("leaf_index") else ""
    if proof.HasField("sealed_tree_size"):
        return f"sealed in {proof.sealed_tree_size}{leaf}"
    return state + leaf
