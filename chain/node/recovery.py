"""A node's start: rebuild its memory from its store and check the store against itself
(DESIGN §3.4).

:func:`recover` reads the stored entries into the tree, the key registry, the member sets and the
entry index,
compares every stored tile and every stored checkpoint with the tree recomputed from the
entries, and says where the node resumes. A disagreement comes back as a ``STORE_MISMATCH``
alarm: a node with one refuses to sign.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from chain.alarms import STORE_MISMATCH, Alarm
from chain.checkpoint import GENESIS_PREVIOUS_HASH, checkpoint_hash, parse_checkpoint
from chain.consortium import ConsortiumConfig
from chain.cosigning import SealedCheckpoint
from chain.entry import parse_entry, read_body
from chain.errors import PreconditionError, SwiftchainError
from chain.hashing import leaf_hash
from chain.membership import MembershipLog
from chain.node.entry_index import EntryIndex
from chain.node.ports import NodeState, NodeStore
from chain.proof_build import tree_root
from chain.tiles import MemoryHashStore, tile_bytes, tiles_touched
from chain.validation import KeyRegistry
from swiftchain.common.v1 import common_pb2

__all__ = ["Recovery", "UnsealedBlock", "recover"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnsealedBlock:
    """A persisted block whose checkpoint no quorum had sealed yet."""

    height: int
    tree_size: int
    text: str
    cut_offset: int


@dataclass
class Recovery:
    """What :func:`recover` found: where to resume, and what to do first."""

    state: NodeState
    registry: KeyRegistry
    #: The hash of the last persisted checkpoint (the next block's ``previous``).
    previous_hash: bytes
    sealed: list[SealedCheckpoint] = field(default_factory=list)
    unsealed: list[UnsealedBlock] = field(default_factory=list)
    #: ``STORE_MISMATCH`` alarms; with any, the node must not sign.
    alarms: list[Alarm] = field(default_factory=list)

    @property
    def can_sign(self) -> bool:
        """True if the store agrees with itself."""
        return not self.alarms


def recover(
    store: NodeStore,
    config: ConsortiumConfig,
    node_name: str,
    tree: MemoryHashStore,
    index: EntryIndex,
    membership: MembershipLog | None = None,
) -> Recovery:
    """Load the stored entries into ``tree`` (empty), ``index`` and ``membership`` (at the
    genesis), and check the store."""
    if tree.size != 0:
        raise PreconditionError(f"expected an empty tree to recover into, got {tree.size} leaves")
    state = store.load_state()
    registry = KeyRegistry(config.genesis_keys)
    alarms: list[Alarm] = []

    def mismatch(tree_size: int, detail: str) -> None:
        _log.error("store mismatch: %s; this node will not sign", detail)
        alarms.append(Alarm(STORE_MISMATCH, node_name, tree_size, detail))

    blocks = store.blocks()
    on_disk = store.stored_entries()
    if on_disk == 0 and state.tree_size > 0:
        _log.warning(
            "node %s: the data directory holds no entries but the store has %d blocks; "
            "rebuilding the log from ordering offset 0",
            node_name,
            len(blocks),
        )
        state = NodeState(applied_offset=-1, tree_size=0, height=0)
    store.truncate(min(state.tree_size, on_disk))
    leaf_hashes: list[bytes] = []
    try:
        for leaf_index, raw in store.iter_entries(state.tree_size):
            leaf_hashes.append(leaf_hash(raw))
            body = read_body(raw)
            if body.kind == common_pb2.ENTRY_KIND_KEY:
                registry.apply(body.key)
            elif body.kind == common_pb2.ENTRY_KIND_MEMBERSHIP and membership is not None:
                membership.replay([(leaf_index, parse_entry(raw))])
            index.add(body.entry_id, leaf_index)
    except (SwiftchainError, DecodeError) as error:
        mismatch(state.tree_size, f"the stored entries stop at leaf {len(leaf_hashes)}: {error}")
    else:
        if len(leaf_hashes) != state.tree_size:
            mismatch(
                state.tree_size,
                f"expected {state.tree_size} stored entries, found {len(leaf_hashes)}",
            )
    tree.extend(leaf_hashes)
    if membership is not None:
        membership.position = len(leaf_hashes)
    tile_problem = _check_tiles(store, tree)
    if tile_problem is not None:
        mismatch(state.tree_size, tile_problem)
    recovery = Recovery(state, registry, GENESIS_PREVIOUS_HASH, alarms=alarms)
    sealed_notes = store.sealed_notes()
    for block in blocks:
        if block.height > state.height:
            break
        checkpoint = parse_checkpoint(block.checkpoint)
        size = block.tree_size
        if size <= tree.size and tree_root(size, tree) != checkpoint.root_hash:
            mismatch(
                block.tree_size,
                f"the stored entries give another root than checkpoint {block.height}",
            )
        if block.height in sealed_notes:
            note, signers = sealed_notes[block.height]
            recovery.sealed.append(
                SealedCheckpoint(
                    block.height, size, block.checkpoint, note, signers, block.cut_offset
                )
            )
        else:
            recovery.unsealed.append(
                UnsealedBlock(block.height, size, block.checkpoint, block.cut_offset)
            )
        recovery.previous_hash = checkpoint_hash(block.checkpoint)
    if recovery.sealed and recovery.can_sign:
        # The newest seal again: its checkpoint file may not have been written before a crash.
        newest = recovery.sealed[-1]
        store.seal_block(newest.height, newest.note, newest.signers)
    return recovery


def _check_tiles(store: NodeStore, tree: MemoryHashStore) -> str | None:
    """Compare every stored hash tile with the tree recomputed from the stored entries; say
    the first that differs."""
    for tile in tiles_touched(0, tree.size):
        if store.read_tile(tile.level, tile.index, tile.width) != tile_bytes(tree, tile):
            return f"stored tile {tile.level}/{tile.index} disagrees with the entries"
    return None
