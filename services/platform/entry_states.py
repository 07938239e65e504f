"""Where an entry stands on the log, as far as a service knows: one rule for every service."""

from __future__ import annotations

from swiftchain.common.v1 import common_pb2

__all__ = ["entry_state"]


def entry_state(
    *, rejected: bool, leaf_index: int | None, sealed_tree_size: int | None
) -> common_pb2.EntryState.ValueType:
    """REJECTED, SEALED (a sealed checkpoint covers it), SEQUENCED (it has a leaf, not yet
    sealed) or PENDING (nothing known yet), in that order of precedence."""
    if rejected:
        return common_pb2.ENTRY_STATE_REJECTED
    if sealed_tree_size is not None:
        return common_pb2.ENTRY_STATE_SEALED
    if leaf_index is not None:
        return common_pb2.ENTRY_STATE_SEQUENCED
    return common_pb2.ENTRY_STATE_PENDING
